"""The image classifiers of CLIP, MetaCLIP 2 and SigLIP (`CLIPForImageClassification`, ...).

The vision tower is a ViT (see `transformers_vit`) at `vision_model`, its depth in
`vision_config.num_hidden_layers`. CLIP and MetaCLIP 2 classify the mean of the patch tokens (the [CLS] token
left out), SigLIP the mean of all tokens.
"""

from __future__ import annotations

import torch
from torch import nn

from .registry import register_family
from .transformers_vit import TransformersViTLikeFamily, vit_tiny


@register_family
class TransformersCLIPFamily(TransformersViTLikeFamily):
    name = "transformers-clip"
    model_class_name = "CLIPForImageClassification"
    base_attr = "vision_model"
    layer_class = "CLIPEncoderLayer"
    branch_parts = {"attn": ("layer_norm1", "self_attn"), "mlp": ("layer_norm2", "mlp")}
    depth_field = "vision_config.num_hidden_layers"
    #: whether the tower's first token is a [CLS] token, which the head leaves out of its mean
    cls_token: bool = True
    tiny_models = {"clip": vit_tiny(model_class_name, "CLIPConfig", nested=True)}

    def forward_head(self, model: nn.Module, features: torch.Tensor) -> torch.Tensor:
        tokens = features[:, 1:, :] if self.cls_token else features
        return model.classifier(tokens.mean(dim=1))


@register_family
class TransformersMetaClip2Family(TransformersCLIPFamily):
    name = "transformers-metaclip2"
    model_class_name = "MetaClip2ForImageClassification"
    layer_class = "MetaClip2EncoderLayer"
    tiny_models = {"metaclip2": vit_tiny(model_class_name, "MetaClip2Config", nested=True)}


@register_family
class TransformersSiglipFamily(TransformersCLIPFamily):
    name = "transformers-siglip"
    model_class_name = "SiglipForImageClassification"
    layer_class = "SiglipEncoderLayer"
    cls_token = False
    tiny_models = {"siglip": vit_tiny(model_class_name, "SiglipConfig", nested=True)}
