"""timm BEiT (`Beit`: BEiT, BEiT v2): ViT blocks with layer scales and relative position biases (see
`timm_vit`). A block's own bias table goes with it when it is dropped; a shared one stays with the model. Plain
timm reloads the result with `model_args={"depth": n}`.
"""

from __future__ import annotations

from .registry import register_family
from .timm_vit import TimmViTFamily, timm_vit_tiny


@register_family
class TimmBeitFamily(TimmViTFamily):
    name = "timm-beit"
    tiny_models = {
        "beit": timm_vit_tiny("beit_base_patch16_224", init_values=0.5),
    }
    model_class = "timm.models.beit:Beit"
