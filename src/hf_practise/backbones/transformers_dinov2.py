"""transformers DINOv2 (`Dinov2ForImageClassification`, `Dinov2WithRegistersForImageClassification`).

ViTs with layer scales (see `transformers_vit`); the head reads the [CLS] token beside the mean of the patch
tokens (after the register tokens, where there are some). A layer's scales go with it when it is dropped; the
layer-indexed drop-path rates only act in training.
"""

from __future__ import annotations

import torch
from torch import nn

from .registry import register_family
from .transformers_vit import TransformersViTLikeFamily, vit_tiny


@register_family
class TransformersDinov2Family(TransformersViTLikeFamily):
    name = "transformers-dinov2"
    model_class_name = "Dinov2ForImageClassification"
    base_attr = "dinov2"
    layer_class = "Dinov2Layer"
    branch_parts = {"attn": ("norm1", "attention", "layer_scale1"), "mlp": ("norm2", "mlp", "layer_scale2")}
    tiny_models = {
        "dinov2": vit_tiny(
            "Dinov2ForImageClassification",
            "Dinov2Config",
        )
    }

    def _registers(self, model: nn.Module) -> int:
        return 0

    def forward_head(self, model: nn.Module, features: torch.Tensor) -> torch.Tensor:
        patches = features[:, 1 + self._registers(model) :]
        return model.classifier(torch.cat([features[:, 0], patches.mean(dim=1)], dim=1))


@register_family
class TransformersDinov2WithRegistersFamily(TransformersDinov2Family):
    name = "transformers-dinov2-registers"
    model_class_name = "Dinov2WithRegistersForImageClassification"
    base_attr = "dinov2_with_registers"
    layer_class = "Dinov2WithRegistersLayer"
    tiny_models = {
        "dinov2-registers": vit_tiny(
            "Dinov2WithRegistersForImageClassification",
            "Dinov2WithRegistersConfig",
            num_register_tokens=2,
        )
    }

    def _registers(self, model: nn.Module) -> int:
        return model.config.num_register_tokens
