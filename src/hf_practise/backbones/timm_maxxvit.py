"""timm MaxxVit models (MaxViT, CoAtNet, CoAtNeXt, MaxxViT and MaxxViT-V2).

Stages are the `blocks` Sequentials of `model.stages`. Every stage's first block downsamples (its shortcut is a
pooling `Downsample2d`, with a 1x1 `expand` conv when the width changes) and stays; the later blocks keep their
input's shape and are candidates. A block is a chain of residual units on one stream: an MBConv (`conv1_1x1`
reads the stream, `conv3_1x1` writes it) or a ConvNeXt unit (`mlp.fc1` ... `mlp.fc2`: a channel mix does not fold
into its depthwise conv), then attention (`attn.qkv` ... `attn.proj`: never the relative-position MLP) and an MLP
(`mlp.fc1` ... `mlp.fc2`), once for a CoAtNet transformer block, for window then grid partitions in a MaxViT
block, for both partitions side by side in a MaxxViT-V2 block. A downsampling block reads the previous stage's
stream only through its first unit (and its shortcut conv). The stem's last conv writes the stream entering the
first stage.

`MaxxVit` overlays its constructor's keyword arguments on the model config (`depths` included) and repeats a
stage's last block type for the blocks it adds, so plain timm rebuilds a block-dropped model from
`model_args={"depths": [...]}`, as long as a stage's kept blocks are still the ones that overlay builds (checked,
else hf_practise's format: `reloads_natively`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .base import REMOVED_ATTR, ungrouped
from .registry import register_family
from .timm_common import TimmFamily
from .tiny import timm_tiny, tiny_variants

#: a residual unit of a block: the layers that read the stream, the layers that write it
_Unit = tuple[list[nn.Module], list[nn.Module]]


def _attn_mlp(layer: nn.Module, attns: list[nn.Module]) -> list[_Unit]:
    """An attention unit (its `qkv` read, its `proj` written; several side by side) then an MLP unit."""
    return [
        ([a.qkv for a in attns], [a.proj for a in attns]),
        ([layer.mlp.fc1], [layer.mlp.fc2]),
    ]


def _units(block: nn.Module) -> list[_Unit]:
    """The block's residual units in forward order; the shortcut conv of a downsampling block reads and writes
    with its first unit."""
    from timm.models import maxxvit

    if isinstance(block, nn.Sequential):
        return [unit for b in block for unit in _units(b)]
    if isinstance(block, maxxvit.MaxxVitBlock):
        attns = [block.attn_block, block.attn_grid] if block.attn_block is not None else [block.attn_grid]
        return _units(block.conv) + [unit for a in attns for unit in _attn_mlp(a, [a.attn])]
    if isinstance(block, maxxvit.ParallelMaxxVitBlock):
        return _units(block.conv) + _attn_mlp(block.attn, [block.attn.attn_block, block.attn.attn_grid])
    if isinstance(block, maxxvit.TransformerBlock2d):
        units = _attn_mlp(block, [block.attn])
    elif isinstance(block, maxxvit.MbConvBlock):
        units = [([block.conv1_1x1], [block.conv3_1x1])]
    else:  # ConvNeXtBlock: depthwise conv, then the MLP
        units = [(ungrouped(block.mlp)[:1], ungrouped(block.mlp)[-1:])]
    shortcut = ungrouped(block.shortcut)
    (reads, writes), rest = units[0], units[1:]
    return [(reads + shortcut, writes + shortcut), *rest]


def _shortcut(block: nn.Module) -> nn.Module:
    """The shortcut of the block's first residual unit (an Identity unless the block downsamples)."""
    from timm.models import maxxvit

    if isinstance(block, (maxxvit.MaxxVitBlock, maxxvit.ParallelMaxxVitBlock)):
        conv = block.conv
        return _shortcut(conv[0] if isinstance(conv, nn.Sequential) else conv)
    return block.shortcut


