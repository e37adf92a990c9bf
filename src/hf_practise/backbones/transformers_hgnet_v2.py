"""transformers PP-HGNetV2 (`HGNetV2ForImageClassification`): stages of HG blocks that concatenate the outputs of a
chain of convs with their input and aggregate them with 1x1 convs.

As timm's (see `timm_hgnet`): stages are the `blocks` of `encoder.stages`; each stage's first block maps its input
to the stage's width with no shortcut and stays, every later block is residual (same width and resolution) and is
a candidate. A residual block reads the stream through the first ungrouped conv of its chain (the 1x1 conv of a
light block) and writes it through its last aggregation conv (then BatchNorm, the activation and the optional
learnable affine); the aggregation's concatenation also holds the stream itself, and carries no adaptor. The
stream a stage's residual blocks work on is written by its first block, and the stream leaving a stage is read,
after the next stage's depthwise downsampling, by that stage's first block; the head pools, then classifies. The
config's `stage_num_blocks` rebuild a shallower model, so plain transformers reloads the result.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import ungrouped
from .registry import register_family
from .tiny import tiny_variants, transformers_tiny
from .transformers_common import TransformersFamily


class FcHeadFamily(TransformersFamily):
    """Base of the families whose classifier keeps its pooling in `classifier` and its linear layer in `fc`
    (HGNetV2, TextNet)."""

    def forward_head(self, model: nn.Module, features: torch.Tensor) -> torch.Tensor:
        for layer in model.classifier:  # pooling, flattening
            features = layer(features)
        return model.fc(features)

    def classifier(self, model: nn.Module) -> nn.Module:
        return model.fc


@register_family
class TransformersHGNetV2Family(FcHeadFamily):
    name = "transformers-hgnet-v2"
    min_blocks_per_stage = 1  # a stage's first block has no shortcut (it changes the width)
    model_class_name = "HGNetV2ForImageClassification"
    depth_field = "stage_num_blocks"
    tiny_models = tiny_variants(
        transformers_tiny,
        # light blocks (a 1x1 conv, then a depthwise one) in the last two stages, as in the released ones; and with
        # the learnable affine blocks of the B0-B4 checkpoints
        {"hgnet-v2": {}, "hgnet-v2-lab": dict(use_learnable_affine_block=True)},
        model_class=model_class_name,
        config_class="HGNetV2Config",
        # 32x32 inputs: the stem divides by 4 (8x8 maps in the first stage), then each stage halves
        stem_channels=[3, 8, 8],
        stage_in_channels=[8, 16, 24, 32],
        stage_mid_channels=[8, 8, 8, 8],
        stage_out_channels=[16, 24, 32, 40],
        hidden_sizes=[16, 24, 32, 40],
        stage_num_blocks=[1, 2, 3, 2],
        stage_numb_of_layers=[2, 2, 2, 2],
        norms=True,
    )

    def stages(self, model: nn.Module) -> list[nn.Module]:
        return [stage.blocks for stage in model.encoder.stages]

    def is_droppable(self, block: nn.Module) -> bool:
        return bool(block.residual)

    def branch_outputs(self, block: nn.Module) -> list[nn.Module]:
        return [block.aggregation[-1].convolution]

    def branch_inputs(self, block: nn.Module) -> list[nn.Module]:
        return ungrouped(block.layers[0])[:1]

    def forward_features(self, model: nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
        return model.encoder(model.embedder(pixel_values)).last_hidden_state
