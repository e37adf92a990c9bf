"""transformers BiT (`BitForImageClassification`: pre-activation or post-activation bottleneck layers).

Stages of shortcut layers (see `transformers_shortcut`): a layer's shortcut is its `downsample` (None but in a
stage's first layer), its branch reads the stream through `conv1` and writes it through `conv3`. BiT's convs are
weight-standardised (`WeightStandardizedConv2d` renormalises its filters in every forward), so a channel mix
cannot be folded into them exactly: PRACTISE places no adaptors in a BiT, the scan ranks blocks by the error of
simply dropping them and the finetune recovers the rest. `last_hidden_state` is after BiT's final norm.
"""

from __future__ import annotations

from .registry import register_family
from .transformers_shortcut import TransformersShortcutFamily, shortcut_tiny


@register_family
class TransformersBitFamily(TransformersShortcutFamily):
    name = "transformers-bit"
    model_class_name = "BitForImageClassification"
    shortcut_attr = "downsample"
    tiny_models = shortcut_tiny(
        model_class_name,
        "BitConfig",
        {"preactivation": "preactivation", "bottleneck": "bottleneck"},
        depths=[2, 1, 3, 2],
        num_groups=2,
    )
