"""transformers Hiera (`HieraForImageClassification`).

Stages are the `layers` of `hiera.encoder.stages`, pre-norm transformer layers over tokens unrolled into mask
units. A stage's first layer (but the first stage's) widens the stream and pools its queries (the shortcut goes
through `proj` from the normalised stream, then a max over the query stride), so it stays; every other layer keeps
its input's shape and is a candidate. A layer reads the stream through `attn.qkv` (after `layernorm_before`) and
`mlp.fc1` (after `layernorm_after`) and writes it through `attn.proj` and `mlp.fc2`; a widening layer reads the old
stream through `proj` too, and writes the new one through it. The stream entering the first stage is written by
the patch embedding's conv (position embeddings are added after it; the unrolling only permutes tokens), and the
stream leaving a stage is read by the next stage's first layer; the head pools the last stage's tokens, then
normalises them. Query pooling sits at the first layer of a stage and the attention's window is fixed per stage,
so the config's `depths` rebuild the shallower model and plain transformers reloads the result; every stage keeps
a layer (transformers' Hiera stage without layers fails: it returns the attention weights of its last layer).
"""

from __future__ import annotations

import torch
from torch import nn

from .base import layers_of
from .registry import register_family
from .tiny import transformers_tiny
from .transformers_common import TransformersFamily


def _widens(layer: nn.Module) -> bool:
    return layer.hidden_size != layer.hidden_size_output or layer.query_stride != 1


@register_family
class TransformersHieraFamily(TransformersFamily):
    name = "transformers-hiera"
    finetune_optimizer = "adamw"  # LayerNorm, like ViT
    min_blocks_per_stage = 1  # transformers' Hiera stage without layers fails (it returns its last attention)
    model_class_name = "HieraForImageClassification"
    base_attr = "hiera"
    tiny_models = {
        # 32x32 inputs: 8x8 tokens (one mask unit), then 4x4, 2x2, 2x2 (two query poolings)
        "hiera": transformers_tiny(
            model_class_name,
            "HieraConfig",
            image_size=[32, 32],
            embed_dim=8,
            num_heads=[1, 1, 2, 2],
            depths=[2, 3, 3, 2],
            num_query_pool=2,
        ),
    }

    def stages(self, model: nn.Module) -> list[nn.Module]:
        return [stage.layers for stage in model.hiera.encoder.stages]

    def is_droppable(self, block: nn.Module) -> bool:
        return not _widens(block)

    def branch_outputs(self, block: nn.Module) -> list[nn.Module]:
        return [block.attn.proj, block.mlp.fc2] + ([block.proj] if hasattr(block, "proj") else [])

    def branch_inputs(self, block: nn.Module) -> list[nn.Module]:
        # a widening layer's MLP reads the new stream; its shortcut `proj` reads the old one
        return [block.attn.qkv, block.proj if hasattr(block, "proj") else block.mlp.fc1]

    def stage_entry_outputs(self, model: nn.Module, stage: int) -> list[nn.Module]:
        return layers_of(model.hiera.embeddings, nn.Conv2d)[-1:] if stage == 0 else []

    def forward_head(self, model: nn.Module, features: torch.Tensor) -> torch.Tensor:
        return model.classifier(model.hiera.pooler(features))
