"""transformers ViTs (`ViTForImageClassification`).

One stack of pre-norm layers, each with an attention branch (`q/k/v_proj` read the stream, `o_proj` writes
it) and an MLP (`fc1` reads, `fc2` writes); the patch embedding's conv writes the stream before the first
layer. All layers but one are droppable: the head reads the [CLS] token, which needs a layer to see the image.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .base import layers_of
from .registry import register_family
from .tiny import transformers_teacher, transformers_tiny
from .transformers_common import TransformersFamily, layer_stacks


@register_family
class TransformersViTFamily(TransformersFamily):
    """`ViTForImageClassification`: one stack of pre-norm layers, all droppable; the head reads the [CLS] token."""

    name = "transformers-vit"
    finetune_optimizer = "adamw"  # LayerNorm: SGD at 0.01 is too rough
    min_blocks_per_stage = 1  # with no layer left, the [CLS] token never sees the image
    model_class_name = "ViTForImageClassification"
    base_attr = "vit"
    tiny_models = {
        "vit": transformers_tiny(
            "ViTForImageClassification",
            "ViTConfig",
            hidden_size=32,
            num_hidden_layers=4,
            num_attention_heads=2,
            intermediate_size=64,
            image_size=32,
            patch_size=8,
        ),
    }
    teacher_recipes = {
        "hf-vit": transformers_teacher(
            "transformers ViT (hidden 64, 8 layers, patch 4)",
            "ViTForImageClassification",
            "ViTConfig",
            hidden_size=64,
            num_hidden_layers=8,
            num_attention_heads=2,
            intermediate_size=256,
            image_size=32,
            patch_size=4,
        ),
    }
    depth_field = "num_hidden_layers"

    def stages(self, model: nn.Module) -> list[nn.Module]:
        from transformers.models.vit.modeling_vit import ViTLayer

        return layer_stacks(model.vit, ViTLayer)[:1]  # never empty: the family keeps a layer

    def is_droppable(self, block: nn.Module) -> bool:
        return True

    def _branches(self, block: nn.Module) -> list[list[nn.Linear]]:
        # attention: q/k/v read the stream, the output projection writes it; MLP: fc1 reads, fc2 writes
        # (transformers 4 split these over `attention`, `intermediate` and `output`; 5 has `attention` + `mlp`)
        children = [c for c in block.children() if layers_of(c, (nn.Linear,))]
        return [layers_of(c, (nn.Linear,)) for c in children]

    def branch_outputs(self, block: nn.Module) -> list[nn.Module]:
        return [linears[-1] for linears in self._branches(block)]

    def branch_inputs(self, block: nn.Module) -> list[nn.Module]:
        return [lin for linears in self._branches(block) for lin in linears[:-1]]

    def stage_entry_outputs(self, model: nn.Module, stage: int) -> list[nn.Module]:
        return layers_of(model.vit.embeddings, (nn.Conv2d,))[-1:]

    def depth_value(self, model: nn.Module) -> Any:
        return len(self.stages(model)[0])

    def forward_head(self, model: nn.Module, features: torch.Tensor) -> torch.Tensor:
        return model.classifier(features[:, 0, :])
