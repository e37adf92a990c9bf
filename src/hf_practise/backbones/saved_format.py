"""The hf_practise checkpoint format, for families whose own library cannot rebuild a block-dropped model.

timm builds EfficientNet/MobileNet stages from an architecture string and RegNet/ByobNet from a config
dataclass, and neither can be told "this stage has one block fewer" through `config.json`. Such a model is
saved as its family's library saves the *original* architecture (`config.json` with `architecture` and
`model_args`, `model.safetensors`) plus an `hf_practise` entry in `config.json` that lists the removed blocks.
`rebuild` builds the shallower network back from the original one; `hf_practise.load_compressed` reads the folder.
Plain timm pointed at such a folder builds the original network and fails on the missing keys: it never loads
a different network silently. A transformers model is saved the same way, with its config's `model_type` moved
into the `hf_practise` entry (`model_type` becomes "hf_practise"), so plain transformers refuses the folder
instead of building the original network with random weights where blocks are missing.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from .base import REMOVED_ATTR, BlockRef
from .registry import get_family

__all__ = ["FORMAT_KEY", "FORMAT_VERSION", "format_entry", "rebuild"]

FORMAT_KEY = "hf_practise"
FORMAT_VERSION = 1


def format_entry(model: nn.Module, family_name: str, units: str = "blocks") -> dict[str, Any]:
    """The `hf_practise` entry of `config.json`: which blocks to remove from the original architecture (and, for
    units other than blocks, what the indices count: `BackboneFamily.with_units`)."""
    rounds = getattr(model, REMOVED_ATTR, [])
    return {
        "format_version": FORMAT_VERSION,
        "family": family_name,
        **({"units": units} if units != "blocks" else {}),
        "removed_blocks": rounds,  # one list of [stage, index, path] per drop, in the indices of that moment
        "load_with": "hf_practise.load_compressed(path_or_repo_id)",
    }


def rebuild(model: nn.Module, entry: dict[str, Any], what: str) -> nn.Module:
    """Remove from the freshly built original `model` the blocks its `hf_practise` entry lists, in place."""
    version = entry.get("format_version")
    if version != FORMAT_VERSION:
        raise ValueError(
            f"{what} was saved in hf_practise format {version}; this hf_practise reads format {FORMAT_VERSION}. "
            "Upgrade hf_practise (`pip install -U hf-practise`)."
        )
    family = get_family(model).with_units(entry.get("units", "blocks"), model)
    for round_ in entry.get("removed_blocks", []):
        family.drop_blocks(model, [BlockRef(stage=s, index=i, path=p) for s, i, p in round_])
    return model
