"""Tiny, randomly initialised models of every registered family, for 32x32 inputs and 5 classes.

Each family lists its own tiny models beside its code (`BackboneFamily.tiny_models`); this collects them from
the registry, so a new family file is tested by the shared suite without edits here.
"""

from __future__ import annotations

import torch
from torch import nn

from hf_practise.backbones import registered_families

# family name -> variant -> builder(seed)
TINY_MODELS = {f.name: dict(f.tiny_models) for f in registered_families()}

#: "family/variant" ids, for parametrising
TINY_IDS = [f"{family}/{variant}" for family, variants in sorted(TINY_MODELS.items()) for variant in variants]


def tiny_model(model_id: str, seed: int = 0) -> nn.Module:
    family, variant = model_id.split("/")
    return TINY_MODELS[family][variant](seed)


def logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = model(x)
    return out if isinstance(out, torch.Tensor) else out.logits


@torch.no_grad()
def perturb_adaptors(model: nn.Module, seed: int = 2) -> None:
    """Move every adaptor of `model` away from the identity, as training would (steps of N(0, 0.1^2) per entry)."""
    from hf_practise.adaptors import adapted_layers

    g = torch.Generator().manual_seed(seed)
    for wrapper in adapted_layers(model):
        for a in wrapper.adaptors().values():
            a.weight.add_(0.1 * torch.randn(a.weight.shape, generator=g))
