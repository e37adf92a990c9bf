"""transformers MobileNetV2 (`MobileNetV2ForImageClassification`).

transformers keeps the 16 inverted-residual layers in one flat list (`mobilenet_v2.layer`); a stage is a run
that starts with a layer without a residual connection and goes on with layers that add their input
(`use_residual`): those are the candidates. A layer reads the stream through `expand_1x1` and writes it through
`reduce_1x1`; the stem's `reduce_1x1` writes the stream entering the first stage, `conv_1x1` reads the one
leaving the last.

MobileNetV2's config fixes the 16 layers (only their width scales), so a block-dropped model is saved in
hf_practise's format and reloads with `hf_practise.load_compressed`.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import layers_of
from .registry import register_family
from .tiny import transformers_tiny
from .transformers_common import TransformersFamily
from .transformers_efficientnet import split_flat


@register_family
class TransformersMobileNetV2Family(TransformersFamily):
    name = "transformers-mobilenetv2"
    native_reload = False
    native_reload_why = "the MobileNetV2 config has no per-stage depths (they are fixed in transformers' model code)"
    # depthwise-separable networks: AdamW. Measured on the MobileNetV2 Fashion-MNIST teacher (89.62%), 22% target,
    # 500 images, 500 steps, seed 0, same 5 blocks: SGD lr 0.01 76.33%, SGD 0.001 78.93%, AdamW 1e-4 87.26%
    finetune_optimizer = "adamw"
    min_blocks_per_stage = 1  # a stage's first layer carries its change of width or resolution
    model_class_name = "MobileNetV2ForImageClassification"
    base_attr = "mobilenet_v2"
    tiny_models = {
        "mobilenetv2": transformers_tiny(
            "MobileNetV2ForImageClassification",
            "MobileNetV2Config",
            depth_multiplier=0.35,
            finegrained_output=False,
            image_size=32,
            norms=True,
        ),
    }

    def stages(self, model: nn.Module) -> list[list[nn.Module]]:
        return split_flat(model.mobilenet_v2.layer, lambda b: not b.use_residual)

    def is_droppable(self, block: nn.Module) -> bool:
        return bool(block.use_residual)

    def branch_outputs(self, block: nn.Module) -> list[nn.Module]:
        return layers_of(block.reduce_1x1, nn.Conv2d)

    def branch_inputs(self, block: nn.Module) -> list[nn.Module]:
        return layers_of(block.expand_1x1, nn.Conv2d)

    def stage_entry_outputs(self, model: nn.Module, stage: int) -> list[nn.Module]:
        return layers_of(model.mobilenet_v2.conv_stem.reduce_1x1, nn.Conv2d) if stage == 0 else []

    def stage_exit_inputs(self, model: nn.Module, stage: int) -> list[nn.Module]:
        if stage == len(self.stages(model)) - 1:
            return layers_of(model.mobilenet_v2.conv_1x1, nn.Conv2d)
        return super().stage_exit_inputs(model, stage)

    def forward_head(self, model: nn.Module, features: torch.Tensor) -> torch.Tensor:
        return model.classifier(torch.flatten(model.mobilenet_v2.pooler(features), 1))

    def remove_blocks(self, model: nn.Module, gone: set[tuple[int, int]]) -> None:
        model.mobilenet_v2.layer = nn.ModuleList(
            b for s, stage in enumerate(self.stages(model)) for i, b in enumerate(stage) if (s, i) not in gone
        )
