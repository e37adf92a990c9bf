"""transformers ResNets (`ResNetForImageClassification`, basic and bottleneck layers).

Stages are the `layers` of `resnet.encoder.stages`; a layer is droppable when its shortcut is the identity.
Adaptors sit as in the timm ResNet family: after the last conv of each earlier layer's branch and shortcut,
before the first conv of each later layer and of the next stage's first layer. transformers builds a stage
of depth 0 with one layer, so every stage keeps one.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import layers_of
from .registry import register_family
from .tiny import transformers_teacher, transformers_tiny
from .transformers_common import TransformersFamily


@register_family
class TransformersResNetFamily(TransformersFamily):
    """`ResNetForImageClassification`: a block is droppable when its shortcut is the identity."""

    name = "transformers-resnet"
    min_blocks_per_stage = 1  # transformers builds a stage of depth 0 with one block
    model_class_name = "ResNetForImageClassification"
    base_attr = "resnet"
    tiny_models = {
        "basic": transformers_tiny(
            "ResNetForImageClassification",
            "ResNetConfig",
            embedding_size=8,
            hidden_sizes=[8, 16, 16, 32],
            depths=[2, 2, 3, 1],
            layer_type="basic",
        ),
        "bottleneck": transformers_tiny(
            "ResNetForImageClassification",
            "ResNetConfig",
            embedding_size=8,
            hidden_sizes=[16, 16, 32, 32],
            depths=[2, 1, 2, 2],
        ),
    }
    teacher_recipes = {
        "hf-resnet": transformers_teacher(
            "transformers ResNet (basic, widths 32-256, depths 2-2-4-2)",
            "ResNetForImageClassification",
            "ResNetConfig",
            embedding_size=32,
            hidden_sizes=[32, 64, 128, 256],
            depths=[2, 2, 4, 2],
            layer_type="basic",
        ),
    }

    def stages(self, model: nn.Module) -> list[nn.Module]:
        return [stage.layers for stage in model.resnet.encoder.stages]

    def is_droppable(self, block: nn.Module) -> bool:
        return not layers_of(block.shortcut, (nn.Conv2d,))

    def branch_outputs(self, block: nn.Module) -> list[nn.Module]:
        return layers_of(block.layer, (nn.Conv2d,))[-1:] + layers_of(block.shortcut, (nn.Conv2d,))

    def branch_inputs(self, block: nn.Module) -> list[nn.Module]:
        return layers_of(block.layer, (nn.Conv2d,))[:1] + layers_of(block.shortcut, (nn.Conv2d,))

    def forward_head(self, model: nn.Module, features: torch.Tensor) -> torch.Tensor:
        return model.classifier(model.resnet.pooler(features))
