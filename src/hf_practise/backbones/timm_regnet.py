"""timm RegNet (RegNetX, RegNetY with squeeze-excite, RegNetV with pre-activation bottlenecks).

Stages are the `RegStage` children of the model; a stage holds its blocks as named children (`b1`, `b2`, ...)
and runs them in order. A block is droppable when its shortcut is the identity (no `downsample` conv), which
is every block but a stage's first. A block reads the stream through `conv1` and writes it through `conv3`;
a stage's first block writes it through its shortcut conv too. The stem's conv writes the stream entering the
first stage.

timm builds a RegNet from a `RegNetCfg` whose fields `model_args` can override, but the per-stage depths are not
fields: timm derives them from four numbers (one block width per position on a line `w0 + wa * i`, quantised to
`w0 * wm**k`, `depth` positions; a stage is the run of blocks of one width). Lowering `depth` shortens only the
last stage and leaves every other width and depth as it was, so a model that lost blocks of its last stage only
reloads with plain timm (`model_args={"depth": ...}`; the kept blocks are renamed `b1`, `b2`, ... on saving, as
timm names them). Any other drop has no `RegNetCfg` that rebuilds it: that model is saved in hf_practise's format
(the original architecture and the removed blocks) and reloads with `hf_practise.load_compressed`; a dropped
block's name simply disappears from its stage (`s3.b2` gone, `s3.b3` kept), which the loader reproduces.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .base import REMOVED_ATTR, layers_of
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
    native_reload_why = (
        "timm derives a RegNet's stage depths from its `RegNetCfg` line (w0, wa, wm, depth): only a model that lost "
        "blocks of its last stage alone has a config that rebuilds it"
    )
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

    # ---- saving ------------------------------------------------------------------------------------------
    def block_args(self, model: nn.Module) -> dict[str, Any]:
        return {"depth": sum(len(stage) for stage in self.stages(model))}

    def reloads_natively(self, model: nn.Module) -> bool:
        """Whether `depth` rebuilds these stages: only blocks of the last stage went (checked by building the
        architecture on the meta device, so it costs no memory or time)."""
        import timm
        from timm.models._hub import get_model_args

        removed = getattr(model, REMOVED_ATTR, None)
        if not removed:
            return True
        last = len(_stage_modules(model)) - 1
        if any(stage != last for drop in removed for stage, _, _ in drop):
            return False
        with torch.device("meta"):
            rebuilt = timm.create_model(
                model.pretrained_cfg["architecture"], **get_model_args(model, self.block_args(model))
            )
        return [len(s) for s in self.stages(rebuilt)] == [len(s) for s in self.stages(model)]

    def save_pretrained(self, model: nn.Module, save_dir: Path, *, source_config: dict[str, Any]) -> list[str]:
        if not (getattr(model, REMOVED_ATTR, None) and self.reloads_natively(model)):
            return super().save_pretrained(model, save_dir, source_config=source_config)
        stage = _stage_modules(model)[-1]
        names = stage._modules
        stage._modules = OrderedDict((f"b{i + 1}", block) for i, block in enumerate(names.values()))
        try:  # timm's names for the shorter stage, as plain timm builds it
            return super().save_pretrained(model, save_dir, source_config=source_config)
        finally:
            stage._modules = names
