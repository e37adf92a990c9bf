"""A transformer block's attention and MLP as candidates of their own (`CompressionConfig.units="branches"`).

A pre-norm block computes `x + attn(norm1(x))`, then `+ mlp(norm2(x))`: two residual branches in a row, each of which
keeps the stream's shape, so each can go on its own (the unit of DC-ViT, Zhang et al., CVPR 2024). A family that
offers branch units lists, per block, the parts of each branch in the order the block runs them (e.g. timm's
`("norm1", "attn", "ls1", "drop_path1")`); its stages become sequences of `BranchUnit` views, one per branch still
present, and the algorithm (scan, adaptors, selection, stage cache, latency shares) works on them as on blocks: a
hole at a unit gets adaptors after the last linear of every branch before it and before the first linear of every
branch after it, exactly as around a dropped block.

Dropping a branch puts `NoBranch` in its place (its parts become identities and the branch returns a scalar zero,
so the block adds nothing there); dropping both branches of a block removes the block. A model that kept a block
without one of its branches is no architecture its library builds from a config: it is saved in hf_practise's format
(`saved_format`, with `"units": "branches"`) and reloads with `hf_practise.load_compressed`; its ONNX export has no
hf_practise op in it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from .base import BlockRef

__all__ = ["BranchUnit", "NoBranch", "branch_present", "branch_units"]


class NoBranch(nn.Module):
    """Where a dropped branch was: a scalar zero, whatever it is called with (the block adds nothing)."""

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        return x.new_zeros(())


class BranchUnit(nn.Module):
    """A view of one residual branch of `block` (its `parts`, by attribute name, in call order): calling it runs
    `x + branch(x)`. Only the branch's modules are its children, so two branches of one block never look alike to
    the latency table's twin pooling unless their layers are alike."""

    def __init__(self, block: nn.Module, kind: str, parts: Sequence[str]) -> None:
        super().__init__()
        self.kind, self.part_names = kind, tuple(parts)
        self.parts = nn.ModuleList([getattr(block, p) for p in parts])
        object.__setattr__(self, "block", block)  # not a child: the view must not own (or list) the whole block

    @property
    def entry(self) -> nn.Module:
        """The module whose input is this unit's input (the branch's first part: the pre-norm)."""
        return self.parts[0]

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        y = x
        for part in self.parts:
            y = part(y)
        return x + y


def branch_present(block: nn.Module, parts: Sequence[str]) -> bool:
    """Whether the branch made of `parts` is still in `block` (its main module is not a `NoBranch`)."""
    return not isinstance(getattr(block, parts[1]), NoBranch)


def branch_units(blocks: Sequence[nn.Module], branches: dict[str, Sequence[str]]) -> list[BranchUnit]:
    """The branch units of `blocks`, in forward order (per block, its branches still present)."""
    return [
        BranchUnit(block, kind, parts)
        for block in blocks
        for kind, parts in branches.items()
        if branch_present(block, parts)
    ]


def unit_paths(model: nn.Module, units: Sequence[BranchUnit]) -> list[str]:
    """Dotted names of branch units: the block's name and the branch kind ("blocks.3.attn")."""
    names = {id(m): n for n, m in model.named_modules()}
    return [f"{names[id(u.block)]}.{u.kind}" for u in units]


def remove_branches(
    stages: Sequence[Sequence[BranchUnit]], gone: set[tuple[int, int]]
) -> list[tuple[int, list[nn.Module]]]:
    """Take the (stage, index) branch units out: a block that loses one branch gets `NoBranch` (and identities for
    the branch's other parts); per stage that loses whole blocks, (stage, the blocks it keeps) for the family to
    rebuild its container with."""
    rebuilt = []
    for s, units in enumerate(stages):
        by_block: dict[int, list[tuple[BranchUnit, bool]]] = {}
        blocks: list[nn.Module] = []
        for i, unit in enumerate(units):
            if id(unit.block) not in by_block:
                blocks.append(unit.block)
            by_block.setdefault(id(unit.block), []).append((unit, (s, i) in gone))
        kept = []
        for block in blocks:
            entries = by_block[id(block)]
            if all(dropped for _, dropped in entries):
                continue  # every branch it still had goes: the block goes
            kept.append(block)
            for unit, dropped in entries:
                if dropped:
                    for k, name in enumerate(unit.part_names):
                        setattr(block, name, NoBranch() if k == 1 else nn.Identity())
        rebuilt.append((s, kept))
    return rebuilt


def refs_of(model: nn.Module, stages: Sequence[Sequence[BranchUnit]]) -> list[BlockRef]:
    """BlockRefs of branch units, named after their block and kind."""
    refs = []
    for s, units in enumerate(stages):
        for i, path in enumerate(unit_paths(model, units)):
            refs.append(BlockRef(stage=s, index=i, path=path))
    return refs
