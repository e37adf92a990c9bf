"""Family specifics: where the adaptors go (ViT, ConvNeXt), the input size, compress end to end, DeiT's two heads,
Swin's shift-parity units.

The invariants every family shares (exact folding, shapes, native reload) are in test_family_invariants.py.
"""

from __future__ import annotations

import pytest
import torch

from hf_practise import CompressionConfig, FinetuneConfig, LatencyConfig, PractiseCompressor, ScanConfig, get_family
from hf_practise.adaptors import adapted_layers

from .conftest import reload_natively
from .tiny_models import tiny_model


def test_vit_adaptor_sites_follow_the_paper():
    model = tiny_model("timm-vit/vit")
    family = get_family(model)
    sites = {(s.key, s.side) for s in family.adaptor_sites(model, [family.candidates(model)[2]])}
    assert sites == {
        ("patch_embed.proj", "post"),
        ("blocks.0.attn.proj", "post"),
        ("blocks.0.mlp.fc2", "post"),
        ("blocks.1.attn.proj", "post"),
        ("blocks.1.mlp.fc2", "post"),
        ("blocks.3.attn.qkv", "pre"),
        ("blocks.3.mlp.fc1", "pre"),
    }


def test_convnext_adaptor_sites_follow_the_paper():
    model = tiny_model("timm-convnext/convnext")
    family = get_family(model)
    hole = next(r for r in family.candidates(model) if (r.stage, r.index) == (2, 1))
    sites = {(s.key, s.side) for s in family.adaptor_sites(model, [hole])}
    assert sites == {
        ("stages.2.downsample.1", "post"),  # writes the stage's input
        ("stages.2.blocks.0.mlp.fc2", "post"),
        ("stages.2.blocks.2.mlp.fc1", "pre"),  # the depthwise conv cannot take a folded channel mix
        ("stages.3.downsample.1", "pre"),  # reads the stage's output
    }
    first = next(r for r in family.candidates(model) if (r.stage, r.index) == (0, 1))
    assert ("stem.0", "post") in {(s.key, s.side) for s in family.adaptor_sites(model, [first])}


def test_convnext_stage_may_lose_every_block():
    model = tiny_model("timm-convnext/convnext")
    family = get_family(model)
    stage0 = [r for r in family.candidates(model) if r.stage == 0]
    assert family.feasible(model, stage0) == stage0  # timm builds a stage of depth 0


def test_vit_keeps_a_block_and_its_data_config_uses_the_built_image_size():
    model = tiny_model("timm-vit/vit")  # vit_tiny_patch16_224's pretrained_cfg says 224; this one was built for 32
    family = get_family(model)
    assert tuple(family.data_config(model)["input_size"]) == (3, 32, 32)
    cands = family.candidates(model)
    assert len(family.feasible(model, cands)) == len(cands) - 1
    with pytest.raises(ValueError, match="keeps at least 1 per stage"):
        family.drop_blocks(model, cands)


