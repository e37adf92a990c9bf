"""Kept for `from hf_practise.hub import load_model`: loading lives in `hf_practise.loading`."""

from .loading import load_compressed, load_dataset_source, load_model

__all__ = ["load_compressed", "load_dataset_source", "load_model"]
