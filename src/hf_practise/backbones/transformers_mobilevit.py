"""transformers MobileViT and MobileViTV2 (`MobileViTForImageClassification`, `MobileViTV2ForImageClassification`).

`mobilevit.encoder.layer` holds two MobileNet layers (lists of inverted residuals: a stage's first changes width
or resolution, the others add their input and are candidates) and three MobileViT layers. A MobileViT layer
downsamples with an inverted residual, maps the map to tokens (a 3x3 conv, a 1x1 conv, then unfolding into
patches, which only permutes), runs a stack of pre-norm transformer layers, normalises and folds the tokens back,
projects them (`conv_projection`) and fuses them with its input; its transformer layers are the stage, and all are
candidates. An inverted residual reads the stream through `expand_1x1` and writes it through `reduce_1x1`; a
transformer layer reads it through its query/key/value projections and `intermediate.dense` and writes it through
`attention.output.dense` and `output.dense`. The tokens entering a transformer stack are written by the layer's
1x1 conv and read after it by `conv_projection`; the stream leaving a MobileNet layer is read by the next layer's
first `expand_1x1`. The head pools the output of the last 1x1 expansion conv.

MobileViTV2 has the same layout, with convolutional transformer layers (a GroupNorm, then separable linear
attention between the 1x1 convs `qkv_proj` and `out_proj`; a GroupNorm, then an MLP of the 1x1 convs `conv1` and
`conv2`), no fusion with the layer's input, and no expansion before the head.

MobileViT's config fixes the number of layers in each stage (only widths and patch size vary), so a block-dropped
model is saved in hf_practise's format and reloads with `hf_practise.load_compressed`.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import layers_of, ungrouped
from .registry import register_family
from .tiny import transformers_tiny
from .transformers_common import TransformersFamily
from .transformers_vit import vit_branches


def _is_transformer_stage(part: nn.Module) -> bool:
    return hasattr(part, "transformer")


@register_family
class TransformersMobileViTFamily(TransformersFamily):
    name = "transformers-mobilevit"
    native_reload = False
    native_reload_why = "the MobileViT config has no per-stage depths (they are fixed in transformers' model code)"
    model_class_name = "MobileViTForImageClassification"
    base_attr = "mobilevit"
    tiny_models = {
        # 32x32 inputs: 16x16 after the stem, 8x8 in the second MobileNet layer, then 4x4, 2x2, 1x1 (patches of 2)
        "mobilevit": transformers_tiny(
            model_class_name,
            "MobileViTConfig",
            image_size=32,
            hidden_sizes=[16, 24, 32],
            neck_hidden_sizes=[8, 8, 16, 16, 24, 24, 32],
            num_attention_heads=2,
            norms=True,
        ),
    }

    def _parts(self, model: nn.Module) -> list[nn.Module]:
        return list(self.base_model(model).encoder.layer)

    def stages(self, model: nn.Module) -> list[nn.Module]:
        return [part.transformer.layer if _is_transformer_stage(part) else part.layer for part in self._parts(model)]

    def is_droppable(self, block: nn.Module) -> bool:
        return bool(getattr(block, "use_residual", True))  # transformer layers are all residual

    def branch_outputs(self, block: nn.Module) -> list[nn.Module]:
        if hasattr(block, "reduce_1x1"):
            return [block.reduce_1x1.convolution]
        return [linears[-1] for linears in vit_branches(block)]

    def branch_inputs(self, block: nn.Module) -> list[nn.Module]:
        if hasattr(block, "expand_1x1"):
            return [block.expand_1x1.convolution]
        return [lin for linears in vit_branches(block) for lin in linears[:-1]]

    def stage_entry_outputs(self, model: nn.Module, stage: int) -> list[nn.Module]:
        part = self._parts(model)[stage]
        if _is_transformer_stage(part):
            return [part.conv_1x1.convolution]
        return [self.base_model(model).conv_stem.convolution] if stage == 0 else []  # else: the stage's first block

    def stage_exit_inputs(self, model: nn.Module, stage: int) -> list[nn.Module]:
        parts = self._parts(model)
        if _is_transformer_stage(parts[stage]):
            return [parts[stage].conv_projection.convolution]  # after the LayerNorm and the folding
        if stage + 1 < len(parts) and _is_transformer_stage(parts[stage + 1]):
            nxt = parts[stage + 1]  # (without downsampling, as in dilated segmentation backbones: its kxk conv)
            return ungrouped(nxt.conv_kxk if nxt.downsampling_layer is None else nxt.downsampling_layer.expand_1x1)
        return super().stage_exit_inputs(model, stage)

    def forward_head(self, model: nn.Module, features: torch.Tensor) -> torch.Tensor:
        return model.classifier(features.mean(dim=(-2, -1)))


@register_family
class TransformersMobileViTV2Family(TransformersMobileViTFamily):
    name = "transformers-mobilevitv2"
    model_class_name = "MobileViTV2ForImageClassification"
    base_attr = "mobilevitv2"
    tiny_models = {
        # 32x32 inputs leave the last stage a 1x1 map: patches of 1 (the released checkpoints take 256x256, patches
        # of 2)
        "mobilevitv2": transformers_tiny(
            model_class_name, "MobileViTV2Config", image_size=32, width_multiplier=0.25, patch_size=1, norms=True
        ),
    }

    def branch_outputs(self, block: nn.Module) -> list[nn.Module]:
        if hasattr(block, "reduce_1x1"):
            return super().branch_outputs(block)
        return [layers_of(block.attention, nn.Conv2d)[-1], layers_of(block.ffn, nn.Conv2d)[-1]]

    def branch_inputs(self, block: nn.Module) -> list[nn.Module]:
        if hasattr(block, "expand_1x1"):
            return super().branch_inputs(block)
        return [layers_of(block.attention, nn.Conv2d)[0], layers_of(block.ffn, nn.Conv2d)[0]]
