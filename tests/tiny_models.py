"""Tiny, randomly initialised models of every registered family, for 32x32 inputs and 5 classes.

Each family lists its own tiny models beside its code (`BackboneFamily.tiny_models`); this collects them from
the registry, so a new family file is tested by the shared suite without edits here.
"""

from __future__ import annotations

from typing import Any

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


def pretrained_meta(module: str, **kwargs) -> dict[str, nn.Module]:
    """Every architecture of the timm `module` (e.g. "dla") that has pretrained weights, built with 5 classes (and
    `kwargs`) on the meta device: full size, no weights, no time."""
    import timm

    archs = sorted({name.split(".")[0] for name in timm.list_models(pretrained=True, module=module)})
    assert archs, f"timm {timm.__version__} has no pretrained architecture in `timm.models.{module}`"
    with torch.device("meta"):
        return {arch: timm.create_model(arch, num_classes=5, **kwargs) for arch in archs}


def dropped(arch: str, model: nn.Module, family_name: str, drop: slice) -> Any:
    """The family of `model` (an `arch`), checked to be `family_name`, once it dropped the candidates `drop`."""
    from hf_practise import get_family

    family = get_family(model)
    assert family.name == family_name, arch
    family.drop_blocks(model, family.candidates(model)[drop])
    return family


def assert_native_rebuild(arch: str, family: Any, model: nn.Module) -> None:
    """Plain timm builds `arch` with the family's `block_args` of the (block-dropped) meta `model` to the same
    state-dict shapes (on the meta device: no weights)."""
    import timm

    assert family.reloads_natively(model), arch
    with torch.device("meta"):
        rebuilt = timm.create_model(arch, num_classes=5, **family.block_args(model))
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}


def sites_around(model_id: str, path: str) -> set[tuple[str, str]]:
    """(layer, side) of each adaptor around the hole that dropping the candidate `path` of the tiny `model_id` leaves."""
    from hf_practise import get_family

    model = tiny_model(model_id)
    family = get_family(model)
    hole = next(r for r in family.candidates(model) if r.path == path)
    return {(s.key, s.side) for s in family.adaptor_sites(model, [hole])}
