"""timm DaViT specifics: a candidate is a (spatial, channel) pair whose four branches all take adaptors, a model
built without MLPs (`ffn=False`) offers its attentions only, and native depths on every entry point.

The invariants every family shares (shapes, exact folding, reload) are in test_family_invariants.py.
"""

from __future__ import annotations

import pytest

from hf_practise import get_family

from .tiny_models import assert_native_rebuild, dropped, pretrained_meta, tiny_model


@pytest.mark.parametrize(
    ("variant", "spatial", "channel"), [("davit", "0", "1"), ("davit-fl", "spatial_block", "channel_block")]
)
def test_adaptor_sites_around_a_hole(variant, spatial, channel):
    model = tiny_model(f"timm-davit/{variant}")  # depths 2-1-3-2 (pairs)
    family = get_family(model)
    hole = next(r for r in family.candidates(model) if r.path == "stages.2.blocks.1")
    assert {(s.key, s.side) for s in family.adaptor_sites(model, [hole])} == {
        ("stages.2.downsample.conv", "post"),
        *(
            (f"stages.2.blocks.0.{sub}.{layer}", "post")
            for sub in (spatial, channel)
            for layer in ("attn.proj", "mlp.fc2")
        ),
        *(
            (f"stages.2.blocks.2.{sub}.{layer}", "pre")
            for sub in (spatial, channel)
            for layer in ("attn.qkv", "mlp.fc1")
        ),
        ("stages.3.downsample.conv", "pre"),
    }


def test_blocks_without_mlps_offer_their_attentions():
    from hf_practise.backbones.tiny import timm_tiny

    model = timm_tiny("davit_tiny", embed_dims=(8, 16, 24, 32), num_heads=(1, 2, 2, 2), depths=(1, 1, 2, 1), ffn=False)(
        0
    )
    family = get_family(model)
    block = model.stages[2].blocks[0]
    assert family.branch_inputs(block) == [block[0].attn.qkv, block[1].attn.qkv]
    assert family.branch_outputs(block) == [block[0].attn.proj, block[1].attn.proj]


def test_every_entry_point_takes_the_depths_of_a_dropped_model():
    """The entry points let `depths` from `model_args` override theirs (built on the meta device: no weights)."""
    for arch, model in pretrained_meta("davit").items():
        assert_native_rebuild(arch, dropped(arch, model, "timm-davit", slice(1, 4)), model)
