"""timm TinyViT: a stage of MBConv blocks, then stages of windowed-attention blocks.

Stages are the `blocks` of `model.stages`; every stage after the first opens with its own `downsample` (patch
merging: 1x1 conv, strided depthwise conv, 1x1 conv), so every block keeps its input's shape and all are
droppable. An MBConv block adds `conv3` of its branch (read through `conv1`) to its input, then applies its
activation; a TinyViT block adds a windowed attention (`attn.qkv` reads the stream after the attention's norm,
`attn.proj` writes it), mixes the result with a depthwise conv (no shortcut, no layer a channel mix folds into)
and adds an MLP (`mlp.fc1` reads after its norm, `mlp.fc2` writes). The stream entering a stage is written by
the last 1x1 conv of its patch merging (of the patch embedding for the first stage) and read, after the last
block, by the next stage's first 1x1 conv; the head pools and normalises the last stage's output. No block depends
on its index in the stage, and the entry points let `depths` from `model_args` override theirs, so plain timm
reloads the result.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from .registry import register_family
from .timm_common import TimmDownsampledStagesFamily
from .tiny import timm_tiny


@register_family
class TimmTinyViTFamily(TimmDownsampledStagesFamily):
    name = "timm-tiny-vit"
    finetune_optimizer = "adamw"  # LayerNorm attention stages, like ViT
    tiny_models = {
        # 32x32 inputs: 8x8 tokens in the MBConv stage, then 4x4 (four 2x2 windows), 2x2, 1x1
        "tiny-vit": timm_tiny(
            "tiny_vit_5m_224",
            init="calibrate",
            embed_dims=(8, 16, 16, 24),
            depths=(2, 2, 3, 2),
            num_heads=(1, 2, 2, 3),
            window_sizes=(2, 2, 2, 1),
        ),
    }
    model_class = "timm.models.tiny_vit:TinyVit"
    block_classes = ("timm.models.tiny_vit:MBConv", "timm.models.tiny_vit:TinyVitBlock")

    # ---- structure (stages, later stages' entry and exit convs: TimmDownsampledStagesFamily) ---------------
    def is_droppable(self, block: nn.Module) -> bool:
        return True  # downsampling lives outside the blocks

    def branch_outputs(self, block: nn.Module) -> list[nn.Module]:
        if hasattr(block, "attn"):
            return [block.attn.proj, block.mlp.fc2]
        return [block.conv3.conv]

    def branch_inputs(self, block: nn.Module) -> list[nn.Module]:
        if hasattr(block, "attn"):
            return [block.attn.qkv, block.mlp.fc1]
        return [block.conv1.conv]

    def stage_entry_outputs(self, model: nn.Module, stage: int) -> list[nn.Module]:
        if stage == 0:
            return [model.patch_embed.conv2.conv]
        return super().stage_entry_outputs(model, stage)

    # ---- saving ------------------------------------------------------------------------------------------
    def block_args(self, model: nn.Module) -> dict[str, Any]:
        return {"depths": [len(stage.blocks) for stage in model.stages]}
