"""timm PVT v2 specifics: the key/value path read through its spatial-reduction conv where there is one (b2-li's
1x1 conv after a pool too), the adaptors around a hole, and native depths on every entry point.

The invariants every family shares (shapes, exact folding, reload) are in test_family_invariants.py.
"""

from __future__ import annotations

from hf_practise import get_family

from .tiny_models import assert_native_rebuild, dropped, pretrained_meta, sites_around, tiny_model


def test_adaptor_sites_around_a_hole():
    # depths 2-1-3-2; sr ratios 8-4-2-1
    assert sites_around("timm-pvt-v2/pvt-v2", "stages.2.blocks.1") == {
        ("stages.2.downsample.proj", "post"),
        ("stages.2.blocks.0.attn.proj", "post"),
        ("stages.2.blocks.0.mlp.fc2", "post"),
        ("stages.2.blocks.2.attn.q", "pre"),
        ("stages.2.blocks.2.attn.sr", "pre"),  # keys and values come from the reduced map
        ("stages.2.blocks.2.mlp.fc1", "pre"),
        ("stages.3.downsample.proj", "pre"),
    }
    assert sites_around("timm-pvt-v2/pvt-v2", "stages.3.blocks.0") == {
        ("stages.3.downsample.proj", "post"),
        ("stages.3.blocks.1.attn.q", "pre"),
        ("stages.3.blocks.1.attn.kv", "pre"),  # sr ratio 1: no reduction
        ("stages.3.blocks.1.mlp.fc1", "pre"),
    }


def test_linear_attention_reads_the_stream_through_its_pooled_conv():
    model = tiny_model("timm-pvt-v2/pvt-v2-linear")
    family = get_family(model)
    block = model.stages[3].blocks[1]
    assert family.branch_inputs(block) == [block.attn.q, block.attn.sr, block.mlp.fc1]


def test_every_entry_point_takes_the_depths_of_a_dropped_model():
    """The entry points let `depths` from `model_args` override theirs (built on the meta device: no weights)."""
    for arch, model in pretrained_meta("pvt_v2").items():
        assert_native_rebuild(arch, dropped(arch, model, "timm-pvt-v2", slice(1, 4)), model)
