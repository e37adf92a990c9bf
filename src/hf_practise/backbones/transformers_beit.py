"""transformers BEiT and data2vec-vision (`BeitForImageClassification`, `Data2VecVisionForImageClassification`).

ViTs with layer scales and relative position biases (see `transformers_vit`): a per-layer bias table goes with
its layer, a shared one stays with the encoder. The head is the base model's pooler (mean of the patch tokens,
normalised, or the [CLS] token) and the classifier.

With `units="branches"` (see `branches.py`), a layer's attention and MLP are candidates of their own; a dropped
branch's layer scale (`lambda_1` / `lambda_2`, a parameter of the layer) stays and scales its zero.
"""

from __future__ import annotations

import torch
from torch import nn

from .registry import register_family
from .transformers_vit import TransformersViTLikeFamily, vit_tiny


@register_family
class TransformersBeitFamily(TransformersViTLikeFamily):
    name = "transformers-beit"
    model_class_name = "BeitForImageClassification"
    base_attr = "beit"
    layer_class = "BeitLayer"
    #: a layer's branches, by part in call order; the layer scales are parameters of the layer (or 1.0), and the
    #: layer computes the relative position bias it hands its attention (so the attention's unit runs the layer)
    branch_parts = {
        "attn": ("layernorm_before", "attention", "lambda_1"),
        "mlp": ("layernorm_after", "mlp", "lambda_2"),
    }
    inline_branches = frozenset({"attn"})
    tiny_models = {
        "beit-relpos-meanpool": vit_tiny(
            "BeitForImageClassification",
            "BeitConfig",
            use_relative_position_bias=True,
            use_mean_pooling=True,
        ),
        "beit-shared-relpos-cls": vit_tiny(
            "BeitForImageClassification",
            "BeitConfig",
            use_shared_relative_position_bias=True,
            use_mean_pooling=False,
        ),
    }

    def forward_head(self, model: nn.Module, features: torch.Tensor) -> torch.Tensor:
        return model.classifier(getattr(model, self.base_attr).pooler(features))


@register_family
class TransformersData2VecVisionFamily(TransformersBeitFamily):
    name = "transformers-data2vec-vision"
    model_class_name = "Data2VecVisionForImageClassification"
    base_attr = "data2vec_vision"
    layer_class = "Data2VecVisionLayer"
    # its MLP is two modules (`intermediate`, then `output`)
    branch_parts = {
        "attn": ("layernorm_before", "attention", "lambda_1"),
        "mlp": ("layernorm_after", "intermediate", "output", "lambda_2"),
    }
    tiny_models = {
        "data2vec-vision": vit_tiny(
            "Data2VecVisionForImageClassification",
            "Data2VecVisionConfig",
            use_relative_position_bias=True,
        )
    }
