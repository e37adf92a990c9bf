"""timm FastViT (and the MobileCLIP image towers `fastvit_mci*`), in the training form that
`timm.create_model(..., pretrained=True)` returns (MobileOne blocks with their conv, scale and BatchNorm identity
branches apart); timm's `reparameterize_model` still fuses a compressed model for inference. A model already fused
(or built with `inference_mode=True`) is not handled: after `reparameterize_model` its recorded `model_args` rebuild
the training form, whose keys its weights lack.

Stages are the `blocks` of `model.stages`; each stage after the first opens with its own `downsample` (a
depthwise large-kernel conv, then a 1x1 MobileOne block) and, in the attention stages, a conditional positional
encoding, so every block keeps its input's shape and all are droppable. A RepMixer block mixes tokens with
depthwise convs only (no layer a channel mix folds into), then runs a residual MLP that reads the stream through
`mlp.fc1` (after its depthwise conv and BatchNorm) and writes it through `mlp.fc2`; an attention block adds a
branch that reads through `token_mixer.qkv` (after its norm) and writes through `token_mixer.proj`. The stream
entering a stage is written by the parallel convs of its downsampling MobileOne block (the stem's last one for
the first stage); the layers that read a stage's output (the next stage's large-kernel conv, the depthwise
`final_conv` after the last stage) are grouped, so they take no adaptor. No block depends on its index in the
stage, and the entry points let `layers` from `model_args` override theirs, so plain timm reloads the result.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from .base import ungrouped
from .registry import register_family
from .timm_common import TimmDownsampledStagesFamily
from .tiny import timm_tiny, tiny_variants


def _parallel_convs(module: nn.Module) -> list[nn.Module]:
    """The ungrouped convs of a MobileOne or large-kernel block (training form): parallel branches that all read
    its input and, summed, write its output; the block's squeeze-excite sees pooled channels and is left out."""
    excite = {id(m) for m in module.se.modules()}
    return [c for c in ungrouped(module) if id(c) not in excite]


@register_family
class TimmFastViTFamily(TimmDownsampledStagesFamily):
    name = "timm-fastvit"
    tiny_models = tiny_variants(
        timm_tiny,
        {
            "fastvit": dict(arch="fastvit_t8", layers=(2, 2, 3, 2)),
            # attention in the last stage, with its conditional positional encoding; stride-1 downsampling keeps
            # 8x8 tokens there (on 32x32 inputs a strided one leaves a single token)
            "fastvit-sa": dict(arch="fastvit_sa12", layers=(1, 2, 2, 3), down_stride=1),
            # MobileCLIP: squeeze-excite in the downsampling of the last two stages, activation after the large kernel
            "fastvit-mci": dict(arch="fastvit_mci0", layers=(2, 1, 3, 2), down_stride=1),
        },
        init="calibrate",
        embed_dims=(8, 16, 16, 32),  # each divides the next (grouped downsampling); attention: 32 a head
        layer_scale_init_value=0.5,  # timm's 1e-5 would make every block an identity
    )
    model_class = "timm.models.fastvit:FastVit"
    # depthwise RepMixer stages and attention: AdamW. On the FastViT-SA Fashion-MNIST teacher (91.96%), 500 images,
    # 1,000 steps, seed 0, same blocks, 22% / 50%: SGD 0.01 91.84% (its loss went non-finite; it ended at 1e-3) /
    # 89.98%, AdamW 3e-4 91.96% / 91.62% (benchmarks/results/families.md)
    finetune_optimizer = "adamw"
    block_classes = ("timm.models.fastvit:RepMixerBlock", "timm.models.fastvit:AttentionBlock")

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        # the training form (every reparameterisable module of a fused model holds a `reparam_conv`), with a head
        # (a `fork_feat` model returns per-stage features)
        return (
            super().matches(model)
            and not model.fork_feat
            and all(getattr(m, "reparam_conv", None) is None for m in model.modules())
        )

    # ---- structure (stages: TimmDownsampledStagesFamily) ---------------------------------------------------
    def is_droppable(self, block: nn.Module) -> bool:
        return True  # token mixer and MLP keep the shape; downsampling lives outside the blocks

    def branch_outputs(self, block: nn.Module) -> list[nn.Module]:
        return ungrouped(block.token_mixer)[-1:] + ungrouped(block.mlp)[-1:]  # RepMixer: depthwise only

    def branch_inputs(self, block: nn.Module) -> list[nn.Module]:
        return ungrouped(block.token_mixer)[:1] + ungrouped(block.mlp)[:1]

    def stage_entry_outputs(self, model: nn.Module, stage: int) -> list[nn.Module]:
        down = model.stages[stage].downsample
        if not isinstance(down, nn.Identity):
            return _parallel_convs(down.proj[-1])
        return _parallel_convs(model.stem[-1]) if stage == 0 else []

    def stage_exit_inputs(self, model: nn.Module, stage: int) -> list[nn.Module]:
        if stage + 1 == len(model.stages):
            return _parallel_convs(model.final_conv)
        down = model.stages[stage + 1].downsample
        if not isinstance(down, nn.Identity):
            return _parallel_convs(down.proj[0])
        return super().stage_exit_inputs(model, stage)

    # ---- saving ------------------------------------------------------------------------------------------
    def block_args(self, model: nn.Module) -> dict[str, Any]:
        return {"layers": [len(stage.blocks) for stage in model.stages]}
