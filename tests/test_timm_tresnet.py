"""timm TResNet specifics: which blocks are candidates, and the saved `layers` rebuild a block-dropped model on
every pretrained entry point.

The invariants every family shares (shapes, exact folding, native reload of a tiny model) are in
test_family_invariants.py.
"""

from __future__ import annotations

from hf_practise import get_family

from .tiny_models import assert_native_rebuild, pretrained_meta


def test_every_pretrained_entry_point_rebuilds_the_dropped_depths():
    for arch, model in pretrained_meta("tresnet").items():
        family = get_family(model)
        cands = family.candidates(model)
        # a stage's first block downsamples, but the first stage's keeps the stem's width in M/L/XL (basic blocks)
        first = 0 if model.body.layer1[0].downsample is not None else 1
        assert family.name == "timm-tresnet" and len(cands) == sum(len(s) - 1 for s in family.stages(model)) + first
        assert cands[0].path == ("body.layer1.0" if first else "body.layer1.1"), arch
        family.drop_blocks(model, [cands[0], cands[-1]])
        assert_native_rebuild(arch, family, model)
