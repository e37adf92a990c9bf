"""Attention and MLP as candidates of their own (`CompressionConfig(units="branches")`, issue #25): the units, what
dropping one does to the network, where the adaptors go, the last attention kept, and the saved model's reload."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from hf_practise import CompressionConfig, FinetuneConfig, LatencyConfig, PractiseCompressor, ScanConfig, get_family
from hf_practise.adaptors import fold_adaptors
from hf_practise.backbones.base import BlockRef
from hf_practise.backbones.branches import NoBranch
from hf_practise.loading import load_compressed
from hf_practise.recoverability import build_pruned

from .tiny_models import logits, perturb_adaptors, tiny_model

#: a tiny model of every family that offers branch units (block variants apart: layer scales as modules or as
#: parameters, rotary embeddings, windows, relative position biases)
TIMM = [
    "timm-vit/vit",
    "timm-vit/vit-layerscale",
    "timm-swin/swin",
    "timm-eva/eva02-rope-swiglu",
    "timm-eva/rope-mixed",
    "timm-eva/sapiens2-gqa",
    "timm-beit/beit",
    "timm-cait/cait",
]
TRANSFORMERS = [
    "transformers-vit/vit",
    "transformers-dinov2/dinov2",
    "transformers-clip/clip",
    "transformers-siglip/siglip",
    "transformers-swin/swin",
    "transformers-donut-swin/donut-swin",
    "transformers-beit/beit-relpos-meanpool",
    "transformers-beit/beit-shared-relpos-cls",
    "transformers-data2vec-vision/data2vec-vision",
]


def _units(model_id: str):
    model = tiny_model(model_id).eval()
    return model, get_family(model).with_units("branches", model)


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


@pytest.mark.parametrize("model_id", [*TIMM, *TRANSFORMERS])
def test_each_block_of_every_stage_offers_its_branches(model_id):
    model, family = _units(model_id)
    names = {id(m): n for n, m in model.named_modules()}
    blocks = [names[id(b)] for stage in family.block_stages(model) for b in stage]
    assert [r.path for r in family.candidates(model)] == [f"{b}.{kind}" for b in blocks for kind in ("attn", "mlp")]


# blocks whose branches are not `x + main(norm(x))` (post-norm: Swin V2, EVA-CLIP's post-norm blocks; XCiT's third
# branch), and a network without any
@pytest.mark.parametrize(
    "model_id",
    [
        "timm-resnet/resnet18",
        "timm-swin/swinv2",
        "timm-eva/eva-clip-postnorm",
        "timm-xcit/xcit",
        "timm-vit-relpos/relpos",
        "transformers-swinv2/swinv2",
    ],
)
def test_a_family_without_branch_units_says_so(model_id):
    model = tiny_model(model_id)
    with pytest.raises(ValueError, match="--units blocks"):
        get_family(model).with_units("branches", model)
    with pytest.raises(ValueError, match="--units blocks"):
        PractiseCompressor(model, CompressionConfig(units="branches"))
    with pytest.raises(ValueError, match="'blocks', 'branches'"):
        CompressionConfig(units="heads")


@torch.no_grad()
@pytest.mark.parametrize("model_id", [*TIMM, *TRANSFORMERS])
def test_a_blocks_units_in_turn_are_the_block(model_id):
    """Each unit, called as the model calls its entry (the block, for the first branch: with the block's rotary
    embedding, window sizes, ...), computes `x + branch(x)`: one block's units in turn give the block's output."""
    model, family = _units(model_id)
    stages = family.stages(model)
    block = stages[0][-1].block  # the last block of the first stage (Swin's: shifted windows, several of them)
    units = [u for u in stages[0] if u.block is block]
    calls = {}
    hooks = [
        block.register_forward_pre_hook(lambda m, a, kw: calls.__setitem__("in", (a, kw)), with_kwargs=True),
        block.register_forward_hook(lambda m, a, o: calls.__setitem__("out", o[0] if isinstance(o, tuple) else o)),
    ]
    family.forward_features(model, torch.randn(2, 3, 32, 32))
    for h in hooks:
        h.remove()
    (x, *args), kwargs = calls["in"]
    assert units[0].entry is block  # what the latency table calls the unit with
    y = units[0](x, *args, **kwargs)
    assert not torch.allclose(y, x)  # the attention adds something
    torch.testing.assert_close(units[1](y), calls["out"], rtol=0, atol=1e-6)


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


def test_adaptors_sit_around_the_hole_of_one_swin_branch():
    """In Swin's second stage: its patch merging writes the stream the stage starts from; nothing after the stage
    takes an adaptor (the next patch merging reads four neighbours' channels at once)."""
    model, family = _units("timm-swin/swin")  # depths 2-3-2-1
    hole = next(r for r in family.candidates(model) if r.path == "layers.1.blocks.1.mlp")
    writers = {("layers.1.downsample.reduction", "post"), ("layers.1.blocks.0.attn.proj", "post")}
    writers |= {("layers.1.blocks.0.mlp.fc2", "post"), ("layers.1.blocks.1.attn.proj", "post")}
    readers = {("layers.1.blocks.2.attn.qkv", "pre"), ("layers.1.blocks.2.mlp.fc1", "pre")}
    assert {(s.key, s.side) for s in family.adaptor_sites(model, [hole])} == writers | readers


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


def _halving(family, model) -> list[BlockRef]:
    """Layer 1's attention and the last layer's MLP (two layers that keep one branch each)."""
    refs = family.candidates(model)
    return [refs[2], refs[-1]]


def _save(family, model, folder) -> Path:
    from hf_practise.files import save_directory_atomically

    return save_directory_atomically(folder, lambda d: family.save_pretrained(model, d, source_config={}))


@pytest.mark.parametrize("model_id", [*TIMM, *TRANSFORMERS])
def test_a_halved_model_folds_saves_and_reloads_exactly(model_id, tmp_path):
    """Any family: the adaptors around two branch holes fold exactly; the model, which keeps layers without one of
    their branches, saves in hf_practise's format (plain transformers refuses it) and `load_compressed` rebuilds it
    with identical logits."""
    model, family = _units(model_id)
    x = torch.randn(2, 3, 32, 32)
    pruned = build_pruned(model, family, _halving(family, model)).eval()
    perturb_adaptors(pruned)
    with torch.no_grad():
        adapted = logits(pruned, x)
        assert fold_adaptors(pruned) > 0
        torch.testing.assert_close(logits(pruned, x), adapted, rtol=1e-4, atol=1e-5)
    assert not family.reloads_natively(pruned)
    assert (
        family.why_not_native(pruned) == f"{family.library_name} builds every block with both its attention and its MLP"
    )
    config = json.loads((_save(family, pruned, tmp_path / "out") / "config.json").read_text())
    assert config["hf_practise"]["units"] == "branches"
    assert [[p for _, _, p in r] for r in config["hf_practise"]["removed_blocks"]] == [
        [r.path for r in _halving(family, model)]
    ]
    if family.library_name == "transformers":
        assert config["model_type"] == "hf_practise"
    reloaded = load_compressed(str(tmp_path / "out")).eval()
    with torch.no_grad():
        torch.testing.assert_close(logits(reloaded, x), logits(pruned, x), rtol=0, atol=0)


def _last_block_of_first_stage(family, model) -> list[BlockRef]:
    """Both branches of the first stage's last block (for Swin, a shifted one: no later block of its stage moves
    to the other parity)."""
    units = family.stages(model)[0]
    return [r for r, u in zip(family.candidates(model), units) if u.block is units[-1].block]


@pytest.mark.parametrize("model_id", TIMM)
def test_a_whole_block_dropped_as_its_two_units_reloads_with_plain_timm(model_id, tmp_path):
    import timm

    model, family = _units(model_id)
    depths = [len(s) for s in family.block_stages(model)]
    pruned = build_pruned(model, family, _last_block_of_first_stage(family, model), adaptors=False).eval()
    assert family.architecture_summary(pruned) == {"depths": [depths[0] - 1, *depths[1:]]}
    assert family.reloads_natively(pruned)
    folder = _save(family, pruned, tmp_path / "out")
    assert "hf_practise" not in json.loads((folder / "config.json").read_text())
    plain = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(plain(x), pruned(x), rtol=0, atol=1e-6)


@pytest.mark.parametrize("model_id", ["timm-swin/swin", "transformers-swin/swin"])
def test_a_swin_block_dropped_alone_keeps_its_neighbours_shift_through_the_loader(model_id, tmp_path):
    """Swin's library gives a block the window shift of its index's parity: with a stage's first block gone, the
    shifted one after it would come back unshifted, so the model reloads with hf_practise's loader, which keeps it
    shifted."""
    model, family = _units(model_id)
    x = torch.randn(2, 3, 32, 32)
    pruned = build_pruned(model, family, family.candidates(model)[:2], adaptors=False).eval()  # block 0, both
    assert family.architecture_summary(pruned)["depths"][0] == len(family.block_stages(model)[0]) - 1
    assert not family.reloads_natively(pruned)
    assert "window shift" in family.why_not_native(pruned)
    folder = _save(family, pruned, tmp_path / "out")
    with torch.no_grad():
        torch.testing.assert_close(logits(load_compressed(str(folder)).eval(), x), logits(pruned, x), rtol=0, atol=0)


@pytest.mark.parametrize(
    "model_id",
    [
        "timm-swin/swin",
        "timm-eva/eva02-rope-swiglu",
        "timm-beit/beit",
        "timm-cait/cait",
        "transformers-swin/swin",
        "transformers-beit/beit-relpos-meanpool",
    ],
)
def test_a_halved_model_of_every_family_exports_to_onnx(model_id):
    ort = pytest.importorskip("onnxruntime")
    from hf_practise.runtimes import export_onnx_bytes

    model, family = _units(model_id)
    pruned = build_pruned(model, family, _halving(family, model), adaptors=False).eval()
    x = torch.randn(3, 3, 32, 32)
    data = export_onnx_bytes(pruned, (x[:2],), dynamic_batch=True, input_names=["pixel_values"])
    assert b"NoBranch" not in data  # no hf_practise op: plain ONNX operators
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    with torch.no_grad():
        expected = logits(pruned, x)
    exported = torch.from_numpy(session.run(None, {"pixel_values": x.numpy()})[0])
    torch.testing.assert_close(exported, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("model_id", [*TIMM, *TRANSFORMERS])
def test_a_dropped_branch_is_the_branch_answering_zero(model_id):
    model, family = _units(model_id)
    refs = family.candidates(model)
    layers = sum(len(s) for s in family.block_stages(model))
    assert [r.path.rsplit(".", 1)[1] for r in refs] == ["attn", "mlp"] * layers
    x = torch.randn(2, 3, 32, 32)
    pruned = build_pruned(model, family, [refs[2], refs[5]], adaptors=False)  # layer 1's attention, layer 2's MLP
    # the teacher with those two branches answering zeros (their last module, e.g. the drop path) computes the same
    units = [u for stage in family.stages(model) for u in stage]
    hooks = [
        units[i]
        .parts[-1]
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
        # the two branches count: the teacher itself is not within that tolerance
        assert not torch.allclose(family.forward_features(model, x), expected, rtol=1e-5, atol=1e-5)
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
