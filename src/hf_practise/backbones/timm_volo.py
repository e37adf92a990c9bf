"""timm VOLO (`VOLO`: Vision Outlooker): outlooker blocks on a coarse grid, then transformer blocks, then
class-attention blocks.

`model.network` lists the stages (Sequentials of blocks) and the downsampling between them: outlookers, a
`Downsample` conv, then transformer stages that follow each other on one stream (same width, nothing between
them); every block keeps its input's shape, so all are droppable. A block has two residual branches: outlook
attention (reads the stream through `v` and, after average pooling, through `attn`; writes it through `proj`) or
self-attention (`qkv` ... `proj`), and an MLP (`fc1` ... `fc2`). A stage's stream is written by the patch
embedding's last conv, by the downsampling conv, or (for a transformer stage that follows another) by everything
that writes the previous stage's stream; it is read by the downsampling conv, or by every later block on the same
stream. The class-attention blocks (`post_network`) read the [CLS] token and stay, as in CaiT; the head (and the
token-labelling `aux_head`, whose logits are added to it) stays frozen.

The timm entry points pass `layers` themselves (`dict(layers=..., **kwargs)`), so `model_args` cannot make a model
shallower: a block-dropped model is saved in hf_practise's format and reloads with `hf_practise.load_compressed`.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from .base import layers_of
from .registry import register_family
from .timm_common import TimmFamily, built_input_size
from .tiny import timm_tiny


def _reads(branch: nn.Module, last: nn.Linear) -> list[nn.Module]:
    """The linears of a branch that read the (normalised) stream: those of its width, less the one that writes."""
    return [m for m in layers_of(branch, nn.Linear) if m is not last and m.in_features == last.out_features]


@register_family
class TimmVoloFamily(TimmFamily):
    name = "timm-volo"
    native_reload = False
    native_reload_why = "timm's VOLO entry points pass `layers` themselves, so `model_args` cannot set them"
    finetune_optimizer = "adamw"  # LayerNorm network, like ViT
    # the entry points fix depths and widths: the smallest real configuration, with narrow MLPs, on 32x32 inputs
    tiny_models = {"volo": timm_tiny("volo_d1_224", img_size=32, mlp_ratio=0.25)}
    model_class = "timm.models.volo:VOLO"
    block_classes = ("timm.models.volo:Outlooker", "timm.models.volo:Transformer")

    # ---- structure -------------------------------------------------------------------------------------
    def stages(self, model: nn.Module) -> list[nn.Sequential]:
        return [m for m in model.network if isinstance(m, nn.Sequential)]

    def is_droppable(self, block: nn.Module) -> bool:
        return True  # residual attention and MLP; the downsampling lives outside the blocks

    def branch_outputs(self, block: nn.Module) -> list[nn.Module]:
        return [block.attn.proj, block.mlp.fc2]

    def branch_inputs(self, block: nn.Module) -> list[nn.Module]:
        return _reads(block.attn, block.attn.proj) + _reads(block.mlp, block.mlp.fc2)

    def _neighbours(self, model: nn.Module, stage: int) -> tuple[nn.Module | None, nn.Module | None]:
        """The modules of `model.network` right before and after the stage (None at either end)."""
        network = list(model.network)
        i = next(k for k, m in enumerate(network) if m is self.stages(model)[stage])
        return (network[i - 1] if i > 0 else None), (network[i + 1] if i + 1 < len(network) else None)

    def stage_entry_outputs(self, model: nn.Module, stage: int) -> list[nn.Module]:
        before, _ = self._neighbours(model, stage)
        if before is None:
            return layers_of(model.patch_embed, nn.Conv2d)[-1:]
        if not isinstance(before, nn.Sequential):
            return [before.proj]  # the downsampling conv
        # the previous stage's stream goes on: whatever wrote it, and its blocks
        return self.stage_entry_outputs(model, stage - 1) + [m for b in before for m in self.branch_outputs(b)]

    def stage_exit_inputs(self, model: nn.Module, stage: int) -> list[nn.Module]:
        _, after = self._neighbours(model, stage)
        if after is None:
            return []  # the class-attention blocks and the head
        if not isinstance(after, nn.Sequential):
            return [after.proj]
        return [m for b in after for m in self.branch_inputs(b)] + self.stage_exit_inputs(model, stage + 1)

    # ---- forward -----------------------------------------------------------------------------------------
    def classifier(self, model: nn.Module) -> nn.Module:
        aux = model.aux_head
        return model.head if aux is None else nn.ModuleList([model.head, aux])

    def data_config(self, model: nn.Module) -> dict[str, Any]:
        return built_input_size(model, super().data_config(model))  # the position embedding fixes it

    # ---- saving ------------------------------------------------------------------------------------------
    def block_args(self, model: nn.Module) -> dict[str, Any]:
        return {}  # not used: saved in hf_practise's format (native_reload is False)
