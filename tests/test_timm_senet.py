"""timm legacy SENet specifics: a stage keeps one block (timm builds it whatever the depth), and the saved `layers`
rebuild a block-dropped model on every pretrained entry point, SENet-154's deep stem and 3x3 shortcuts included.

The invariants every family shares (shapes, exact folding, native reload of a tiny model) are in
test_family_invariants.py.
"""

from __future__ import annotations

import pytest
import torch

from hf_practise import get_family

from .tiny_models import assert_native_rebuild, pretrained_meta


def _meta(arch: str, **kwargs) -> torch.nn.Module:
    import timm

    with torch.device("meta"):
        return timm.create_model(arch, num_classes=5, **kwargs)


def test_timm_builds_one_block_for_an_empty_stage_so_one_stays():
    empty = _meta("legacy_seresnet18", layers=[0, 0, 0, 0])
    assert [len(s) for s in get_family(empty).stages(empty)] == [1, 1, 1, 1]
    model = _meta("legacy_seresnet18")  # layers 2-2-2-2: the first stage's first block keeps the stem's width
    family = get_family(model)
    assert [r.path for r in family.candidates(model)][:2] == ["layer1.0", "layer1.1"]
    assert family.feasible(model, family.candidates(model)[:2]) == family.candidates(model)[:1]
    with pytest.raises(ValueError, match="leaves stage 0 with 0 blocks"):
        family.drop_blocks(model, family.candidates(model)[:2])


def test_every_pretrained_entry_point_rebuilds_the_dropped_depths():
    models = pretrained_meta("senet")
    assert "legacy_senet154" in models
    for arch, model in models.items():
        family = get_family(model)
        assert family.name == "timm-senet", arch
        family.drop_blocks(model, family.feasible(model, family.candidates(model))[-3:])
        assert_native_rebuild(arch, family, model)
