"""timm XCiT (`Xcit`): cross-covariance attention blocks, then class-attention blocks (see `timm_vit`).

The XCA blocks are the candidates: each has three residual branches, attention (`qkv` ... `proj`), a local
patch interaction of depthwise convs (no layer a channel mix folds into, so no adaptor) and an MLP. The
class-attention blocks at the end read the [CLS] token and stay. Plain timm reloads the result with
`model_args={"depth": n}`.
"""

from __future__ import annotations

from torch import nn

from .registry import register_family
from .timm_vit import TimmViTFamily
from .tiny import timm_tiny


@register_family
class TimmXcitFamily(TimmViTFamily):
    name = "timm-xcit"
    tiny_models = {"xcit": timm_tiny("xcit_nano_12_p16_224", img_size=32, depth=3, embed_dim=32, num_heads=2)}
    model_class = "timm.models.xcit:Xcit"

    def stage_entry_outputs(self, model: nn.Module, stage: int) -> list[nn.Module]:
        # XCiT's patch embedding is a stack of convs: the last one writes the stream
        return [m for m in model.patch_embed.modules() if isinstance(m, nn.Conv2d)][-1:]
