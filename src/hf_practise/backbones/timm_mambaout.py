"""timm MambaOut (stages of gated-CNN blocks, channels-last).

Stages are the `blocks` Sequentials of `model.stages`; each stage after the first opens with its own
`downsample` (a strided conv), so every block keeps its input's shape and all are droppable. A block is one
residual branch on the channels-last stream: norm, `fc1` (a linear layer that reads the stream), a gate and a
depthwise conv on part of the channels, then `fc2` (which writes it). The stream entering a stage is written by
its downsampling conv (the stem's last conv for the first) and read, after the last block, by the next stage's.

The timm entry points let keyword arguments override their `depths`, so plain timm rebuilds a block-dropped model
from `model_args={"depths": [...]}`.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from .registry import register_family
from .timm_common import TimmDownsampledStagesFamily
from .tiny import timm_tiny


@register_family
class TimmMambaOutFamily(TimmDownsampledStagesFamily):
    name = "timm-mambaout"
    finetune_optimizer = "adamw"  # LayerNorm network, like ConvNeXt
    tiny_models = {
        "mambaout": timm_tiny("mambaout_femto", dims=(8, 16, 16, 24), depths=(2, 2, 3, 2)),
        # norm-first downsampling, layer scale (at 0.5: timm's 1e-6 would make every block an identity), MLP head
        "mambaout-rw": timm_tiny("mambaout_small_rw", dims=(8, 16, 16, 24), depths=(1, 2, 2, 2), ls_init_value=0.5),
    }
    model_class = "timm.models.mambaout:MambaOut"
    block_classes = ("timm.models.mambaout:GatedConvBlock",)

    # ---- structure (stages, entry and exit convs: TimmDownsampledStagesFamily) ------------------------------
    def is_droppable(self, block: nn.Module) -> bool:
        return True  # x + fc2(gate * conv(fc1(norm(x)))): the shape never changes

    def branch_outputs(self, block: nn.Module) -> list[nn.Module]:
        return [block.fc2]

    def branch_inputs(self, block: nn.Module) -> list[nn.Module]:
        return [block.fc1]

    # ---- saving ------------------------------------------------------------------------------------------
    def block_args(self, model: nn.Module) -> dict[str, Any]:
        return {"depths": [len(stage.blocks) for stage in model.stages]}
