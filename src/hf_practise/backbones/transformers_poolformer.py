"""transformers PoolFormer (`PoolFormerForImageClassification`).

Stages are the layer lists of `poolformer.encoder.block`; each stage opens with its own patch embedding (a
strided conv outside the blocks), so every layer keeps its input's shape and all are droppable. A layer has two
residual branches: pooling, which has no layer to adapt, and an MLP of 1x1 convs (`output.conv1` ...
`output.conv2`). The stream entering a stage is written by its patch embedding's conv and read after the last
layer by the next stage's. The config's `depths` rebuild a shallower model (a stage may keep no layer), so plain
transformers reloads the result.
"""

from __future__ import annotations

import torch
from torch import nn

from .registry import register_family
from .tiny import transformers_tiny
from .transformers_common import TransformersFamily


@register_family
class TransformersPoolFormerFamily(TransformersFamily):
    name = "transformers-poolformer"
    finetune_optimizer = "adamw"  # GroupNorm network, like ConvNeXt
    model_class_name = "PoolFormerForImageClassification"
    base_attr = "poolformer"
    tiny_models = {
        "poolformer": transformers_tiny(
            "PoolFormerForImageClassification", "PoolFormerConfig", hidden_sizes=[8, 16, 24, 32], depths=[2, 1, 3, 2]
        ),
    }

    def stages(self, model: nn.Module) -> list[nn.Module]:
        return list(model.poolformer.encoder.block)

    def is_droppable(self, block: nn.Module) -> bool:
        return True  # pooling and the MLP keep the shape; downsampling lives in the patch embeddings

    def branch_outputs(self, block: nn.Module) -> list[nn.Module]:
        return [block.output.conv2]

    def branch_inputs(self, block: nn.Module) -> list[nn.Module]:
        return [block.output.conv1]

    def stage_entry_outputs(self, model: nn.Module, stage: int) -> list[nn.Module]:
        return [model.poolformer.encoder.patch_embeddings[stage].projection]

    def stage_exit_inputs(self, model: nn.Module, stage: int) -> list[nn.Module]:
        embeddings = model.poolformer.encoder.patch_embeddings
        return [embeddings[stage + 1].projection] if stage + 1 < len(embeddings) else []

    def forward_head(self, model: nn.Module, features: torch.Tensor) -> torch.Tensor:
        return model.classifier(model.norm(features).mean([-2, -1]))
