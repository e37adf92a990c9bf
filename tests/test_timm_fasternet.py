"""timm FasterNet specifics: where the adaptors around a hole go (the partial conv reads a quarter of the stream,
the MLP's first conv the whole mix), and native depths on every entry point.

The invariants every family shares (shapes, exact folding, reload) are in test_family_invariants.py.
"""

from __future__ import annotations

from .tiny_models import assert_native_rebuild, dropped, pretrained_meta, sites_around


def test_every_entry_point_takes_the_depths_of_a_dropped_model():
    """The entry points let `depths` from `model_args` override theirs (built on the meta device: no weights)."""
    for arch, model in pretrained_meta("fasternet").items():
        assert_native_rebuild(arch, dropped(arch, model, "timm-fasternet", slice(1, 4)), model)


def test_adaptor_sites_around_a_hole():
    assert sites_around("timm-fasternet/fasternet", "stages.2.blocks.1") == {
        ("stages.2.downsample.reduction", "post"),
        ("stages.2.blocks.0.mlp.3", "post"),
        ("stages.2.blocks.2.spatial_mixing.partial_conv3", "pre"),
        ("stages.2.blocks.2.mlp.0", "pre"),
        ("stages.3.downsample.reduction", "pre"),
    }
    # stage 0: written by the patch embedding
    assert ("patch_embed.proj", "post") in sites_around("timm-fasternet/fasternet", "stages.0.blocks.0")
