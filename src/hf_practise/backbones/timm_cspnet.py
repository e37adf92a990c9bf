"""timm CspNet: CSPResNet(X)t, CSPDarkNet, the CS3 DarkNets and EdgeNets, and the plain DarkNets.

Stages are the `blocks` of `model.stages`. Every block (bottleneck, dark or edge) adds its branch to its input,
so all are candidates. A block reads the stream through `conv1` and writes it through its last conv (`conv3` of a
bottleneck, `conv2` of a dark or edge block), each only when ungrouped (a channel mix does not fold into a grouped
conv). A cross stage (`CrossStage`, `CrossStage3`) splits its expansion conv's output in two and runs its blocks
on one half: that conv (`conv_exp`) writes the stream (the adaptor after it mixes both halves, exactly), and the
stage's own transition conv reads it after the last block (`conv_transition_b`, or `conv_transition` on the
concatenation of both halves in a CS3 stage). A DarkNet stage (`DarkStage`) runs its blocks on the output of its
downsampling conv (`conv_down`), and the next stage's `conv_down` reads what the last block leaves (the head pools
before its classifier).

timm builds a CspNet from a `CspModelCfg` dataclass that each entry point passes itself (`config.json` cannot carry
per-stage depths), so a block-dropped model is saved in hf_practise's format and reloads with
`hf_practise.load_compressed`.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from .base import layers_of
from .registry import register_family
from .timm_common import TimmFamily
from .tiny import timm_tiny

#: block class name -> (its stream-reading conv, its stream-writing conv)
_ENDS = {"BottleneckBlock": ("conv1", "conv3"), "DarkBlock": ("conv1", "conv2"), "EdgeBlock": ("conv1", "conv2")}


def _mixable(convs: list[nn.Module]) -> list[nn.Module]:
    return [c for c in convs if c.groups == 1]


def _end(block: nn.Module, end: int) -> list[nn.Module]:
    """The block's stream-reading (end 0) or stream-writing (end 1) conv, when a channel mix folds into it."""
    return _mixable([getattr(block, _ENDS[type(block).__name__][end]).conv])


def _is_cross(stage: nn.Module) -> bool:
    from timm.models.cspnet import CrossStage, CrossStage3

    return isinstance(stage, (CrossStage, CrossStage3))


@register_family
class TimmCspNetFamily(TimmFamily):
    name = "timm-cspnet"
    native_reload = False
    native_reload_why = "timm builds a CSPNet from a `CspModelCfg` dataclass that its entry points pass themselves; `config.json` cannot carry one"
    # the entry points fix widths and depths (kwargs replace the whole stage config, a dataclass that config.json
    # cannot carry): the smallest real architecture of each stage kind stands in for a tiny one
    tiny_models = {
        "cs3darknet": timm_tiny("cs3darknet_s", init="calibrate"),  # CS3 stages of dark blocks, 1-3-4-1
        "cspresnet": timm_tiny("cspresnet50", init="calibrate"),  # cross stages of bottlenecks, 3-3-5-2
        "darknet": timm_tiny("darknet17", init="calibrate"),  # DarkNet stages, one block each
    }
    model_class = "timm.models.cspnet:CspNet"
    block_classes = tuple(f"timm.models.cspnet:{name}" for name in _ENDS)

    # ---- structure -------------------------------------------------------------------------------------
    def stages(self, model: nn.Module) -> list[nn.Sequential]:
        return [stage.blocks for stage in model.stages]

    def is_droppable(self, block: nn.Module) -> bool:
        return True  # `x + branch(x)` in every block kind; downsampling and expansion live outside the blocks

    def branch_outputs(self, block: nn.Module) -> list[nn.Module]:
        return _end(block, 1)

    def branch_inputs(self, block: nn.Module) -> list[nn.Module]:
        return _end(block, 0)

    def stage_entry_outputs(self, model: nn.Module, stage: int) -> list[nn.Module]:
        st = model.stages[stage]
        if _is_cross(st):
            return [st.conv_exp.conv]
        return _mixable(layers_of(st.conv_down, nn.Conv2d)[-1:])

    def stage_exit_inputs(self, model: nn.Module, stage: int) -> list[nn.Module]:
        st = model.stages[stage]
        if _is_cross(st):
            return [getattr(st, "conv_transition_b", st.conv_transition).conv]
        if stage + 1 == len(model.stages):
            return []  # pooled, then the classifier
        following = model.stages[stage + 1]
        # the next stage reads the stream through its downsampling conv (a cross stage without one: `conv_exp`)
        readers = layers_of(following.conv_down, nn.Conv2d) or layers_of(
            getattr(following, "conv_exp", None), nn.Conv2d
        )
        return _mixable(readers[:1])

    # ---- saving ------------------------------------------------------------------------------------------
    def block_args(self, model: nn.Module) -> dict[str, Any]:
        return {}  # not used: saved in hf_practise's format (native_reload is False)
