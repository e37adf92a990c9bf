"""timm MaxxVit specifics: where the adaptors go around a hole, and which block-dropped models plain timm rebuilds.

The invariants every family shares (exact folding, shapes, native reload) are in test_family_invariants.py.
"""

from __future__ import annotations

import json

import torch

from hf_practise import get_family, load_compressed
from hf_practise.files import save_directory_atomically
from hf_practise.recoverability import build_pruned

from .conftest import reload_natively
from .tiny_models import tiny_model


def test_coatnet_adaptor_sites_around_a_transformer_block():
    model = tiny_model("timm-maxxvit/coatnet-cc")  # stage 2: MBConv (downsamples), transformer, transformer
    family = get_family(model)
    hole = next(r for r in family.candidates(model) if (r.stage, r.index) == (2, 1))
    sites = {(s.key, s.side) for s in family.adaptor_sites(model, [hole])}
    assert sites == {
        ("stages.2.blocks.0.conv3_1x1", "post"),  # the downsampling block writes the stage's stream (its
        # shortcut only pools: widths 16 -> 16)
        ("stages.2.blocks.2.attn.qkv", "pre"),  # the next block reads it through both its units
        ("stages.2.blocks.2.mlp.fc1", "pre"),
        ("stages.3.blocks.0.conv1_1x1", "pre"),  # the next stage reads it through its first unit and shortcut
        ("stages.3.blocks.0.shortcut.expand", "pre"),  # (widths 16 -> 24)
    }


def test_maxvit_adaptors_skip_the_relative_position_mlp():
    model = tiny_model("timm-maxxvit/maxvit-rmlp")
    family = get_family(model)
    hole = family.candidates(model)[1]
    keys = {s.key for s in family.adaptor_sites(model, [hole])}
    assert any(".attn_grid.attn.qkv" in k for k in keys) and any(".attn_block.mlp.fc2" in k for k in keys)
    assert not any("rel_pos" in k for k in keys), keys


def test_a_stage_whose_block_types_timm_would_not_rebuild_is_saved_for_the_loader(tmp_path):
    """timm fills a stage with its config's block types, the last repeated: dropping the transformer between two
    MBConvs of a (C, T, C) stage would rebuild (C, T), so the family saves that model in hf_practise's format."""
    import timm

    torch.manual_seed(0)
    model = timm.create_model(
        "coatnet_nano_cc_224",
        num_classes=5,
        img_size=32,
        embed_dim=(8, 16, 16, 24),
        depths=(1, 1, 3, 1),
        block_type=("C", "C", ("C", "T", "C"), "T"),
        stem_width=8,
        transformer_dim_head=8,
    ).eval()
    family = get_family(model)
    assert family.name == "timm-maxxvit"
    refs = {(r.stage, r.index): r for r in family.candidates(model)}
    assert set(refs) == {(2, 1), (2, 2)}
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))

    mixed = build_pruned(model, family, [refs[2, 1]], adaptors=False).eval()  # leaves (C, C)
    assert not family.reloads_natively(mixed)
    folder = save_directory_atomically(tmp_path / "mixed", lambda d: family.save_pretrained(mixed, d, source_config={}))
    assert "hf_practise" in json.loads((folder / "config.json").read_text())
    with torch.no_grad():
        torch.testing.assert_close(load_compressed(folder)(x), mixed(x), rtol=0, atol=0)

    kept = build_pruned(model, family, [refs[2, 2]], adaptors=False).eval()  # leaves (C, T): what timm builds
    assert family.reloads_natively(kept)
    folder = save_directory_atomically(tmp_path / "kept", lambda d: family.save_pretrained(kept, d, source_config={}))
    assert json.loads((folder / "config.json").read_text())["model_args"]["depths"] == [1, 1, 2, 1]
    with torch.no_grad():
        expected = kept(x)
    torch.testing.assert_close(reload_natively("timm", folder, x), expected, rtol=0, atol=0)
