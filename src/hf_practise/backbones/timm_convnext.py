"""timm ConvNeXt (v1 and v2 blocks, with linear or 1x1-conv MLPs).

Stages are the `blocks` Sequentials of `model.stages`; the downsampling lives in each stage's own
`downsample` (norm + strided conv), so every block keeps its input's shape and all are droppable. A block is
one residual branch: depthwise conv, norm, `fc1`, activation, `fc2` (then layer scale). Its output layer is
`fc2`. A channel-mixing adaptor cannot fold into a depthwise conv, so the input-side adaptor sits before the
branch's first ungrouped layer, `fc1`. The stream entering a stage is written by the stage's downsampling
conv (the stem's conv for the first stage) and read, after the last block, by the next stage's downsampling
conv. Dropping rebuilds `blocks`, so plain timm reloads the result with `model_args={"depths": [...]}`.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from .base import layers_of, ungrouped
from .registry import register_family
from .timm_common import TimmDownsampledStagesFamily
from .tiny import timm_tiny


@register_family
class TimmConvNeXtFamily(TimmDownsampledStagesFamily):
    name = "timm-convnext"
    tiny_models = {
        "convnext": timm_tiny("convnext_atto", dims=(8, 16, 16, 24), depths=(2, 2, 3, 2), ls_init_value=0.5),
        "convnext-linear-mlp": timm_tiny(
            "convnext_atto", dims=(8, 16, 16, 24), depths=(2, 1, 2, 1), ls_init_value=0.5, conv_mlp=False
        ),
        "convnextv2": timm_tiny("convnextv2_atto", dims=(8, 16, 16, 24), depths=(1, 2, 2, 1)),
    }
    finetune_optimizer = "adamw"  # LayerNorm: SGD at 0.01 is too rough
    scan_iterations = 600  # ranking tau against 1,000 steps: 0.788 at 100, 0.909 (0.848 transformers) at 400, 0.939
    # (0.909) at 600 (benchmarks/results/scan_tau_summary.md)
    model_class = "timm.models.convnext:ConvNeXt"
    block_classes = ("timm.models.convnext:ConvNeXtBlock",)

    # ---- structure (stages, entry and exit convs: TimmDownsampledStagesFamily) ------------------------------
    def is_droppable(self, block: nn.Module) -> bool:
        # a block with a projecting shortcut or a strided depthwise conv changes the shape (timm builds none
        # inside its stages, but a custom config could)
        return not layers_of(block.shortcut, nn.Conv2d) and block.conv_dw.stride in ((1, 1), 1)

    def branch_outputs(self, block: nn.Module) -> list[nn.Module]:
        return [ungrouped(block.mlp)[-1]]

    def branch_inputs(self, block: nn.Module) -> list[nn.Module]:
        return [ungrouped(block.mlp)[0]]

    # ---- saving ------------------------------------------------------------------------------------------
    def block_args(self, model: nn.Module) -> dict[str, Any]:
        return {"depths": [len(stage.blocks) for stage in model.stages]}
