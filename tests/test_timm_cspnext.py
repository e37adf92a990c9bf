"""timm CSPNeXt specifics: the last stage's blocks (no identity) are no candidates, a model whose stages all keep a
block reloads with plain timm (unscaled depths), one with an empty stage with hf_practise's loader, and the
adaptors around a hole.

The invariants every family shares (shapes, exact folding, reload) are in test_family_invariants.py.
"""

from __future__ import annotations

import json

import torch

from hf_practise import get_family, load_compressed

from .tiny_models import assert_native_rebuild, pretrained_meta, sites_around, tiny_model


def test_adaptor_sites_around_a_hole():
    model = tiny_model("timm-cspnext/cspnext")
    family = get_family(model)
    assert [(r.stage, r.index) for r in family.candidates(model)][-1] == (2, 2)  # none of the last stage
    # depths 2-2-3-1
    assert sites_around("timm-cspnext/cspnext", "stages.2.1.blocks.1") == {
        ("stages.2.1.main_conv.conv", "post"),
        ("stages.2.1.blocks.0.conv2.pointwise_conv.conv", "post"),
        ("stages.2.1.blocks.2.conv1.conv", "pre"),
        ("stages.2.1.final_conv.conv", "pre"),
    }


def test_native_reload_while_every_stage_keeps_a_block(tmp_path):
    import timm

    model = tiny_model("timm-cspnext/cspnext")
    family = get_family(model)
    family.drop_blocks(model, [r for r in family.candidates(model) if r.index == 0])
    assert family.reloads_natively(model)
    family.save_pretrained(model, tmp_path, source_config={})
    assert json.loads((tmp_path / "config.json").read_text())["model_args"]["depths"] == [1, 1, 2, 1]
    reloaded = timm.create_model(f"local-dir:{tmp_path}", pretrained=True).eval()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(reloaded(x), model(x), rtol=0, atol=0)


def test_an_emptied_stage_reloads_with_the_loader(tmp_path):
    model = tiny_model("timm-cspnext/cspnext")
    family = get_family(model)
    family.drop_blocks(model, [r for r in family.candidates(model) if r.stage == 1])
    assert not family.reloads_natively(model)  # timm would build one block in stage 1
    family.save_pretrained(model, tmp_path, source_config={})
    reloaded = load_compressed(tmp_path).eval()
    assert [len(s) for s in family.stages(reloaded)] == [2, 0, 3, 1]
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(reloaded(x), model(x), rtol=0, atol=0)


def test_every_entry_point_takes_the_unscaled_depths_of_a_dropped_model():
    """The entry points let `depths` and `deepen_factor` from `model_args` override theirs (on the meta device: no
    weights); each stage with more than one block loses its first."""
    for arch, model in pretrained_meta("cspnext").items():
        family = get_family(model)
        assert family.name == "timm-cspnext", arch
        family.drop_blocks(model, [r for r in family.candidates(model) if len(family.stages(model)[r.stage]) > 1][:1])
        assert_native_rebuild(arch, family, model)
