"""The family registry: every family registers itself where it is defined, with `@register_family`.

A family is one file in this package (or the user's own code): the class says which models it handles, how
they are cut into blocks and saved, and which tiny models test it. Registering an incomplete family (an
abstract method left out) fails at import, not after a run.
"""

from __future__ import annotations

import inspect

from torch import nn

from .base import BackboneFamily

__all__ = ["register_family", "registered_families", "get_family", "nothing_to_drop"]

_REGISTRY: list[type[BackboneFamily]] = []

_PLAIN_STACK = "its layers are one plain stack, with no shortcut around any of them"
_CONCATENATED = "its blocks concatenate parallel branches (Inception), with no shortcut around them"
#: model classes (module.Class) with no block PRACTISE can drop, and why
NOTHING_TO_DROP = {
    "timm.models.vgg.VGG": _PLAIN_STACK,
    "timm.models.densenet.DenseNet": (
        "each dense layer concatenates its output to its input, so no layer keeps its input's shape"
    ),
    "timm.models.rexnet.RexNet": (
        "every block widens the stream (its shortcut adds into the first channels of a wider output), so no block "
        "keeps its input's shape"
    ),
    "timm.models.dpn.DPN": "every block appends channels to its dense path, so no block keeps its input's shape",
    "timm.models.inception_v3.InceptionV3": _CONCATENATED,
    "timm.models.inception_v4.InceptionV4": _CONCATENATED,
    "transformers.models.mobilenet_v1.modeling_mobilenet_v1.MobileNetV1ForImageClassification": _PLAIN_STACK,
    "transformers.models.pp_lcnet.modeling_pp_lcnet.PPLCNetForImageClassification": _PLAIN_STACK,
}


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


def nothing_to_drop(model: nn.Module) -> str | None:
    """Why `model`'s architecture has no block PRACTISE can drop, for the known ones (VGG, DenseNet, Inception,
    MobileNetV1), else None."""
    for klass in type(model).__mro__:
        reason = NOTHING_TO_DROP.get(f"{klass.__module__}.{klass.__name__}")
        if reason is not None:
            return reason
    return None


def get_family(model: nn.Module) -> BackboneFamily:
    """The family adapter that handles `model`: of the families that match it, the most specific one (whose model
    class comes first in the model's MRO; a subclass family before its parent), whatever the import order.

    Raises:
        ValueError: no registered family handles the model, or its architecture has no block to drop (the
            message says why).
    """
    matching = [family for family in registered_families() if family.matches(model)]
    if matching:
        return min(matching, key=lambda family: _specificity(family, model)).for_model(model)
    reason = nothing_to_drop(model)
    if reason is not None:
        raise ValueError(
            f"There is nothing to drop in a `{type(model).__name__}`: {reason}. PRACTISE makes a network faster by "
            "removing residual blocks (blocks whose output keeps their input's shape and adds to it); this "
            "architecture has none."
        )
    supported = ", ".join(sorted(f.name for f in _REGISTRY))
    raise ValueError(
        f"No backbone adapter for `{type(model).__name__}`; supported: {supported}. "
        "Add one by subclassing `hf_practise.backbones.BackboneFamily` and decorating it with `@register_family`."
    )
