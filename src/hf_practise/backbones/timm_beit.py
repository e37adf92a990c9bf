"""timm BEiT (`Beit`: BEiT, BEiT v2): ViT blocks with layer scales and relative position biases (see
`timm_vit`). A block's own bias table goes with it when it is dropped; a shared one stays with the model. Plain
timm reloads the result with `model_args={"depth": n}`.

With `units="branches"` (see `branches.py`), a block's attention and MLP are candidates of their own; a dropped
branch's layer scale (`gamma_1` / `gamma_2`, a parameter of the block) stays and scales its zero.
"""

from __future__ import annotations

from torch import nn

from .registry import register_family
from .timm_vit import TimmViTFamily, timm_vit_tiny


@register_family
class TimmBeitFamily(TimmViTFamily):
    name = "timm-beit"
    tiny_models = {
        "beit": timm_vit_tiny("beit_base_patch16_224", init_values=0.5),
    }
    model_class = "timm.models.beit:Beit"
    #: a BEiT `Block`'s branches, by part in call order; the layer scales are parameters of the block (or None)
    branch_parts = {
        "attn": ("norm1", "attn", "gamma_1", "drop_path1"),
        "mlp": ("norm2", "mlp", "gamma_2", "drop_path2"),
    }

    def branch_blocks_ok(self, model: nn.Module) -> bool:
        from timm.models.beit import Block

        return all(type(b) is Block for b in model.blocks)
