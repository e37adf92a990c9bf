"""transformers FocalNet (`FocalNetForImageClassification`).

Swin's layout with focal modulation in place of windowed attention: stages are the `layers` of
`focalnet.encoder.stages`, each followed by the stage's own `downsample` (a strided conv patch embedding), so
every layer keeps its input's shape and is droppable, and no layer depends on its index (no window shift). A layer
has two residual branches: the modulation reads the stream through `projection_in` and writes it through
`projection_out`, the MLP through `fc1` and `fc2` (then the optional layer scale; with `use_post_layernorm`, as in
the large checkpoints, a LayerNorm follows each branch and no norm precedes it). The depthwise focal convs and the
1x1 `projection_context` act inside the modulation. The stream entering a stage is written by the patch
embedding's conv (the previous stage's `downsample` conv), and read after the stage's last layer by the next
`downsample` conv; the head normalises the last stage's tokens, then pools them. The config's `depths` rebuild a
shallower model (a stage may keep no layer), so plain transformers reloads the result.
"""

from __future__ import annotations

import torch
from torch import nn

from .registry import register_family
from .tiny import tiny_variants, transformers_tiny
from .transformers_common import TransformersFamily


@register_family
class TransformersFocalNetFamily(TransformersFamily):
    name = "transformers-focalnet"
    finetune_optimizer = "adamw"  # LayerNorm
    model_class_name = "FocalNetForImageClassification"
    base_attr = "focalnet"
    tiny_models = tiny_variants(
        transformers_tiny,
        {
            "focalnet": {},
            # as microsoft/focalnet-large-fl4 and above: conv patch embeddings, post-norm branches, layer scale (at
            # 0.5: 1e-4 would make every layer an identity)
            "focalnet-post-norm": dict(
                use_conv_embed=True,
                use_post_layernorm=True,
                use_post_layernorm_in_modulation=True,
                normalize_modulator=True,
                use_layerscale=True,
                layerscale_value=0.5,
                focal_levels=[3, 3, 3, 3],
            ),
        },
        model_class=model_class_name,
        config_class="FocalNetConfig",
        # 32x32 inputs: 16x16 tokens in the first stage (8x8 with the conv embedding), then 8x8, 4x4, 2x2
        image_size=32,
        patch_size=2,
        embed_dim=8,
        depths=[2, 3, 2, 1],
    )

    def stages(self, model: nn.Module) -> list[nn.Module]:
        return [stage.layers for stage in model.focalnet.encoder.stages]

    def is_droppable(self, block: nn.Module) -> bool:
        return True  # downsampling lives in the stages' `downsample`, outside the layers

    def branch_outputs(self, block: nn.Module) -> list[nn.Module]:
        return [block.modulation.projection_out, block.mlp.fc2]

    def branch_inputs(self, block: nn.Module) -> list[nn.Module]:
        return [block.modulation.projection_in, block.mlp.fc1]

    def stage_entry_outputs(self, model: nn.Module, stage: int) -> list[nn.Module]:
        if stage == 0:
            return [model.focalnet.embeddings.patch_embeddings.projection]
        return [model.focalnet.encoder.stages[stage - 1].downsample.projection]

    def stage_exit_inputs(self, model: nn.Module, stage: int) -> list[nn.Module]:
        downsample = model.focalnet.encoder.stages[stage].downsample
        return [] if downsample is None else [downsample.projection]  # the last stage: normalised, then pooled

    def forward_head(self, model: nn.Module, features: torch.Tensor) -> torch.Tensor:
        pooled = model.focalnet.pooler(features.transpose(1, 2))
        return model.classifier(torch.flatten(pooled, 1))
