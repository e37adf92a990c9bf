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

from .base import BlockRef, rebuild_stage

__all__ = ["BranchUnit", "BranchUnitsMixin", "NoBranch", "branch_present", "branch_units"]


class NoBranch(nn.Module):
    """Where a dropped branch was: a scalar zero (with `as_tuple`, `(zero, None)`, as attention modules that also
    return their weights do), however it is called (the block adds nothing)."""

    def __init__(self, as_tuple: bool = False) -> None:
        super().__init__()
        self.as_tuple = as_tuple

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        x = next(v for v in (*args, *kwargs.values()) if isinstance(v, torch.Tensor))
        zero = x.new_zeros(())
        return (zero, None) if self.as_tuple else zero


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
            y = y[0] if isinstance(y, tuple) else y  # an attention that also returns its weights
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


class BranchUnitsMixin:
    """Branch units for a family of pre-norm transformer blocks (put it first among the bases).

    The family names its blocks' branches (`branch_parts`: kind -> parts in call order, the norm first and the
    branch's main module second; `tuple_branches`: the kinds whose main module returns a tuple) and gives its stages
    of whole blocks as `block_stages`; with `units="branches"` this turns them into units, and removes, counts and
    summarises by unit. "attn" must be one of the kinds: the last attention always stays (without one, a class
    token never sees the image)."""

    branch_parts: dict[str, tuple[str, ...]] = {}
    tuple_branches: frozenset[str] = frozenset()

    def block_stages(self, model: nn.Module) -> list[Any]:
        raise NotImplementedError

    def branch_blocks_ok(self, model: nn.Module) -> bool:
        """Whether every block runs its branches as `x + main(norm(x))` with the named parts (the family's check)."""
        return True

    def stages(self, model: nn.Module) -> list[Any]:
        blocks = self.block_stages(model)
        return [branch_units(s, self.branch_parts) for s in blocks] if self.units == "branches" else blocks

    def offers_branches(self, model: nn.Module) -> bool:
        # a subclass with stages of its own (Swin, ...) is not made of these blocks
        own = getattr(type(self).stages, "__func__", type(self).stages) is BranchUnitsMixin.stages
        return bool(self.branch_parts) and own and self.branch_blocks_ok(model)

    def blocks(self, model: nn.Module) -> list[BlockRef]:
        if self.units != "branches":
            return super().blocks(model)
        names = {id(m): n for n, m in model.named_modules()}
        return [
            BlockRef(stage=s, index=i, path=f"{names[id(u.block)]}.{u.kind}")
            for s, units in enumerate(self.stages(model))
            for i, u in enumerate(units)
        ]

    def feasible(self, model: nn.Module, ordered: Sequence[BlockRef]) -> list[BlockRef]:
        """As the base class; with branch units, the last attention of the model stays, and that is the only rule
        (it keeps a block in the model)."""
        if self.units != "branches":
            return super().feasible(model, ordered)
        stages = self.stages(model)
        left = sum(u.kind == "attn" for units in stages for u in units)
        out = []
        for ref in ordered:
            if stages[ref.stage][ref.index].kind == "attn":
                if left == 1:
                    continue
                left -= 1
            out.append(ref)
        return out

    def drop_blocks(self, model: nn.Module, blocks: Sequence[BlockRef]) -> None:
        if self.units == "branches":
            gone = {(r.stage, r.index) for r in blocks}
            kept = [u for s, units in enumerate(self.stages(model)) for i, u in enumerate(units) if (s, i) not in gone]
            if not any(u.kind == "attn" for u in kept):
                raise ValueError(
                    f"Dropping these units leaves no attention in the model; a {self.name} model keeps at least one "
                    "(the class token reads the image through it). Drop fewer attention units."
                )
        super().drop_blocks(model, blocks)

    def remove_blocks(self, model: nn.Module, gone: set[tuple[int, int]]) -> None:
        """A block that loses one branch gets `NoBranch` there (identities for the branch's other parts); a block
        that loses every branch it still had leaves its stage, whose container is rebuilt as the base class does."""
        if self.units != "branches":
            return super().remove_blocks(model, gone)
        for s, (container, units) in enumerate(zip(self.block_stages(model), self.stages(model))):
            dropped = {id(u): (s, i) in gone for i, u in enumerate(units)}
            kept = []
            for block in container:
                mine = [u for u in units if u.block is block]
                if mine and all(dropped[id(u)] for u in mine):
                    continue  # every branch it still had goes: the block goes
                kept.append(block)
                for u in (u for u in mine if dropped[id(u)]):
                    for k, name in enumerate(u.part_names):
                        setattr(block, name, NoBranch(u.kind in self.tuple_branches) if k == 1 else nn.Identity())
            if len(kept) != len(container):
                rebuild_stage(model, container, kept)

    def reloads_natively(self, model: nn.Module) -> bool:
        # the library builds every block with both branches: a block without one is hf_practise's format
        return not _halved(model) and super().reloads_natively(model)

    def why_not_native(self, model: nn.Module) -> str:
        if _halved(model):
            return f"{self.library_name} builds every block with both its attention and its MLP"
        return super().why_not_native(model)

    def architecture_summary(self, model: nn.Module) -> dict[str, Any]:
        blocks = [b for stage in self.block_stages(model) for b in stage]
        summary = {**super().architecture_summary(model), "depths": [len(s) for s in self.block_stages(model)]}
        for kind, parts in self.branch_parts.items():
            without = [i for i, b in enumerate(blocks) if not branch_present(b, parts)]
            if without:
                summary[f"blocks without {'attention' if kind == 'attn' else 'MLP'}"] = without
        return summary


def _halved(model: nn.Module) -> bool:
    """Whether a block of `model` lost one of its branches (and kept the other)."""
    return any(isinstance(m, NoBranch) for m in model.modules())