@register_family
class TimmMaxxVitFamily(TimmFamily):
    name = "timm-maxxvit"
    finetune_optimizer = "adamw"  # LayerNorm attention (BatchNorm only in the MBConv units)
    # kwargs overlay the model config: real block layouts with tiny widths, 8-channel heads, a 32x32 input
    tiny_models = tiny_variants(
        timm_tiny,
        {
            "maxvit-rmlp": dict(
                arch="maxvit_rmlp_pico_rw_256", init="calibrate", depths=(1, 2, 3, 2), stem_width=(8, 8)
            ),
            "maxvit-tf-nchw": dict(arch="maxvit_tiny_tf_224", init="calibrate", depths=(2, 1, 2, 2)),
            "coatnet-cc": dict(arch="coatnet_nano_cc_224", init="calibrate", depths=(2, 2, 3, 2)),
            "maxxvit-convnext": dict(arch="maxxvit_rmlp_nano_rw_256", embed_dim=(8, 16, 16, 32), depths=(1, 2, 2, 1)),
            "maxxvitv2-parallel": dict(arch="maxxvitv2_nano_rw_256", embed_dim=(8, 16, 16, 32), depths=(1, 2, 2, 1)),
        },
        img_size=32,
        embed_dim=(8, 16, 16, 24),
        stem_width=8,
        transformer_dim_head=8,
    )
    model_class = "timm.models.maxxvit:MaxxVit"
    block_classes = (
        "timm.models.maxxvit:MbConvBlock",
        "timm.models.maxxvit:ConvNeXtBlock",
        "timm.models.maxxvit:TransformerBlock2d",
        "timm.models.maxxvit:MaxxVitBlock",
        "timm.models.maxxvit:ParallelMaxxVitBlock",
    )

    # ---- structure ---------------------------------------------------------------------------------------
    def stages(self, model: nn.Module) -> list[nn.Sequential]:
        return [stage.blocks for stage in model.stages]

    def is_droppable(self, block: nn.Module) -> bool:
        return isinstance(_shortcut(block), nn.Identity)

    def branch_outputs(self, block: nn.Module) -> list[nn.Module]:
        return [layer for _, writes in _units(block) for layer in writes]

    def branch_inputs(self, block: nn.Module) -> list[nn.Module]:
        # a downsampling block reads its input stream through its first unit only; the later ones read its own
        units = _units(block) if self.is_droppable(block) else _units(block)[:1]
        return [layer for reads, _ in units for layer in reads]

    def stage_entry_outputs(self, model: nn.Module, stage: int) -> list[nn.Module]:
        return ungrouped(model.stem)[-1:] if stage == 0 else []

    # ---- saving ------------------------------------------------------------------------------------------
    def block_args(self, model: nn.Module) -> dict[str, Any]:
        return {"depths": [len(stage.blocks) for stage in model.stages]}

    native_reload_why = (
        "timm fills each stage with its config's block types, the last one repeated: this drop leaves a stage that "
        "no config lays out"
    )

    def reloads_natively(self, model: nn.Module) -> bool:
        """Whether `model_args` rebuild exactly these blocks: timm fills each stage with its config's block types
        (the last one repeated), which a drop keeps unless a stage mixes types after its first block. Built on
        the meta device, so the check costs no memory or time."""
        if not getattr(model, REMOVED_ATTR, None):
            return True
        import timm
        from timm.models._hub import get_model_args

        architecture = (getattr(model, "pretrained_cfg", None) or {}).get("architecture")
        if not architecture:
            return False
        try:
            with torch.device("meta"):
                rebuilt = timm.create_model(
                    architecture, pretrained=False, **get_model_args(model, self.block_args(model))
                )
        except (TypeError, ValueError, AssertionError):
            return False
        shapes = {k: v.shape for k, v in model.state_dict().items()}
        return shapes == {k: v.shape for k, v in rebuilt.state_dict().items()}
