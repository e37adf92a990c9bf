"""Backbone families: one file per family, a small registry, and the base class they implement."""

from __future__ import annotations

from torch import nn

from .base import AdaptorSite, BackboneFamily, BlockRef
from .timm_common import TimmFamily
from .timm_convnext import TimmConvNeXtFamily
from .timm_resnet import TimmResNetFamily
from .timm_vit import TimmViTFamily
from .transformers_common import TransformersFamily
from .transformers_convnext import TransformersConvNextFamily
from .transformers_resnet import TransformersResNetFamily
from .transformers_vit import TransformersViTFamily

__all__ = [
    "AdaptorSite",
    "BackboneFamily",
    "BlockRef",
    "TimmConvNeXtFamily",
    "TimmFamily",
    "TimmResNetFamily",
    "TimmViTFamily",
    "TransformersConvNextFamily",
    "TransformersFamily",
    "TransformersResNetFamily",
    "TransformersViTFamily",
    "get_family",
    "register_family",
    "registered_families",
]

_REGISTRY: list[type[BackboneFamily]] = [
    TimmResNetFamily,
    TimmViTFamily,
    TimmConvNeXtFamily,
    TransformersResNetFamily,
    TransformersViTFamily,
    TransformersConvNextFamily,
]


def register_family(family: type[BackboneFamily]) -> type[BackboneFamily]:
    """Add a family adapter (usable as a class decorator); later registrations are tried first."""
    if family not in _REGISTRY:
        _REGISTRY.insert(0, family)
    return family


def registered_families() -> list[type[BackboneFamily]]:
    return list(_REGISTRY)


def get_family(model: nn.Module) -> BackboneFamily:
    """The family adapter that handles `model`.

    Raises:
        ValueError: no registered family handles the model.
    """
    for family in _REGISTRY:
        if family.matches(model):
            return family()
    supported = ", ".join(f.name for f in _REGISTRY)
    raise ValueError(
        f"No backbone adapter for `{type(model).__name__}`; supported: {supported}. "
        "Add one by subclassing `hf_practise.backbones.BackboneFamily` and calling `register_family`."
    )
