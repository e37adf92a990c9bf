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
