"""timm FasterNet (`FasterNet`: t0-t2, s, m, l): partial-conv MLP blocks of BatchNorm convs.

Stages are the `blocks` of `model.stages`; each stage after the first opens with its own `downsample` (a strided
patch-merging conv and a BatchNorm; `model.patch_embed` is the first stage's), so every block keeps its input's
shape and all are candidates. A block has one residual branch: a partial 3x3 conv on the stream's first quarter of
channels (the rest pass untouched), then an MLP of 1x1 convs (`mlp[0]`, BatchNorm, activation, `mlp[-1]`) on the
mix. No full-width layer reads the stream itself, so the branch's adaptors before a hole's later blocks sit on the
partial conv (its channels) and on the MLP's first conv (the whole mix); the MLP's last conv writes the stream
(an optional layer scale after it). The stream entering a stage is written by its patch-merging conv and read,
after the last block, by the next stage's; the last stage's output is pooled, then a 1x1 conv and the classifier.
The entry points let `depths` from `model_args` override theirs, so plain timm reloads the result with
`model_args={"depths": [...]}`.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from .registry import register_family
from .timm_common import TimmDownsampledStagesFamily
from .tiny import timm_tiny


@register_family
class TimmFasterNetFamily(TimmDownsampledStagesFamily):
    name = "timm-fasternet"
    # 8 channels at the first stage (2 through the partial conv), 32 at the last; a 16-wide pre-logits conv
    tiny_models = {"fasternet": timm_tiny("fasternet_t0", embed_dim=8, depths=(1, 2, 3, 2), feature_dim=16)}
    model_class = "timm.models.fasternet:FasterNet"
    block_classes = ("timm.models.fasternet:MLPBlock",)

    # ---- structure (stages, exit convs: TimmDownsampledStagesFamily) -------------------------------------------
    def is_droppable(self, block: nn.Module) -> bool:
        return True  # the branch keeps the shape; downsampling lives outside the blocks

    def branch_outputs(self, block: nn.Module) -> list[nn.Module]:
        return [block.mlp[-1]]

    def branch_inputs(self, block: nn.Module) -> list[nn.Module]:
        return [block.spatial_mixing.partial_conv3, block.mlp[0]]

    def stage_entry_outputs(self, model: nn.Module, stage: int) -> list[nn.Module]:
        # later stages: their patch-merging conv (TimmDownsampledStagesFamily); the first has the patch embedding
        return [model.patch_embed.proj] if stage == 0 else super().stage_entry_outputs(model, stage)

    # ---- saving ------------------------------------------------------------------------------------------
    def block_args(self, model: nn.Module) -> dict[str, Any]:
        return {"depths": [len(stage.blocks) for stage in model.stages]}
