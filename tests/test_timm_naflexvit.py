"""timm NaFlexViT specifics: the patch embedding's linear writes the stream, every entry point rebuilds a
block-dropped depth natively, and mixed RoPE (frequencies per block) is refused.

The invariants every family shares (exact folding, shapes, native reload) are in test_family_invariants.py.
"""

from __future__ import annotations

import torch

from hf_practise import get_family

from .tiny_models import assert_native_rebuild, dropped, pretrained_meta, tiny_model


def test_the_patch_embedding_linear_writes_the_stream():
    model = tiny_model("timm-naflexvit/radio")
    family = get_family(model)
    sites = {(s.key, s.side) for s in family.adaptor_sites(model, family.candidates(model)[1:2])}
    assert ("embeds.proj", "post") in sites and ("blocks.0.attn.proj", "post") in sites
    assert ("blocks.2.attn.qkv", "pre") in sites and ("blocks.2.mlp.fc1", "pre") in sites


def test_every_entry_point_takes_the_depth_of_a_dropped_model():
    """The entry points let `depth` from `model_args` override their config (built on the meta device: no weights)."""
    for arch, model in pretrained_meta("naflexvit").items():
        assert_native_rebuild(arch, dropped(arch, model, "timm-naflexvit", slice(3, 5)), model)


def test_mixed_rope_is_refused():
    import timm

    from hf_practise.backbones.timm_naflexvit import TimmNaFlexViTFamily

    with torch.device("meta"):
        mixed = timm.create_model("naflexvit_base_patch16_gap", rope_type="mixed", depth=3)
        axial = timm.create_model("naflexvit_base_patch16_gap", rope_type="axial", depth=3)
    # a mixed RoPE table has one row per block: `depth` alone would not rebuild it
    assert not TimmNaFlexViTFamily.matches(mixed) and TimmNaFlexViTFamily.matches(axial)
