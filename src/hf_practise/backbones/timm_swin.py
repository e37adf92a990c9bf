"""timm Swin Transformers (`SwinTransformer`, `SwinTransformerV2`).

Stages are the `blocks` of `model.layers`; each stage opens with its own patch merging (the patch embedding for
the first), so every block keeps its input's shape. A block's window shift follows its index parity (regular,
shifted, regular, ...) and timm rebuilds it from the depths alone, so dropping a single block would change what
every later block of its stage computes after a reload. The candidates are therefore units that keep the
parity: consecutive (regular, shifted) pairs, and a stage's trailing unpaired block; the scan scores, and
selection drops, a unit as a whole (`BlockGroup`). Inside a block, attention reads the stream through `qkv` and
writes it through `proj`, the MLP through `fc1` and `fc2` (SwinV2's position-bias MLP and its qkv, which the
model uses only through its weight, take no adaptor). The stream entering a stage is written by its patch
merging's reduction (the patch embedding's conv for the first); patch merging reads a concatenation of four
neighbours, where no channel adaptor fits. Plain timm reloads the result with `model_args={"depths": [...]}`.

With `units="branches"` (Swin V1's pre-norm blocks; see `branches.py`), every block's window attention and MLP are
candidates of their own. A block that loses both goes alone, which may move later blocks of its stage to the other
parity: such a model (like one that keeps a block without a branch) reloads with `hf_practise.load_compressed`.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from .base import BlockGroup, BlockRef, layers_of, parity_units, unit_blocks, unit_refs
from .registry import register_family
from .timm_vit import TimmViTFamily
from .tiny import timm_tiny

_TINY = dict(img_size=32, patch_size=2, window_size=4, embed_dim=16, depths=(2, 3, 2, 1), num_heads=(1, 2, 2, 4))


@register_family
class TimmSwinFamily(TimmViTFamily):
    name = "timm-swin"
    min_blocks_per_stage = 0  # a stage of depth 0 is still a patch merging: timm builds it
    scan_iterations = 400  # ranking tau against 1,000 steps: 0.800 at 100 and 200, 1.000 at 400
    # (benchmarks/results/scan_tau_summary.md)
    tiny_models = {
        "swin": timm_tiny("swin_tiny_patch4_window7_224", **_TINY),
        "swinv2": timm_tiny("swinv2_tiny_window8_256", **_TINY),
    }
    native_reload_why = (
        "timm gives every block the window shift of its index's parity, which a block dropped alone changes"
    )
    #: a V1 block's branches (`BranchUnitsMixin`); the block views the attention's output as windows and runs the
    #: attention between a window shift and partition and their reverse
    branch_parts = {"attn": ("norm1", "attn", "drop_path1"), "mlp": ("norm2", "mlp", "drop_path2")}
    reshaped_branches = inline_branches = frozenset({"attn"})

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        try:
            from timm.models.swin_transformer import SwinTransformer
            from timm.models.swin_transformer_v2 import SwinTransformerV2
        except ImportError:
            return False
        return isinstance(model, (SwinTransformer, SwinTransformerV2)) and all(
            isinstance(stage.blocks, (nn.Sequential, nn.ModuleList)) for stage in model.layers
        )

    # ---- structure: units of blocks ----------------------------------------------------------------------
    def block_stages(self, model: nn.Module) -> list[nn.Sequential | nn.ModuleList]:
        return [stage.blocks for stage in model.layers]

    def stages(self, model: nn.Module) -> list[list[BlockGroup]]:
        if self.units == "branches":
            return super().stages(model)
        return [parity_units(blocks) for blocks in self.block_stages(model)]

    def blocks(self, model: nn.Module) -> list[BlockRef]:
        if self.units == "branches":
            return super().blocks(model)
        return unit_refs(model, self.stages(model))

    def branch_blocks_ok(self, model: nn.Module) -> bool:
        from timm.models.swin_transformer import SwinTransformerBlock

        # V1's pre-norm block (SwinV2's normalise each branch's output, after it)
        return all(type(b) is SwinTransformerBlock for blocks in self.block_stages(model) for b in blocks)

    def is_droppable(self, block: nn.Module) -> bool:
        return True

    def branch_outputs(self, block: nn.Module) -> list[nn.Module]:
        return [layer for b in unit_blocks(block) for layer in TimmViTFamily.branch_outputs(self, b)]

    def branch_inputs(self, block: nn.Module) -> list[nn.Module]:
        return [layer for b in unit_blocks(block) for layer in TimmViTFamily.branch_inputs(self, b)]

    def stage_entry_outputs(self, model: nn.Module, stage: int) -> list[nn.Module]:
        merging = layers_of(model.layers[stage].downsample, nn.Linear)[-1:]
        if merging or stage > 0:
            return merging
        proj = getattr(model.patch_embed, "proj", None)
        return [proj] if isinstance(proj, nn.Conv2d) else []

    def stage_exit_inputs(self, model: nn.Module, stage: int) -> list[nn.Module]:
        return []  # patch merging reads four neighbours' channels at once; the head starts with a norm

    def remove_blocks(self, model: nn.Module, gone: set[tuple[int, int]]) -> None:
        if self.units == "branches":
            return super().remove_blocks(model, gone)
        for s, stage in enumerate(model.layers):
            units = parity_units(stage.blocks)
            kept = [b for i, unit in enumerate(units) if (s, i) not in gone for b in unit.blocks]
            if len(kept) != len(stage.blocks):  # the same container type (SwinV2 keeps a ModuleList)
                stage.blocks = nn.Sequential(*kept) if isinstance(stage.blocks, nn.Sequential) else nn.ModuleList(kept)

    # ---- saving ------------------------------------------------------------------------------------------
    def rebuilt_alike(self, model: nn.Module, rebuilt: nn.Module) -> bool:
        # every block keeps the window shift it was built with, whatever its index now
        def shifts(m: nn.Module) -> list[Any]:
            return [tuple(b.shift_size) for blocks in self.block_stages(m) for b in blocks]

        return shifts(model) == shifts(rebuilt)

    def block_args(self, model: nn.Module) -> dict[str, Any]:
        return {"depths": [len(stage.blocks) for stage in model.layers]}
