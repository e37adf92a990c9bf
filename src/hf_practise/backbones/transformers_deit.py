"""transformers DeiT (`DeiTForImageClassification` and `DeiTForImageClassificationWithTeacher`).

A ViT with a distillation token beside the [CLS] token (see `transformers_vit`). The plain classifier reads the
[CLS] token; the one "with teacher" averages its [CLS] head and its distillation head (which reads the second
token), and both heads stay frozen during the mimic finetune.
"""

from __future__ import annotations

import torch
from torch import nn

from .registry import register_family
from .transformers_vit import TransformersViTLikeFamily, vit_tiny


@register_family
class TransformersDeiTFamily(TransformersViTLikeFamily):
    name = "transformers-deit"
    model_class_name = "DeiTForImageClassification"
    base_attr = "deit"
    layer_class = "DeiTLayer"
    tiny_models = {
        "deit": vit_tiny(
            "DeiTForImageClassification",
            "DeiTConfig",
        )
    }


@register_family
class TransformersDeiTWithTeacherFamily(TransformersViTLikeFamily):
    name = "transformers-deit-distilled"
    model_class_name = "DeiTForImageClassificationWithTeacher"
    base_attr = "deit"
    layer_class = "DeiTLayer"
    tiny_models = {
        "deit-with-teacher": vit_tiny(
            "DeiTForImageClassificationWithTeacher",
            "DeiTConfig",
        )
    }

    def classifier(self, model: nn.Module) -> nn.Module:
        return nn.ModuleList([model.cls_classifier, model.distillation_classifier])

    def forward_head(self, model: nn.Module, features: torch.Tensor) -> torch.Tensor:
        return (model.cls_classifier(features[:, 0, :]) + model.distillation_classifier(features[:, 1, :])) / 2
