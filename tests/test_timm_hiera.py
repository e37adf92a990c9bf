"""timm Hiera specifics: stages cut from the flat block list by `stage_ends`, the widening blocks that stay,
adaptor sites, and a dropped model whose stage ends, feature modules and token re-rolling match timm's own build.

The invariants every family shares (exact folding, shapes, native reload) are in test_family_invariants.py.
"""

from __future__ import annotations

import pytest
import torch

from hf_practise import get_family
from hf_practise.recoverability import build_pruned

from .tiny_models import tiny_model


def test_a_stage_keeps_its_widening_block():
    model = tiny_model("timm-hiera/hiera")  # stages 2-2-3-2, blocks 0..8
    family = get_family(model)
    assert [r.path for r in family.candidates(model)] == [f"blocks.{i}" for i in (0, 1, 3, 5, 6, 8)]


@pytest.mark.parametrize("variant", ["hiera", "hiera-abswin"])
def test_adaptor_sites_around_a_hole(variant):
    model = tiny_model(f"timm-hiera/{variant}")
    family = get_family(model)
    hole = next(r for r in family.candidates(model) if r.path == "blocks.5")  # stage 2: blocks 4, 5, 6
    sites = {(s.key, s.side) for s in family.adaptor_sites(model, [hole])}
    # the widening block 4 writes the stage's input (through its shortcut `proj` where it has one)
    shortcut = {("blocks.4.proj", "post"), ("blocks.7.proj", "pre")} if variant == "hiera" else set()
    expected = {
        ("blocks.4.attn.proj", "post"),
        ("blocks.4.mlp.fc2", "post"),
        ("blocks.6.attn.qkv", "pre"),
        ("blocks.6.mlp.fc1", "pre"),
        ("blocks.7.attn.qkv", "pre"),  # the next stage's widening block reads the output
    }
    assert sites == expected | shortcut
    first = family.candidates(model)[0]
    assert ("patch_embed.proj", "post") in {(s.key, s.side) for s in family.adaptor_sites(model, [first])}


def test_a_dropped_model_is_what_timm_builds_for_its_stages():
    import timm

    model = tiny_model("timm-hiera/hiera")
    family = get_family(model)
    refs = {r.path: r for r in family.candidates(model)}
    pruned = build_pruned(model, family, [refs["blocks.1"], refs["blocks.5"], refs["blocks.6"]], adaptors=False)
    stages = family.block_args(pruned)["stages"]
    assert stages == [1, 2, 1, 2]
    rebuilt = timm.create_model("hiera_tiny_224", num_classes=5, img_size=32, embed_dim=8, stages=stages).eval()
    rebuilt.load_state_dict(pruned.state_dict())
    assert pruned.stage_ends == rebuilt.stage_ends == [0, 2, 3, 5]
    assert pruned.feature_info == rebuilt.feature_info
    assert pruned.reroll.schedule == rebuilt.reroll.schedule
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), rebuilt(x), rtol=0, atol=0)
        for ours, theirs in zip(pruned.forward_intermediates(x)[1], rebuilt.forward_intermediates(x)[1]):
            torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
