"""Tiny, randomly initialised models of every registered family, for 32x32 inputs and 5 classes.

Random inits hide what PRACTISE acts on: timm zero-initialises each ResNet block's last BN and ConvNeXt's
layer scale starts at 1e-6 (every block an identity), and a std-0.02 ViT barely lets the class token see the
image. The builders below undo that, so every block and every adaptor visibly changes the output.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .conftest import tiny_resnet


def fan_in_init(model: nn.Module, seed: int) -> nn.Module:
    """Weights of every conv/linear ~ N(0, 1/fan_in); BatchNorm statistics away from the identity."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) / m.weight[0].numel() ** 0.5)
            elif isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
    return model.eval()


def _timm(arch: str, **kwargs) -> Callable[[int], nn.Module]:
    def build(seed: int = 0) -> nn.Module:
        import timm

        torch.manual_seed(seed)
        return fan_in_init(timm.create_model(arch, pretrained=False, num_classes=5, **kwargs), seed)

    return build


def _transformers(model_class: str, config_class: str, **kwargs) -> Callable[[int], nn.Module]:
    def build(seed: int = 0) -> nn.Module:
        import transformers

        torch.manual_seed(seed)
        config = getattr(transformers, config_class)(num_labels=5, **kwargs)
        return fan_in_init(getattr(transformers, model_class)(config), seed)

    return build


def _timm_resnet(arch: str) -> Callable[[int], nn.Module]:
    return lambda seed=0: tiny_resnet(arch, seed=seed)


# family name -> variant -> builder(seed)
TINY_MODELS: dict[str, dict[str, Callable[[int], nn.Module]]] = {
    "timm-resnet": {arch: _timm_resnet(arch) for arch in ("resnet18", "resnet26d")},
    "timm-vit": {
        "vit": _timm("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=4, embed_dim=32, num_heads=2),
        "deit": _timm("deit_tiny_patch16_224", img_size=32, patch_size=8, depth=3, embed_dim=32, num_heads=2),
        "vit-layerscale": _timm(
            "vit_tiny_patch16_224", img_size=32, patch_size=8, depth=3, embed_dim=32, num_heads=2, init_values=0.5
        ),
    },
    "timm-convnext": {
        "convnext": _timm("convnext_atto", dims=(8, 16, 16, 24), depths=(2, 2, 3, 2), ls_init_value=0.5),
        "convnext-linear-mlp": _timm(
            "convnext_atto", dims=(8, 16, 16, 24), depths=(2, 1, 2, 1), ls_init_value=0.5, conv_mlp=False
        ),
        "convnextv2": _timm("convnextv2_atto", dims=(8, 16, 16, 24), depths=(1, 2, 2, 1)),
    },
    "transformers-resnet": {
        "basic": _transformers(
            "ResNetForImageClassification",
            "ResNetConfig",
            embedding_size=8,
            hidden_sizes=[8, 16, 16, 32],
            depths=[2, 2, 3, 1],
            layer_type="basic",
        ),
        "bottleneck": _transformers(
            "ResNetForImageClassification",
            "ResNetConfig",
            embedding_size=8,
            hidden_sizes=[16, 16, 32, 32],
            depths=[2, 1, 2, 2],
        ),
    },
    "transformers-vit": {
        "vit": _transformers(
            "ViTForImageClassification",
            "ViTConfig",
            hidden_size=32,
            num_hidden_layers=4,
            num_attention_heads=2,
            intermediate_size=64,
            image_size=32,
            patch_size=8,
        ),
    },
    "transformers-convnext": {
        "convnext": _transformers(
            "ConvNextForImageClassification",
            "ConvNextConfig",
            hidden_sizes=[8, 16, 16, 24],
            depths=[2, 1, 2, 1],
            layer_scale_init_value=0.5,
        ),
    },
}

#: "family/variant" ids, for parametrising
TINY_IDS = [f"{family}/{variant}" for family, variants in TINY_MODELS.items() for variant in variants]


def tiny_model(model_id: str, seed: int = 0) -> nn.Module:
    family, variant = model_id.split("/")
    return TINY_MODELS[family][variant](seed)


def logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = model(x)
    return out if isinstance(out, torch.Tensor) else out.logits
