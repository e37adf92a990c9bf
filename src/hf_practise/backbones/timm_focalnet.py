"""timm Focal Modulation Networks (`FocalNet`: the small/large receptive field tiny-base, and the large-huge
post-norm ones).

Stages are the `blocks` of `model.layers`; each stage after the first opens with its own `downsample` (a strided
conv and a LayerNorm; the stem is the same for the first), so every block keeps its input's shape and all are
candidates. A block has two residual branches: focal modulation, which reads the stream through `modulation.f`
and writes it through `modulation.proj`, and an MLP of 1x1 convs (`mlp.fc1` ... `mlp.fc2`); in the post-norm
models (large and up) a LayerNorm and a layer scale follow each branch's last conv. The stream entering a stage
is written by its downsampling conv (the stem's for the first stage) and read, after the last block, by the
next stage's; the last stage's output is normalised, pooled and classified.

timm's entry points pass `depths` themselves (`dict(depths=..., **kwargs)`), so `model_args` cannot make a
model shallower: a block-dropped model is saved in hf_practise's format and reloads with
`hf_practise.load_compressed`.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from .base import layers_of
from .registry import register_family
from .timm_common import TimmFamily
from .tiny import timm_tiny


def _downsample_conv(model: nn.Module, stage: int) -> list[nn.Module]:
    """The strided conv that opens `stage` (the stem's for the first): none where the stage has no downsample."""
    return layers_of(model.stem if stage == 0 else model.layers[stage].downsample, nn.Conv2d)


@register_family
class TimmFocalNetFamily(TimmFamily):
    name = "timm-focalnet"
    native_reload = False
    native_reload_why = "timm's FocalNet entry points pass `depths` themselves, so `model_args` cannot set them"
    finetune_optimizer = "adamw"  # LayerNorm networks, like ConvNeXt
    # the entry points fix dims and depths, so the smallest real configuration stands in for a tiny one
    tiny_models = {"focalnet": timm_tiny("focalnet_tiny_srf")}
    model_class = "timm.models.focalnet:FocalNet"
    block_classes = ("timm.models.focalnet:FocalNetBlock",)

    # ---- structure -------------------------------------------------------------------------------------
    def stages(self, model: nn.Module) -> list[nn.ModuleList]:
        return [stage.blocks for stage in model.layers]

    def is_droppable(self, block: nn.Module) -> bool:
        return True  # both branches keep the shape; downsampling lives outside the blocks

    def branch_outputs(self, block: nn.Module) -> list[nn.Module]:
        return [block.modulation.proj, block.mlp.fc2]

    def branch_inputs(self, block: nn.Module) -> list[nn.Module]:
        return [block.modulation.f, block.mlp.fc1]

    def stage_entry_outputs(self, model: nn.Module, stage: int) -> list[nn.Module]:
        return _downsample_conv(model, stage)

    def stage_exit_inputs(self, model: nn.Module, stage: int) -> list[nn.Module]:
        if stage + 1 < len(model.layers):
            return _downsample_conv(model, stage + 1)
        return []  # normalised, pooled, then the classifier

    # ---- saving ------------------------------------------------------------------------------------------
    def block_args(self, model: nn.Module) -> dict[str, Any]:
        return {}  # not used: saved in hf_practise's format (native_reload is False)
