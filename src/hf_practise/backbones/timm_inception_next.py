"""timm InceptionNeXt (`MetaNeXt`: atto, tiny, small, base): ConvNeXt-like stages with inception depthwise token
mixing and BatchNorm.

Stages are the `blocks` of `model.stages`; each stage after the first opens with its own `downsample` (a BatchNorm
and a strided conv; the stem's conv, before its BatchNorm, is the first stage's), so every block keeps its input's
shape and all are candidates. A block is one residual branch: the inception token mixer (depthwise square and band
convs on three channel groups, the rest passed through: no channel mix folds into it), a BatchNorm, then an MLP
of 1x1 convs (`mlp.fc1` ... `mlp.fc2`, then a layer scale). `mlp.fc1` is the first layer that takes an adaptor
before a hole's later blocks, `mlp.fc2` writes the stream. The stream entering a stage is written by its
downsampling conv and read, after the last block, by the next stage's; the last stage's output is pooled and read
by the MLP head. The entry points let `depths` from `model_args` override theirs, so plain timm reloads the result
with `model_args={"depths": [...]}`.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from .registry import register_family
from .timm_common import TimmDownsampledStagesFamily
from .tiny import timm_tiny


@register_family
class TimmInceptionNeXtFamily(TimmDownsampledStagesFamily):
    name = "timm-inception-next"
    # 8 channels in the first stage (2 per depthwise group); layer scales at 0.5, not 1e-6
    tiny_models = {
        "inception-next": timm_tiny("inception_next_atto", dims=(8, 16, 24, 32), depths=(2, 2, 3, 2), ls_init_value=0.5)
    }
    model_class = "timm.models.inception_next:MetaNeXt"
    block_classes = ("timm.models.inception_next:MetaNeXtBlock",)

    # ---- structure (stages, entry and exit convs: TimmDownsampledStagesFamily) ------------------------------
    def is_droppable(self, block: nn.Module) -> bool:
        return True  # the branch keeps the shape; downsampling lives outside the blocks

    def branch_outputs(self, block: nn.Module) -> list[nn.Module]:
        return [block.mlp.fc2]

    def branch_inputs(self, block: nn.Module) -> list[nn.Module]:
        return [block.mlp.fc1]

    # ---- saving ------------------------------------------------------------------------------------------
    def block_args(self, model: nn.Module) -> dict[str, Any]:
        return {"depths": [len(stage.blocks) for stage in model.stages]}
