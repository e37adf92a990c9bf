"""Attention and MLP as candidates of their own (`CompressionConfig(units="branches")`, issue #25): the units, what
dropping one does to the network, where the adaptors go, the last attention kept, and the saved model's reload."""

from __future__ import annotations

import json

import pytest
import torch

from hf_practise import CompressionConfig, FinetuneConfig, LatencyConfig, PractiseCompressor, ScanConfig, get_family
from hf_practise.backbones.branches import NoBranch
from hf_practise.loading import load_compressed
from hf_practise.recoverability import build_pruned

from .tiny_models import tiny_model


def _branches(variant: str = "vit"):
    model = tiny_model(f"timm-vit/{variant}").eval()  # 4 blocks for "vit", 3 for "deit"
    return model, get_family(model).with_units("branches", model)


def test_each_block_offers_its_attention_and_its_mlp():
    model, family = _branches()
    assert [r.path for r in family.candidates(model)] == [
        f"blocks.{i}.{kind}" for i in range(4) for kind in ("attn", "mlp")
    ]
    assert get_family(model).units == "blocks"  # the registry's adapter is untouched
    assert [r.path for r in get_family(model).candidates(model)] == [f"blocks.{i}" for i in range(4)]


def test_a_family_without_branch_units_says_so():
    model = tiny_model("timm-resnet/resnet18")
    with pytest.raises(ValueError, match="--units blocks"):
        get_family(model).with_units("branches", model)
    with pytest.raises(ValueError, match="--units blocks"):
        PractiseCompressor(model, CompressionConfig(units="branches"))
    with pytest.raises(ValueError, match="'blocks', 'branches'"):
        CompressionConfig(units="heads")


@torch.no_grad()
def test_a_dropped_branch_adds_nothing_and_both_remove_the_block():
    model, family = _branches()
    refs = {r.path: r for r in family.candidates(model)}
    x = torch.randn(2, 3, 32, 32)
    pruned = build_pruned(model, family, [refs["blocks.1.attn"], refs["blocks.2.attn"], refs["blocks.2.mlp"]])
    assert len(pruned.blocks) == 3  # block 2 went whole
    assert isinstance(pruned.blocks[1].attn, NoBranch) and not isinstance(pruned.blocks[1].mlp, NoBranch)
    # the network is the teacher with block 1's attention and block 2 taken out, by hand
    b = model.blocks
    h = model.patch_embed(x)
    h = model.norm_pre(model.patch_drop(model._pos_embed(h)))
    h = b[0](h)
    h = h + b[1].ls2(b[1].mlp(b[1].norm2(h)))
    h = b[3](h)
    expected = model.forward_head(model.norm(h))
    assert torch.allclose(pruned(x), expected, atol=1e-6)
    assert family.architecture_summary(pruned) == {"depths": [3], "blocks without attention": [1]}
    # what is left to drop: block 1's MLP, and both branches of the other blocks
    assert [r.path for r in family.candidates(pruned)] == [
        "blocks.0.attn",
        "blocks.0.mlp",
        "blocks.1.mlp",
        "blocks.2.attn",
        "blocks.2.mlp",
    ]


def test_adaptors_sit_around_the_hole_of_one_branch():
    model, family = _branches()
    refs = {r.path: r for r in family.candidates(model)}
    sites = {(s.key, s.side) for s in family.adaptor_sites(model, [refs["blocks.1.mlp"]])}
    writers = {("patch_embed.proj", "post"), ("blocks.0.attn.proj", "post"), ("blocks.0.mlp.fc2", "post")}
    writers.add(("blocks.1.attn.proj", "post"))  # the same block's attention writes the stream the MLP read
    readers = {(f"blocks.{i}.{layer}", "pre") for i in (2, 3) for layer in ("attn.qkv", "mlp.fc1")}
    assert sites == writers | readers


def test_the_last_attention_stays():
    model, family = _branches("deit")  # 3 blocks
    refs = family.candidates(model)
    attn = [r for r in refs if r.path.endswith(".attn")]
    assert family.feasible(model, attn) == attn[:2]
    assert len(family.feasible(model, refs)) == len(refs) - 1
    with pytest.raises(ValueError, match="no attention"):
        family.drop_blocks(build_pruned(model, family, [], adaptors=False), attn)


def _compress(model, units="branches", **config):
    cfg = CompressionConfig(
        units=units,
        scan=ScanConfig(iterations=3),
        finetune=FinetuneConfig(iterations=3, checkpoint_every=0),
        latency=LatencyConfig(repeats=3, warmup=1),
        **config,
    )
    compressor = PractiseCompressor(model, cfg, source_config={"architecture": "vit_tiny_patch16_224"})
    return compressor.compress(torch.randn(16, 3, 32, 32))


