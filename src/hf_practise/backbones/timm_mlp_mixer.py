"""timm MLP-Mixer, ResMLP and gMLP (`MlpMixer`, whose `block_layer` is a `MixerBlock`, `ResBlock` or
`SpatialGatingBlock`).

One stage: `model.blocks`, after a patch embedding (`stem`); every block keeps its tokens' shape, so all are
droppable. Every block type has a channel MLP, `mlp_channels`, that reads the (normalised) stream through `fc1` and
writes it through `fc2` (a plain, SwiGLU or gated MLP; gMLP's spatial gating unit sits between them and its `proj`
mixes tokens). Mixer and ResMLP blocks add a token-mixing branch first (`mlp_tokens`, or ResMLP's `linear_tokens`):
its linear layers act on the token axis, with the channels as a batch, so no layer of it takes a channel mix and it
gets no adaptor (as XCiT's depthwise patch interaction). The stream before the first block is written by the stem's
conv; after the last it is normalised, averaged over tokens and read by the head.

The timm entry points pass `num_blocks` themselves (`dict(num_blocks=8, **kwargs)`), so `model_args` cannot make a
model shallower: a block-dropped model is saved in hf_practise's format and reloads with
`hf_practise.load_compressed`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .registry import register_family
from .timm_common import TimmFamily, built_input_size
from .tiny import TinyBuilder, timm_tiny


def resmlp_tiny(arch: str, **kwargs: Any) -> TinyBuilder:
    """`timm_tiny` with ResMLP's layer scales at 0.5: timm's 1e-4 to 1e-6 make every block nearly an identity."""
    build = timm_tiny(arch, **kwargs)

    def tiny(seed: int = 0) -> nn.Module:
        model = build(seed)
        with torch.no_grad():
            for block in model.blocks:
                block.ls1.fill_(0.5)
                block.ls2.fill_(0.5)
        return model

    return tiny


@register_family
class TimmMlpMixerFamily(TimmFamily):
    name = "timm-mlp-mixer"
    native_reload = False
    native_reload_why = "timm's MLP-Mixer entry points pass `num_blocks` themselves, so `model_args` cannot set it"
    finetune_optimizer = "adamw"  # LayerNorm (or ResMLP's affine) network, like ViT
    # the entry points fix depth and width (mixer's also the patch size): real configurations on 32x32 inputs
    tiny_models = {
        "mixer": timm_tiny("mixer_s16_224", img_size=32, mlp_ratio=(0.5, 0.25)),  # 4 tokens, 8 blocks
        "resmlp": resmlp_tiny("resmlp_12_224", img_size=32),
        "gmlp": timm_tiny("gmlp_ti16_224", img_size=32),
    }
    model_class = "timm.models.mlp_mixer:MlpMixer"
    block_classes = (
        "timm.models.mlp_mixer:MixerBlock",
        "timm.models.mlp_mixer:ResBlock",
        "timm.models.mlp_mixer:SpatialGatingBlock",
    )

    # ---- structure -------------------------------------------------------------------------------------
    def stages(self, model: nn.Module) -> list[nn.Sequential]:
        return [model.blocks]

    def is_droppable(self, block: nn.Module) -> bool:
        return True  # residual token and channel mixing: the token shape never changes

    def branch_outputs(self, block: nn.Module) -> list[nn.Module]:
        return [block.mlp_channels.fc2]

    def branch_inputs(self, block: nn.Module) -> list[nn.Module]:
        return [block.mlp_channels.fc1]

    def stage_entry_outputs(self, model: nn.Module, stage: int) -> list[nn.Module]:
        return [model.stem.proj]

    # ---- forward -----------------------------------------------------------------------------------------
    def data_config(self, model: nn.Module) -> dict[str, Any]:
        return built_input_size(model, super().data_config(model))  # the token-mixing layers fix it

    # ---- saving ------------------------------------------------------------------------------------------
    def block_args(self, model: nn.Module) -> dict[str, Any]:
        return {}  # not used: saved in hf_practise's format (native_reload is False)
