"""timm CaiT (`Cait`): layer-scaled ViT blocks with talking-heads attention, then class-attention blocks (see
`timm_vit`). The self-attention blocks are the candidates; the class-attention blocks read the [CLS] token and
stay. A branch reads the stream through `qkv` / `fc1` and writes it through `proj` / `fc2` (the talking-heads
linears mix heads, not channels). Plain timm reloads the result with `model_args={"depth": n}`.

With `units="branches"` (see `branches.py`), a self-attention block's attention and MLP are candidates of their own;
a dropped branch's layer scale (`gamma_1` / `gamma_2`, a parameter of the block) stays and scales its zero.
"""

from __future__ import annotations

from torch import nn

from .registry import register_family
from .timm_vit import TimmViTFamily, timm_vit_tiny


@register_family
class TimmCaitFamily(TimmViTFamily):
    name = "timm-cait"
    tiny_models = {
        "cait": timm_vit_tiny("cait_xxs24_224", init_values=0.5),  # timm's 1e-5 leaves every branch ~silent
    }
    model_class = "timm.models.cait:Cait"
    #: a `LayerScaleBlock`'s branches, by part in call order (its one drop path, which both branches share and only
    #: acts in training, is no part of either)
    branch_parts = {"attn": ("norm1", "attn", "gamma_1"), "mlp": ("norm2", "mlp", "gamma_2")}

    def branch_blocks_ok(self, model: nn.Module) -> bool:
        from timm.models.cait import LayerScaleBlock

        return all(type(b) is LayerScaleBlock for b in model.blocks)
