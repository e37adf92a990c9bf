"""timm ByobNet ("bring your own blocks": GERNet, the `*ts`/`*t` ResNets and ResNeXts with SE/ECA/GC attention,
RegNetZ, BoTNet/HaloNet/LambdaNet, ResNet-CLIP, ...).

Stages are the Sequentials of `model.stages`. A basic, bottleneck, dark, edge or self-attention block whose
shortcut is the identity is a candidate, and so is a RepVGG or MobileOne block (training form) with its
BatchNorm identity branch; a block without a shortcut, one that downsamples, and blocks of other kinds
(MobileViT) stay. A block reads the stream through its first conv (`conv1_1x1` or `conv1_kxk`) and writes it
through its last (`conv3_1x1`, `conv2_kxk`, `conv2_1x1`), each only when ungrouped (a channel mix does not
fold into a grouped conv); the parallel convs of a RepVGG / MobileOne block both read and write it; a stage's
first block also writes and reads it through its shortcut conv. The stem's last conv writes the stream entering the first stage, `final_conv` reads
the one leaving the last.

ByobNet is built from a `ByoModelCfg` dataclass that `config.json` cannot carry, so a block-dropped model is
saved in hf_practise's format and reloads with `hf_practise.load_compressed`.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from .base import layers_of
from .registry import register_family
from .timm_common import TimmFamily
from .tiny import timm_tiny

#: block class -> (attribute of the conv that reads the stream, attribute of the conv that writes it)
_ENDS = {
    "BasicBlock": ("conv1_kxk", "conv2_kxk"),
    "BottleneckBlock": ("conv1_1x1", "conv3_1x1"),
    "DarkBlock": ("conv1_1x1", "conv2_kxk"),
    "EdgeBlock": ("conv1_kxk", "conv2_1x1"),
    "SelfAttnBlock": ("conv1_1x1", "conv3_1x1"),
}


def _known(block: nn.Module) -> bool:
    from timm.models import byobnet

    return type(block).__name__ in _ENDS and isinstance(block, getattr(byobnet, type(block).__name__))


def _reparam(block: nn.Module) -> bool:
    """A RepVGG / MobileOne block in training form: parallel conv branches plus a BatchNorm identity branch."""
    from timm.models.byobnet import MobileOneBlock, RepVggBlock

    return isinstance(block, (RepVggBlock, MobileOneBlock)) and block.reparam_conv is None


def _conv(block: nn.Module, end: int) -> list[nn.Module]:
    """The block's stream-reading (end 0) or stream-writing (end 1) convs, when a channel mix folds into them."""
    if _reparam(block):  # every parallel branch both reads and writes the stream
        attn = {id(m) for m in block.attn.modules()}
        return [c for c in layers_of(block, nn.Conv2d) if c.groups == 1 and id(c) not in attn]
    if not _known(block):
        return []
    convs = layers_of(getattr(block, _ENDS[type(block).__name__][end]), nn.Conv2d)[:1]
    return [c for c in convs if c.groups == 1]


def _shortcut_conv(block: nn.Module) -> list[nn.Module]:
    return [c for c in layers_of(getattr(block, "shortcut", None), nn.Conv2d) if c.groups == 1]


@register_family
class TimmByobNetFamily(TimmFamily):
    name = "timm-byobnet"
    native_reload = False
    native_reload_why = (
        "timm builds a ByobNet from a `ByoModelCfg` of `ByoBlockCfg` dataclasses, which `config.json` cannot carry"
    )
    # (kwargs overlay the model config: `width_factor` shrinks a real architecture without changing its blocks)
    tiny_models = {
        "gernet-basic-bottle": timm_tiny("gernet_s", width_factor=0.25),
        "resnext-ts-grouped": timm_tiny("resnext26ts", init="calibrate", width_factor=0.5),
        "seresnet-ts-attn": timm_tiny("seresnet33ts", init="calibrate", width_factor=0.25),
        "repvgg": timm_tiny("repvgg_a0", init="calibrate", width_factor=0.25),  # MobileOne: same code path
    }

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        try:
            from timm.models.byobnet import ByobNet
        except ImportError:
            return False
        return isinstance(model, ByobNet) and all(isinstance(s, nn.Sequential) for s in model.stages)

    def stages(self, model: nn.Module) -> list[nn.Sequential]:
        return list(model.stages)

    def is_droppable(self, block: nn.Module) -> bool:
        if _reparam(block):
            return block.identity is not None  # stride 1, same width: the identity branch exists
        return _known(block) and isinstance(block.shortcut, nn.Identity)

    def branch_outputs(self, block: nn.Module) -> list[nn.Module]:
        return _conv(block, 1) + _shortcut_conv(block)

    def branch_inputs(self, block: nn.Module) -> list[nn.Module]:
        return _conv(block, 0) + _shortcut_conv(block)

    def stage_entry_outputs(self, model: nn.Module, stage: int) -> list[nn.Module]:
        return [c for c in layers_of(model.stem, nn.Conv2d)[-1:] if c.groups == 1] if stage == 0 else []

    def stage_exit_inputs(self, model: nn.Module, stage: int) -> list[nn.Module]:
        if stage == len(model.stages) - 1:
            return [c for c in layers_of(model.final_conv, nn.Conv2d)[:1] if c.groups == 1]
        return super().stage_exit_inputs(model, stage)

    def block_args(self, model: nn.Module) -> dict[str, Any]:
        return {}  # not used: saved in hf_practise's format (native_reload is False)
