"""timm FocalNet specifics: every pretrained architecture is handled (post-norm ones too), why a dropped model is
saved in hf_practise's format, and where the adaptors around a hole go.

The invariants every family shares (shapes, exact folding, reload) are in test_family_invariants.py.
"""

from __future__ import annotations

import pytest
import torch

from hf_practise import get_family

from .tiny_models import pretrained_meta, tiny_model


def test_every_pretrained_architecture_offers_every_block_and_cannot_take_depths():
    import timm

    # tiny-base (pre-norm), large-huge (post-norm, layer scale)
    for arch, model in pretrained_meta("focalnet").items():
        family = get_family(model)
        assert family.name == "timm-focalnet" and not family.native_reload, arch
        assert len(family.candidates(model)) == sum(len(stage.blocks) for stage in model.layers), arch
        # the entry point passes `depths` itself: model_args cannot make it shallower (hence load_compressed)
        with pytest.raises(TypeError, match="multiple values for keyword argument 'depths'"), torch.device("meta"):
            timm.create_model(arch, depths=[1, 1, 1, 1])


SITES = {  # hole -> (layer, side) of its adaptors: what writes the stream before it, what reads it after it
    "layers.1.blocks.1": {
        ("layers.1.downsample.proj", "post"),
        ("layers.1.blocks.0.modulation.proj", "post"),
        ("layers.1.blocks.0.mlp.fc2", "post"),
        ("layers.2.downsample.proj", "pre"),
    },
    "layers.0.blocks.0": {
        ("stem.proj", "post"),
        ("layers.0.blocks.1.modulation.f", "pre"),
        ("layers.0.blocks.1.mlp.fc1", "pre"),
        ("layers.1.downsample.proj", "pre"),
    },
}


@pytest.mark.parametrize("path", sorted(SITES))
def test_adaptor_sites_around_a_hole(path):
    model = tiny_model("timm-focalnet/focalnet")  # depths 2-2-6-2
    family = get_family(model)
    hole = next(r for r in family.candidates(model) if r.path == path)
    assert {(s.key, s.side) for s in family.adaptor_sites(model, [hole])} == SITES[path]
