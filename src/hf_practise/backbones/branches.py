"""A transformer block's attention and MLP as candidates of their own (`CompressionConfig.units="branches"`).

A pre-norm block computes `x + attn(norm1(x))`, then `+ mlp(norm2(x))`: two residual branches in a row, each of which
keeps the stream's shape, so each can go on its own (the unit of DC-ViT, Zhang et al., CVPR 2024). A family that
offers branch units lists, per block, the parts of each branch in the order the block runs them (e.g. timm's
`("norm1", "attn", "ls1", "drop_path1")`, or `("norm1", "attn", "gamma_1", "drop_path1")` where the layer scale is
a parameter of the block); each stage of whole blocks (`block_stages`) becomes a sequence of `BranchUnit` views, one
per branch still present, and the algorithm (scan, adaptors, selection, stage cache, latency shares) works on them as
on blocks: a hole at a unit gets adaptors after the last linear of every branch before it and before the first
linear of every branch after it, exactly as around a dropped block.

Dropping a branch puts `NoBranch` in its place (its other module parts become identities, a layer-scale parameter
stays and scales the zero, and the branch returns a zero, so the block adds nothing there); dropping both branches
of a block removes the block. A model that kept a block without one of its branches is no architecture its library
builds from a config: it is saved in hf_practise's format (`saved_format`, with `"units": "branches"`) and reloads
with `hf_practise.load_compressed`; its ONNX export has no hf_practise op in it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from .base import BlockRef, rebuild_stage

__all__ = ["BranchUnit", "BranchUnitsMixin", "NoBranch", "branch_present", "branch_units"]


class NoBranch(nn.Module):
    """Where a dropped branch was: a zero however it is called (the block adds nothing). A scalar zero, or with
    `like_input` zeros of the input's shape (for a block that reshapes what the branch returns, as Swin's window
    attention is viewed back as windows); with `as_tuple`, `(zero, None)`, as attention modules that also return
    their weights do."""

    def __init__(self, as_tuple: bool = False, like_input: bool = False) -> None:
        super().__init__()
        self.as_tuple, self.like_input = as_tuple, like_input

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        x = next(v for v in (*args, *kwargs.values()) if isinstance(v, torch.Tensor))
        zero = torch.zeros_like(x) if self.like_input else x.new_zeros(())
        return (zero, None) if self.as_tuple else zero


class BranchUnit(nn.Module):
    """A view of one residual branch of `block` (its `parts`, by attribute name, in call order): calling it runs
    `x + branch(x)`. Only the branch's modules are its children, so two branches of one block never look alike to
    the latency table's twin pooling unless their layers are alike.

    By default the branch is its parts in turn: a module part is called (the main one, second, with the keyword
    arguments the unit is called with: for the block's first branch, those of the block, e.g. timm's `rope` or
    `attn_mask`), a tensor part (a layer scale held as a parameter) multiplies, a None part is skipped. `run`, where
    given, computes `x + branch(x)` instead (for a block that runs the branch with more than its parts)."""

    def __init__(
        self,
        block: nn.Module,
        kind: str,
        parts: Sequence[str],
        *,
        first: bool = False,
        run: Callable[..., torch.Tensor] | None = None,
    ) -> None:
        super().__init__()
        self.kind, self.part_names, self.first, self.run = kind, tuple(parts), first, run
        self.parts = nn.ModuleList([m for m in (getattr(block, p) for p in parts) if isinstance(m, nn.Module)])
        object.__setattr__(self, "block", block)  # not a child: the view must not own (or list) the whole block

    @property
    def main(self) -> nn.Module:
        """The branch's main module (its second part: the attention, the MLP)."""
        return getattr(self.block, self.part_names[1])

    @property
    def output_module(self) -> nn.Module:
        """The module of the model whose output is this unit's, when it is its block's last branch (the view itself
        never runs in the model): the block."""
        return self.block

    @property
    def entry(self) -> nn.Module:
        """The module whose input is this unit's input: the block for its first branch (so the unit is called as
        the model calls the block), else the branch's first part (its pre-norm)."""
        return self.block if self.first else self.parts[0]

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if self.run is not None:
            return self.run(self, x, *args, **kwargs)
        y = x
        for k, name in enumerate(self.part_names):
            part = getattr(self.block, name)
            if isinstance(part, nn.Module):
                y = part(y, **kwargs) if k == 1 else part(y)
                y = y[0] if isinstance(y, tuple) else y  # an attention that also returns its weights
            elif part is not None:
                y = part * y  # a layer scale held as a parameter
        return x + y


def branch_present(block: nn.Module, parts: Sequence[str]) -> bool:
    """Whether the branch made of `parts` is still in `block` (its main module is not a `NoBranch`)."""
    return not isinstance(getattr(block, parts[1]), NoBranch)


