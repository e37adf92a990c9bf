"""transformers ViT-MSN (`ViTMSNForImageClassification`): a ViT whose head reads the [CLS] token (see
`transformers_vit`)."""

from __future__ import annotations

from .registry import register_family
from .tiny import transformers_tiny
from .transformers_vit import TransformersViTLikeFamily


@register_family
class TransformersViTMSNFamily(TransformersViTLikeFamily):
    name = "transformers-vit-msn"
    model_class_name = "ViTMSNForImageClassification"
    base_attr = "vit"
    layer_class = "ViTMSNLayer"
    tiny_models = {
        "vit-msn": transformers_tiny(
            "ViTMSNForImageClassification",
            "ViTMSNConfig",
            hidden_size=32,
            num_hidden_layers=4,
            num_attention_heads=2,
            intermediate_size=64,
            image_size=32,
            patch_size=8,
        )
    }
