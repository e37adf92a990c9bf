"""timm Pyramid Vision Transformer v2 (`PyramidVisionTransformerV2`: b0-b5, and b2-li with linear attention).

Stages are the `blocks` of `model.stages`; each stage after the first opens with its own `downsample` (an overlapping
patch embedding: a strided conv, then a LayerNorm; `model.patch_embed` is the first stage's), so every block keeps
its input's shape and all are candidates. A block is pre-norm with two residual branches. Its attention reads the
stream through the query projection `q` and through the first layer of its key/value path: the spatial-reduction
conv `sr` where keys and values come from a reduced map (a strided conv, or b2-li's 7x7 average pool and 1x1 conv),
else the key/value projection `kv`; it writes the stream through `proj`. Its MLP reads it through `fc1` and writes
it through `fc2` (a depthwise conv between them). The stream entering a stage is written by its patch embedding's
conv; after the last block it is normalised (each stage has its own LayerNorm) and read by the next stage's conv,
or, after the last stage, averaged and classified. The entry points let `depths` from `model_args` override
theirs, so plain timm reloads the result with `model_args={"depths": [...]}`.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from .registry import register_family
from .timm_common import TimmDownsampledStagesFamily
from .tiny import timm_tiny

#: tiny PVT v2s: 32x32 inputs, 8x8 tokens in the first stage, then 4x4, 2x2, 1x1
_TINY = dict(embed_dims=(8, 16, 24, 32), num_heads=(1, 1, 2, 2), depths=(2, 1, 3, 2))


@register_family
class TimmPvtV2Family(TimmDownsampledStagesFamily):
    name = "timm-pvt-v2"
    finetune_optimizer = "adamw"  # LayerNorm network
    tiny_models = {
        "pvt-v2": timm_tiny("pvt_v2_b0", **_TINY),
        "pvt-v2-linear": timm_tiny("pvt_v2_b2_li", **_TINY),  # keys and values from a 7x7 pool and a 1x1 conv
    }
    model_class = "timm.models.pvt_v2:PyramidVisionTransformerV2"
    block_classes = ("timm.models.pvt_v2:Block",)

    # ---- structure (stages, exit convs: TimmDownsampledStagesFamily) -------------------------------------------
    def is_droppable(self, block: nn.Module) -> bool:
        return True  # both branches keep the shape; the patch embeddings live outside the blocks

    def branch_outputs(self, block: nn.Module) -> list[nn.Module]:
        return [block.attn.proj, block.mlp.fc2]

    def branch_inputs(self, block: nn.Module) -> list[nn.Module]:
        attn = block.attn
        return [attn.q, attn.kv if attn.sr is None else attn.sr, block.mlp.fc1]

    def stage_entry_outputs(self, model: nn.Module, stage: int) -> list[nn.Module]:
        # later stages: their patch embedding (TimmDownsampledStagesFamily); the first has the model's own
        return [model.patch_embed.proj] if stage == 0 else super().stage_entry_outputs(model, stage)

    # ---- saving ------------------------------------------------------------------------------------------
    def block_args(self, model: nn.Module) -> dict[str, Any]:
        return {"depths": [len(stage.blocks) for stage in model.stages]}
