"""Kept for imports written before the loader moved: `load_compressed` lives in `hf_practise.loading`, the saved
format's helpers in `hf_practise.backbones.saved_format`."""

from __future__ import annotations

from .backbones.saved_format import FORMAT_KEY, FORMAT_VERSION, format_entry
from .loading import load_compressed

__all__ = ["FORMAT_KEY", "FORMAT_VERSION", "format_entry", "load_compressed"]
