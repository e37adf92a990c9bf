"""timm InceptionNeXt specifics: no adaptor on the inception token mixer (depthwise convs on channel groups), the
adaptors around a hole, and native depths on every entry point.

The invariants every family shares (shapes, exact folding, reload) are in test_family_invariants.py.
"""

from __future__ import annotations

from .tiny_models import assert_native_rebuild, dropped, pretrained_meta, sites_around


def test_adaptor_sites_around_a_hole():
    assert sites_around("timm-inception-next/inception-next", "stages.2.blocks.1") == {
        ("stages.2.downsample.1", "post"),
        ("stages.2.blocks.0.mlp.fc2", "post"),
        ("stages.2.blocks.2.mlp.fc1", "pre"),  # after the token mixer and its BatchNorm
        ("stages.3.downsample.1", "pre"),
    }
    # stage 0: written by the stem's conv (before its BatchNorm)
    assert ("stem.0", "post") in sites_around("timm-inception-next/inception-next", "stages.0.blocks.0")


def test_every_entry_point_takes_the_depths_of_a_dropped_model():
    """The entry points let `depths` from `model_args` override theirs (built on the meta device: no weights)."""
    for arch, model in pretrained_meta("inception_next").items():
        assert_native_rebuild(arch, dropped(arch, model, "timm-inception-next", slice(1, 4)), model)
