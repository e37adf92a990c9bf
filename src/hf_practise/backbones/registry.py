"""The family registry: every family registers itself where it is defined, with `@register_family`.

A family is one file in this package (or the user's own code): the class says which models it handles, how
they are cut into blocks and saved, and which tiny models test it. Registering an incomplete family (an
abstract method left out) fails at import, not after a run.
"""

from __future__ import annotations

import inspect

from torch import nn

from .base import BackboneFamily

__all__ = ["register_family", "registered_families", "get_family"]

_REGISTRY: list[type[BackboneFamily]] = []


def register_family(family: type[BackboneFamily]) -> type[BackboneFamily]:
    """Add a family adapter (a class decorator); families registered later are tried first.

    Raises:
        TypeError: the class is not a `BackboneFamily`, leaves abstract methods out, or reuses a name.
    """
    if not (inspect.isclass(family) and issubclass(family, BackboneFamily)):
        raise TypeError(f"`register_family` takes a BackboneFamily subclass, not {family!r}.")
    if inspect.isabstract(family):
        missing = ", ".join(sorted(family.__abstractmethods__))
        raise TypeError(f"Family `{family.__name__}` cannot be registered: it does not implement {missing}.")
    for other in _REGISTRY:
        if other.name == family.name and other is not family:
            raise TypeError(f"Two families are named `{family.name}`: {other.__qualname__} and {family.__qualname__}.")
    if family not in _REGISTRY:
        _REGISTRY.append(family)
    return family


def registered_families() -> list[type[BackboneFamily]]:
    """Every registered family, the latest registered first."""
    return list(reversed(_REGISTRY))


def _specificity(family: type[BackboneFamily], model: nn.Module) -> tuple[int, int]:
    """Sort key, lowest first: the position of the family's model class in the model's MRO (a family that names
    no class comes after those that do), then the family's own depth (a subclass before its parent)."""
    mro = type(model).__mro__
    klass = family.model_type()
    position = mro.index(klass) if klass in mro else len(mro)
    return position, -len(family.__mro__)


def get_family(model: nn.Module) -> BackboneFamily:
    """The family adapter that handles `model`: of the families that match it, the most specific one (whose model
    class comes first in the model's MRO; a subclass family before its parent), whatever the import order.

    Raises:
        ValueError: no registered family handles the model.
    """
    matching = [family for family in registered_families() if family.matches(model)]
    if matching:
        return min(matching, key=lambda family: _specificity(family, model)).for_model(model)
    supported = ", ".join(sorted(f.name for f in _REGISTRY))
    raise ValueError(
        f"No backbone adapter for `{type(model).__name__}`; supported: {supported}. "
        "Add one by subclassing `hf_practise.backbones.BackboneFamily` and decorating it with `@register_family`."
    )
