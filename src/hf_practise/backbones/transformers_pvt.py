"""transformers Pyramid Vision Transformers: PVT, PVT v2 and SegFormer's Mix Transformer (`PvtForImageClassification`,
`PvtV2ForImageClassification`, `SegformerForImageClassification`).

Each stage opens with its own patch embedding (a strided conv, then a LayerNorm), so the stage's pre-norm layers all
keep their input's shape and are droppable. A layer's attention reads the stream through its query projection and
through the first layer of its key/value path (the spatial-reduction conv where keys and values come from a
downsampled map, else the key and value projections), and writes it through its output projection; its MLP reads
it through the first linear layer and writes it through the second (PVT v2 and SegFormer put a depthwise conv
between them). The stream entering a stage is written by its patch embedding's conv and read after the stage's
last layer by the next stage's (PVT v2 and SegFormer normalise each stage's output first). PVT's last stage
appends a [CLS] token, which the head classifies (so that stage keeps a layer); PVT v2 and SegFormer average the
last stage's map. The config's `depths` rebuild a shallower model, so plain transformers reloads the result.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import layers_of
from .registry import register_family
from .tiny import transformers_tiny
from .transformers_common import TransformersFamily

#: the sizes of the tiny models: 32x32 inputs, 8x8 tokens in the first stage, then 4x4, 2x2, 1x1
_TINY = dict(image_size=32, hidden_sizes=[8, 16, 24, 32], depths=[2, 1, 3, 2], num_attention_heads=[1, 1, 2, 2])


class PyramidFamily(TransformersFamily):
    """Base of the pyramid families: a stage is a patch embedding and a list of layers."""

    finetune_optimizer = "adamw"  # LayerNorm

    def embeddings(self, model: nn.Module) -> list[nn.Module]:
        """The patch embedding of each stage."""
        raise NotImplementedError

    def is_droppable(self, block: nn.Module) -> bool:
        return True  # the patch embeddings, outside the layers, change the shape

    def branch_outputs(self, block: nn.Module) -> list[nn.Module]:
        return [layers_of(block.attention, nn.Linear)[-1], layers_of(block.mlp, nn.Linear)[-1]]

    def branch_inputs(self, block: nn.Module) -> list[nn.Module]:
        query, key, value, _ = layers_of(block.attention, nn.Linear)
        key_value = layers_of(block.attention, nn.Conv2d)[:1] or [key, value]
        return [query, *key_value, layers_of(block.mlp, nn.Linear)[0]]

    def stage_entry_outputs(self, model: nn.Module, stage: int) -> list[nn.Module]:
        return layers_of(self.embeddings(model)[stage], nn.Conv2d)[:1]

    def stage_exit_inputs(self, model: nn.Module, stage: int) -> list[nn.Module]:
        embeddings = self.embeddings(model)
        return layers_of(embeddings[stage + 1], nn.Conv2d)[:1] if stage + 1 < len(embeddings) else []

    def forward_head(self, model: nn.Module, features: torch.Tensor) -> torch.Tensor:
        # the last stage's map (SegFormer without `reshape_last_stage`: its tokens), averaged
        return model.classifier(features.mean(dim=(-2, -1)) if features.dim() == 4 else features.mean(dim=1))


@register_family
class TransformersPvtFamily(PyramidFamily):
    name = "transformers-pvt"
    min_blocks_per_stage = 1  # with no layer left, the last stage's [CLS] token never sees the image
    model_class_name = "PvtForImageClassification"
    base_attr = "pvt"
    tiny_models = {"pvt": transformers_tiny(model_class_name, "PvtConfig", **_TINY)}

    def embeddings(self, model: nn.Module) -> list[nn.Module]:
        return list(model.pvt.encoder.patch_embeddings)

    def stages(self, model: nn.Module) -> list[nn.Module]:
        return list(model.pvt.encoder.block)

    def forward_head(self, model: nn.Module, features: torch.Tensor) -> torch.Tensor:
        return model.classifier(features[:, 0])  # the [CLS] token (normalised in the base model)


@register_family
class TransformersPvtV2Family(PyramidFamily):
    name = "transformers-pvt-v2"
    model_class_name = "PvtV2ForImageClassification"
    base_attr = "pvt_v2"
    tiny_models = {
        "pvt-v2": transformers_tiny(model_class_name, "PvtV2Config", **_TINY),
        # as pvt_v2_b2_linear: keys and values from a 7x7 average pool and a 1x1 conv
        "pvt-v2-linear": transformers_tiny(model_class_name, "PvtV2Config", linear_attention=True, **_TINY),
    }

    def embeddings(self, model: nn.Module) -> list[nn.Module]:
        return [layer.patch_embedding for layer in model.pvt_v2.encoder.layers]

    def stages(self, model: nn.Module) -> list[nn.Module]:
        return [layer.blocks for layer in model.pvt_v2.encoder.layers]


@register_family
class TransformersSegformerFamily(PyramidFamily):
    name = "transformers-segformer"
    model_class_name = "SegformerForImageClassification"
    base_attr = "segformer"
    tiny_models = {"segformer": transformers_tiny(model_class_name, "SegformerConfig", **_TINY)}

    def embeddings(self, model: nn.Module) -> list[nn.Module]:
        return [stage.patch_embeddings for stage in model.segformer.stages]

    def stages(self, model: nn.Module) -> list[nn.Module]:
        return [stage.blocks for stage in model.segformer.stages]
