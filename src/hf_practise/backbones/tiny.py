"""Tiny random models for a family's tests: builders that families list beside their code (`tiny_models`).

Random inits hide what PRACTISE acts on: timm zero-initialises each ResNet block's last BN, ConvNeXt's layer
scale starts at 1e-6 (every block an identity) and a std-0.02 ViT barely lets the class token see the image.
These builders undo that, so every block and every adaptor visibly changes the output. Inputs are 32x32 RGB,
5 classes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

__all__ = [
    "TinyBuilder",
    "fan_in_init",
    "randomise_norms",
    "timm_tiny",
    "tiny_variants",
    "transformers_tiny",
]

#: builds a tiny model from a seed
TinyBuilder = Callable[[int], nn.Module]
NUM_CLASSES = 5


def randomise_norms(model: nn.Module, seed: int = 0) -> nn.Module:
    """BatchNorm affine weights and running statistics away from the identity (timm zero-inits some)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=g))
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
                m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
    return model.eval()


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


def timm_tiny(arch: str, *, init: str = "fan_in", **kwargs) -> TinyBuilder:
    """A builder of `timm.create_model(arch, **kwargs)` with 5 classes, randomly initialised: `fan_in`, `norms`
    (timm's init, BatchNorm away from the identity) or `calibrate` (fan-in, BatchNorm calibrated: `calibrate_norms`)."""

    def build(seed: int = 0) -> nn.Module:
        import timm

        torch.manual_seed(seed)
        model = timm.create_model(arch, pretrained=False, num_classes=NUM_CLASSES, **kwargs)
        if init == "norms":
            return randomise_norms(model, seed)
        model = fan_in_init(model, seed)
        return calibrate_norms(model, seed) if init == "calibrate" else model

    return build


def tiny_variants(
    build: Callable[..., TinyBuilder], variants: dict[str, dict[str, Any]], /, **common: Any
) -> dict[str, TinyBuilder]:
    """A family's `tiny_models` whose variants differ in a few arguments: variant -> `build(**common, **own)`, where
    `own` is the variant's entry of `variants` (e.g. `build=timm_tiny`, `common={"img_size": 32}`)."""
    return {variant: build(**{**common, **own}) for variant, own in variants.items()}


@torch.no_grad()
def calibrate_norms(model: nn.Module, seed: int) -> nn.Module:
    """BatchNorm affine weights near 1 and running statistics measured on random 32x32 images, so that a deep
    tiny random network (SiLU and squeeze-excite shrink activations at every block) still depends on its input."""
    randomise_norms(model, seed)
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a plain average over the calibration batch
    model.train()
    model(torch.randn(16, 3, 32, 32, generator=torch.Generator().manual_seed(seed)))
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    return model.eval()


def transformers_tiny(model_class: str, config_class: str, *, norms: bool = False, **kwargs) -> TinyBuilder:
    """A builder of a transformers `model_class(config_class(**kwargs))` with 5 labels, fan-in initialised (with
    `norms`, BatchNorm calibrated on random images: see `calibrate_norms`)."""

    def build(seed: int = 0) -> nn.Module:
        import transformers

        torch.manual_seed(seed)
        config = getattr(transformers, config_class)(num_labels=NUM_CLASSES, **kwargs)
        model = fan_in_init(getattr(transformers, model_class)(config), seed)
        return calibrate_norms(model, seed) if norms else model

    return build
