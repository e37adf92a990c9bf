"""transformers I-JEPA (`IJepaForImageClassification`): a ViT without [CLS] token whose head averages the patch
tokens (see `transformers_vit`)."""

from __future__ import annotations

import torch
from torch import nn

from .registry import register_family
from .tiny import transformers_tiny
from .transformers_vit import TransformersViTLikeFamily


@register_family
class TransformersIJepaFamily(TransformersViTLikeFamily):
    name = "transformers-ijepa"
    model_class_name = "IJepaForImageClassification"
    base_attr = "ijepa"
    layer_class = "IJepaLayer"
    tiny_models = {
        "ijepa": transformers_tiny(
            "IJepaForImageClassification",
            "IJepaConfig",
            hidden_size=32,
            num_hidden_layers=4,
            num_attention_heads=2,
            intermediate_size=64,
            image_size=32,
            patch_size=8,
        )
    }

    def forward_head(self, model: nn.Module, features: torch.Tensor) -> torch.Tensor:
        return model.classifier(features.mean(dim=1))
