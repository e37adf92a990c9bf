"""timm RepViT, in the training form that `timm.create_model(..., pretrained=True)` returns (conv + BatchNorm
pairs, the RepVGG depthwise token mixer with its branches apart); `model.fuse()` / timm's `reparameterize_model`
still fuse a compressed model for inference, and a model already fused is not handled.

Stages are the `blocks` of `model.stages`; each stage after the first opens with its own `downsample`, so every
block keeps its input's shape. A block runs a depthwise RepVGG token mixer (no layer a channel mix folds into),
squeeze-excite on every other block, then a residual MLP: `channel_mixer.conv1.c` reads the stream and
`channel_mixer.conv2.c` writes it. Whether a block has squeeze-excite follows its index parity in the stage (SE,
none, SE, ...), and timm rebuilds that from the depths alone, so the candidates are consecutive (SE, plain) pairs
and a stage's trailing unpaired block, which keep every later block's parity (`BlockGroup`, as for Swin). The
stream entering a stage is written by its downsampling's 1x1 conv and MLP (the stem's last conv for the first),
and read, after the last block, by the MLP of the next stage's downsampling pre-block. Plain timm reloads the
result with `model_args={"depth": [...]}`.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from .base import BlockGroup, BlockRef, parity_units, unit_refs
from .registry import register_family
from .timm_common import TimmFamily
from .tiny import timm_tiny

_TINY = dict(embed_dim=(8, 16, 16, 24), depth=(2, 3, 4, 2))


def _mlp_ends(mlp: nn.Module) -> tuple[nn.Conv2d, nn.Conv2d]:
    """The 1x1 convs of a RepViT MLP (`ConvNorm` conv + BatchNorm pairs): the one that reads, the one that writes."""
    return mlp.conv1.c, mlp.conv2.c


@register_family
class TimmRepViTFamily(TimmFamily):
    name = "timm-repvit"
    tiny_models = {
        "repvit": timm_tiny("repvit_m0_9", init="calibrate", **_TINY),
        "repvit-legacy": timm_tiny("repvit_m1", init="calibrate", **_TINY),  # BatchNorm'd 1x1 token-mixer branch
    }
    model_class = "timm.models.repvit:RepVit"
    # depthwise token mixers with SE, like MobileNetV3: AdamW. On the RepViT Fashion-MNIST teacher (92.20%), 500
    # images, 1,000 steps, seed 0, 22% / 50%: SGD 0.01 86.82% (its loss went non-finite twice; it ended at 1e-4) /
    # 87.59%, AdamW 1e-4 89.12% / 86.04%, AdamW 3e-4 91.07% / 88.38% (benchmarks/results/families.md)
    finetune_optimizer = "adamw"

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        if not super().matches(model):
            return False
        from timm.models.repvit import ConvNorm, RepViTBlock, RepVitMlp

        # the training form: a fused model's MLP convs are plain convs, and timm cannot rebuild it from its config
        return all(
            isinstance(b, RepViTBlock)
            and isinstance(b.channel_mixer, RepVitMlp)
            and isinstance(b.channel_mixer.conv1, ConvNorm)
            for stage in model.stages
            for b in stage.blocks
        )

    # ---- structure: units of blocks ----------------------------------------------------------------------
    def stages(self, model: nn.Module) -> list[list[BlockGroup]]:
        return [parity_units(stage.blocks) for stage in model.stages]

    def blocks(self, model: nn.Module) -> list[BlockRef]:
        return unit_refs(model, self.stages(model))

    def is_droppable(self, block: nn.Module) -> bool:
        return True  # blocks keep the shape; downsampling lives outside them

    def branch_outputs(self, block: nn.Module) -> list[nn.Module]:
        return [_mlp_ends(b.channel_mixer)[1] for b in block.blocks]

    def branch_inputs(self, block: nn.Module) -> list[nn.Module]:
        return [_mlp_ends(b.channel_mixer)[0] for b in block.blocks]

    def stage_entry_outputs(self, model: nn.Module, stage: int) -> list[nn.Module]:
        down = model.stages[stage].downsample
        if isinstance(down, nn.Identity):
            return [model.stem.conv2.c] if stage == 0 else []
        return [down.channel_downsample.c, _mlp_ends(down.ffn)[1]]

    def stage_exit_inputs(self, model: nn.Module, stage: int) -> list[nn.Module]:
        if stage + 1 < len(model.stages):
            down = model.stages[stage + 1].downsample
            if not isinstance(down, nn.Identity):
                return [_mlp_ends(down.pre_block.channel_mixer)[0]]
        return super().stage_exit_inputs(model, stage)

    def remove_blocks(self, model: nn.Module, gone: set[tuple[int, int]]) -> None:
        for s, stage in enumerate(model.stages):
            units = parity_units(stage.blocks)
            kept = [b for i, unit in enumerate(units) if (s, i) not in gone for b in unit.blocks]
            if len(kept) != len(stage.blocks):
                stage.blocks = nn.Sequential(*kept)

    def architecture_summary(self, model: nn.Module) -> dict[str, Any]:
        return {"depths": [len(stage.blocks) for stage in model.stages]}

    # ---- saving ------------------------------------------------------------------------------------------
    def block_args(self, model: nn.Module) -> dict[str, Any]:
        return {"depth": [len(stage.blocks) for stage in model.stages]}
