"""timm CaiT (`Cait`): layer-scaled ViT blocks with talking-heads attention, then class-attention blocks (see
`timm_vit`). The self-attention blocks are the candidates; the class-attention blocks read the [CLS] token and
stay. A branch reads the stream through `qkv` / `fc1` and writes it through `proj` / `fc2` (the talking-heads
linears mix heads, not channels). Plain timm reloads the result with `model_args={"depth": n}`.
"""

from __future__ import annotations

from .registry import register_family
from .timm_vit import TimmViTFamily, timm_vit_tiny


@register_family
class TimmCaitFamily(TimmViTFamily):
    name = "timm-cait"
    tiny_models = {
        "cait": timm_vit_tiny("cait_xxs24_224"),
    }
    model_class = "timm.models.cait:Cait"
