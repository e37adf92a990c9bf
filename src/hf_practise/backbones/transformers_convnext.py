"""transformers ConvNeXts (`ConvNextForImageClassification`).

Stages downsample in their own `downsampling_layer`, so every layer keeps its input's shape and is droppable.
Adaptors as in the timm ConvNeXt family: after `pwconv2` of earlier layers and the stage's downsampling conv
(the patch embedding for the first stage), before `pwconv1` of later layers (a channel mix cannot fold into
the depthwise conv) and the next stage's downsampling conv.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import layers_of
from .registry import register_family
from .tiny import transformers_tiny
from .transformers_common import TransformersFamily


@register_family
class TransformersConvNextFamily(TransformersFamily):
    """`ConvNextForImageClassification`: stages downsample in their own `downsampling_layer`, so every block is
    droppable; adaptors as for timm's ConvNeXt (`pwconv2` writes, `pwconv1` reads: the depthwise conv cannot take
    a folded channel mix)."""

    name = "transformers-convnext"
    finetune_optimizer = "adamw"  # LayerNorm: SGD at 0.01 is too rough
    scan_iterations = 600  # ranking tau against 1,000 steps: 0.788 at 100, 0.909 (0.848 transformers) at 400, 0.939
    # (0.909) at 600 (benchmarks/results/scan_tau_summary.md)
    model_class_name = "ConvNextForImageClassification"
    base_attr = "convnext"
    tiny_models = {
        "convnext": transformers_tiny(
            "ConvNextForImageClassification",
            "ConvNextConfig",
            hidden_sizes=[8, 16, 16, 24],
            depths=[2, 1, 2, 1],
            layer_scale_init_value=0.5,
        ),
    }

    def stages(self, model: nn.Module) -> list[nn.Module]:
        return [stage.layers for stage in getattr(model, self.base_attr).encoder.stages]

    def is_droppable(self, block: nn.Module) -> bool:
        return block.dwconv.stride in ((1, 1), 1)

    def branch_outputs(self, block: nn.Module) -> list[nn.Module]:
        return [block.pwconv2]

    def branch_inputs(self, block: nn.Module) -> list[nn.Module]:
        return [block.pwconv1]

    def stage_entry_outputs(self, model: nn.Module, stage: int) -> list[nn.Module]:
        convs = layers_of(getattr(model, self.base_attr).encoder.stages[stage].downsampling_layer, (nn.Conv2d,))
        return (convs or (layers_of(getattr(model, self.base_attr).embeddings, (nn.Conv2d,)) if stage == 0 else []))[
            -1:
        ]

    def stage_exit_inputs(self, model: nn.Module, stage: int) -> list[nn.Module]:
        stages = getattr(model, self.base_attr).encoder.stages
        if stage + 1 < len(stages):
            convs = layers_of(stages[stage + 1].downsampling_layer, (nn.Conv2d,))
            if convs:
                return convs[:1]
        return super().stage_exit_inputs(model, stage)

    def forward_head(self, model: nn.Module, features: torch.Tensor) -> torch.Tensor:
        return model.classifier(getattr(model, self.base_attr).layernorm(features.mean([-2, -1])))
