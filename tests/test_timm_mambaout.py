"""timm MambaOut specifics: where the adaptors go around a hole, and native depths on every entry point.

The invariants every family shares (exact folding, shapes, native reload) are in test_family_invariants.py.
"""

from __future__ import annotations

import pytest
import torch

from hf_practise import get_family
from hf_practise.backbones.base import BlockRef

from .tiny_models import tiny_model


def test_mambaout_adaptor_sites_around_a_hole():
    model = tiny_model("timm-mambaout/mambaout")  # depths 2-2-3-2
    family = get_family(model)
    hole = next(r for r in family.candidates(model) if (r.stage, r.index) == (2, 1))
    sites = {(s.key, s.side) for s in family.adaptor_sites(model, [hole])}
    assert sites == {
        ("stages.2.downsample.conv", "post"),  # writes the stage's input
        ("stages.2.blocks.0.fc2", "post"),
        ("stages.2.blocks.2.fc1", "pre"),
        ("stages.3.downsample.conv", "pre"),  # reads the stage's output
    }


@pytest.mark.parametrize("arch", ["mambaout_femto", "mambaout_kobe", "mambaout_small_rw", "mambaout_base_plus_rw"])
def test_every_entry_point_takes_the_depths_of_a_dropped_model(arch):
    """The entry points let `depths` from `model_args` override theirs (built on the meta device: no weights)."""
    import timm

    with torch.device("meta"):
        model = timm.create_model(arch, num_classes=5)
    family = get_family(model)
    assert family.name == "timm-mambaout"
    family.drop_blocks(model, [BlockRef(stage=2, index=1, path="stages.2.blocks.1")])
    assert family.reloads_natively(model)
    depths = family.block_args(model)["depths"]
    with torch.device("meta"):
        rebuilt = timm.create_model(arch, num_classes=5, depths=depths)
    assert [len(s.blocks) for s in rebuilt.stages] == depths
