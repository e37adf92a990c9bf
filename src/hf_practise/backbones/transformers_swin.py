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

With `units="branches"` (Swin's and Donut's pre-norm layers; see `branches.py`), every layer's window attention and
MLP are candidates of their own. A layer that loses both goes alone, which may move later layers of its stage to
the other parity: such a model (like one that keeps a layer without a branch) reloads with
`hf_practise.load_compressed`.
"""

from __future__ import annotations

import importlib
from typing import Any

import torch
from torch import nn

from .base import REMOVED_ATTR, BlockGroup, BlockRef, layers_of, parity_units, unit_blocks, unit_refs
from .branches import BranchUnitsMixin
from .registry import register_family
from .tiny import transformers_tiny
from .transformers_common import TransformersFamily
from .transformers_vit import vit_branches

_TINY = dict(image_size=32, patch_size=2, window_size=2, embed_dim=16, depths=[2, 3, 2, 1], num_heads=[1, 2, 2, 4])


def _shift(layer: nn.Module) -> int:
    """The window shift `layer` runs with: none where its windows cover its input (as its forward sets it)."""
    return int(layer.shift_size) if min(layer.input_resolution) > int(layer.window_size) else 0


@register_family
class TransformersSwinFamily(BranchUnitsMixin, TransformersFamily):
    name = "transformers-swin"
    finetune_optimizer = "adamw"  # LayerNorm
    scan_iterations = 400  # the blocks of timm's Swin, whose ranking needed 400 (no transformers Swin teacher)
    model_class_name = "SwinForImageClassification"
    tiny_models = {"swin": transformers_tiny("SwinForImageClassification", "SwinConfig", **_TINY)}
    native_reload_why = (
        "transformers gives every layer the window shift of its index's parity, which a layer dropped alone changes"
    )
    #: the layer's class name, in the model's own modeling module (its branches: `BranchUnitsMixin`)
    layer_class = "SwinLayer"
    branch_parts = {"attn": ("layernorm_before", "attention"), "mlp": ("layernorm_after", "mlp")}
    tuple_branches = frozenset({"attn"})  # the attention returns (output, weights)
    # the layer runs its attention between a window shift and partition and their reverse, on its output as windows
    reshaped_branches = inline_branches = frozenset({"attn"})

    def _layers(self, model: nn.Module) -> nn.ModuleList:
        return self.base_model(model).encoder.layers

    def block_stages(self, model: nn.Module) -> list[nn.ModuleList]:
        return [stage.blocks for stage in self._layers(model)]

    def stages(self, model: nn.Module) -> list[list[BlockGroup]]:
        if self.units == "branches":
            return super().stages(model)
        return [parity_units(blocks) for blocks in self.block_stages(model)]

    def blocks(self, model: nn.Module) -> list[BlockRef]:
        if self.units == "branches":
            return super().blocks(model)
        return unit_refs(model, self.stages(model))

    def branch_blocks_ok(self, model: nn.Module) -> bool:
        layer_type = getattr(importlib.import_module(type(model).__module__), self.layer_class, None)
        parts = [p for branch in self.branch_parts.values() for p in branch]
        return all(
            type(layer) is layer_type and all(hasattr(layer, p) for p in parts)
            for blocks in self.block_stages(model)
            for layer in blocks
        )

    def is_droppable(self, block: nn.Module) -> bool:
        return True

    def branch_outputs(self, block: nn.Module) -> list[nn.Module]:
        return [linears[-1] for layer in unit_blocks(block) for linears in vit_branches(layer)]

    def branch_inputs(self, block: nn.Module) -> list[nn.Module]:
        return [
            lin
            for layer in unit_blocks(block)
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
        if self.units == "branches":
            return super().remove_blocks(model, gone)
        for s, stage in enumerate(self._layers(model)):
            kept = [b for i, unit in enumerate(parity_units(stage.blocks)) if (s, i) not in gone for b in unit.blocks]
            if len(kept) != len(stage.blocks):
                stage.blocks = nn.ModuleList(kept)

    def depth_value(self, model: nn.Module) -> Any:
        return [len(stage.blocks) for stage in self._layers(model)]

    def reloads_natively(self, model: nn.Module) -> bool:
        """As the base class, and every layer keeps the window shift it was built with, whatever its index now
        (checked against the model transformers builds from the saved config, on the meta device)."""
        native = super().reloads_natively(model)
        if not native or not getattr(model, REMOVED_ATTR, None):
            return native
        with torch.device("meta"):
            rebuilt = type(model)(self.pruned_config(model))

        def shifts(m: nn.Module) -> list[int]:
            return [_shift(layer) for blocks in self.block_stages(m) for layer in blocks]

        return shifts(model) == shifts(rebuilt)

    def forward_head(self, model: nn.Module, features: torch.Tensor) -> torch.Tensor:
        pooled = self.base_model(model).pooler(features.transpose(1, 2))
        return model.classifier(torch.flatten(pooled, 1))


@register_family
class TransformersSwinv2Family(TransformersSwinFamily):
    name = "transformers-swinv2"
    model_class_name = "Swinv2ForImageClassification"
    tiny_models = {"swinv2": transformers_tiny("Swinv2ForImageClassification", "Swinv2Config", **_TINY)}
    layer_class = "Swinv2Layer"
    branch_parts = {}  # its layers normalise each branch's output, after it: no branch units


@register_family
class TransformersDonutSwinFamily(TransformersSwinFamily):
    name = "transformers-donut-swin"
    model_class_name = "DonutSwinForImageClassification"
    tiny_models = {"donut-swin": transformers_tiny("DonutSwinForImageClassification", "DonutSwinConfig", **_TINY)}
    layer_class = "DonutSwinLayer"
    # the MLP is two modules (`intermediate`, then `output`, which the layer adds to the stream)
    branch_parts = {"attn": ("layernorm_before", "attention"), "mlp": ("layernorm_after", "intermediate", "output")}
