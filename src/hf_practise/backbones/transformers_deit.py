"""transformers DeiT (`DeiTForImageClassification` and `DeiTForImageClassificationWithTeacher`).

A ViT with a distillation token beside the [CLS] token (see `transformers_vit`). The plain classifier reads the
[CLS] token; the one "with teacher" averages its [CLS] head and its distillation head (which reads the second
token), and both heads stay frozen during the mimic finetune.
"""

from __future__ import annotations

import torch
from torch import nn

from .registry import register_family
from .tiny import transformers_tiny
from .transformers_vit import TransformersViTLikeFamily


@register_family
class TransformersDeiTFamily(TransformersViTLikeFamily):
    name = "transformers-deit"
    model_class_name = "DeiTForImageClassification"
    base_attr = "deit"
    layer_class = "DeiTLayer"
    tiny_models = {
        "deit": transformers_tiny(
            "DeiTForImageClassification",
            "DeiTConfig",
            hidden_size=32,
            num_hidden_layers=4,
            num_attention_heads=2,
            intermediate_size=64,
            image_size=32,
            patch_size=8,
        )
    }


@register_family
class TransformersDeiTWithTeacherFamily(TransformersViTLikeFamily):
    name = "transformers-deit-distilled"
    model_class_name = "DeiTForImageClassificationWithTeacher"
    base_attr = "deit"
    layer_class = "DeiTLayer"
    tiny_models = {
        "deit-with-teacher": transformers_tiny(
            "DeiTForImageClassificationWithTeacher",
            "DeiTConfig",
            hidden_size=32,
            num_hidden_layers=4,
            num_attention_heads=2,
            intermediate_size=64,
            image_size=32,
            patch_size=8,
        )
    }

    def classifier(self, model: nn.Module) -> nn.Module:
        return nn.ModuleList([model.cls_classifier, model.distillation_classifier])

    def forward_head(self, model: nn.Module, features: torch.Tensor) -> torch.Tensor:
        return (model.cls_classifier(features[:, 0, :]) + model.distillation_classifier(features[:, 1, :])) / 2
