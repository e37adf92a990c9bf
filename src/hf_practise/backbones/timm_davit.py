"""timm DaViT (`DaVit`: tiny, small, base, and the Florence-2 base/huge ones): dual attention blocks, a window
(spatial) attention block then a channel attention block.

Stages are the `blocks` of `model.stages`; each stage after the first opens with its own `downsample` (a LayerNorm
and a strided conv; the stem's conv is the first stage's), so every block keeps its input's shape and all are
candidates. A stage's block is a pair (`depths` counts pairs): a spatial block and a channel block, each of four
residual steps: a depthwise conv position encoding (`cpe1`; no channel mix folds into it), pre-norm attention
(`attn.qkv` ... `attn.proj`), a second position encoding (`cpe2`), and a pre-norm MLP (`mlp.fc1` ... `mlp.fc2`). So a
pair reads the stream through both attentions' `qkv` and both MLPs' `fc1`, and writes it through their `proj` and
`fc2`. The stream entering a stage is written by its downsampling conv (the stem's for the first stage) and read,
after the last pair, by the next stage's; the last stage's output is pooled, normalised and classified. The entry
points let `depths` from `model_args` override theirs, so plain timm reloads the result with
`model_args={"depths": [...]}`.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from .registry import register_family
from .timm_common import TimmDownsampledStagesFamily, timm_class
from .tiny import timm_tiny, tiny_variants

#: tiny DaViTs: 32x32 inputs, 8x8 maps in the first stage in 2x2 windows, then 4x4, 2x2, 1x1
_TINY = dict(embed_dims=(8, 16, 24, 32), num_heads=(1, 2, 2, 2), depths=(2, 1, 3, 2), window_size=2)


def _sub_blocks(block: nn.Module) -> list[nn.Module]:
    """The spatial and channel blocks of a stage's block (a pair)."""
    return list(block.children())


def _ends(block: nn.Module, *, writes: bool) -> list[nn.Module]:
    """The attention and MLP layers of a pair's two blocks that write the stream (`proj`, `fc2`), or read it (`qkv`,
    `fc1`); a block built without its MLP (`ffn=False`) has only the attention's."""
    attn_name, mlp_name = ("proj", "fc2") if writes else ("qkv", "fc1")
    layers = [(getattr(sub.attn, attn_name), getattr(sub.mlp, mlp_name, None)) for sub in _sub_blocks(block)]
    return [layer for pair in layers for layer in pair if layer is not None]


@register_family
class TimmDaVitFamily(TimmDownsampledStagesFamily):
    name = "timm-davit"
    finetune_optimizer = "adamw"  # LayerNorm network
    tiny_models = tiny_variants(
        timm_tiny,
        {
            "davit": {"arch": "davit_tiny"},
            # Florence-2: named blocks, channel attention v2, a 3x3 downsampling conv
            "davit-fl": {"arch": "davit_base_fl"},
        },
        **_TINY,
    )
    model_class = "timm.models.davit:DaVit"

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        """A `DaVit` whose blocks are all pairs of timm's spatial and channel blocks."""
        if not super().matches(model):
            return False
        kinds = tuple(timm_class(f"timm.models.davit:{name}") for name in ("SpatialBlock", "ChannelBlock"))
        blocks = [b for stage in cls().stages(model) for b in stage]
        return all(_sub_blocks(b) and all(isinstance(s, kinds) for s in _sub_blocks(b)) for b in blocks)

    # ---- structure (stages, entry and exit convs: TimmDownsampledStagesFamily) ------------------------------
    def is_droppable(self, block: nn.Module) -> bool:
        return True  # every residual step keeps the shape; downsampling lives outside the blocks

    def branch_outputs(self, block: nn.Module) -> list[nn.Module]:
        return _ends(block, writes=True)

    def branch_inputs(self, block: nn.Module) -> list[nn.Module]:
        return _ends(block, writes=False)

    # ---- saving ------------------------------------------------------------------------------------------
    def block_args(self, model: nn.Module) -> dict[str, Any]:
        return {"depths": [len(stage.blocks) for stage in model.stages]}
