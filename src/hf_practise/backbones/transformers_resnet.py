"""transformers ResNets (`ResNetForImageClassification`, basic and bottleneck layers).

Stages of shortcut layers (see `transformers_shortcut`). Adaptors sit as in the timm ResNet family: after the
last conv of each earlier layer's branch and shortcut, before the first conv of each later layer and of the next
stage's first layer; none after the embedder, whose max pool comes before the first stage.
"""

from __future__ import annotations

from .registry import register_family
from .tiny import tiny_variants, transformers_tiny
from .transformers_shortcut import TransformersShortcutFamily


@register_family
class TransformersResNetFamily(TransformersShortcutFamily):
    """`ResNetForImageClassification`: a block is droppable when its shortcut is the identity."""

    name = "transformers-resnet"
    model_class_name = "ResNetForImageClassification"
    embedder_writes_stream = False
    tiny_models = tiny_variants(
        transformers_tiny,
        {
            "basic": dict(hidden_sizes=[8, 16, 16, 32], depths=[2, 2, 3, 1], layer_type="basic"),
            "bottleneck": dict(hidden_sizes=[16, 16, 32, 32], depths=[2, 1, 2, 2]),
        },
        model_class=model_class_name,
        config_class="ResNetConfig",
        embedding_size=8,
    )
