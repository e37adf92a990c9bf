"""timm Next-ViT (`NextViT`), in the training form that `timm.create_model(..., pretrained=True)` returns (each
block's pre-norms apart; `reparameterize` folds them, and a model so fused is not handled).

A timm stage holds convolution blocks (`NextConvBlock`: a multi-head conv attention and an MLP, each residual) and,
at fixed positions, transformer blocks (`NextTransformerBlock`) that widen the stream by concatenating an attention
path and a conv-attention path, with no shortcut from their input; a stage's first block also downsamples, and a
convolution block whose width changes maps its input with a 1x1 `patch_embed` conv. So a timm stage carries several
streams one after another: the family's stages are those runs (a block that changes the shape, then the blocks that
keep it, views into timm's `blocks`), and the candidates are the convolution blocks without `patch_embed` conv. Such
a block reads the stream through `mlp.fc1` (after its BatchNorm; its conv attention reads through a grouped conv,
which takes no adaptor) and writes it through `mhca.projection` and `mlp.fc2`. A block that opens a run writes the
run's stream through those and its `patch_embed` conv (a convolution block), or through `mlp.fc2` alone (a
transformer block: its other paths write parts of the concatenation), and reads the previous run's stream through
its `patch_embed` conv, or its attention's `q`, `k`, `v`. After the last run, the final BatchNorm and the pooled head.

timm's `NextViT` derives every block's type and width from `depths` (the third stage repeats four convolution
blocks and a transformer block), so plain timm reloads a model from `model_args={"depths": [...]}` as long as each
stage keeps that pattern: drops in the first, second and last stages. A drop in the third stage breaks it (a
transformer block or a width-changing block would have to go too) and is saved in hf_practise's format and reload with `hf_practise.load_compressed`
(`reloads_natively` rebuilds the architecture on the meta device and compares the block types).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .base import REMOVED_ATTR
from .registry import register_family
from .timm_common import TimmFamily
from .tiny import timm_tiny

#: the classes of a Next-ViT's blocks
_CONV, _TRANSFORMER = "timm.models.nextvit:NextConvBlock", "timm.models.nextvit:NextTransformerBlock"


def _layout(model: nn.Module) -> list[list[type]]:
    """The block types of each timm stage."""
    return [[type(b) for b in stage.blocks] for stage in model.stages]


def _is_conv_block(block: nn.Module) -> bool:
    return hasattr(block, "mhca") and not hasattr(block, "e_mhsa")


@register_family
class TimmNextViTFamily(TimmFamily):
    name = "timm-nextvit"
    # the widths are fixed by timm (96 to 1024); 32x32 inputs: 8x8 after the stem, then 4x4, 2x2, 1x1 (the
    # attention's key/value pooling, 16, 4 and 1 tokens, fits each)
    tiny_models = {"nextvit": timm_tiny("nextvit_small", init="calibrate", depths=(2, 3, 5, 3), stem_chs=(16, 16, 16))}
    model_class = "timm.models.nextvit:NextViT"
    block_classes = (_CONV, _TRANSFORMER)

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        # the training form: `reparameterize` merges the pre-norms, whose keys timm's rebuilt model expects
        return super().matches(model) and not any(b.is_fused for stage in model.stages for b in stage.blocks)

    # ---- structure: runs of blocks on one stream ----------------------------------------------------------
    def stages(self, model: nn.Module) -> list[list[nn.Module]]:
        runs: list[list[nn.Module]] = []
        for stage in model.stages:
            for block in stage.blocks:
                if not runs or not self.is_droppable(block):
                    runs.append([])
                runs[-1].append(block)
        return runs

    def is_droppable(self, block: nn.Module) -> bool:
        # a transformer block concatenates a second path onto its (re-embedded) input: no shortcut of the input
        return _is_conv_block(block) and isinstance(block.patch_embed.conv, nn.Identity)

    def branch_outputs(self, block: nn.Module) -> list[nn.Module]:
        if not _is_conv_block(block):
            return [block.mlp.fc2]
        embed = [] if isinstance(block.patch_embed.conv, nn.Identity) else [block.patch_embed.conv]
        return embed + [block.mhca.projection, block.mlp.fc2]

    def branch_inputs(self, block: nn.Module) -> list[nn.Module]:
        if not isinstance(block.patch_embed.conv, nn.Identity):
            return [block.patch_embed.conv]  # the rest of the block reads the stream it maps to
        if not _is_conv_block(block):
            return [block.e_mhsa.q, block.e_mhsa.k, block.e_mhsa.v]
        grouped = block.mhca.group_conv3x3.groups > 1
        return ([] if grouped else [block.mhca.group_conv3x3]) + [block.mlp.fc1]

    def stage_entry_outputs(self, model: nn.Module, stage: int) -> list[nn.Module]:
        first = self.stages(model)[stage][0]
        # a run opens with the block that writes its stream, but the first may take the stem's width
        return [model.stem[-1].conv] if stage == 0 and self.is_droppable(first) else []

    def remove_blocks(self, model: nn.Module, gone: set[tuple[int, int]]) -> None:
        dropped = {
            id(block) for s, run in enumerate(self.stages(model)) for i, block in enumerate(run) if (s, i) in gone
        }
        for stage in model.stages:
            if any(id(b) in dropped for b in stage.blocks):
                stage.blocks = nn.Sequential(*[b for b in stage.blocks if id(b) not in dropped])

    def architecture_summary(self, model: nn.Module) -> dict[str, Any]:
        return self.block_args(model)

    # ---- saving ------------------------------------------------------------------------------------------
    def block_args(self, model: nn.Module) -> dict[str, Any]:
        return {"depths": [len(stage.blocks) for stage in model.stages]}

    native_reload_why = "timm lays out each Next-ViT stage's block types from its depth: no depth gives this layout"

    def reloads_natively(self, model: nn.Module) -> bool:
        """Whether `depths` rebuild these blocks: timm lays out each stage's block types from its depth (built on
        the meta device, so the check costs no memory or time)."""
        import timm
        from timm.models._hub import get_model_args

        if not getattr(model, REMOVED_ATTR, None):
            return True
        args = get_model_args(model, self.block_args(model))
        try:
            with torch.device("meta"):
                rebuilt = timm.create_model(model.pretrained_cfg["architecture"], **args)
        except (IndexError, TypeError, ValueError):  # e.g. a third stage of fewer than five blocks: no pattern
            return False
        return _layout(rebuilt) == _layout(model)
