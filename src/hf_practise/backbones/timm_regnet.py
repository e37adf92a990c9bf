"""timm RegNet (RegNetX, RegNetY with squeeze-excite, RegNetV with pre-activation bottlenecks).

Stages are the `RegStage` children of the model; a stage holds its blocks as named children (`b1`, `b2`, ...)
and runs them in order. A block is droppable when its shortcut is the identity (no `downsample` conv), which
is every block but a stage's first. A block reads the stream through `conv1` and writes it through `conv3`;
a stage's first block writes it through its shortcut conv too. The stem's conv writes the stream entering the
first stage.

timm builds RegNets from a `RegNetCfg` dataclass that `config.json` cannot carry, so a block-dropped model is
saved in hf_practise's format (the original architecture and the removed blocks) and reloads with
`hf_practise.load_compressed`; a dropped block's name simply disappears from its stage (`s3.b2` gone, `s3.b3`
kept), which the loader reproduces.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from .base import layers_of
from .registry import register_family
from .timm_common import TimmFamily
from .tiny import timm_tiny


def _stage_modules(model: nn.Module) -> list[nn.Module]:
    from timm.models.regnet import RegStage

    return [m for m in model.children() if isinstance(m, RegStage)]


def _shortcut_conv(block: nn.Module) -> list[nn.Module]:
    return layers_of(getattr(block, "downsample", None), nn.Conv2d)[-1:]


@register_family
class TimmRegNetFamily(TimmFamily):
    name = "timm-regnet"
    native_reload = False  # built from a RegNetCfg dataclass
    # (RegNetV's pre-activation blocks are checked by benchmarks/coverage.py: its smallest model has 20M weights)
    tiny_models = {"regnetx": timm_tiny("regnetx_002"), "regnety-se": timm_tiny("regnety_002")}
    model_class = "timm.models.regnet:RegNet"
    block_classes = ("timm.models.regnet:Bottleneck", "timm.models.regnet:PreBottleneck")

    def stages(self, model: nn.Module) -> list[list[nn.Module]]:
        return [list(stage.children()) for stage in _stage_modules(model)]

    def is_droppable(self, block: nn.Module) -> bool:
        return not _shortcut_conv(block) and not layers_of(getattr(block, "downsample", None), nn.AvgPool2d)

    def branch_outputs(self, block: nn.Module) -> list[nn.Module]:
        return layers_of(block.conv3, nn.Conv2d) + _shortcut_conv(block)

    def branch_inputs(self, block: nn.Module) -> list[nn.Module]:
        return layers_of(block.conv1, nn.Conv2d) + _shortcut_conv(block)

    def stage_entry_outputs(self, model: nn.Module, stage: int) -> list[nn.Module]:
        return layers_of(model.stem, nn.Conv2d)[-1:] if stage == 0 else []

    def remove_blocks(self, model: nn.Module, gone: set[tuple[int, int]]) -> None:
        for s, stage in enumerate(_stage_modules(model)):
            names = [name for name, _ in stage.named_children()]
            for i, name in enumerate(names):
                if (s, i) in gone:
                    delattr(stage, name)

    def block_args(self, model: nn.Module) -> dict[str, Any]:
        return {}  # not used: saved in hf_practise's format (native_reload is False)
