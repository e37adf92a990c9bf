"""transformers Swin, Swin V2 and Donut's Swin (`SwinForImageClassification`, `Swinv2ForImageClassification`,
`DonutSwinForImageClassification`).

Stages are the `blocks` of `encoder.layers`; each stage ends with its own patch merging, so every layer keeps
its input's shape. A layer's window shift follows its index parity and transformers rebuilds it from `depths`
alone, so, as for timm's Swin, the candidates are units that keep the parity: (regular, shifted) pairs and a
stage's trailing layer, scored and dropped as one (`BlockGroup`). Inside a layer, attention reads the stream
through its query/key/value projections and writes it through its output projection, the MLP through its two
dense layers (Swin V2's position-bias MLP takes no adaptor). The stream entering a stage is written by the
previous stage's patch-merging reduction (the patch embedding's conv for the first). Plain transformers
reloads the result with the new `depths`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .base import BlockGroup, BlockRef, layers_of, parity_units, unit_refs
from .registry import register_family
from .tiny import transformers_tiny
from .transformers_common import TransformersFamily
from .transformers_vit import vit_branches

_TINY = dict(image_size=32, patch_size=2, window_size=2, embed_dim=16, depths=[2, 3, 2, 1], num_heads=[1, 2, 2, 4])


@register_family
class TransformersSwinFamily(TransformersFamily):
    name = "transformers-swin"
    finetune_optimizer = "adamw"  # LayerNorm
    scan_iterations = 400  # the blocks of timm's Swin, whose ranking needed 400 (no transformers Swin teacher)
    model_class_name = "SwinForImageClassification"
    tiny_models = {"swin": transformers_tiny("SwinForImageClassification", "SwinConfig", **_TINY)}

    def _layers(self, model: nn.Module) -> nn.ModuleList:
        return self.base_model(model).encoder.layers

    def stages(self, model: nn.Module) -> list[list[BlockGroup]]:
        return [parity_units(stage.blocks) for stage in self._layers(model)]

    def blocks(self, model: nn.Module) -> list[BlockRef]:
        return unit_refs(model, self.stages(model))

    def is_droppable(self, block: nn.Module) -> bool:
        return True

    def branch_outputs(self, block: nn.Module) -> list[nn.Module]:
        return [linears[-1] for layer in block.blocks for linears in vit_branches(layer)]

    def branch_inputs(self, block: nn.Module) -> list[nn.Module]:
        return [
            lin
            for layer in block.blocks
            for linears in vit_branches(layer)
            for lin in linears[:-1]
            if lin.in_features == linears[-1].out_features
        ]

    def stage_entry_outputs(self, model: nn.Module, stage: int) -> list[nn.Module]:
        if stage == 0:
            return layers_of(self.base_model(model).embeddings, nn.Conv2d)[-1:]
        return layers_of(self._layers(model)[stage - 1].downsample, nn.Linear)[-1:]

    def stage_exit_inputs(self, model: nn.Module, stage: int) -> list[nn.Module]:
        return []  # patch merging reads four neighbours' channels at once; the head starts with a norm

    def remove_blocks(self, model: nn.Module, gone: set[tuple[int, int]]) -> None:
        for s, stage in enumerate(self._layers(model)):
            kept = [b for i, unit in enumerate(parity_units(stage.blocks)) if (s, i) not in gone for b in unit.blocks]
            if len(kept) != len(stage.blocks):
                stage.blocks = nn.ModuleList(kept)

    def depth_value(self, model: nn.Module) -> Any:
        return [len(stage.blocks) for stage in self._layers(model)]

    def architecture_summary(self, model: nn.Module) -> dict[str, Any]:
        return {"depths": self.depth_value(model)}

    def forward_head(self, model: nn.Module, features: torch.Tensor) -> torch.Tensor:
        pooled = self.base_model(model).pooler(features.transpose(1, 2))
        return model.classifier(torch.flatten(pooled, 1))


@register_family
class TransformersSwinv2Family(TransformersSwinFamily):
    name = "transformers-swinv2"
    model_class_name = "Swinv2ForImageClassification"
    tiny_models = {"swinv2": transformers_tiny("Swinv2ForImageClassification", "Swinv2Config", **_TINY)}


@register_family
class TransformersDonutSwinFamily(TransformersSwinFamily):
    name = "transformers-donut-swin"
    model_class_name = "DonutSwinForImageClassification"
    tiny_models = {"donut-swin": transformers_tiny("DonutSwinForImageClassification", "DonutSwinConfig", **_TINY)}