@pytest.mark.parametrize("model_id", ["timm-vit/deit", "timm-convnext/convnextv2"])
def test_compress_end_to_end_and_reload(model_id, tmp_path):
    config = CompressionConfig(
        num_blocks=2,
        scan=ScanConfig(iterations=3, batch_size=8),
        finetune=FinetuneConfig(iterations=3, batch_size=8, lr=1e-4),
        latency=LatencyConfig(batch_size=4, repeats=3, warmup=1),
    )
    images = torch.randn(16, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    result = PractiseCompressor(tiny_model(model_id), config).compress(images)
    assert len(result.dropped) == 2 and result.latency is not None
    out = result.save_pretrained(tmp_path / "out")
    student = result.model.eval()
    assert not adapted_layers(student)
    x = images[:3]
    with torch.no_grad():
        torch.testing.assert_close(reload_natively("timm", out, x, tmp_path), student(x), rtol=1e-5, atol=1e-6)


def test_finetune_optimizer_follows_the_family_unless_set():
    from hf_practise.backbones.timm_convnext import TimmConvNeXtFamily
    from hf_practise.backbones.timm_efficientnet import TimmEfficientNetFamily
    from hf_practise.backbones.timm_resnet import TimmResNetFamily
    from hf_practise.backbones.transformers_vit import TransformersViTFamily

    auto = FinetuneConfig()
    assert (auto.optimizer, auto.lr) == ("auto", None)
    assert (auto.resolved(TimmResNetFamily()).optimizer, auto.resolved(TimmResNetFamily()).lr) == ("sgd", 0.01)
    # the MobileNetV2 teacher at 22%, same blocks: SGD 0.01 76.33%, AdamW 1e-4 87.26% (finetune_sweep_timm-mobilenetv2)
    for family in (TimmConvNeXtFamily(), TransformersViTFamily(), TimmEfficientNetFamily()):
        assert (auto.resolved(family).optimizer, auto.resolved(family).lr) == ("adamw", 1e-4)
    assert FinetuneConfig(optimizer="sgd").resolved(TimmConvNeXtFamily()).lr == 0.01
    assert FinetuneConfig(lr=3e-3).resolved(TimmConvNeXtFamily()).lr == 3e-3
    # what the compressor records (report, card) is what runs
    config = CompressionConfig(num_blocks=1)
    assert PractiseCompressor(tiny_model("timm-vit/vit"), config).config.finetune.optimizer == "adamw"
    assert config.finetune.optimizer == "auto"  # the caller's config is left alone


def test_an_entry_point_that_fixes_its_depth_is_saved_for_the_loader():
    """BiT's timm entry point passes `layers` itself, so `model_args` cannot make it shallower: the family sees
    the clash (on the meta device) and saves such a model in hf_practise's format instead."""
    import timm

    from hf_practise import get_family

    with torch.device("meta"):
        bit = timm.create_model("resnetv2_50x1_bit", num_classes=5)
        plain = timm.create_model("resnetv2_50", num_classes=5)
    family = get_family(bit)
    assert family.name == "timm-resnetv2"
    assert not family.reloads_natively(bit) and family.reloads_natively(plain)


def test_a_distilled_deit_keeps_both_heads_frozen():
    model = tiny_model("timm-deit-distilled/deit-distilled")
    family = get_family(model)
    assert family.name == "timm-deit-distilled"
    heads = {id(p) for p in family.classifier(model).parameters()}
    assert heads == {id(p) for m in (model.head, model.head_dist) for p in m.parameters()}


def test_swin_drops_units_that_keep_the_window_shift_parity_and_reloads_natively(tmp_path):
    """A Swin block shifts its windows by its index parity, and timm rebuilds that from the depths alone: the
    candidates are (regular, shifted) pairs and trailing blocks, so every kept block keeps its shift."""
    import timm

    from hf_practise.files import save_directory_atomically
    from hf_practise.recoverability import build_pruned

    model = tiny_model("timm-swin/swin")  # depths 2-3-2-1
    family = get_family(model)
    refs = {r.path: r for r in family.candidates(model)}
    assert set(refs) == {
        "layers.0.blocks.0+1",
        "layers.1.blocks.0+1",
        "layers.1.blocks.2",
        "layers.2.blocks.0+1",
        "layers.3.blocks.0",
    }
    pruned = build_pruned(model, family, [refs["layers.1.blocks.0+1"]], adaptors=False).eval()
    depths = family.architecture_summary(pruned)["depths"]
    assert depths == [2, 1, 2, 1]
    kwargs = dict(img_size=32, patch_size=2, window_size=4, embed_dim=16, depths=depths, num_heads=(1, 2, 2, 4))
    rebuilt = timm.create_model("swin_tiny_patch4_window7_224", num_classes=5, **kwargs)
    shifts = [b.shift_size for stage in pruned.layers for b in stage.blocks]
    assert shifts == [b.shift_size for stage in rebuilt.layers for b in stage.blocks]
    folder = save_directory_atomically(tmp_path / "swin", lambda d: family.save_pretrained(pruned, d, source_config={}))
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = pruned(x)
    assert family.reloads_natively(pruned)
    torch.testing.assert_close(reload_natively("timm", folder, x), expected, rtol=0, atol=0)
