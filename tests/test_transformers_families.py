"""transformers ResNet, ViT and ConvNeXt specifics: the head split, stage minimums, preprocessing, end to end.

The invariants every family shares (exact folding, shapes, native reload) are in test_family_invariants.py.
"""

from __future__ import annotations

import json

import pytest
import torch

from hf_practise import CompressionConfig, FinetuneConfig, LatencyConfig, PractiseCompressor, ScanConfig, get_family
from hf_practise.recoverability import build_pruned

from .conftest import reload_natively
from .test_compressor import image_dataset
from .tiny_models import TINY_IDS, tiny_model

transformers = pytest.importorskip("transformers")


@pytest.fixture
def x() -> torch.Tensor:
    return torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("model_id", [i for i in TINY_IDS if i.startswith("transformers-")])
def test_features_and_head_compute_the_models_logits(model_id, x):
    model = tiny_model(model_id)
    family = get_family(model)
    assert family.library_name == "transformers"
    with torch.no_grad():
        torch.testing.assert_close(family.forward_head(model, family.forward_features(model, x)), model(x).logits)


def test_resnet_stages_keep_a_block_and_shape_changing_blocks_stay():
    model = tiny_model("transformers-resnet/basic")
    family = get_family(model)
    paths = [c.path for c in family.candidates(model)]
    assert "resnet.encoder.stages.1.layers.0" not in paths  # 8 -> 16 channels, stride 2: has a shortcut conv
    assert not any(p.startswith("resnet.encoder.stages.3.") for p in paths)  # a one-block stage keeps it
    stage0 = [c for c in family.candidates(model) if c.stage == 0]
    assert len(stage0) == 2 and family.feasible(model, stage0) == stage0[:1]
    with pytest.raises(ValueError, match="keeps at least 1 per stage"):
        build_pruned(model, family, stage0, adaptors=False)


def test_vit_keeps_a_layer():
    model = tiny_model("transformers-vit/vit")
    family = get_family(model)
    cands = family.candidates(model)
    assert len(family.feasible(model, cands)) == len(cands) - 1


@pytest.mark.parametrize(
    "processor, expected",
    [
        # ViT: resize straight to 224x224
        ({"size": {"height": 224, "width": 224}, "resample": 2}, ((3, 224, 224), 1.0, "bilinear")),
        # ConvNeXt / ResNet: resize to 224 / 0.875, centre-crop 224
        ({"size": {"shortest_edge": 224}, "crop_pct": 0.875, "resample": 3}, ((3, 224, 224), 0.875, "bicubic")),
        # ConvNeXt at 384: no crop
        ({"size": {"shortest_edge": 384}, "crop_pct": 0.875}, ((3, 384, 384), 1.0, "bilinear")),
        # resize the short side to 256, then centre-crop 224
        (
            {"size": {"shortest_edge": 256}, "do_center_crop": True, "crop_size": {"height": 224, "width": 224}},
            ((3, 224, 224), 0.875, "bilinear"),
        ),
        # no processor: the config's image size and ImageNet statistics
        ({}, ((3, 32, 32), 1.0, "bilinear")),
    ],
)
def test_image_processor_becomes_a_timm_data_config(processor, expected):
    from types import SimpleNamespace

    from hf_practise.backbones.transformers_common import IMAGENET_MEAN, processor_data_config

    cfg = processor_data_config(processor, SimpleNamespace(image_size=32, num_channels=3))
    assert (cfg["input_size"], cfg["crop_pct"], cfg["interpolation"]) == expected
    assert cfg["mean"] == IMAGENET_MEAN


