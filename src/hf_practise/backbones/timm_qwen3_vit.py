"""timm Qwen3 ViTs: the vision towers of Qwen3-VL / Qwen3.5, as classifiers (`Qwen3VitClassifier`) and as the
bare encoders that feed the language model (`Qwen3VitEncoder`, the `_enc` models).

One stage: the encoder's `blocks`, pre-norm EVA blocks (fused `qkv` ... `proj`, `fc1` ... `fc2`: see `timm_vit`),
all droppable. The rotary position embedding is computed once per input and handed to every block, and the learned
absolute one is added before the first, so no block depends on its index. The stream before the first block is
written by the patch embedding's conv; after the last, the tokens go unnormalised to average pooling or to the VLM
projector (`merger`: norm, 2x2 pixel-unshuffle, MLP), which reads them only after a norm, so neither takes an
adaptor. A classifier's head is its linear head; an encoder has none, so its head is the projector (what its
forward returns after the features: the tokens the language model consumes), frozen during the finetune. The
entry points let `depth` from `model_args` override theirs, so plain timm reloads the result with
`model_args={"depth": n}`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .registry import register_family
from .timm_common import TimmFamily
from .tiny import timm_tiny

#: tiny Qwen3 ViTs: 32x32 inputs in 4x4 patches of 8, merged 2x2 by the projector; a 4x4 position grid
_TINY = dict(img_size=32, patch_size=8, embed_dim=32, depth=3, num_heads=2, pos_embed_grid_size=4)


@register_family
class TimmQwen3VitFamily(TimmFamily):
    name = "timm-qwen3-vit"
    finetune_optimizer = "adamw"  # LayerNorm network, like ViT
    tiny_models = {
        "qwen3-vit": timm_tiny("qwen3_vit_88m", **_TINY),  # average pooling, norm, head
        "qwen3-vit-merge": timm_tiny("qwen3_vit_88m_merge", **_TINY),  # the VLM projector before the pooling
    }
    model_class = "timm.models.qwen3_vit:Qwen3VitClassifier"
    block_classes = ("timm.models.eva:EvaBlock",)

    def encoder(self, model: nn.Module) -> nn.Module:
        """The `Qwen3VitEncoder` of `model`."""
        return model.encoder

    # ---- structure -------------------------------------------------------------------------------------
    def stages(self, model: nn.Module) -> list[nn.ModuleList]:
        return [self.encoder(model).blocks]

    def is_droppable(self, block: nn.Module) -> bool:
        return True  # x + attn(x), then + mlp(x): the token shape never changes

    def branch_outputs(self, block: nn.Module) -> list[nn.Module]:
        return [block.attn.proj, block.mlp.fc2]

    def branch_inputs(self, block: nn.Module) -> list[nn.Module]:
        return [block.attn.qkv, block.mlp.fc1]

    def stage_entry_outputs(self, model: nn.Module, stage: int) -> list[nn.Module]:
        return [self.encoder(model).patch_embed.proj]

    # ---- saving ------------------------------------------------------------------------------------------
    def block_args(self, model: nn.Module) -> dict[str, Any]:
        return {"depth": len(self.encoder(model).blocks)}


@register_family
class TimmQwen3VitEncoderFamily(TimmQwen3VitFamily):
    name = "timm-qwen3-vit-encoder"
    tiny_models = {"qwen3-vit-enc": timm_tiny("qwen3_vit_88m_enc", **_TINY)}
    model_class = "timm.models.qwen3_vit:Qwen3VitEncoder"

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        # without the projector (`global_pool` "avg" or ""), the encoder has no layer to keep as its head
        return super().matches(model) and model.merger is not None

    def encoder(self, model: nn.Module) -> nn.Module:
        return model

    def forward_head(self, model: nn.Module, features: torch.Tensor) -> torch.Tensor:
        return model.merger(features)

    def classifier(self, model: nn.Module) -> nn.Module:
        return model.merger
