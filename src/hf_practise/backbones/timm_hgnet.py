"""timm PP-HGNet and PP-HGNetV2 (`HighPerfGpuNet`): stages of HG blocks that concatenate the outputs of a chain
of convs with their input and aggregate them with 1x1 convs.

Stages are the `blocks` of `model.stages`. Each stage's first block maps its input to the stage's width with no
shortcut and stays; every later block is residual (`residual=True`, same width and resolution) and is a
candidate. A residual block reads the stream through the first ungrouped conv of its chain (`layers.0`, the 1x1
conv of a light block) and writes it through the last aggregation conv (before BatchNorm, ReLU and, in HGNet v1,
the ESE gate). Its aggregation conv also reads the stream itself, inside the concatenation; a pre-adaptor there
would mix the whole concatenation (up to three times that conv's own weights), so that path carries none. The
stream a stage's residual blocks work on is written by its first block (an earlier block of the same stage), and
the stream leaving a stage is read, after the next stage's depthwise downsampling, by that stage's first block;
the head pools before its conv, so nothing after the last stage acts on the mimicked features.

timm builds the stages from a per-architecture `cfg` dict that the entry points pass themselves (a `cfg` in
`model_args` clashes with theirs), so a block-dropped model is saved in hf_practise's format and reloads with
`hf_practise.load_compressed`. The smallest architectures (`hgnet_tiny`, `hgnet_small`, `hgnetv2_b0`, `b1`)
have one candidate each.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from .base import ungrouped
from .registry import register_family
from .timm_common import TimmFamily
from .tiny import timm_tiny


@register_family
class TimmHGNetFamily(TimmFamily):
    name = "timm-hgnet"
    native_reload = False
    native_reload_why = (
        "timm's HGNet entry points pass their stage table (`cfg`) themselves, so `model_args` cannot set depths"
    )
    # the entry points fix widths and depths: the smallest architecture with two candidates (3 blocks in stage 3;
    # light blocks, learnable affine, SE aggregation) stands in for a tiny one, with a narrow head
    tiny_models = {"hgnetv2": timm_tiny("hgnetv2_b2", init="calibrate", head_hidden_size=32)}
    model_class = "timm.models.hgnet:HighPerfGpuNet"
    block_classes = ("timm.models.hgnet:HighPerfGpuBlock",)

    # ---- structure -------------------------------------------------------------------------------------
    def stages(self, model: nn.Module) -> list[nn.Sequential]:
        return [stage.blocks for stage in model.stages]

    def is_droppable(self, block: nn.Module) -> bool:
        return bool(block.residual)  # x + aggregation(...): a stage's first block has no shortcut

    def branch_outputs(self, block: nn.Module) -> list[nn.Module]:
        from timm.models.hgnet import ConvBNAct

        # the last ConvBNAct: v1's ESE module after it holds a conv too, on pooled channels
        return [[m for m in block.aggregation if isinstance(m, ConvBNAct)][-1].conv]

    def branch_inputs(self, block: nn.Module) -> list[nn.Module]:
        return ungrouped(block.layers[0])[:1]

    # ---- saving ------------------------------------------------------------------------------------------
    def block_args(self, model: nn.Module) -> dict[str, Any]:
        return {}  # not used: saved in hf_practise's format (native_reload is False)
