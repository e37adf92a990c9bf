"""timm EdgeNeXt (`EdgeNeXt`: xx-small to base, and small-rw with strided first blocks): conv blocks, then split
depth-wise transpose attention blocks at the end of each stage.

Stages are the `blocks` of `model.stages`; each stage after the first opens with its own `downsample` (a LayerNorm
and a strided conv; the stem's conv is the first stage's), except in small-rw, whose stages open with a strided conv
block instead (its depthwise conv is also the shortcut, so that block changes the shape and is no candidate). A
stage's last `global_block_counts[i]` blocks are split transpose blocks, the others conv blocks; every other block
keeps its input's shape. A block has one residual branch, which ends with an MLP (`mlp.fc1` ... `mlp.fc2`, then a
layer scale) that writes the stream. A conv block reads the stream through a depthwise conv (no channel mix folds
into it) and then `mlp.fc1`; a split transpose block through depthwise convs on channel groups, then, after a
position encoding, a cross-covariance attention with an inner residual (`xca.qkv` ... `xca.proj`) whose sum
`mlp.fc1` reads: so `mlp.fc1` (and `xca.qkv`) take the adaptors before a hole's later blocks. The stream entering
a stage is written by its downsampling conv and read, after the last block, by the next stage's (or the next
stage's first block); the last stage's output is pooled, normalised and classified. The entry points let `depths`
from `model_args` override theirs and do not pass `global_block_counts`, so plain timm reloads the result with
`model_args={"depths": [...], "global_block_counts": [...]}` (dropping a transpose block lowers its stage's count).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from .registry import register_family
from .timm_common import TimmDownsampledStagesFamily
from .tiny import timm_tiny, tiny_variants

#: the timm class of the split transpose blocks
_TRANSPOSE = "timm.models.edgenext:SplitTransposeBlock"
#: tiny EdgeNeXts: 32x32 inputs, 8x8 maps in the first stage, then 4x4, 2x2, 1x1; layer scales at 1, not 1e-6
_TINY = dict(dims=(8, 16, 24, 32), depths=(2, 2, 3, 2), heads=(2, 2, 2, 2), ls_init_value=1.0)


@register_family
class TimmEdgeNeXtFamily(TimmDownsampledStagesFamily):
    name = "timm-edgenext"
    finetune_optimizer = "adamw"  # LayerNorm network, like ConvNeXt
    tiny_models = tiny_variants(
        timm_tiny,
        {
            "edgenext": {"arch": "edgenext_xx_small"},
            # strided first blocks (depthwise convs that double the width), overlapping stem
            "edgenext-rw": {"arch": "edgenext_small_rw", "dims": (8, 16, 32, 64)},
        },
        **_TINY,
    )
    model_class = "timm.models.edgenext:EdgeNeXt"
    block_classes = ("timm.models.edgenext:ConvBlock", _TRANSPOSE)

    @staticmethod
    def _is_transpose(block: nn.Module) -> bool:
        return hasattr(block, "xca")

    # ---- structure (stages, entry and exit convs: TimmDownsampledStagesFamily) ------------------------------
    def is_droppable(self, block: nn.Module) -> bool:
        # a conv block that downsamples or widens takes its shortcut after its depthwise conv
        return self._is_transpose(block) or not block.shortcut_after_dw

    def branch_outputs(self, block: nn.Module) -> list[nn.Module]:
        return [block.mlp.fc2]  # the attention's `proj` writes the block's inner residual, not the stream

    def branch_inputs(self, block: nn.Module) -> list[nn.Module]:
        return [block.xca.qkv, block.mlp.fc1] if self._is_transpose(block) else [block.mlp.fc1]

    # ---- saving ------------------------------------------------------------------------------------------
    def block_args(self, model: nn.Module) -> dict[str, Any]:
        return {
            "depths": [len(stage.blocks) for stage in model.stages],
            "global_block_counts": [sum(map(self._is_transpose, stage.blocks)) for stage in model.stages],
        }
