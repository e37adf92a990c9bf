"""timm EfficientViT (MIT-Han-lab: `EfficientVit` B0-B3 and `EfficientVitLarge` L1-L3), convolutional stages
then stages of lightweight multi-scale linear attention.

Stages are the `blocks` of `model.stages`. Each stage opens with a strided block without shortcut that widens
the stream (it stays, and writes the stream the stage's later blocks work on); every later block keeps its
input's shape and is a candidate: a residual MBConv or fused MBConv, or an attention block of two residual
parts, a `LiteMLA` context module and an MBConv local module. Each residual part reads the stream through its
first ungrouped conv (an MBConv's 1x1 expansion, a fused MBConv's full 3x3 conv, the attention's `qkv`) and writes
it through its last (the 1x1 projection); the attention's grouped aggregation convs take no adaptor. The stream
leaving a stage is read by the next stage's first block; the head's own 1x1 conv reads the last stage's output
but belongs to the frozen head. The stem's residual blocks are not candidates.

The entry points let `depths` from `model_args` override theirs, so plain timm reloads the result. timm counts a
stage's depth in two ways: in a convolutional stage of `EfficientVit` it counts the stage's first block, elsewhere
only the later blocks; such a first block is the one with a BatchNorm after its expansion conv (attention stages
build theirs without), which tells them apart even in a stage whose later blocks were all dropped.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from .base import ungrouped
from .registry import register_family
from .timm_common import TimmFamily, timm_class
from .tiny import timm_tiny

_TINY = dict(widths=(8, 16, 16, 24, 32), head_dim=8, head_widths=(32, 40), init="calibrate")


@register_family
class TimmEfficientViTFamily(TimmFamily):
    name = "timm-efficientvit"
    tiny_models = {
        # 32x32 inputs: 16x16 after the stem, then 8x8, 4x4, and the attention stages at 2x2 and 1x1
        "efficientvit": timm_tiny("efficientvit_b0", depths=(1, 2, 3, 2, 2), **_TINY),
        # fused MBConvs in the first convolutional stages, attention only in the last stage
        "efficientvit-large": timm_tiny("efficientvit_l1", depths=(1, 1, 2, 2, 2), **_TINY),
    }
    model_class = "timm.models.efficientvit_mit:EfficientVit"

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        try:
            kinds = tuple(
                timm_class(f"timm.models.efficientvit_mit:{k}") for k in ("EfficientVit", "EfficientVitLarge")
            )
        except (ImportError, AttributeError):
            return False
        return isinstance(model, kinds)

    # ---- structure -------------------------------------------------------------------------------------
    def stages(self, model: nn.Module) -> list[nn.Sequential]:
        return [stage.blocks for stage in model.stages]

    @staticmethod
    def _residual_parts(block: nn.Module) -> list[nn.Module]:
        """The residual parts of a block (their `main` branch adds to the stream), none for a stage's first block."""
        parts = [block.context_module, block.local_module] if hasattr(block, "context_module") else [block]
        return [p for p in parts if p.shortcut is not None]

    def is_droppable(self, block: nn.Module) -> bool:
        return bool(self._residual_parts(block))  # a stage's first block has no shortcut: it widens the stream

    def branch_outputs(self, block: nn.Module) -> list[nn.Module]:
        parts = self._residual_parts(block) or [block]  # a stage's first block writes the stream it starts
        return [ungrouped(p.main)[-1] for p in parts]

    def branch_inputs(self, block: nn.Module) -> list[nn.Module]:
        parts = self._residual_parts(block) or [block]  # a stage's first block reads the previous stage's stream
        return [ungrouped(p.main)[0] for p in parts]

    # ---- saving ------------------------------------------------------------------------------------------
    def block_args(self, model: nn.Module) -> dict[str, Any]:
        large = isinstance(model, timm_class("timm.models.efficientvit_mit:EfficientVitLarge"))
        depths = [sum(hasattr(m, "shortcut") for m in model.stem.children())]  # the stem's residual blocks
        for stage in model.stages:
            first = stage.blocks[0].main
            counts_first = not large and not isinstance(getattr(first, "inverted_conv", first).norm, nn.Identity)
            depths.append(len(stage.blocks) - 1 + counts_first)
        return {"depths": depths}
