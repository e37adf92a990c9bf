"""transformers SwiftFormer (`SwiftFormerForImageClassification`).

`swiftformer.encoder.network` alternates stages and downsampling embeddings (a strided conv, then BatchNorm). A
stage's `blocks` are convolutional encoders (a depthwise conv and BatchNorm, then two 1x1 convs, layer-scaled)
closed by one attention block (the same local representation, then efficient additive attention and a 1x1-conv
MLP, each residual). transformers builds a stage of depth d as d - 1 convolutional encoders and the attention
block, so only the convolutional encoders are candidates: dropping one leaves the architecture that the smaller
`depths` build, and plain transformers reloads the result. A convolutional encoder reads the stream through its
first 1x1 conv (a channel mix cannot fold into the depthwise conv before it) and writes it through its second;
the attention block reads it through its local representation's first 1x1 conv, its query and key projections
and its MLP's `fc1`, and writes it through the local representation's second 1x1 conv, the attention's `final`
projection and `fc2`. The stream entering a stage is written by the stem's last conv or the downsampling conv
before it, and read after the stage by the next downsampling conv; the head normalises, pools and averages its
two classifiers (`head`, `dist_head`).
"""

from __future__ import annotations

import torch
from torch import nn

from .base import layers_of
from .registry import register_family
from .tiny import transformers_tiny
from .transformers_common import TransformersFamily


def _convs(module: nn.Module) -> list[nn.Conv2d]:
    """The ungrouped convs of a convolutional encoder or local representation: its two 1x1 convs."""
    return [m for m in layers_of(module, nn.Conv2d) if m.groups == 1]


@register_family
class TransformersSwiftFormerFamily(TransformersFamily):
    name = "transformers-swiftformer"
    model_class_name = "SwiftFormerForImageClassification"
    base_attr = "swiftformer"
    tiny_models = {
        # 32x32 inputs: 8x8 maps in the first stage (the stem halves twice), then 4x4, 2x2, 1x1
        "swiftformer": transformers_tiny(
            model_class_name, "SwiftFormerConfig", embed_dims=[8, 16, 24, 32], depths=[2, 1, 3, 2], norms=True
        ),
    }

    def _network(self, model: nn.Module) -> list[nn.Module]:
        return list(model.swiftformer.encoder.network)

    def stages(self, model: nn.Module) -> list[nn.Module]:
        return [part.blocks for part in self._network(model) if hasattr(part, "blocks")]

    def _downsampling(self, model: nn.Module) -> list[nn.Module | None]:
        """The downsampling embedding after each stage (None after the last, or where the stage keeps its size)."""
        out: list[nn.Module | None] = []
        for part in self._network(model):
            if hasattr(part, "blocks"):
                out.append(None)
            else:
                out[-1] = part
        return out

    def is_droppable(self, block: nn.Module) -> bool:
        return not hasattr(block, "attn")  # the attention block closes its stage

    def branch_outputs(self, block: nn.Module) -> list[nn.Module]:
        if not hasattr(block, "attn"):
            return _convs(block)[-1:]
        return [_convs(block.local_representation)[-1], block.attn.final, block.linear.fc2]

    def branch_inputs(self, block: nn.Module) -> list[nn.Module]:
        if not hasattr(block, "attn"):
            return _convs(block)[:1]
        return [_convs(block.local_representation)[0], block.attn.to_query, block.attn.to_key, block.linear.fc1]

    def stage_entry_outputs(self, model: nn.Module, stage: int) -> list[nn.Module]:
        before = layers_of(model.swiftformer.patch_embed, nn.Conv2d) if stage == 0 else []
        if stage > 0 and self._downsampling(model)[stage - 1] is not None:
            before = layers_of(self._downsampling(model)[stage - 1], nn.Conv2d)
        return before[-1:]

    def stage_exit_inputs(self, model: nn.Module, stage: int) -> list[nn.Module]:
        downsampling = self._downsampling(model)[stage]
        if downsampling is None:
            return super().stage_exit_inputs(model, stage)  # the next stage's first block, or the head's norm
        return layers_of(downsampling, nn.Conv2d)[:1]

    def forward_head(self, model: nn.Module, features: torch.Tensor) -> torch.Tensor:
        pooled = model.norm(features).flatten(2).mean(-1)
        return (model.head(pooled) + model.dist_head(pooled)) / 2

    def classifier(self, model: nn.Module) -> nn.Module:
        return nn.ModuleList([model.head, model.dist_head])
