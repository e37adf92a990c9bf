"""timm ResNetV2 (pre-activation ResNets and BiT; bottleneck or basic blocks, BatchNorm or GroupNorm).

Stages are the `blocks` Sequentials of `model.stages`; a block is droppable when it has no `downsample` (an
identity shortcut). A block's branch reads the stream through its first conv (`conv1`) and writes it through
its last (`conv3`, or `conv2` of a basic block); a stage's first block writes it through its shortcut conv too.
The stream entering the first stage is written by the stem's last conv. Dropping rebuilds `blocks`, so plain
timm reloads the result with `model_args={"layers": [...]}`.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from .base import layers_of, layers_outside
from .registry import register_family
from .timm_common import TimmFamily
from .tiny import timm_tiny


def _branch_convs(block: nn.Module) -> list[nn.Module]:
    return layers_outside(block, nn.Conv2d, block.downsample)


@register_family
class TimmResNetV2Family(TimmFamily):
    name = "timm-resnetv2"
    tiny_models = {
        "preact-bottleneck": timm_tiny("resnetv2_50", layers=[2, 1, 2, 1], channels=(16, 16, 32, 32), stem_chs=8),
        "preact-basic": timm_tiny("resnetv2_18", layers=[2, 2, 1, 2], channels=(8, 16, 16, 32), stem_chs=8),
    }

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        try:
            from timm.models.resnetv2 import ResNetStage, ResNetV2
        except ImportError:
            return False
        return isinstance(model, ResNetV2) and all(isinstance(s, ResNetStage) for s in model.stages)

    def stages(self, model: nn.Module) -> list[nn.Sequential]:
        return [stage.blocks for stage in model.stages]

    def is_droppable(self, block: nn.Module) -> bool:
        return block.downsample is None

    def branch_outputs(self, block: nn.Module) -> list[nn.Module]:
        return _branch_convs(block)[-1:] + layers_of(block.downsample, nn.Conv2d)[-1:]

    def branch_inputs(self, block: nn.Module) -> list[nn.Module]:
        return _branch_convs(block)[:1] + layers_of(block.downsample, nn.Conv2d)[:1]

    def stage_entry_outputs(self, model: nn.Module, stage: int) -> list[nn.Module]:
        return layers_of(model.stem, nn.Conv2d)[-1:] if stage == 0 else []

    def block_args(self, model: nn.Module) -> dict[str, Any]:
        return {"layers": [len(s) for s in self.stages(model)]}
