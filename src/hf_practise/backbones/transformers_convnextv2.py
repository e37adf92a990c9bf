"""transformers ConvNeXt V2 (`ConvNextV2ForImageClassification`): ConvNeXt layers with global response
normalisation between `pwconv1` and `pwconv2`. Structure, adaptors and saving as the ConvNeXt family's; the
base model sits at `convnextv2`.
"""

from __future__ import annotations

from .registry import register_family
from .tiny import transformers_tiny
from .transformers_convnext import TransformersConvNextFamily


@register_family
class TransformersConvNextV2Family(TransformersConvNextFamily):
    name = "transformers-convnextv2"
    model_class_name = "ConvNextV2ForImageClassification"
    base_attr = "convnextv2"
    tiny_models = {
        "convnextv2": transformers_tiny(
            "ConvNextV2ForImageClassification", "ConvNextV2Config", hidden_sizes=[8, 16, 16, 24], depths=[2, 1, 2, 1]
        ),
    }
