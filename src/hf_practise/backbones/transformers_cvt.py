"""transformers CvT (`CvtForImageClassification`).

Each stage of `cvt.encoder.stages` opens with its own convolutional token embedding (a strided conv, then a
LayerNorm), so the stage's `layers` all keep their input's shape and are droppable. A layer is pre-norm: attention
reads the stream through its query/key/value projections (each after a depthwise conv and BatchNorm on the
spatial tokens; the [CLS] token goes straight to them) and writes it through `attention.output.dense`, the MLP
reads it through `intermediate.dense` and writes it through `output.dense`. The stream entering a stage is written
by its embedding's conv and read after the stage's last layer by the next stage's. The last stage appends a [CLS]
token (transformers' CvT classifier needs it), which the head normalises and classifies; so every stage keeps a
layer (with none left, the token would never see the image). The config's `depth` rebuilds a shallower model, so plain
transformers reloads the result, as long as stage i keeps more than i layers: transformers' CvT reads the drop-path
rate of stage i at position i of the stage's own list of rates, and fails to build a shallower stage. A model cut
below that is saved in hf_practise's format and reloads with `hf_practise.load_compressed` (`reloads_natively`).
"""

from __future__ import annotations

import torch
from torch import nn

from .registry import register_family
from .tiny import transformers_tiny
from .transformers_common import TransformersFamily
from .transformers_vit import vit_branches


@register_family
class TransformersCvtFamily(TransformersFamily):
    name = "transformers-cvt"
    finetune_optimizer = "adamw"  # LayerNorm
    min_blocks_per_stage = 1  # with no layer left, the last stage's [CLS] token never sees the image
    model_class_name = "CvtForImageClassification"
    base_attr = "cvt"
    depth_field = "depth"
    tiny_models = {
        # 32x32 inputs: 8x8 tokens in the first stage, then 4x4 and 2x2
        "cvt": transformers_tiny(
            model_class_name, "CvtConfig", embed_dim=[8, 16, 24], num_heads=[1, 2, 3], depth=[2, 3, 4]
        ),
    }

    def stages(self, model: nn.Module) -> list[nn.Module]:
        return [stage.layers for stage in model.cvt.encoder.stages]

    def is_droppable(self, block: nn.Module) -> bool:
        return True  # the token embeddings, outside the layers, change the shape

    def branch_outputs(self, block: nn.Module) -> list[nn.Module]:
        return [linears[-1] for linears in vit_branches(block)]

    def branch_inputs(self, block: nn.Module) -> list[nn.Module]:
        return [lin for linears in vit_branches(block) for lin in linears[:-1]]

    def _embedding_conv(self, model: nn.Module, stage: int) -> nn.Conv2d:
        return model.cvt.encoder.stages[stage].embedding.convolution_embeddings.projection

    def stage_entry_outputs(self, model: nn.Module, stage: int) -> list[nn.Module]:
        return [self._embedding_conv(model, stage)]

    def stage_exit_inputs(self, model: nn.Module, stage: int) -> list[nn.Module]:
        last = len(model.cvt.encoder.stages) - 1
        return [self._embedding_conv(model, stage + 1)] if stage < last else []

    # ---- forward: the features are the last stage's tokens, its [CLS] token first -------------------------------
    def forward_features(self, model: nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
        out = model.cvt(pixel_values)
        return torch.cat([out.cls_token_value, out.last_hidden_state.flatten(2).transpose(1, 2)], dim=1)

    def forward_head(self, model: nn.Module, features: torch.Tensor) -> torch.Tensor:
        return model.classifier(model.layernorm(features[:, :1]).mean(dim=1))

    native_reload_why = (
        "transformers' CvT reads stage i's drop-path rate at position i of the stage's own rates, so it cannot build "
        "a stage i of i layers or fewer"
    )

    def reloads_natively(self, model: nn.Module) -> bool:
        # (a model transformers built always fits)
        return all(len(stage) > i for i, stage in enumerate(self.stages(model)))
