"""timm Deep Layer Aggregation (`DLA`: DLA-34 ... 169, the -X ResNeXt and the Res2Net / Res2NeXt variants).

After the stem and two plain conv levels, `level2` ... `level5` are aggregation trees (`DlaTree`): a tree of
`levels` n holds two subtrees of n - 1 (`tree1`, `tree2`) and a tree of 1 holds two residual blocks and a `root`
that mixes their concatenated outputs (with the outputs of earlier subtrees, `children`, in the levels above). A
stage is one tree's blocks in the order they run. A block that keeps its input's shape (stride 1, as many output
channels as input ones) computes `relu(x + branch(x))` on a stream that a ReLU wrote, so it can go: it is
replaced by `DlaSkip`, which hands its input on, and the root still receives its two inputs (the earlier block's
output twice). Every leaf tree's second block is such a block, and so is the first block of every leaf tree but
a level's first (whose first block downsamples and widens), so a tree of `levels` n offers 2**n - 1 of its 2**n
blocks. A block reads the stream through `conv1` and writes it through its last conv
(`conv2` of a basic block, `conv3` of a bottleneck); the stream entering a tree is written by the previous level's
last conv (a root's, or the conv level's before `level2`) and the one leaving it is read by the next tree's first
block and its projection.

A tree is built from `levels` alone, which cannot say "this leaf has one block", so a block-dropped model is saved
in hf_practise's format and reloads with `hf_practise.load_compressed`; plain timm, which loads DLA weights
non-strictly, stops at the empty tensor each `DlaSkip` keeps at its block's first conv weight (a size mismatch)
instead of building the full tree with random blocks.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .base import layers_of
from .registry import register_family
from .timm_common import TimmFamily, timm_class
from .tiny import timm_tiny


class _Stub(nn.Module):
    """An empty `weight`: the key a dropped block's first conv had, at size 0 (see `DlaSkip`)."""

    def __init__(self, like: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("weight", like.new_zeros(0))


class DlaSkip(nn.Module):
    """Where a dropped DLA block was: its input, whatever the tree passes besides (the block's shortcut, equal to
    its input where the block keeps the shape).

    timm loads DLA weights non-strictly (`pretrained_strict=False`): pointed at a block-dropped checkpoint, it would
    build the full tree and leave the dropped blocks' weights random, silently. So the skip keeps, at the key of the
    block's first conv weight, an empty tensor: plain timm stops with a size mismatch there, and
    `hf_practise.load_compressed` (which puts the same skip there) loads it exactly.
    """

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.conv1 = _Stub(block.conv1.weight)

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        return x


def _trees(model: nn.Module) -> list[nn.Module]:
    tree = timm_class("timm.models.dla:DlaTree")
    return [child for child in model.children() if isinstance(child, tree)]


def _leaves(tree: nn.Module) -> list[nn.Module]:
    """The leaf trees (levels 1) of `tree`, in the order they run."""
    return [tree] if tree.root is not None else _leaves(tree.tree1) + _leaves(tree.tree2)


def _last_conv(block: nn.Module) -> nn.Conv2d:
    return getattr(block, "conv3", None) or block.conv2


@register_family
class TimmDLAFamily(TimmFamily):
    name = "timm-dla"
    native_reload = False
    native_reload_why = "timm builds a DLA as a tree from `levels`: no config gives one of its nodes fewer blocks"
    # channels and levels overlay the entry points' own: tiny versions of the three block kinds and of deeper trees
    tiny_models = {
        "dla": timm_tiny("dla34", init="calibrate", channels=(4, 8, 8, 16, 16, 32)),  # basic blocks
        # bottlenecks, a tree of levels 3, roots with a shortcut
        "dla-bottleneck": timm_tiny(
            "dla102", init="calibrate", channels=(4, 8, 8, 16, 16, 32), levels=(1, 1, 1, 3, 2, 1)
        ),
        "dla-res2next": timm_tiny("dla60_res2next", init="calibrate", channels=(4, 8, 32, 32, 64, 64)),  # Res2NeXt
    }
    model_class = "timm.models.dla:DLA"

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        if not super().matches(model):
            return False
        kinds = tuple(timm_class(f"timm.models.dla:{name}") for name in ("DlaBasic", "DlaBottleneck", "DlaBottle2neck"))
        return all(isinstance(leaf.tree1, kinds + (DlaSkip,)) for tree in _trees(model) for leaf in _leaves(tree))

    # ---- structure -------------------------------------------------------------------------------------
    def stages(self, model: nn.Module) -> list[list[nn.Module]]:
        return [
            [block for leaf in _leaves(tree) for block in (leaf.tree1, leaf.tree2) if not isinstance(block, DlaSkip)]
            for tree in _trees(model)
        ]

    def is_droppable(self, block: nn.Module) -> bool:
        unstrided = all(conv.stride == (1, 1) for conv in layers_of(block, nn.Conv2d))
        return unstrided and block.conv1.in_channels == _last_conv(block).out_channels

    def branch_outputs(self, block: nn.Module) -> list[nn.Module]:
        return [_last_conv(block)]

    def branch_inputs(self, block: nn.Module) -> list[nn.Module]:
        return [block.conv1]

    def stage_entry_outputs(self, model: nn.Module, stage: int) -> list[nn.Module]:
        before = model.level1 if stage == 0 else _leaves(_trees(model)[stage - 1])[-1].root
        return layers_of(before, nn.Conv2d)[-1:]

    def stage_exit_inputs(self, model: nn.Module, stage: int) -> list[nn.Module]:
        trees = _trees(model)
        if stage + 1 == len(trees):
            return []  # pooled, then the classifier
        first = _leaves(trees[stage + 1])[0]
        return [first.tree1.conv1] + layers_of(first.project, nn.Conv2d)

    def remove_blocks(self, model: nn.Module, gone: set[tuple[int, int]]) -> None:
        for s, blocks in enumerate(self.stages(model)):
            going = {id(b) for i, b in enumerate(blocks) if (s, i) in gone}
            for leaf in _leaves(_trees(model)[s]):
                for name in ("tree1", "tree2"):
                    if id(getattr(leaf, name)) in going:
                        setattr(leaf, name, DlaSkip(getattr(leaf, name)))

    # ---- saving ------------------------------------------------------------------------------------------
    def block_args(self, model: nn.Module) -> dict[str, Any]:
        return {}  # not used: saved in hf_practise's format (native_reload is False)
