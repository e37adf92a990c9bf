"""timm TResNets (`TResNet`: M, L, XL with basic blocks in the first two stages, and the bottleneck-only V2).

Stages are the Sequentials `layer1` ... `layer4` of `model.body` (after its space-to-depth and stem conv). As in
a ResNet, a block is droppable when it has no `downsample` (an identity shortcut, so input and output shapes
match): every block but the first of a stage, and the first of the first stage where it keeps the stem's width
(basic blocks). A block reads the stream through `conv1` (and its shortcut conv, where there is one) and writes
it through its last conv (`conv2` of a basic block, `conv3` of a bottleneck; squeeze-excite sits between the
convs); a ReLU follows the sum. The stem conv writes the stream entering the first stage. Dropping rebuilds the
stage's Sequential without the block, so state-dict keys renumber and plain timm reloads the result with
`model_args={"layers": [...]}`.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from .base import layers_of
from .registry import register_family
from .timm_common import TimmFamily
from .tiny import timm_tiny

_TINY = dict(init="norms", layers=(2, 2, 3, 2), width_factor=0.125)  # 8 channels at the first stage


def _conv(layer: nn.Module) -> nn.Module:
    """The conv of a `ConvNormAct` (conv, BatchNorm, activation)."""
    return layer.conv


def _shortcut(block: nn.Module) -> list[nn.Module]:
    return layers_of(block.downsample, nn.Conv2d)


@register_family
class TimmTResNetFamily(TimmFamily):
    name = "timm-tresnet"
    tiny_models = {
        "tresnet": timm_tiny("tresnet_m", **_TINY),  # basic blocks in the first two stages
        "tresnet-v2": timm_tiny("tresnet_v2_l", **_TINY),  # bottlenecks only
    }
    model_class = "timm.models.tresnet:TResNet"
    block_classes = ("timm.models.tresnet:BasicBlock", "timm.models.tresnet:Bottleneck")

    # ---- structure -------------------------------------------------------------------------------------
    def stages(self, model: nn.Module) -> list[nn.Sequential]:
        return [child for child in model.body.children() if isinstance(child, nn.Sequential)]

    def is_droppable(self, block: nn.Module) -> bool:
        return block.downsample is None

    def branch_outputs(self, block: nn.Module) -> list[nn.Module]:
        return [_conv(getattr(block, "conv3", None) or block.conv2)] + _shortcut(block)

    def branch_inputs(self, block: nn.Module) -> list[nn.Module]:
        return [_conv(block.conv1)] + _shortcut(block)

    def stage_entry_outputs(self, model: nn.Module, stage: int) -> list[nn.Module]:
        return [_conv(model.body.conv1)] if stage == 0 else []

    # ---- saving ------------------------------------------------------------------------------------------
    def block_args(self, model: nn.Module) -> dict[str, Any]:
        return {"layers": [len(s) for s in self.stages(model)]}
