"""Backbone families: one file per family, each registering itself with `@register_family`.

Every module of this package is imported here, so a new family file is found without edits elsewhere.
"""

from __future__ import annotations

import importlib
import pkgutil

from .base import AdaptorSite, BackboneFamily, BlockRef
from .registry import get_family, register_family, registered_families

__all__ = ["AdaptorSite", "BackboneFamily", "BlockRef", "get_family", "register_family", "registered_families"]

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    importlib.import_module(f"{__name__}.{_module}")
