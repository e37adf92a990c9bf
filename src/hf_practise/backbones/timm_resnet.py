"""timm ResNets (BasicBlock and Bottleneck, plain and -d variants).

Stages are the `nn.Sequential` children of a `timm.models.resnet.ResNet` whose items are residual blocks.
A block is droppable when it has no downsample (identity shortcut, so input and output shapes match).
Dropping rebuilds the stage's Sequential without the block, so state-dict keys renumber and plain timm
reloads the result with `model_args={"layers": [...]}`.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from .base import layers_of
from .registry import register_family
from .timm_common import TimmFamily
from .tiny import timm_tiny


def _resnet_classes() -> tuple[type, type, type]:
    from timm.models.resnet import BasicBlock, Bottleneck, ResNet

    return ResNet, BasicBlock, Bottleneck


@register_family
class TimmResNetFamily(TimmFamily):
    name = "timm-resnet"
    tiny_models = {  # BasicBlock and Bottleneck, plain and -d (deep stem, avg-pool downsample)
        "resnet18": timm_tiny("resnet18", init="norms", channels=(8, 16, 16, 32)),
        "resnet26d": timm_tiny("resnet26d", init="norms", channels=(4, 8, 8, 16), stem_width=8),
    }

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        try:
            resnet, _, _ = _resnet_classes()
        except ImportError:
            return False
        return isinstance(model, resnet)

    # ---- structure -------------------------------------------------------------------------------------
    def stages(self, model: nn.Module) -> list[nn.Sequential]:
        _, basic, bottleneck = _resnet_classes()
        # a stage whose every block was dropped stays as an empty Sequential (timm builds `layers=[0, ...]` so)
        return [
            child
            for child in model.children()
            if isinstance(child, nn.Sequential) and all(isinstance(b, (basic, bottleneck)) for b in child)
        ]

    def is_droppable(self, block: nn.Module) -> bool:
        return block.downsample is None

    def _last_conv(self, block: nn.Module) -> nn.Module:
        _, _, bottleneck = _resnet_classes()
        return block.conv3 if isinstance(block, bottleneck) else block.conv2

    @staticmethod
    def _shortcut_conv(block: nn.Module) -> nn.Module | None:
        convs = layers_of(block.downsample, nn.Conv2d)
        return convs[-1] if convs else None

    def branch_outputs(self, block: nn.Module) -> list[nn.Module]:
        out = [self._last_conv(block)]
        shortcut = self._shortcut_conv(block)
        return out + ([shortcut] if shortcut is not None else [])

    def branch_inputs(self, block: nn.Module) -> list[nn.Module]:
        out = [block.conv1]
        shortcut = self._shortcut_conv(block)
        return out + ([shortcut] if shortcut is not None else [])

    # ---- editing and saving ------------------------------------------------------------------------------
    def block_args(self, model: nn.Module) -> dict[str, Any]:
        return {"layers": [len(s) for s in self.stages(model)]}
