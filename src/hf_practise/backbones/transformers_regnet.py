"""transformers RegNets (`RegNetForImageClassification`, X and Y layers).

Stages of shortcut layers (see `transformers_shortcut`): a layer's branch reads the stream through its first conv
and writes it through its last; the squeeze-excite convs of a Y layer see pooled channels and hold no adaptor.
The stream entering the first stage is written by the embedder's conv.
"""

from __future__ import annotations

from torch import nn

from .base import layers_outside
from .registry import register_family
from .transformers_shortcut import TransformersShortcutFamily, shortcut_tiny


@register_family
class TransformersRegNetFamily(TransformersShortcutFamily):
    name = "transformers-regnet"
    model_class_name = "RegNetForImageClassification"
    tiny_models = shortcut_tiny(
        model_class_name, "RegNetConfig", {"regnetx": "x", "regnety-se": "y"}, depths=[1, 2, 3, 2], groups_width=8
    )

    def branch_convs(self, block: nn.Module) -> list[nn.Module]:
        """The convs of the layer's residual branch in forward order, less those of its squeeze-excite."""
        se = [sub for sub in block.layer if hasattr(sub, "attention")]
        return layers_outside(block.layer, nn.Conv2d, *se)