def branch_units(
    blocks: Sequence[nn.Module],
    branches: dict[str, Sequence[str]],
    runs: dict[str, Callable[..., torch.Tensor]] | None = None,
) -> list[BranchUnit]:
    """The branch units of `blocks`, in forward order (per block, its branches still present); `runs`: the kinds
    whose unit computes its branch otherwise than by its parts (`BranchUnit`'s `run`)."""
    first = next(iter(branches), None)
    return [
        BranchUnit(block, kind, parts, first=kind == first, run=(runs or {}).get(kind))
        for block in blocks
        for kind, parts in branches.items()
        if branch_present(block, parts)
    ]


class BranchUnitsMixin:
    """Branch units for a family of pre-norm transformer blocks (put it first among the bases).

    The family names its blocks' branches (`branch_parts`: kind -> parts in call order, the norm first and the
    branch's main module second; `tuple_branches`: the kinds whose main module returns a tuple; `reshaped_branches`
    and `inline_branches`: see below) and gives its stages of whole blocks as `block_stages` (a family whose
    candidates in units="blocks" are something else, e.g. Swin's pairs of blocks, keeps those in its own `stages`
    and gives `block_stages` beside them); with `units="branches"` this turns each stage of blocks into units, and
    removes, counts and summarises by unit. "attn" must be one of the kinds: the last attention always stays
    (without one, a class token never sees the image)."""

    branch_parts: dict[str, tuple[str, ...]] = {}
    tuple_branches: frozenset[str] = frozenset()
    #: the kinds whose block reshapes what the main module returns (Swin views its window attention's output as
    #: windows): dropped, the main module answers zeros of its input's shape instead of a scalar zero
    reshaped_branches: frozenset[str] = frozenset()
    #: the kinds whose block runs them with more than their parts (Swin's window shift and partition around its
    #: attention, BEiT's relative position bias computed by the layer): their unit runs the block with its other
    #: branches dropped for the call, which computes exactly `x + branch(x)`
    inline_branches: frozenset[str] = frozenset()

    def block_stages(self, model: nn.Module) -> list[Any]:
        raise NotImplementedError

    def branch_blocks_ok(self, model: nn.Module) -> bool:
        """Whether every block runs its branches as `x + main(norm(x))` with the named parts (the family's check)."""
        return True

    def no_branch(self, kind: str) -> NoBranch:
        """What takes the place of a dropped `kind` branch's main module."""
        return NoBranch(as_tuple=kind in self.tuple_branches, like_input=kind in self.reshaped_branches)

    def stages(self, model: nn.Module) -> list[Any]:
        blocks = self.block_stages(model)
        if self.units != "branches":
            return blocks
        runs = {kind: self._run_inline for kind in self.inline_branches}
        return [branch_units(stage, self.branch_parts, runs) for stage in blocks]

    def offers_branches(self, model: nn.Module) -> bool:
        # a subclass that changed `stages` without giving the blocks they are made of is not made of these blocks
        def owner(name: str) -> type:
            return next(k for k in type(self).__mro__ if name in vars(k))

        own = issubclass(owner("block_stages"), owner("stages"))
        return bool(self.branch_parts) and own and self.branch_blocks_ok(model)

    def _drop_branch(self, block: nn.Module, kind: str, parts: Sequence[str]) -> dict[str, nn.Module]:
        """Put `NoBranch` in the place of `block`'s `kind` branch (identities for its other module parts; a layer
        scale held as a parameter stays and scales the zero); returns the modules it took out, by name."""
        taken = {}
        for k, name in enumerate(parts):
            part = getattr(block, name)
            if isinstance(part, nn.Module):
                taken[name] = part
                setattr(block, name, self.no_branch(kind) if k == 1 else nn.Identity())
        return taken

    def _run_inline(self, unit: BranchUnit, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        """`x + branch(x)` for `unit`: its block run (with the arguments the model calls it with) with the block's
        other branches dropped for the call."""
        block, taken = unit.block, {}
        try:
            for kind, parts in self.branch_parts.items():
                if kind != unit.kind and branch_present(block, parts):
                    taken.update(self._drop_branch(block, kind, parts))
            out = block(x, *args, **kwargs)
        finally:
            for name, module in taken.items():
                setattr(block, name, module)
        return out[0] if isinstance(out, tuple) else out

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
        """A block that loses one branch gets `NoBranch` there (identities for the branch's other module parts; a
        layer-scale parameter stays); a block that loses every branch it still had leaves its stage, whose
        container is rebuilt as the base class does."""
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
                    self._drop_branch(block, u.kind, u.part_names)
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
