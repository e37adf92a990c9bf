"""transformers EfficientNet (`EfficientNetForImageClassification`, B0-B7).

transformers keeps the blocks in one flat list (`efficientnet.encoder.blocks`); a stage is a run of blocks that
starts with one without a residual connection (the block that changes width or resolution) and goes on with
blocks that add their input (`projection.apply_dropout`): those are the candidates. A block reads the stream
through its expansion conv (a block without expansion: through its projection, after the depthwise conv, since
a channel mix cannot fold into a depthwise conv) and writes it through its projection conv; the squeeze-excite
convs act on pooled channels and hold no adaptor. The stem conv writes the stream entering the first stage, the
`top_conv` reads the one leaving the last.

Saving writes `depth_coefficient` 1 and `num_block_repeats` = the blocks per stage (the config's own way of
setting depths) and renumbers `depthwise_padding` (indices of blocks with symmetric stride-2 padding), so plain
transformers reloads the result.
"""

from __future__ import annotations

import torch
from torch import nn

from .registry import register_family
from .tiny import transformers_tiny
from .transformers_common import TransformersFamily


def _mixing_convs(block: nn.Module) -> list[nn.Conv2d]:
    """The block's ungrouped convs in forward order, less those of its squeeze-excite (they see pooled channels)."""
    excluded = {id(m) for m in block.squeeze_excite.modules()}
    return [m for m in block.modules() if isinstance(m, nn.Conv2d) and m.groups == 1 and id(m) not in excluded]


def split_flat(blocks: nn.ModuleList, opens_stage) -> list[list[nn.Module]]:
    """Cut a flat block list into stages: a new stage at every block for which `opens_stage(block)` holds."""
    stages: list[list[nn.Module]] = []
    for block in blocks:
        if opens_stage(block) or not stages:
            stages.append([])
        stages[-1].append(block)
    return stages


@register_family
class TransformersEfficientNetFamily(TransformersFamily):
    name = "transformers-efficientnet"
    min_blocks_per_stage = 1  # a stage's first block carries its change of width or resolution
    # depthwise-separable networks: AdamW. Measured on the MobileNetV2 Fashion-MNIST teacher (89.62%), 22% target,
    # 500 images, 500 steps, seed 0, same 5 blocks: SGD lr 0.01 76.33%, SGD 0.001 78.93%, AdamW 1e-4 87.26%
    finetune_optimizer = "adamw"
    model_class_name = "EfficientNetForImageClassification"
    base_attr = "efficientnet"
    depth_field = "num_block_repeats"
    tiny_models = {
        "efficientnet": transformers_tiny(
            "EfficientNetForImageClassification",
            "EfficientNetConfig",
            width_coefficient=0.25,
            depth_coefficient=1.0,
            num_block_repeats=[1, 2, 2, 3, 1, 2, 1],
            hidden_dim=320,
            image_size=32,
            depthwise_padding=[3],
            norms=True,
        ),
    }

    def stages(self, model: nn.Module) -> list[list[nn.Module]]:
        return split_flat(model.efficientnet.encoder.blocks, lambda b: not b.projection.apply_dropout)

    def is_droppable(self, block: nn.Module) -> bool:
        return bool(block.projection.apply_dropout)

    def branch_outputs(self, block: nn.Module) -> list[nn.Module]:
        return _mixing_convs(block)[-1:]

    def branch_inputs(self, block: nn.Module) -> list[nn.Module]:
        return _mixing_convs(block)[:1]

    def stage_entry_outputs(self, model: nn.Module, stage: int) -> list[nn.Module]:
        return [model.efficientnet.embeddings.convolution] if stage == 0 else []

    def stage_exit_inputs(self, model: nn.Module, stage: int) -> list[nn.Module]:
        if stage == len(self.stages(model)) - 1:
            return [model.efficientnet.encoder.top_conv]
        return super().stage_exit_inputs(model, stage)

    def forward_head(self, model: nn.Module, features: torch.Tensor) -> torch.Tensor:
        return model.classifier(model.efficientnet.pooler(features).reshape(features.shape[:2]))

    def remove_blocks(self, model: nn.Module, gone: set[tuple[int, int]]) -> None:
        encoder = model.efficientnet.encoder
        encoder.blocks = nn.ModuleList(
            b for s, stage in enumerate(self.stages(model)) for i, b in enumerate(stage) if (s, i) not in gone
        )

    def pruned_config(self, model: nn.Module):
        config = super().pruned_config(model)
        config.depth_coefficient = 1.0  # `num_block_repeats` now holds the real depths
        blocks = model.efficientnet.encoder.blocks
        # blocks built with `adjust_padding=False` pad symmetrically; their indices move with the drops
        config.depthwise_padding = [
            i for i, b in enumerate(blocks) if len(set(b.depthwise_conv.depthwise_conv_pad.padding)) == 1
        ]
        return config