def test_from_a_folder_to_a_native_folder_with_its_preprocessing(x, tmp_path):
    src = tmp_path / "teacher"
    tiny_model("transformers-vit/vit").save_pretrained(src)
    processor = {
        "do_resize": True,
        "size": {"height": 32, "width": 32},
        "resample": 3,
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.25, 0.25, 0.25],
        "image_processor_type": "ViTImageProcessor",
    }
    (src / "preprocessor_config.json").write_text(json.dumps(processor))
    config = CompressionConfig(
        num_blocks=2,
        scan=ScanConfig(iterations=3, batch_size=8),
        finetune=FinetuneConfig(iterations=3, batch_size=8, lr=1e-4),
        latency=LatencyConfig(batch_size=4, repeats=3, warmup=1),
    )
    compressor = PractiseCompressor.from_pretrained(str(src), config)
    data = compressor.family.data_config(compressor.model)
    assert data["input_size"] == (3, 32, 32) and data["mean"] == (0.5, 0.5, 0.5) and data["interpolation"] == "bicubic"
    ds = image_dataset(20)
    result = compressor.compress(ds, ds, num_samples=16)
    assert len(result.dropped) == 2 and result.top1_after is not None
    out = result.save_pretrained(tmp_path / "out")
    assert json.loads((out / "preprocessor_config.json").read_text()) == processor
    assert "AutoModelForImageClassification.from_pretrained" in (out / "README.md").read_text()
    assert json.loads((out / "config.json").read_text())["num_hidden_layers"] == 2
    with torch.no_grad():
        torch.testing.assert_close(
            reload_natively("transformers", out, x, tmp_path), result.model.eval()(x).logits, rtol=1e-5, atol=1e-6
        )


def test_a_timm_wrapper_round_trip_stays_a_timm_wrapper(tmp_path):
    """A timm model loaded through transformers compresses with its timm family and comes back, through our
    loader as through transformers, as a TimmWrapper with the new depth in its `model_args`."""
    from hf_practise.files import save_directory_atomically
    from hf_practise.hub import load_model

    model = tiny_model("transformers-timm-wrapper/timm-vit")
    family = get_family(model)
    assert family.name == "transformers-timm-wrapper" and family.inner(model).name == "timm-vit"
    pruned = build_pruned(model, family, family.candidates(model)[:1], adaptors=False).eval()
    folder = save_directory_atomically(tmp_path / "out", lambda d: family.save_pretrained(pruned, d, source_config={}))
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "timm_wrapper" and config["model_args"]["depth"] == 2
    reloaded, source = load_model(str(folder))
    assert type(reloaded).__name__ == "TimmWrapperForImageClassification" and source["library"] == "transformers"
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(reloaded.eval()(x).logits, pruned(x).logits, rtol=0, atol=0)


def test_a_beit_trains_after_its_latency_was_measured():
    """transformers' BEiT caches the relative position index it builds in a forward; latency is timed under
    no_grad, not inference_mode, so the cached index can still take part in the scan's and finetune's training."""
    cfg = CompressionConfig(
        num_blocks=1,
        scan=ScanConfig(iterations=1, batch_size=2),
        finetune=FinetuneConfig(iterations=2, batch_size=2, lr=1e-5),
        latency=LatencyConfig(batch_size=1, repeats=1, warmup=0, input_size=(3, 32, 32)),
    )
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    result = PractiseCompressor(tiny_model("transformers-beit/beit-relpos-meanpool"), cfg).compress(x)
    assert len(result.dropped) == 1


@pytest.mark.parametrize("architectures", [True, False])
def test_a_perceiver_folder_is_refused_in_one_line(architectures, tmp_path):
    """Perceiver has no family: with `architectures` in its config.json the compressor says so; without them,
    transformers cannot choose among Perceiver's three classifiers and failed with a TypeError ("'NoneType' object
    is not iterable"): the loader now says what is missing."""
    cfg = transformers.PerceiverConfig(
        num_latents=4, d_latents=16, d_model=16, num_blocks=1, num_self_attends_per_block=1, image_size=32
    )
    cfg.num_self_attention_heads = cfg.num_cross_attention_heads = 1
    transformers.PerceiverForImageClassificationLearned(cfg).save_pretrained(tmp_path)
    if not architectures:
        config = json.loads((tmp_path / "config.json").read_text())
        del config["architectures"]
        (tmp_path / "config.json").write_text(json.dumps(config))
    expected = (
        r"No backbone adapter for `PerceiverForImageClassificationLearned`; supported: "
        if architectures
        else r'names no `architectures`, .* \(PerceiverForImageClassificationLearned, .*"architectures": \['
    )
    with pytest.raises(ValueError, match=expected) as info:
        PractiseCompressor.from_pretrained(str(tmp_path), CompressionConfig())
    assert "\n" not in str(info.value)


