"""The hf_practise checkpoint format, for families whose own library cannot rebuild a block-dropped model.

timm builds EfficientNet/MobileNet stages from an architecture string and RegNet/ByobNet from a config
dataclass, and neither can be told "this stage has one block fewer" through `config.json`. Such a model is
saved as its family's library saves the *original* architecture (`config.json` with `architecture` and
`model_args`, `model.safetensors`) plus an `hf_practise` entry in `config.json` that lists the removed blocks.
`load_compressed` builds the original architecture, removes those blocks and loads the weights strictly.
Plain timm pointed at such a folder builds the original network and fails on the missing keys: it never loads
a different network silently. A transformers model is saved the same way, with its config's `model_type` moved
into the `hf_practise` entry (`model_type` becomes "hf_practise"), so plain transformers refuses the folder
instead of building the original network with random weights where blocks are missing.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from torch import nn

from .backbones.base import REMOVED_ATTR, BlockRef

logger = logging.getLogger(__name__)

__all__ = ["FORMAT_KEY", "FORMAT_VERSION", "load_compressed", "format_entry"]

FORMAT_KEY = "hf_practise"
FORMAT_VERSION = 1


def format_entry(model: nn.Module, family_name: str) -> dict[str, Any]:
    """The `hf_practise` entry of `config.json`: which blocks to remove from the original architecture."""
    rounds = getattr(model, REMOVED_ATTR, [])
    return {
        "format_version": FORMAT_VERSION,
        "family": family_name,
        "removed_blocks": rounds,  # one list of [stage, index, path] per drop, in the indices of that moment
        "load_with": "hf_practise.load_compressed(path_or_repo_id)",
    }


def load_compressed(
    path_or_repo_id: str | Path,
    *,
    revision: str | None = None,
    token: str | bool | None = None,
    **model_kwargs: Any,
) -> nn.Module:
    """Load a model saved in hf_practise's format (or any timm/transformers checkpoint) from a folder or the Hub.

    Args:
        path_or_repo_id: a local folder or a Hub repo id (`ORG/NAME`).
        revision: a branch, tag or commit of a Hub repo.
        token: a Hub token for private repos.
        **model_kwargs: passed to the model constructor.

    Returns:
        The model in eval mode, with weights loaded strictly from `model.safetensors`.
    """
    from .hub import load_model

    model, _ = load_model(str(path_or_repo_id), revision=revision, token=token, **model_kwargs)
    return model.eval()


def rebuild(model: nn.Module, entry: dict[str, Any], what: str) -> nn.Module:
    """Remove from the freshly built original `model` the blocks its `hf_practise` entry lists, in place."""
    from .backbones import get_family

    version = entry.get("format_version")
    if version != FORMAT_VERSION:
        raise ValueError(
            f"{what} was saved in hf_practise format {version}; this hf_practise reads format {FORMAT_VERSION}. "
            "Upgrade hf_practise (`pip install -U hf-practise`)."
        )
    family = get_family(model)
    for round_ in entry.get("removed_blocks", []):
        family.drop_blocks(model, [BlockRef(stage=s, index=i, path=p) for s, i, p in round_])
    return model
