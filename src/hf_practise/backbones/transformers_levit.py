"""transformers LeViT (`LevitForImageClassification` and `LevitForImageClassificationWithTeacher`, the class the
facebook/levit-* checkpoints load as).

Each `encoder.stages[i].layers` holds, per unit of the config's `depths`, a residual attention layer and a
residual MLP layer (`LevitResidualLayer`s, one branch each: `queries_keys_values` or `linear_up` reads the stream,
`projection` or `linear_down` writes it, each a linear layer followed by BatchNorm), then, in every stage but the
last, the stage's tail: an attention that subsamples the tokens and widens the stream (no shortcut) and a residual
MLP on the new width. A candidate is one (attention, MLP) unit (`BlockGroup`): `depths` counts units, so a model
without one is the architecture transformers builds from the smaller `depths`, and plain transformers reloads it.
The tail's MLP is left alone (`down_ops` would have to change with it). The stream entering a stage is written by
the patch embedding's last conv (the previous stage's tail: the subsampling attention's projection and the MLP
after it), and the stream leaving it is read by the next tail's keys/values and queries (the token subsampling
commutes with a channel mix); the head pools the last stage's tokens, then normalises them.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import BlockGroup, BlockRef, layers_of, unit_refs
from .registry import register_family
from .tiny import tiny_variants, transformers_tiny
from .transformers_common import TransformersFamily

_CLASSES = ("LevitForImageClassification", "LevitForImageClassificationWithTeacher")


def _ends(layer: nn.Module) -> list[nn.Linear]:
    """The linear layers of a residual layer's branch, in forward order."""
    return layers_of(layer.module, nn.Linear)


@register_family
class TransformersLevitFamily(TransformersFamily):
    name = "transformers-levit"
    model_class_name = _CLASSES[0]
    base_attr = "levit"
    tiny_models = tiny_variants(
        transformers_tiny,
        {"levit": dict(model_class=_CLASSES[0]), "levit-with-teacher": dict(model_class=_CLASSES[1])},
        config_class="LevitConfig",
        # 32x32 inputs: 2x2 tokens in the first stage, one after each subsampling
        image_size=32,
        hidden_sizes=[16, 24, 32],
        key_dim=[8, 8, 8],
        num_attention_heads=[2, 3, 4],
        depths=[2, 3, 2],  # (the config derives the subsampling attentions from the widths and key sizes)
    )

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        try:
            import transformers
        except ImportError:
            return False
        return isinstance(model, tuple(getattr(transformers, name) for name in _CLASSES))

    # ---- structure: units of (attention, MLP) layers --------------------------------------------------------
    def _split(self, stage: nn.Module) -> tuple[list[BlockGroup], list[nn.Module]]:
        """A LeViT stage's `depths` units, and the layers after them (the tail: subsampling attention, MLP)."""
        from transformers.models.levit.modeling_levit import LevitAttention, LevitAttentionSubsample

        units: list[list[nn.Module]] = []
        for i, layer in enumerate(stage.layers):
            if isinstance(layer, LevitAttentionSubsample):
                return [BlockGroup(u) for u in units], list(stage.layers)[i:]
            if isinstance(layer.module, LevitAttention) or not units:
                units.append([])
            units[-1].append(layer)
        return [BlockGroup(u) for u in units], []

    def stages(self, model: nn.Module) -> list[list[BlockGroup]]:
        return [self._split(stage)[0] for stage in model.levit.encoder.stages]

    def blocks(self, model: nn.Module) -> list[BlockRef]:
        return unit_refs(model, self.stages(model))

    def is_droppable(self, block: nn.Module) -> bool:
        return True  # residual layers keep the shape; the subsampling attention is outside the units

    def branch_outputs(self, block: nn.Module) -> list[nn.Module]:
        return [_ends(layer)[-1] for layer in block.blocks]

    def branch_inputs(self, block: nn.Module) -> list[nn.Module]:
        return [_ends(layer)[0] for layer in block.blocks]

    def stage_entry_outputs(self, model: nn.Module, stage: int) -> list[nn.Module]:
        if stage == 0:
            return layers_of(model.levit.patch_embeddings, nn.Conv2d)[-1:]
        tail = self._split(model.levit.encoder.stages[stage - 1])[1]
        return [layers_of(getattr(layer, "module", layer), nn.Linear)[-1] for layer in tail]

    def stage_exit_inputs(self, model: nn.Module, stage: int) -> list[nn.Module]:
        tail = self._split(model.levit.encoder.stages[stage])[1]
        if not tail:
            return []  # the last stage: pooled, then the head's BatchNorm
        return [tail[0].keys_values.linear, tail[0].queries.linear]

    def remove_blocks(self, model: nn.Module, gone: set[tuple[int, int]]) -> None:
        for s, stage in enumerate(model.levit.encoder.stages):
            units, tail = self._split(stage)
            kept = [layer for i, unit in enumerate(units) if (s, i) not in gone for layer in unit.blocks]
            if len(kept) + len(tail) != len(stage.layers):
                stage.layers = nn.ModuleList(kept + tail)

    # ---- forward -----------------------------------------------------------------------------------------
    def forward_head(self, model: nn.Module, features: torch.Tensor) -> torch.Tensor:
        pooled = features.mean(1)
        if hasattr(model, "classifier_distill"):
            return (model.classifier(pooled) + model.classifier_distill(pooled)) / 2
        return model.classifier(pooled)

    def classifier(self, model: nn.Module) -> nn.Module:
        if hasattr(model, "classifier_distill"):
            return nn.ModuleList([model.classifier, model.classifier_distill])
        return model.classifier
