"""The timm ViT and ConvNeXt families: candidates, adaptor sites, exact folding, dropping, native reload."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from hf_practise import CompressionConfig, FinetuneConfig, LatencyConfig, PractiseCompressor, ScanConfig, get_family
from hf_practise.adaptors import adapted_layers, fold_adaptors
from hf_practise.backbones import TimmConvNeXtFamily, TimmViTFamily
from hf_practise.compressor import save_directory_atomically
from hf_practise.recoverability import build_pruned

from .conftest import reload_natively

# name -> (architecture, kwargs, family): tiny, randomly initialised, 32x32 inputs
TINY = {
    "vit": ("vit_tiny_patch16_224", dict(img_size=32, patch_size=8, depth=4, embed_dim=32, num_heads=2), TimmViTFamily),
    "deit": (
        "deit_tiny_patch16_224",
        dict(img_size=32, patch_size=8, depth=3, embed_dim=32, num_heads=2),
        TimmViTFamily,
    ),
    "vit-layerscale": (
        "vit_tiny_patch16_224",
        dict(img_size=32, patch_size=8, depth=3, embed_dim=32, num_heads=2, init_values=0.5),
        TimmViTFamily,
    ),
    # layer scale starts at 1e-6 by default, which makes every block an identity: start it at 0.5
    "convnext": (
        "convnext_atto",
        dict(dims=(8, 16, 16, 24), depths=(2, 2, 3, 2), ls_init_value=0.5),
        TimmConvNeXtFamily,
    ),
    "convnext-linear-mlp": (
        "convnext_atto",
        dict(dims=(8, 16, 16, 24), depths=(2, 1, 2, 1), ls_init_value=0.5, conv_mlp=False),
        TimmConvNeXtFamily,
    ),
    "convnextv2": ("convnextv2_atto", dict(dims=(8, 16, 16, 24), depths=(1, 2, 2, 1)), TimmConvNeXtFamily),
}


def tiny(name: str, seed: int = 0) -> nn.Module:
    import timm

    arch, kwargs, _ = TINY[name]
    torch.manual_seed(seed)
    model = timm.create_model(arch, pretrained=False, num_classes=5, **kwargs).eval()
    # timm's ViT init (std 0.02) makes the class token's output nearly independent of the image: use a
    # fan-in scaled init so that every block and adaptor visibly changes the output
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) / fan_in**0.5)
    return model


@pytest.fixture(params=sorted(TINY))
def name(request) -> str:
    return request.param


@pytest.fixture
def x() -> torch.Tensor:
    return torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def test_family_is_found_and_every_block_keeps_its_shape(name, x):
    model = tiny(name)
    family = get_family(model)
    assert isinstance(family, TINY[name][2])
    cands = family.candidates(model)
    assert len(cands) == len(family.blocks(model)) == sum(len(s) for s in family.stages(model)) > 0
    shapes = []
    hooks = [
        family.resolve(model, r).register_forward_hook(lambda m, i, o: shapes.append((i[0].shape, o.shape)))
        for r in cands
    ]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    assert len(shapes) == len(cands) and all(a == b for a, b in shapes)


def layer_types(model: nn.Module) -> list[str]:
    return sorted({type(m).__name__ for m in model.modules()})


def test_identity_adaptors_then_exact_fold(name, x):
    model = tiny(name)
    family = get_family(model)
    cands = family.candidates(model)
    # (a ViT with every block dropped never mixes the image into its class token: keep one block)
    for dropped in ([cands[0]], [cands[1], cands[-1]], cands[: min(3, len(cands) - 1)]):
        plain = build_pruned(model, family, dropped, adaptors=False).eval()
        adapted = build_pruned(model, family, dropped, adaptors=True).eval()
        assert adapted_layers(adapted), "no adaptor was placed"
        with torch.no_grad():
            torch.testing.assert_close(adapted(x), plain(x), rtol=0, atol=0)
            g = torch.Generator().manual_seed(2)
            for wrapper in adapted_layers(adapted):
                for a in wrapper.adaptors().values():
                    a.weight.add_(0.1 * torch.randn(a.weight.shape, generator=g))
            before = adapted(x)
            assert not torch.allclose(before, plain(x))  # the adaptors do change the function
            n = fold_adaptors(adapted)
            after = adapted(x)
        assert n > 0 and not adapted_layers(adapted)
        assert (after - before).norm() / before.norm() < 1e-4
        assert layer_types(adapted) == layer_types(plain)  # only the original layer types are left


def test_vit_adaptor_sites_follow_the_paper():
    model = tiny("vit")
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
    model = tiny("convnext")
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


def reload_logits(folder, x, tmp_path) -> torch.Tensor:
    return reload_natively("timm", folder, x, tmp_path)


@pytest.mark.parametrize("name", ["vit", "convnext", "convnext-linear-mlp"])
def test_dropped_model_reloads_in_plain_timm(name, x, tmp_path):
    model = tiny(name)
    family = get_family(model)
    cands = family.candidates(model)
    # for the ConvNeXt this empties stage 0: timm builds a stage of depth 0 as an empty Sequential too
    dropped = cands[:2]
    pruned = build_pruned(model, family, dropped, adaptors=False).eval()
    assert sum(len(s) for s in family.stages(pruned)) == len(cands) - 2
    save_dir = save_directory_atomically(
        tmp_path / "saved", lambda d: family.save_pretrained(pruned, d, source_config={})
    )
    config = json.loads((save_dir / "config.json").read_text())
    depth_key = "depth" if family.name == "timm-vit" else "depths"
    assert config["model_args"][depth_key] == family.block_args(pruned)[depth_key]
    assert "num_classes" not in config["model_args"] and config["num_classes"] == 5
    with torch.no_grad():
        torch.testing.assert_close(reload_logits(save_dir, x, tmp_path), pruned(x), rtol=0, atol=0)


def test_vit_data_config_uses_the_built_image_size():
    model = tiny("vit")  # vit_tiny_patch16_224's pretrained_cfg says 224; this one was built for 32
    assert tuple(get_family(model).data_config(model)["input_size"]) == (3, 32, 32)


@pytest.mark.parametrize("name", ["deit", "convnextv2"])
def test_compress_end_to_end_and_reload(name, x, tmp_path):
    config = CompressionConfig(
        num_blocks=2,
        scan=ScanConfig(iterations=3, batch_size=8),
        finetune=FinetuneConfig(iterations=3, batch_size=8, lr=1e-4),
        latency=LatencyConfig(batch_size=4, repeats=3, warmup=1),
    )
    images = torch.randn(16, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    result = PractiseCompressor(tiny(name), config).compress(images)
    assert len(result.dropped) == 2 and result.latency is not None
    out = result.save_pretrained(tmp_path / "out")
    student = result.model.eval()
    assert not adapted_layers(student)
    with torch.no_grad():
        torch.testing.assert_close(reload_logits(out, x, tmp_path), student(x), rtol=1e-5, atol=1e-6)