def test_a_halved_model_saves_in_hf_practise_format_and_reloads_exactly(tmp_path):
    model, family = _branches()
    result = _compress(model, blocks=["blocks.1.attn", "blocks.3.mlp"])
    assert not result.reloads_natively
    result.save_pretrained(tmp_path / "out")
    entry = json.loads((tmp_path / "out" / "config.json").read_text())["hf_practise"]
    assert entry["units"] == "branches"
    assert [[p for _, _, p in r] for r in entry["removed_blocks"]] == [["blocks.1.attn", "blocks.3.mlp"]]
    reloaded = load_compressed(str(tmp_path / "out")).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(reloaded(x), result.model.eval()(x))
    card = str(result.model_card())
    assert "load_compressed" in card and "attention" in card
    assert "(timm builds every block with both its attention and its MLP)" in card  # why not plain timm


def test_whole_blocks_only_reload_with_plain_timm(tmp_path):
    import timm

    model, _ = _branches()
    result = _compress(model, blocks=["blocks.2.attn", "blocks.2.mlp"])
    assert result.reloads_natively and len(result.model.blocks) == 3
    result.save_pretrained(tmp_path / "out")
    assert "hf_practise" not in json.loads((tmp_path / "out" / "config.json").read_text())
    plain = timm.create_model(f"local-dir:{tmp_path / 'out'}", pretrained=True).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(plain(x), result.model.eval()(x), atol=1e-6)


def test_a_halved_model_exports_to_onnx():
    pytest.importorskip("onnxruntime")
    model, _ = _branches()
    result = _compress(model, blocks=["blocks.0.mlp", "blocks.1.attn"])
    record = result.export_onnx()
    assert record.relative_diff < 1e-4 and record.images > 0


TRANSFORMERS = [
    "transformers-vit/vit",
    "transformers-dinov2/dinov2",
    "transformers-clip/clip",
    "transformers-siglip/siglip",
]


@pytest.mark.parametrize("variant", ["timm-vit/vit", *TRANSFORMERS])
def test_a_dropped_branch_is_the_branch_answering_zero(variant, tmp_path):
    model = tiny_model(variant).eval()
    family = get_family(model).with_units("branches", model)
    refs = family.candidates(model)
    layers = len(get_family(model).candidates(model))
    assert [r.path.rsplit(".", 1)[1] for r in refs] == ["attn", "mlp"] * layers
    x = torch.randn(2, 3, 32, 32)
    pruned = build_pruned(model, family, [refs[2], refs[5]], adaptors=False)  # layer 1's attention, layer 2's MLP
    # the teacher with those two branches answering zeros computes the same
    units = family.stages(model)[0]
    hooks = [
        units[i]
        .parts[1]
        .register_forward_hook(
            lambda m, a, out: (torch.zeros_like(out[0]), *out[1:]) if isinstance(out, tuple) else torch.zeros_like(out)
        )
        for i in (2, 5)
    ]
    with torch.no_grad():
        expected = family.forward_features(model, x)
    for h in hooks:
        h.remove()
    with torch.no_grad():
        torch.testing.assert_close(family.forward_features(pruned, x), expected, rtol=1e-5, atol=1e-5)
    assert not family.reloads_natively(pruned)
    assert family.architecture_summary(pruned)["blocks without attention"] == [1]


@pytest.mark.parametrize("variant", ["transformers-vit/vit", "transformers-dinov2/dinov2"])
def test_a_halved_transformers_model_reloads_with_load_compressed(variant, tmp_path):
    model = tiny_model(variant).eval()
    paths = [r.path for r in get_family(model).with_units("branches", model).candidates(model)]
    cfg = CompressionConfig(
        units="branches",
        blocks=[paths[2], paths[5]],
        scan=ScanConfig(iterations=3),
        finetune=FinetuneConfig(iterations=3, checkpoint_every=0),
        latency=LatencyConfig(repeats=3, warmup=1),
    )
    result = PractiseCompressor(model, cfg).compress(torch.randn(16, 3, 32, 32))
    result.save_pretrained(tmp_path / "out")
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["model_type"] == "hf_practise" and config["hf_practise"]["units"] == "branches"
    reloaded = load_compressed(str(tmp_path / "out")).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(x).logits, result.model.eval()(x).logits, rtol=0, atol=1e-5)


def test_a_work_dir_never_hands_a_blocks_row_to_a_branch_unit(tmp_path):
    model, _ = _branches()
    blocks = _compress(model, units="blocks", num_blocks=1, work_dir=str(tmp_path / "work"))
    branches = _compress(model, num_blocks=1, work_dir=str(tmp_path / "work"))
    assert [r.block for r in blocks.scan] == [f"blocks.{i}" for i in range(4)]
    assert [r.block for r in branches.scan] == [f"blocks.{i}.{k}" for i in range(4) for k in ("attn", "mlp")]