def _changes_shape(block) -> bool:
    if not hasattr(block, "expand_1x1"):
        return False
    convs = (block.expand_1x1.convolution, block.conv_3x3.convolution, block.reduce_1x1.convolution)
    return convs[0].in_channels != convs[2].out_channels or convs[1].stride != (1, 1)


@pytest.mark.parametrize(
    "model_id, stays",
    [
        # a stage's first layer (but the first stage's) widens the stream and pools its queries
        ("transformers-hiera/hiera", lambda s, i, block: s > 0 and i == 0),
        # the attention block closes each stage: transformers builds depth d as d - 1 conv encoders and it
        ("transformers-swiftformer/swiftformer", lambda s, i, block: hasattr(block, "attn")),
        # a stage's first block has no shortcut
        ("transformers-hgnet-v2/hgnet-v2", lambda s, i, block: i == 0),
        # inverted residuals that change width or resolution; transformer layers are all candidates
        ("transformers-mobilevit/mobilevit", lambda s, i, block: _changes_shape(block)),
        # RepVGG-style layers that stride or widen (no identity branch), also in the middle of TextNet's first stage
        (
            "transformers-textnet/textnet",
            lambda s, i, block: block.stride != 1 or block.num_channels != block.out_channels,
        ),
    ],
)
def test_the_blocks_that_the_smaller_config_would_not_rebuild_stay(model_id, stays):
    model = tiny_model(model_id)
    family = get_family(model)
    kept = {
        (s, i) for s, stage in enumerate(family.stages(model)) for i, block in enumerate(stage) if stays(s, i, block)
    }
    candidates = {(r.stage, r.index) for r in family.candidates(model)}
    assert kept and not kept & candidates
    assert len(kept) + len(candidates) == sum(len(stage) for stage in family.stages(model))


@pytest.mark.parametrize("model_id, emptied", [("transformers-pvt/pvt", False), ("transformers-pvt-v2/pvt-v2", True)])
def test_a_pyramid_stage_is_emptied_only_without_a_cls_token(model_id, emptied):
    """PVT's last stage carries a [CLS] token that needs a layer to see the image; PVT v2 averages its last map, and
    transformers builds a stage of depth 0."""
    model = tiny_model(model_id)
    family = get_family(model)
    last = [r for r in family.candidates(model) if r.stage == len(family.stages(model)) - 1]
    assert len(family.feasible(model, last)) == len(last) - (0 if emptied else 1)
    if emptied:
        pruned = build_pruned(model, family, last, adaptors=False)
        assert family.pruned_config(pruned).depths[-1] == 0


def test_a_textnet_compresses_though_its_layers_keep_kernel_sizes_as_lists():
    """transformers' TextNet layers keep `kernel_size` as the config's list: the latency table's grouping of identical
    blocks hashed it and failed ("unhashable type: 'list'")."""
    cfg = CompressionConfig(
        num_blocks=1,
        scan=ScanConfig(iterations=1, batch_size=2),
        finetune=FinetuneConfig(iterations=2, batch_size=2, lr=1e-5),
        latency=LatencyConfig(batch_size=1, repeats=1, warmup=0, input_size=(3, 32, 32)),
    )
    model = tiny_model("transformers-textnet/textnet")
    assert isinstance(get_family(model).stages(model)[0][0].kernel_size, list)
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    assert len(PractiseCompressor(model, cfg).compress(x).dropped) == 1
