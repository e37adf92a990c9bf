"""transformers ResNet, ViT and ConvNeXt: structure, exact folding, stage minimums, native reload, end to end."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from hf_practise import CompressionConfig, FinetuneConfig, LatencyConfig, PractiseCompressor, ScanConfig, get_family
from hf_practise.adaptors import adapted_layers, fold_adaptors
from hf_practise.recoverability import build_pruned

from .conftest import reload_natively
from .test_compressor import image_dataset

transformers = pytest.importorskip("transformers")


def tiny(name: str, seed: int = 0) -> nn.Module:
    """A tiny random `*ForImageClassification`, with a fan-in scaled init so that every block matters."""
    T = transformers
    torch.manual_seed(seed)
    if name == "resnet-basic":
        cfg = T.ResNetConfig(
            embedding_size=8, hidden_sizes=[8, 16, 16, 32], depths=[2, 2, 3, 1], layer_type="basic", num_labels=5
        )
        model = T.ResNetForImageClassification(cfg)
    elif name == "resnet-bottleneck":
        cfg = T.ResNetConfig(embedding_size=8, hidden_sizes=[16, 16, 32, 32], depths=[2, 1, 2, 2], num_labels=5)
        model = T.ResNetForImageClassification(cfg)
    elif name == "vit":
        cfg = T.ViTConfig(
            hidden_size=32,
            num_hidden_layers=4,
            num_attention_heads=2,
            intermediate_size=64,
            image_size=32,
            patch_size=8,
        )
        model = T.ViTForImageClassification(cfg)
    else:
        cfg = T.ConvNextConfig(
            hidden_sizes=[8, 16, 16, 24], depths=[2, 1, 2, 1], layer_scale_init_value=0.5, num_labels=5
        )
        model = T.ConvNextForImageClassification(cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) / m.weight[0].numel() ** 0.5)
            elif isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
    return model.eval()


NAMES = ["resnet-basic", "resnet-bottleneck", "vit", "convnext"]
FAMILIES = {
    "resnet-basic": "transformers-resnet",
    "resnet-bottleneck": "transformers-resnet",
    "vit": "transformers-vit",
    "convnext": "transformers-convnext",
}


@pytest.fixture
def x() -> torch.Tensor:
    return torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("name", NAMES)
def test_structure_head_split_and_exact_fold(name, x):
    model = tiny(name)
    family = get_family(model)
    assert family.name == FAMILIES[name] and family.library_name == "transformers"
    with torch.no_grad():  # features + head is exactly what the model computes
        torch.testing.assert_close(family.forward_head(model, family.forward_features(model, x)), model(x).logits)
    cands = family.candidates(model)
    assert cands
    for dropped in ([cands[0]], family.feasible(model, cands[::-1])[:3]):
        plain = build_pruned(model, family, dropped, adaptors=False).eval()
        adapted = build_pruned(model, family, dropped).eval()
        assert adapted_layers(adapted)
        with torch.no_grad():
            torch.testing.assert_close(adapted(x).logits, plain(x).logits, rtol=0, atol=0)
            g = torch.Generator().manual_seed(2)
            for wrapper in adapted_layers(adapted):
                for a in wrapper.adaptors().values():
                    a.weight.add_(0.1 * torch.randn(a.weight.shape, generator=g))
            before = adapted(x).logits
            assert not torch.allclose(before, plain(x).logits)
            assert fold_adaptors(adapted) > 0
            after = adapted(x).logits
        assert (after - before).norm() / before.norm() < 1e-4 and not adapted_layers(adapted)


def test_resnet_stages_keep_a_block_and_shape_changing_blocks_stay():
    model = tiny("resnet-basic")
    family = get_family(model)
    paths = [c.path for c in family.candidates(model)]
    assert "resnet.encoder.stages.1.layers.0" not in paths  # 8 -> 16 channels, stride 2: has a shortcut conv
    assert not any(p.startswith("resnet.encoder.stages.3.") for p in paths)  # a one-block stage keeps it
    stage0 = [c for c in family.candidates(model) if c.stage == 0]
    assert len(stage0) == 2 and family.feasible(model, stage0) == stage0[:1]
    with pytest.raises(ValueError, match="keeps at least 1 per stage"):
        build_pruned(model, family, stage0, adaptors=False)


def test_vit_keeps_a_layer():
    model = tiny("vit")
    family = get_family(model)
    cands = family.candidates(model)
    assert len(family.feasible(model, cands)) == len(cands) - 1


def reload_logits(folder, x, tmp_path) -> torch.Tensor:
    return reload_natively("transformers", folder, x, tmp_path)


@pytest.mark.parametrize("name", NAMES)
def test_dropped_model_reloads_in_plain_transformers(name, x, tmp_path):
    model = tiny(name)
    family = get_family(model)
    dropped = family.feasible(model, family.candidates(model))[:2]
    pruned = build_pruned(model, family, dropped, adaptors=False).eval()
    out = tmp_path / "saved"
    out.mkdir()
    family.save_pretrained(pruned, out, source_config={})
    config = json.loads((out / "config.json").read_text())
    depths = config.get("depths", config.get("num_hidden_layers"))
    assert depths == family.depth_value(pruned)
    assert model.config.to_dict()[family.depth_field] != depths  # the live model's config is untouched
    with torch.no_grad():
        torch.testing.assert_close(reload_logits(out, x, tmp_path), pruned(x).logits, rtol=0, atol=0)


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

    from hf_practise.backbones.hf_transformers import IMAGENET_MEAN, processor_data_config

    cfg = processor_data_config(processor, SimpleNamespace(image_size=32, num_channels=3))
    assert (cfg["input_size"], cfg["crop_pct"], cfg["interpolation"]) == expected
    assert cfg["mean"] == IMAGENET_MEAN


def test_from_a_folder_to_a_native_folder_with_its_preprocessing(x, tmp_path):
    src = tmp_path / "teacher"
    tiny("vit").save_pretrained(src)
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
        torch.testing.assert_close(reload_logits(out, x, tmp_path), result.model.eval()(x).logits, rtol=1e-5, atol=1e-6)
