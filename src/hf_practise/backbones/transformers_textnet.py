"""transformers TextNet (`TextNetForImageClassification`): stages of RepVGG-style conv layers.

Stages are the `stage` lists of `textnet.encoder.stages`. A layer sums a kxk conv, a kx1 and a 1xk conv (each
with BatchNorm; the ones its kernel allows) and, where it keeps its input's width and resolution, a BatchNorm of
its input (the identity branch), then applies ReLU; those layers are the candidates (as timm's RepVGG blocks, see
`timm_byobnet`), the others (a stage's strided first layer) stay. Every parallel conv of a layer both reads and
writes the stream. The head pools the last stage's map. The config lists each stage's kernel sizes and strides
(`conv_layer_kernel_sizes`, `conv_layer_strides`), so saving writes the kept layers' entries and plain
transformers reloads the result.
"""

from __future__ import annotations

from torch import nn

from .registry import register_family
from .tiny import transformers_tiny
from .transformers_hgnet_v2 import FcHeadFamily


def _convs(layer: nn.Module) -> list[nn.Conv2d]:
    return [c for c in (layer.main_conv, layer.vertical_conv, layer.horizontal_conv) if c is not None]


@register_family
class TransformersTextNetFamily(FcHeadFamily):
    name = "transformers-textnet"
    model_class_name = "TextNetForImageClassification"
    base_attr = "textnet"
    tiny_models = {
        # 32x32 inputs: 16x16 after the stem, then 8x8, 4x4, 2x2, 1x1
        "textnet": transformers_tiny(
            model_class_name,
            "TextNetConfig",
            stem_out_channels=8,
            hidden_sizes=[8, 8, 16, 24, 32],
            conv_layer_kernel_sizes=[
                [[3, 3], [3, 3], [3, 3]],
                [[3, 3], [1, 3], [3, 1]],
                [[3, 3], [3, 1], [1, 3]],
                [[3, 3], [3, 3]],
            ],
            conv_layer_strides=[[1, 2, 1], [2, 1, 1], [2, 1, 1], [2, 1]],
            norms=True,
        ),
    }

    def stages(self, model: nn.Module) -> list[nn.Module]:
        return [stage.stage for stage in model.textnet.encoder.stages]

    def is_droppable(self, block: nn.Module) -> bool:
        return block.rbr_identity is not None  # same width, stride 1

    def branch_outputs(self, block: nn.Module) -> list[nn.Module]:
        return _convs(block)

    def branch_inputs(self, block: nn.Module) -> list[nn.Module]:
        return _convs(block)

    def pruned_config(self, model: nn.Module):
        config = super().pruned_config(model)  # `depths`; the kept layers' kernel sizes and strides:
        config.conv_layer_kernel_sizes = [[list(layer.kernel_size) for layer in s] for s in self.stages(model)]
        config.conv_layer_strides = [[layer.stride for layer in s] for s in self.stages(model)]
        return config
