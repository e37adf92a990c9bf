"""timm CSPNeXt (`CspNext`, RTMDet's backbone: tiny, s, m, l, x): cross stage partial layers of large-kernel
blocks.

Each stage is a strided conv (then, in the last stage, a spatial pyramid pooling bottleneck) and a cross stage
partial layer, whose `blocks` are the stage's blocks: the layer splits its input into a short path (`short_conv`)
and a main path (`main_conv`), runs its blocks on the main path, and concatenates both paths, gates them by channel
(effective squeeze-excite) and mixes them (`final_conv`). A block reads the stream through its 3x3 `conv1` and
writes it through the pointwise conv after its depthwise one (`conv2.pointwise_conv`); it adds its input in every
stage but the last, so the last stage's blocks are no candidates. So `main_conv` writes the stream a stage's blocks
run on, and `final_conv` reads it after the last block (as the cross stages of `timm_cspnet`).

The entry points pass `deepen_factor` and `widen_factor` through `model_args`, which override them, so plain timm
rebuilds a shallower model from `model_args={"depths": [...], "deepen_factor": 1.0}` (the kept blocks, unscaled).
timm builds at least one block per stage, though: a model left with an empty stage (e.g. a tiny, whose stages have
one block each) is saved in hf_practise's format and reloads with `hf_practise.load_compressed`.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from .base import REMOVED_ATTR
from .registry import register_family
from .timm_common import TimmFamily
from .tiny import timm_tiny

#: a tiny CSPNeXt: widths 8-16-24-32 (halved by `widen_factor`), depths 2-2-3-1 (unscaled), 32x32 inputs
_TINY = dict(init="calibrate", channels=(16, 32, 48, 64), depths=(2, 2, 3, 1), deepen_factor=1.0)


def _csp_layer(model: nn.Module, stage: int) -> nn.Module:
    """The cross stage partial layer that ends `stage`."""
    return model.stages[stage][-1]


@register_family
class TimmCspNextFamily(TimmFamily):
    name = "timm-cspnext"
    tiny_models = {"cspnext": timm_tiny("cspnext_s", **_TINY)}
    model_class = "timm.models.cspnext:CspNext"
    block_classes = ("timm.models.cspnext:CspNextBlock",)

    # ---- structure -------------------------------------------------------------------------------------
    def stages(self, model: nn.Module) -> list[nn.ModuleList]:
        return [_csp_layer(model, s).blocks for s in range(len(model.stages))]

    def is_droppable(self, block: nn.Module) -> bool:
        return block.add_identity  # False in the last stage

    def branch_outputs(self, block: nn.Module) -> list[nn.Module]:
        return [block.conv2.pointwise_conv.conv]

    def branch_inputs(self, block: nn.Module) -> list[nn.Module]:
        return [block.conv1.conv]

    def stage_entry_outputs(self, model: nn.Module, stage: int) -> list[nn.Module]:
        return [_csp_layer(model, stage).main_conv.conv]

    def stage_exit_inputs(self, model: nn.Module, stage: int) -> list[nn.Module]:
        return [_csp_layer(model, stage).final_conv.conv]  # on both paths, after the channel gate

    # ---- saving ------------------------------------------------------------------------------------------
    def block_args(self, model: nn.Module) -> dict[str, Any]:
        return {"depths": [len(stage) for stage in self.stages(model)], "deepen_factor": 1.0}

    native_reload_why = "timm builds at least one block per CSPNeXt stage: a stage left empty has no config"

    def reloads_natively(self, model: nn.Module) -> bool:
        """Whether timm rebuilds it: every stage keeps a block (timm builds `max(depth, 1)` per stage)."""
        return not getattr(model, REMOVED_ATTR, None) or all(len(stage) for stage in self.stages(model))
