"""What the transformers families of shortcut stages share (ResNet, BiT, RegNet).

Stages are the `layers` of `<base>.encoder.stages`; a layer is droppable when its shortcut has no conv (every
layer but a stage's first). A layer's branch reads the stream through its first conv and writes it through its
last; a stage's first layer also reads and writes it through its shortcut conv. The head pools the last
stage's output (`<base>.pooler`). The config's `depths` rebuild a shallower model, so plain transformers reloads
the result; transformers builds a stage of depth 0 with one layer, so every stage keeps one. A family names its
shortcut attribute and says which convs of a layer's branch see the stream.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import layers_of, layers_outside
from .tiny import TinyBuilder, transformers_tiny
from .transformers_common import TransformersFamily


def shortcut_tiny(model_class: str, config_class: str, layer_types: dict[str, str], **kwargs) -> dict[str, TinyBuilder]:
    """Tiny models of a shortcut-stage family, one per variant (variant -> the config's `layer_type`): four stages
    of widths 8 to 32 (`kwargs` on top)."""
    return {
        variant: transformers_tiny(
            model_class, config_class, embedding_size=8, hidden_sizes=[8, 16, 24, 32], layer_type=layer_type, **kwargs
        )
        for variant, layer_type in layer_types.items()
    }


class TransformersShortcutFamily(TransformersFamily):
    """Base of the families whose stages hold layers with a shortcut (an identity, or a conv at a stage's start)."""

    min_blocks_per_stage = 1  # transformers builds a stage of depth 0 with one layer
    #: the layer's shortcut attribute (an identity or None where the layer keeps its input's shape)
    shortcut_attr: str = "shortcut"
    #: whether the embedder's last conv writes the stream entering the first stage (an adaptor goes after it)
    embedder_writes_stream: bool = True

    def stages(self, model: nn.Module) -> list[nn.Module]:
        return [stage.layers for stage in self.base_model(model).encoder.stages]

    def _shortcut_convs(self, block: nn.Module) -> list[nn.Module]:
        return layers_of(getattr(block, self.shortcut_attr), nn.Conv2d)

    def branch_convs(self, block: nn.Module) -> list[nn.Module]:
        """The convs of the layer's residual branch, in forward order: all those outside its shortcut."""
        return layers_outside(block, nn.Conv2d, getattr(block, self.shortcut_attr))

    def is_droppable(self, block: nn.Module) -> bool:
        return not self._shortcut_convs(block)

    def branch_outputs(self, block: nn.Module) -> list[nn.Module]:
        return self.branch_convs(block)[-1:] + self._shortcut_convs(block)

    def branch_inputs(self, block: nn.Module) -> list[nn.Module]:
        return self.branch_convs(block)[:1] + self._shortcut_convs(block)

    def stage_entry_outputs(self, model: nn.Module, stage: int) -> list[nn.Module]:
        if stage == 0 and self.embedder_writes_stream:
            return layers_of(self.base_model(model).embedder, nn.Conv2d)[-1:]
        return []

    def forward_head(self, model: nn.Module, features: torch.Tensor) -> torch.Tensor:
        return model.classifier(self.base_model(model).pooler(features))
