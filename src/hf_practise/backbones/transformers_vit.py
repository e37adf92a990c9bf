"""transformers ViTs (`ViTForImageClassification`), and the base of every ViT-like transformers family.

One stack of pre-norm layers, each with an attention branch (`q/k/v` read the stream, the output projection
writes it) and an MLP (`fc1` reads, `fc2` writes); the patch embedding's conv writes the stream before the
first layer. All layers but one are droppable: a head that reads the [CLS] token needs a layer to see the
image. The config's `num_hidden_layers` rebuilds a shallower model, so plain transformers reloads the result.
A ViT-like family names its layer class, where the base model sits and how its head reads the features.
"""

from __future__ import annotations

import importlib
from typing import Any

import torch
from torch import nn

from .base import layers_of
from .branches import BranchUnitsMixin
from .registry import register_family
from .tiny import transformers_tiny
from .transformers_common import TransformersFamily, layer_stacks


def vit_branches(block: nn.Module) -> list[list[nn.Linear]]:
    """The linear layers of each residual branch of a transformer layer, in forward order: one list per child
    that holds linears (attention; MLP), with an MLP split over two children (`intermediate`, `output`, one
    linear each) joined back into one branch."""
    groups = [layers_of(c, nn.Linear) for c in block.children()]
    groups = [g for g in groups if g]
    out: list[list[nn.Linear]] = []
    for g in groups:
        if out and len(g) == 1 and len(out[-1]) == 1:
            out[-1] = out[-1] + g
        else:
            out.append(g)
    return out


#: the sizes of every tiny ViT-like model of the invariant suite (32x32 inputs, 16 patches, 4 layers)
TINY_VIT = dict(
    hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64, image_size=32, patch_size=8
)


def vit_tiny(model_class: str, config_class: str, *, nested: bool = False, **kwargs: Any):
    """A tiny ViT-like transformers model (`TINY_VIT` sizes, `kwargs` on top); with `nested` (CLIP-style configs,
    which hold the vision tower's), the sizes go into `vision_config`."""
    if nested:
        return transformers_tiny(model_class, config_class, vision_config=TINY_VIT, **kwargs)
    return transformers_tiny(model_class, config_class, **{**TINY_VIT, **kwargs})


class TransformersViTLikeFamily(BranchUnitsMixin, TransformersFamily):
    """Base of the ViT-like families: one stack of `layer_class` layers under the base model, all droppable
    but one. With `units="branches"`, each layer's attention and MLP (`branch_parts`) are candidates of their own."""

    finetune_optimizer = "adamw"  # LayerNorm: SGD at 0.01 is too rough
    min_blocks_per_stage = 1  # with no layer left, a [CLS] token never sees the image
    scan_iterations = 400  # ranking tau against 1,000 steps on the transformers ViT teacher: 0.786 at 100 and 200,
    # 1.000 at 400 (benchmarks/results/scan_tau_summary.md)
    depth_field = "num_hidden_layers"
    #: the layer's class name, in the model's own modeling module
    layer_class: str = ""
    #: a layer's two residual branches, by part in call order (norm, branch): `BranchUnitsMixin`
    branch_parts = {"attn": ("layernorm_before", "attention"), "mlp": ("layernorm_after", "mlp")}
    tuple_branches = frozenset({"attn"})  # the attention returns (output, weights)

    def _layer_type(self, model: nn.Module) -> type:
        return getattr(importlib.import_module(type(model).__module__), self.layer_class)

    def block_stages(self, model: nn.Module) -> list[nn.Module]:
        return layer_stacks(getattr(model, self.base_attr), self._layer_type(model))[:1]

    def branch_blocks_ok(self, model: nn.Module) -> bool:
        parts = [p for branch in self.branch_parts.values() for p in branch]
        return all(all(hasattr(layer, p) for p in parts) for layer in self.block_stages(model)[0])

    def is_droppable(self, block: nn.Module) -> bool:
        return True

    def branch_outputs(self, block: nn.Module) -> list[nn.Module]:
        return [linears[-1] for linears in vit_branches(block)]

    def branch_inputs(self, block: nn.Module) -> list[nn.Module]:
        return [lin for linears in vit_branches(block) for lin in linears[:-1]]

    def stage_entry_outputs(self, model: nn.Module, stage: int) -> list[nn.Module]:
        return layers_of(getattr(model, self.base_attr).embeddings, nn.Conv2d)[-1:]

    def depth_value(self, model: nn.Module) -> Any:
        return len(self.block_stages(model)[0])

    def forward_head(self, model: nn.Module, features: torch.Tensor) -> torch.Tensor:
        return model.classifier(features[:, 0, :])  # the [CLS] token


@register_family
class TransformersViTFamily(TransformersViTLikeFamily):
    """`ViTForImageClassification`: the head reads the [CLS] token."""

    name = "transformers-vit"
    model_class_name = "ViTForImageClassification"
    base_attr = "vit"
    layer_class = "ViTLayer"
    tiny_models = {
        "vit": vit_tiny(
            "ViTForImageClassification",
            "ViTConfig",
        ),
    }
