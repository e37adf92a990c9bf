"""timm PiT specifics: no adaptor at the pooling between stages (a grouped conv, and a linear on the class tokens
only), both heads of a distilled model frozen, and native depths on every entry point.

The invariants every family shares (exact folding, shapes, native reload) are in test_family_invariants.py.
"""

from __future__ import annotations

from hf_practise import get_family

from .tiny_models import assert_native_rebuild, dropped, pretrained_meta, tiny_model


def test_adaptor_sites_stay_inside_the_stage():
    model = tiny_model("timm-pit/pit")  # depths 2-3-2
    family = get_family(model)
    hole = next(r for r in family.candidates(model) if (r.stage, r.index) == (1, 1))
    assert {(s.key, s.side) for s in family.adaptor_sites(model, [hole])} == {
        ("transformers.1.blocks.0.attn.proj", "post"),
        ("transformers.1.blocks.0.mlp.fc2", "post"),
        ("transformers.1.blocks.2.attn.qkv", "pre"),
        ("transformers.1.blocks.2.mlp.fc1", "pre"),
    }
    first = family.candidates(model)[0]  # stage 0: written by the patch embedding
    sites = {(s.key, s.side) for s in family.adaptor_sites(model, [first])}
    assert ("patch_embed.conv", "post") in sites and not any("pool" in key for key, _ in sites)


def test_both_heads_of_a_distilled_model_stay_frozen():
    model = tiny_model("timm-pit/pit-distilled")
    assert [id(m) for m in get_family(model).classifier(model)] == [id(model.head), id(model.head_dist)]
    plain = tiny_model("timm-pit/pit")
    assert get_family(plain).classifier(plain) is plain.head


def test_every_entry_point_takes_the_depths_of_a_dropped_model():
    """The entry points let `depth` from `model_args` override theirs (built on the meta device: no weights)."""
    for arch, model in pretrained_meta("pit").items():
        assert_native_rebuild(arch, dropped(arch, model, "timm-pit", slice(1, 3)), model)
