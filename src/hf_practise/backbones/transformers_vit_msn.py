"""transformers ViT-MSN (`ViTMSNForImageClassification`): a ViT whose head reads the [CLS] token (see
`transformers_vit`)."""

from __future__ import annotations

from .registry import register_family
from .transformers_vit import TransformersViTLikeFamily, vit_tiny


@register_family
class TransformersViTMSNFamily(TransformersViTLikeFamily):
    name = "transformers-vit-msn"
    model_class_name = "ViTMSNForImageClassification"
    base_attr = "vit"
    layer_class = "ViTMSNLayer"
    tiny_models = {
        "vit-msn": vit_tiny(
            "ViTMSNForImageClassification",
            "ViTMSNConfig",
        )
    }
