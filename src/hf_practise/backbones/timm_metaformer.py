"""timm MetaFormer models (PoolFormer v1/v2, ConvFormer, CAFormer).

Stages are the `blocks` Sequentials of `model.stages`; each stage opens with its own `downsample` (the stem
for the first), so every block keeps its input's shape and all are droppable. A block has two residual
branches: a token mixer (pooling, which has no layer to adapt; a separable conv, `pwconv1` ... `pwconv2`; or
attention, `qkv` ... `proj`) and an MLP (`fc1` ... `fc2`, 1x1 convs or linear layers). The stream entering a
stage is written by its downsampling conv (the stem's conv for the first) and read after the last block by the
next stage's downsampling conv.

The timm entry points pass `depths` themselves, so `model_args` cannot make a model shallower: a block-dropped
model is saved in hf_practise's format and reloads with `hf_practise.load_compressed`.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from .base import ungrouped
from .registry import register_family
from .timm_common import TimmDownsampledStagesFamily
from .tiny import timm_tiny


@register_family
class TimmMetaFormerFamily(TimmDownsampledStagesFamily):
    name = "timm-metaformer"
    native_reload = False
    native_reload_why = "timm's MetaFormer entry points pass `depths` themselves, so `model_args` cannot set them"
    finetune_optimizer = "adamw"  # LayerNorm / GroupNorm networks, like ConvNeXt
    # the entry points fix dims and depths, so the smallest real configuration stands in for a tiny one
    tiny_models = {"poolformer": timm_tiny("poolformer_s12")}
    model_class = "timm.models.metaformer:MetaFormer"
    block_classes = ("timm.models.metaformer:MetaFormerBlock",)

    def is_droppable(self, block: nn.Module) -> bool:
        return True  # token mixer and MLP keep the shape; downsampling lives outside the blocks

    def branch_outputs(self, block: nn.Module) -> list[nn.Module]:
        return ungrouped(block.token_mixer)[-1:] + ungrouped(block.mlp)[-1:]

    def branch_inputs(self, block: nn.Module) -> list[nn.Module]:
        return ungrouped(block.token_mixer)[:1] + ungrouped(block.mlp)[:1]

    def block_args(self, model: nn.Module) -> dict[str, Any]:
        return {}  # not used: saved in hf_practise's format (native_reload is False)
