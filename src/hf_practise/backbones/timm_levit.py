"""timm LeViT (`Levit`, and `LevitDistilled`, the class of every pretrained checkpoint), in linear and conv mode.

Stages are the `blocks` of `model.stages`; each stage after the first opens with its own `downsample` (an
attention that subsamples the tokens and widens the stream, with no shortcut, then a residual MLP on the new
width), so every block keeps its input's shape and all are droppable. A block is an (attention, MLP) pair, the unit
timm's `depth` counts: the attention reads the stream through `attn.qkv` and writes it through `attn.proj`, the MLP
reads through `mlp.ln1` and writes through `mlp.ln2` (each a linear layer, or a 1x1 conv in conv mode, followed by
BatchNorm: the adaptor folds into the layer, before its norm). The stream entering a stage is written by the stem's
last conv (for the first stage) or by the downsampling's attention projection and MLP, and read, after the last
block, by the next downsampling's keys/values and queries (its token subsampling commutes with a channel mix); the
head pools the last stage's tokens, then normalises them. No block depends on its index in the stage, and the entry
points let `depth` from `model_args` override theirs, so plain timm reloads the result.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .registry import register_family
from .timm_common import TimmFamily
from .tiny import TinyBuilder, timm_tiny, tiny_variants


def levit_tiny(arch: str, **kwargs: Any) -> TinyBuilder:
    """`timm_tiny` with the affine weights of the BatchNorm1d layers (linear mode) away from timm's init, which
    zeroes each branch's last norm and so makes every block an identity."""
    build = timm_tiny(arch, init="calibrate", **kwargs)

    def tiny(seed: int = 0) -> nn.Module:
        model = build(seed)
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, nn.BatchNorm1d):
                    m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=g))
        return model

    return tiny


@register_family
class TimmLevitFamily(TimmFamily):
    name = "timm-levit"
    tiny_models = tiny_variants(
        levit_tiny,
        # 32x32 inputs: 4x4 tokens after the stride-8 stem, then 2x2 and 1x1 after each subsampling
        {"levit": dict(arch="levit_128s"), "levit-conv": dict(arch="levit_conv_128s")},
        img_size=32,
        stem_type="s8",
        embed_dim=(16, 24, 32),
        key_dim=8,
        num_heads=(2, 3, 4),
        depth=(2, 3, 2),
    )
    model_class = "timm.models.levit:Levit"
    block_classes = ("timm.models.levit:LevitBlock",)

    # ---- structure -------------------------------------------------------------------------------------
    def stages(self, model: nn.Module) -> list[nn.Sequential]:
        return [stage.blocks for stage in model.stages]

    def is_droppable(self, block: nn.Module) -> bool:
        return True  # residual attention and MLP; the subsampling lives outside the blocks

    def branch_outputs(self, block: nn.Module) -> list[nn.Module]:
        return [block.attn.proj.ln.linear, block.mlp.ln2.linear]

    def branch_inputs(self, block: nn.Module) -> list[nn.Module]:
        return [block.attn.qkv.linear, block.mlp.ln1.linear]

    def stage_entry_outputs(self, model: nn.Module, stage: int) -> list[nn.Module]:
        down = model.stages[stage].downsample
        if isinstance(down, nn.Identity):
            return [model.stem[-1].linear] if stage == 0 else []
        return [down.attn_downsample.proj.ln.linear, down.mlp.ln2.linear]

    def stage_exit_inputs(self, model: nn.Module, stage: int) -> list[nn.Module]:
        if stage + 1 == len(model.stages):
            return []  # pooled, then the head's BatchNorm
        down = model.stages[stage + 1].downsample.attn_downsample
        return [down.kv.linear, down.q.ln.linear]

    # ---- forward -----------------------------------------------------------------------------------------
    def data_config(self, model: nn.Module) -> dict[str, Any]:
        """timm's data config, with the input size the attention biases were built for (a LeViT created with
        `img_size=32` keeps its architecture's pretrained_cfg, which says 224, and takes no other size)."""
        config = super().data_config(model)
        tokens = next(m.resolution for m in model.modules() if isinstance(getattr(m, "resolution", None), tuple))
        config["input_size"] = (config["input_size"][0], *(n * model.stem.stride for n in tokens))
        return config

    def classifier(self, model: nn.Module) -> nn.Module:
        heads = model.get_classifier()  # (head, head_dist) for a distilled model
        return nn.ModuleList(heads) if isinstance(heads, tuple) else heads

    # ---- saving ------------------------------------------------------------------------------------------
    def block_args(self, model: nn.Module) -> dict[str, Any]:
        return {"depth": [len(stage.blocks) for stage in model.stages]}
