"""transformers RegNets (`RegNetForImageClassification`, X and Y layers).

Stages are the `layers` of `regnet.encoder.stages`; a layer is droppable when its shortcut is the identity (every
layer but a stage's first). A layer's branch reads the stream through its first conv and writes it through its
last (the squeeze-excite convs of a Y layer see pooled channels and hold no adaptor); a stage's first layer also
writes it through its shortcut conv. The stream entering the first stage is written by the embedder's conv.
The config's `depths` rebuild a shallower model, so plain transformers reloads the result; every stage keeps
its first layer.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import layers_of
from .registry import register_family
from .tiny import transformers_tiny
from .transformers_common import TransformersFamily


def _branch_convs(block: nn.Module) -> list[nn.Module]:
    """The convs of the layer's residual branch in forward order, less those of its squeeze-excite."""
    se = {id(m) for sub in block.layer if hasattr(sub, "attention") for m in sub.modules()}
    return [m for m in layers_of(block.layer, nn.Conv2d) if id(m) not in se]


@register_family
class TransformersRegNetFamily(TransformersFamily):
    name = "transformers-regnet"
    min_blocks_per_stage = 1  # transformers builds a stage of depth 0 with one layer
    model_class_name = "RegNetForImageClassification"
    base_attr = "regnet"
    tiny_models = {
        variant: transformers_tiny(
            "RegNetForImageClassification",
            "RegNetConfig",
            embedding_size=8,
            hidden_sizes=[8, 16, 24, 32],
            depths=[1, 2, 3, 2],
            groups_width=8,
            layer_type=layer_type,
        )
        for variant, layer_type in (("regnetx", "x"), ("regnety-se", "y"))
    }

    def stages(self, model: nn.Module) -> list[nn.Module]:
        return [stage.layers for stage in model.regnet.encoder.stages]

    def is_droppable(self, block: nn.Module) -> bool:
        return not layers_of(block.shortcut, nn.Conv2d)

    def branch_outputs(self, block: nn.Module) -> list[nn.Module]:
        return _branch_convs(block)[-1:] + layers_of(block.shortcut, nn.Conv2d)

    def branch_inputs(self, block: nn.Module) -> list[nn.Module]:
        return _branch_convs(block)[:1] + layers_of(block.shortcut, nn.Conv2d)

    def stage_entry_outputs(self, model: nn.Module, stage: int) -> list[nn.Module]:
        return layers_of(model.regnet.embedder, nn.Conv2d)[-1:] if stage == 0 else []

    def forward_head(self, model: nn.Module, features: torch.Tensor) -> torch.Tensor:
        return model.classifier(model.regnet.pooler(features))
