"""transformers I-JEPA (`IJepaForImageClassification`): a ViT without [CLS] token whose head averages the patch
tokens (see `transformers_vit`)."""

from __future__ import annotations

import torch
from torch import nn

from .registry import register_family
from .transformers_vit import TransformersViTLikeFamily, vit_tiny


@register_family
class TransformersIJepaFamily(TransformersViTLikeFamily):
    name = "transformers-ijepa"
    model_class_name = "IJepaForImageClassification"
    base_attr = "ijepa"
    layer_class = "IJepaLayer"
    tiny_models = {
        "ijepa": vit_tiny(
            "IJepaForImageClassification",
            "IJepaConfig",
        )
    }

    def forward_head(self, model: nn.Module, features: torch.Tensor) -> torch.Tensor:
        return model.classifier(features.mean(dim=1))
