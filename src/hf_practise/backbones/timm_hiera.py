"""timm Hiera: one flat `blocks` list of pre-norm transformer blocks, cut into stages by the model's `stage_ends`.

A stage's first block (but the first stage's) widens the stream and pools its tokens (`do_expand`: the shortcut
goes through `proj`, or through max and mean pooling, and the attention pools its queries), so it stays; every
other block keeps its input's shape and is a candidate. A block reads the stream through `attn.qkv` (after
`norm1`) and `mlp.fc1` (after `norm2`) and writes it through `attn.proj` and `mlp.fc2` (then the optional layer
scale); a widening block also writes the new stream through its shortcut `proj`. The stream entering the first
stage is written by the patch embedding's conv (position embeddings are added after it; the token unrolling only
permutes tokens), and the stream leaving a stage is read by the next stage's first block (`attn.qkv`, `proj`);
the head pools the last stage's tokens, then normalises them. The blocks of a stage all attend alike (mask-unit
attention and its window are fixed per stage), and the entry points let `stages` from `model_args` override
theirs, so plain timm reloads the result.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from .registry import register_family
from .timm_common import TimmFamily
from .tiny import timm_tiny, tiny_variants


@register_family
class TimmHieraFamily(TimmFamily):
    name = "timm-hiera"
    finetune_optimizer = "adamw"  # LayerNorm, like ViT
    tiny_models = tiny_variants(
        timm_tiny,
        {
            "hiera": dict(arch="hiera_tiny_224"),
            # absolute window position embeddings, pooled shortcuts (no `proj`), layer scale (at 0.5: timm's 1e-5
            # would make every block an identity)
            "hiera-abswin": dict(arch="hiera_small_abswin_256", init_values=0.5, global_pos_size=(8, 8)),
        },
        # 32x32 inputs: 8x8 tokens (one mask unit), then 4x4, 2x2, 1x1
        img_size=32,
        embed_dim=8,
        stages=(2, 2, 3, 2),
    )
    model_class = "timm.models.hiera:Hiera"
    block_classes = ("timm.models.hiera:HieraBlock",)

    # ---- structure -------------------------------------------------------------------------------------
    def stages(self, model: nn.Module) -> list[list[nn.Module]]:
        starts = [0] + [end + 1 for end in model.stage_ends[:-1]]
        return [list(model.blocks)[start : end + 1] for start, end in zip(starts, model.stage_ends)]

    def is_droppable(self, block: nn.Module) -> bool:
        return not block.do_expand and block.attn.q_stride == 1

    def branch_outputs(self, block: nn.Module) -> list[nn.Module]:
        return [block.attn.proj, block.mlp.fc2] + ([block.proj] if block.proj is not None else [])

    def branch_inputs(self, block: nn.Module) -> list[nn.Module]:
        return [block.attn.qkv, block.mlp.fc1]

    def stage_entry_outputs(self, model: nn.Module, stage: int) -> list[nn.Module]:
        return [model.patch_embed.proj] if stage == 0 else []  # later stages: written by their first block

    def stage_exit_inputs(self, model: nn.Module, stage: int) -> list[nn.Module]:
        stages = self.stages(model)
        if stage + 1 == len(stages):
            return []  # pooled, then the head's norm
        first = stages[stage + 1][0]
        # its MLP reads the widened stream, not this stage's
        return [first.attn.qkv] + ([first.proj] if first.proj is not None else [])

    def remove_blocks(self, model: nn.Module, gone: set[tuple[int, int]]) -> None:
        """Rebuild `blocks` without them, with the stage ends (and the features' modules, and the token re-rolling
        schedule, both indexed by block) that timm computes for the new depths."""
        from timm.models.hiera import Reroll

        stages = self.stages(model)
        kept = [[b for i, b in enumerate(stage) if (s, i) not in gone] for s, stage in enumerate(stages)]
        model.blocks = nn.ModuleList([b for stage in kept for b in stage])
        model.stage_ends = [sum(len(stage) for stage in kept[: s + 1]) - 1 for s in range(len(kept))]
        for info, end in zip(model.feature_info, model.stage_ends):
            info["module"] = f"blocks.{end}"
        schedule = model.reroll.schedule[0][0]
        size = [n * s for n, s in zip(model.reroll.size, model.patch_stride)]
        model.reroll = Reroll(size, model.patch_stride, schedule, model.stage_ends, model.q_pool)

    def architecture_summary(self, model: nn.Module) -> dict[str, Any]:
        return {"depths": [len(stage) for stage in self.stages(model)]}

    # ---- saving ------------------------------------------------------------------------------------------
    def block_args(self, model: nn.Module) -> dict[str, Any]:
        return {"stages": [len(stage) for stage in self.stages(model)]}
