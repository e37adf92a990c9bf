"""timm's legacy SENets (`SENet`: SE-ResNet-18 ... 152, SE-ResNeXt-26 ... 101 and SENet-154).

Stages are the Sequentials `layer1` ... `layer4` of the model (after the stem `layer0` and its max pool). As in a
ResNet, a block is droppable when it has no `downsample` (an identity shortcut, so input and output shapes match):
every block but the first of a stage, and the first of the first stage where it keeps the stem's width (the
basic blocks of SE-ResNet-18/34), as long as the stage keeps one block: timm builds a stage's first block
whatever its depth. A block reads the stream through `conv1` (and its shortcut conv, where there is
one) and writes it through its last conv (`conv2` of a basic block, `conv3` of a bottleneck), followed by its
BatchNorm and squeeze-excite; a ReLU follows the sum. The stem's last conv writes the stream entering the first
stage. Dropping rebuilds the stage's Sequential without the block, so state-dict keys renumber and plain timm
reloads the result with `model_args={"layers": [...]}`.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from .base import layers_of
from .registry import register_family
from .timm_common import TimmFamily, timm_class
from .tiny import timm_tiny

_BLOCKS = tuple(
    f"timm.models.senet:{name}"
    for name in ("SEResNetBlock", "SEResNetBottleneck", "SEResNeXtBottleneck", "SEBottleneck")
)


@register_family
class TimmSENetFamily(TimmFamily):
    name = "timm-senet"
    min_blocks_per_stage = 1  # timm builds a stage's first block whatever its depth (`layers=[0, ...]` gives 1)
    # the entry points fix the widths (64 ... 512 channels): the two smallest real networks at 1 or 2 blocks a stage
    tiny_models = {
        "seresnet": timm_tiny("legacy_seresnet18", init="norms", layers=(2, 2, 1, 2)),  # basic blocks
        "seresnext": timm_tiny("legacy_seresnext26_32x4d", init="norms", layers=(2, 2, 1, 1)),  # grouped bottleneck
    }
    model_class = "timm.models.senet:SENet"
    block_classes = _BLOCKS

    # ---- structure -------------------------------------------------------------------------------------
    def stages(self, model: nn.Module) -> list[nn.Sequential]:
        kinds = tuple(timm_class(name) for name in _BLOCKS)
        # the Sequentials of blocks (not the stem); a stage whose every block was dropped stays, empty
        return [
            child
            for child in model.children()
            if isinstance(child, nn.Sequential)
            and child is not model.layer0
            and all(isinstance(b, kinds) for b in child)
        ]

    def is_droppable(self, block: nn.Module) -> bool:
        return block.downsample is None

    def branch_outputs(self, block: nn.Module) -> list[nn.Module]:
        return [getattr(block, "conv3", None) or block.conv2] + layers_of(block.downsample, nn.Conv2d)

    def branch_inputs(self, block: nn.Module) -> list[nn.Module]:
        return [block.conv1] + layers_of(block.downsample, nn.Conv2d)

    def stage_entry_outputs(self, model: nn.Module, stage: int) -> list[nn.Module]:
        return layers_of(model.layer0, nn.Conv2d)[-1:] if stage == 0 else []

    # ---- saving ------------------------------------------------------------------------------------------
    def block_args(self, model: nn.Module) -> dict[str, Any]:
        return {"layers": [len(s) for s in self.stages(model)]}
