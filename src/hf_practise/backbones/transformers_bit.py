"""transformers BiT (`BitForImageClassification`: pre-activation or post-activation bottleneck layers).

Stages are the `layers` of `bit.encoder.stages`; a layer is droppable when it has no `downsample` (every layer
but a stage's first). A layer's branch reads the stream through `conv1` and writes it through `conv3`. BiT's
convs are weight-standardised (`WeightStandardizedConv2d` renormalises its filters in every forward), so a
channel mix cannot be folded into them exactly: PRACTISE places no adaptors in a BiT, the scan ranks blocks by
the error of simply dropping them and the finetune recovers the rest. The config's `depths` rebuild a
shallower model, so plain transformers reloads the result; every stage keeps its first layer.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import layers_of
from .registry import register_family
from .tiny import transformers_tiny
from .transformers_common import TransformersFamily


def _branch_convs(block: nn.Module) -> list[nn.Module]:
    shortcut = {id(m) for m in (block.downsample or nn.Identity()).modules()}
    return [m for m in layers_of(block, nn.Conv2d) if id(m) not in shortcut]


@register_family
class TransformersBitFamily(TransformersFamily):
    name = "transformers-bit"
    min_blocks_per_stage = 1  # transformers builds a stage of depth 0 with one layer
    model_class_name = "BitForImageClassification"
    base_attr = "bit"
    tiny_models = {
        variant: transformers_tiny(
            "BitForImageClassification",
            "BitConfig",
            embedding_size=8,
            hidden_sizes=[8, 16, 24, 32],
            depths=[2, 1, 3, 2],
            num_groups=2,
            layer_type=layer_type,
        )
        for variant, layer_type in (("preactivation", "preactivation"), ("bottleneck", "bottleneck"))
    }

    def stages(self, model: nn.Module) -> list[nn.Module]:
        return [stage.layers for stage in model.bit.encoder.stages]

    def is_droppable(self, block: nn.Module) -> bool:
        return block.downsample is None

    def branch_outputs(self, block: nn.Module) -> list[nn.Module]:
        return _branch_convs(block)[-1:] + layers_of(block.downsample, nn.Conv2d)

    def branch_inputs(self, block: nn.Module) -> list[nn.Module]:
        return _branch_convs(block)[:1] + layers_of(block.downsample, nn.Conv2d)

    def stage_entry_outputs(self, model: nn.Module, stage: int) -> list[nn.Module]:
        return layers_of(model.bit.embedder, nn.Conv2d)[-1:] if stage == 0 else []

    def forward_head(self, model: nn.Module, features: torch.Tensor) -> torch.Tensor:
        return model.classifier(model.bit.pooler(features))  # `last_hidden_state` is after BiT's final norm
