"""Family structure: candidates, dropping, native saving (parametrised over every registered ResNet variant)."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from hf_practise import get_family
from hf_practise.backbones import registered_families
from hf_practise.backbones.timm_resnet import TimmResNetFamily
from hf_practise.files import save_directory_atomically
from hf_practise.recoverability import build_pruned

from .conftest import reload_natively


def test_family_is_found_structurally(model):
    family = get_family(model)
    assert isinstance(family, TimmResNetFamily)
    assert len(family.stages(model)) == 4


def test_unsupported_model_error_lists_families():
    with pytest.raises(ValueError, match=r"No backbone adapter for `Sequential`; supported: .*timm-resnet"):
        get_family(nn.Sequential(nn.Conv2d(3, 4, 3)))
    assert TimmResNetFamily in registered_families()


@pytest.mark.parametrize("order", ["parent first", "subclass first"])
def test_the_most_specific_family_wins_whatever_the_registration_order(monkeypatch, order):
    import timm

    from hf_practise.backbones import registry
    from hf_practise.backbones.timm_deit import TimmDeiTDistilledFamily
    from hf_practise.backbones.timm_vit import TimmViTFamily

    families = [TimmViTFamily, TimmDeiTDistilledFamily]
    monkeypatch.setattr(registry, "_REGISTRY", families if order == "parent first" else families[::-1])
    small = dict(img_size=32, patch_size=8, depth=2, embed_dim=32, num_heads=2)
    distilled = timm.create_model("deit_tiny_distilled_patch16_224", **small)
    plain = timm.create_model("vit_tiny_patch16_224", **small)
    assert TimmViTFamily.matches(distilled)  # both match the distilled model; its own class is more specific
    assert type(get_family(distilled)) is TimmDeiTDistilledFamily
    assert type(get_family(plain)) is TimmViTFamily


def test_candidates_keep_shape_and_exclude_stage_openers(model, images):
    family = get_family(model)
    cands = family.candidates(model)
    blocks = family.blocks(model)
    assert len(cands) == sum(len(s) - 1 for s in family.stages(model)) + (
        1 if family.stages(model)[0][0].downsample is None else 0
    )
    shapes = {}
    hooks = [
        family.resolve(model, ref).register_forward_hook(
            lambda m, i, o, path=ref.path: shapes.__setitem__(path, (i[0].shape, o.shape))
        )
        for ref in blocks
    ]
    model(images)
    for h in hooks:
        h.remove()
    cand_paths = {c.path for c in cands}
    for ref in blocks:
        same = shapes[ref.path][0] == shapes[ref.path][1]
        if ref.path in cand_paths:
            assert same, ref.path
        elif ref.index > 0 or ref.stage > 0:
            assert not same, ref.path


@pytest.mark.parametrize("k", [1, 2, 3])
def test_dropping_k_blocks_removes_exactly_k(model, images, k):
    family = get_family(model)
    cands = family.candidates(model)
    before = sum(len(s) for s in family.stages(model))
    pruned = build_pruned(model, family, cands[-k:], adaptors=False)
    assert sum(len(s) for s in family.stages(pruned)) == before - k
    assert sum(len(s) for s in family.stages(model)) == before  # the original is untouched
    assert pruned(images).shape == model(images).shape


def test_dropping_a_downsampling_block_is_refused(model):
    family = get_family(model)
    opener = family.blocks(model)[len(family.stages(model)[0])]  # block 0 of stage 1
    with pytest.raises(ValueError, match="cannot be dropped"):
        build_pruned(model, family, [opener], adaptors=False)


def reload_in_plain_timm(save_dir, x, tmp_path=None) -> torch.Tensor:
    return reload_natively("timm", save_dir, x)


def test_native_save_reloads_with_plain_timm(model, images, tmp_path):
    family = get_family(model)
    pruned = build_pruned(model, family, family.candidates(model)[-2:], adaptors=False).eval()
    save_dir = save_directory_atomically(
        tmp_path / "saved",
        lambda d: family.save_pretrained(pruned, d, source_config={}),
    )
    config = json.loads((save_dir / "config.json").read_text())
    assert config["model_args"]["layers"] == [len(s) for s in family.stages(pruned)]
    assert config["num_classes"] == 5 and config["architecture"] == "resnet18" or config["architecture"]
    logits = reload_in_plain_timm(save_dir, images)
    with torch.no_grad():
        torch.testing.assert_close(logits, pruned(images), rtol=0, atol=0)


def test_save_refuses_a_non_empty_directory_and_leaves_it_alone(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="--overwrite"):
        save_directory_atomically(target, lambda d: (d / "x").write_text("new"))
    assert (target / "keep.txt").read_text() == "mine"

    def broken(d):
        (d / "half").write_text("partial")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        save_directory_atomically(target, broken, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temp folder left behind
    assert (target / "keep.txt").exists()
    save_directory_atomically(target, lambda d: (d / "x").write_text("new"), overwrite=True)
    assert sorted(p.name for p in target.iterdir()) == ["x"]


def test_a_whole_stage_can_go_and_still_reloads(images, tmp_path):
    """When every block of a stage keeps its shape (layer1 of a 64-wide ResNet), the stage may empty out."""
    import timm

    from hf_practise.backbones.tiny import randomise_norms

    model = randomise_norms(timm.create_model("resnet18", channels=(64, 16, 16, 32), num_classes=5))
    family = get_family(model)
    first_stage = [c for c in family.candidates(model) if c.stage == 0]
    assert len(first_stage) == 2
    pruned = build_pruned(model, family, first_stage, adaptors=False).eval()
    assert [len(s) for s in family.stages(pruned)] == [0, 2, 2, 2]
    save_dir = save_directory_atomically(tmp_path / "s", lambda d: family.save_pretrained(pruned, d, source_config={}))
    assert json.loads((save_dir / "config.json").read_text())["model_args"]["layers"] == [0, 2, 2, 2]
    logits = reload_in_plain_timm(save_dir, images)
    with torch.no_grad():
        torch.testing.assert_close(logits, pruned(images), rtol=0, atol=0)


def test_a_killed_save_leaves_nothing_that_the_next_save_keeps(tmp_path):
    """A kill during the save leaves `.out.tmp-PID-*`; the next save to the same place removes it (its writer is
    gone), and keeps a live writer's folder alone."""
    import os
    import subprocess

    dead = subprocess.run(["true"]).returncode == 0 and subprocess.Popen(["true"])
    dead.wait()
    stale = tmp_path / f".out.tmp-{dead.pid}-abc"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"half")
    live = tmp_path / f".out.tmp-{os.getpid()}-xyz"
    live.mkdir()
    save_directory_atomically(tmp_path / "out", lambda d: (d / "f.txt").write_text("ok"))
    assert not stale.exists() and live.exists() and (tmp_path / "out" / "f.txt").read_text() == "ok"
