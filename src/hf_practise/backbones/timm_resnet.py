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


def _block_classes() -> tuple[type, ...]:
    from timm.models.resnet import BasicBlock, Bottleneck
    from timm.models.sknet import SelectiveKernelBasic, SelectiveKernelBottleneck

    return BasicBlock, Bottleneck, SelectiveKernelBasic, SelectiveKernelBottleneck


@register_family
class TimmResNetFamily(TimmFamily):
    name = "timm-resnet"
    tiny_models = {  # BasicBlock and Bottleneck, plain and -d (deep stem, avg-pool downsample), selective kernel
        "resnet18": timm_tiny("resnet18", init="norms", channels=(8, 16, 16, 32)),
        "resnet26d": timm_tiny("resnet26d", init="norms", channels=(4, 8, 8, 16), stem_width=8),
        "skresnet18": timm_tiny("skresnet18", init="norms", channels=(8, 16, 16, 32)),
    }

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        try:
            from timm.models.resnet import ResNet

            kinds = _block_classes()
        except ImportError:
            return False
        stages = [c for c in model.children() if isinstance(c, nn.Sequential) and any(isinstance(b, kinds) for b in c)]
        return isinstance(model, ResNet) and all(isinstance(b, kinds) for s in stages for b in s)

    # ---- structure -------------------------------------------------------------------------------------
    def stages(self, model: nn.Module) -> list[nn.Sequential]:
        kinds = _block_classes()
        # a stage whose every block was dropped stays as an empty Sequential (timm builds `layers=[0, ...]` so)
        return [
            child
            for child in model.children()
            if isinstance(child, nn.Sequential) and all(isinstance(b, kinds) for b in child)
        ]

    def is_droppable(self, block: nn.Module) -> bool:
        return block.downsample is None

    @staticmethod
    def _last_conv(block: nn.Module) -> nn.Module:
        return layers_of(getattr(block, "conv3", None) or block.conv2, nn.Conv2d)[-1]

    @staticmethod
    def _first_convs(block: nn.Module) -> list[nn.Module]:
        """The ungrouped convs that read the block's input: `conv1`, or each path of a selective-kernel conv
        (never its attention, which sees pooled channels)."""
        attn = {id(m) for m in (getattr(block.conv1, "attn", None) or nn.Identity()).modules()}
        return [m for m in layers_of(block.conv1, nn.Conv2d) if m.groups == 1 and id(m) not in attn]

    @staticmethod
    def _shortcut_conv(block: nn.Module) -> nn.Module | None:
        convs = layers_of(block.downsample, nn.Conv2d)
        return convs[-1] if convs else None

    def branch_outputs(self, block: nn.Module) -> list[nn.Module]:
        out = [self._last_conv(block)]
        shortcut = self._shortcut_conv(block)
        return out + ([shortcut] if shortcut is not None else [])

    def branch_inputs(self, block: nn.Module) -> list[nn.Module]:
        shortcut = self._shortcut_conv(block)
        return self._first_convs(block) + ([shortcut] if shortcut is not None else [])

    # ---- editing and saving ------------------------------------------------------------------------------
    def block_args(self, model: nn.Module) -> dict[str, Any]:
        return {"layers": [len(s) for s in self.stages(model)]}
