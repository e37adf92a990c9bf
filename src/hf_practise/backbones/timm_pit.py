"""timm PiT (`PoolingVisionTransformer`, with or without a distillation token): ViT stages at falling resolution.

Stages are the `blocks` of `model.transformers`: timm ViT blocks (`qkv` ... `proj`, `fc1` ... `fc2`: see `timm_vit`)
on the class token(s) and the patch tokens, all droppable. Each stage after the first opens with its own pooling,
outside the blocks: a strided depthwise conv that widens the patch tokens and a linear that widens the class
tokens. Neither takes a channel mix of the whole stream (a grouped conv cannot, the linear sees the class tokens
only), so the pooling gets no adaptor: a hole's adaptors sit in its own stage's blocks, and for the first stage on
the patch embedding's conv. After the last block, the class tokens are normalised and read by the head(s); with a
distillation token both heads stay frozen, and every stage keeps a block (as in a ViT, the class token sees the
image only through attention). The entry points let `depth` from `model_args` override theirs, so plain timm
reloads the result with `model_args={"depth": [...]}`.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from .registry import register_family
from .timm_common import TimmFamily, built_input_size
from .tiny import timm_tiny

#: tiny PiTs: 32x32 inputs, 3x3 patch tokens, then 2x2 and 1x1 after each pooling
_TINY = dict(img_size=32, base_dims=(8, 8, 8), depth=(2, 3, 2), heads=(2, 4, 8))


@register_family
class TimmPiTFamily(TimmFamily):
    name = "timm-pit"
    finetune_optimizer = "adamw"  # LayerNorm network, like ViT
    min_blocks_per_stage = 1  # the class tokens read the image only through the blocks' attention
    tiny_models = {"pit": timm_tiny("pit_ti_224", **_TINY), "pit-distilled": timm_tiny("pit_ti_distilled_224", **_TINY)}
    model_class = "timm.models.pit:PoolingVisionTransformer"
    block_classes = ("timm.models.vision_transformer:Block",)

    # ---- structure -------------------------------------------------------------------------------------
    def stages(self, model: nn.Module) -> list[nn.Sequential]:
        return [stage.blocks for stage in model.transformers]

    def is_droppable(self, block: nn.Module) -> bool:
        return True  # x + attn(x), then + mlp(x); the pooling lives outside the blocks

    def branch_outputs(self, block: nn.Module) -> list[nn.Module]:
        return [block.attn.proj, block.mlp.fc2]

    def branch_inputs(self, block: nn.Module) -> list[nn.Module]:
        return [block.attn.qkv, block.mlp.fc1]

    def stage_entry_outputs(self, model: nn.Module, stage: int) -> list[nn.Module]:
        return [model.patch_embed.conv] if stage == 0 else []  # later stages: the pooling takes no adaptor

    def stage_exit_inputs(self, model: nn.Module, stage: int) -> list[nn.Module]:
        return []  # the next stage's pooling (no adaptor), or the norm and the head

    # ---- forward -----------------------------------------------------------------------------------------
    def classifier(self, model: nn.Module) -> nn.Module:
        heads = model.get_classifier()  # (head, head_dist) for a distilled model
        return nn.ModuleList(heads) if isinstance(heads, tuple) else heads

    def data_config(self, model: nn.Module) -> dict[str, Any]:
        return built_input_size(model, super().data_config(model))  # the position embedding fixes it

    # ---- saving ------------------------------------------------------------------------------------------
    def block_args(self, model: nn.Module) -> dict[str, Any]:
        return {"depth": [len(stage.blocks) for stage in model.transformers]}
