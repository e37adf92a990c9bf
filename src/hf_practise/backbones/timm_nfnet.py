"""timm normaliser-free networks (`NormFreeNet`: NFNet-F, ECA-NFNet-L, NF-ResNet, NF-RegNet).

Stages are the Sequentials of `model.stages`; a block is droppable when it has no `downsample` (an identity
shortcut). A block computes `x + alpha * branch(beta * act(x))` (times its `skipinit_gain` where the model has
one): its branch reads the stream through `conv1` and writes it through `conv3`, a stage's first block writes it
through its shortcut conv too, the stem's last conv writes the stream entering the first stage and `final_conv`
(where there is one) reads the one leaving the last. Every conv of the stream is a `ScaledStdConv2d`, which
standardises its filters in every forward: a channel mix folded into one would not survive, so PRACTISE places
no adaptors in these networks (as in BiT), the scan ranks blocks by the error of simply dropping them and the
finetune recovers the rest.

`alpha` and each block's `skipinit_gain` stay with the block, but timm gives each block its `beta` from the blocks
before it (`1 / sqrt(expected variance)`: one `alpha**2` more per block, reset after each stage's first block, so
a stage's first block depends on the previous stage's depth), and `beta` is a plain attribute, not saved with the
weights. Dropping trailing blocks of the last stage leaves every kept block's beta as it was: plain timm rebuilds
that model exactly from `model_args={"depths": [...]}` (the config overlay takes it). Any other drop would give
later blocks other betas in a rebuilt model, so such a model is saved in hf_practise's format and reloads with
`hf_practise.load_compressed`, which removes the blocks from the original network and so keeps every beta
(`reloads_natively` rebuilds the architecture on the meta device and compares them).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .base import REMOVED_ATTR, layers_of
from .registry import register_family
from .timm_common import TimmFamily
from .tiny import TinyBuilder, timm_tiny, tiny_variants


def nf_tiny(arch: str, **kwargs: Any) -> TinyBuilder:
    """`timm_tiny` with every conv's learnable gain and block's `skipinit_gain` away from timm's init, which zeroes
    the gain of each branch's last conv (or the skip-init gain) and so makes every block an identity."""
    build = timm_tiny(arch, **kwargs)

    def tiny(seed: int = 0) -> nn.Module:
        model = build(seed)
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name.endswith(".gain") or name.endswith("skipinit_gain"):
                    p.copy_(0.5 + torch.rand(p.shape, generator=g))
        return model

    return tiny


def _betas(model: nn.Module) -> list[list[float]]:
    return [[float(block.beta) for block in stage] for stage in model.stages]


@register_family
class TimmNFNetFamily(TimmFamily):
    name = "timm-nfnet"
    # kwargs overlay the model config (depths, widths, group size): tiny versions of the real block kinds
    tiny_models = tiny_variants(
        nf_tiny,
        {
            # deep stem, extra 3x3 conv, SE after conv3, same padding, gamma in the activation, skip-init gains
            "nfnet": dict(arch="dm_nfnet_f0", num_features=64),
            "nf-regnet": dict(arch="nf_regnet_b1", num_features=64),  # SE between conv2 and conv3, final conv
            "nf-resnet": dict(arch="nf_resnet50", group_size=None),  # no final conv: the last stage is the output
        },
        depths=(2, 3, 2, 2),
        channels=(16, 32, 32, 64),
        stem_chs=16,
        group_size=8,
    )
    model_class = "timm.models.nfnet:NormFreeNet"
    block_classes = ("timm.models.nfnet:NormFreeBlock",)

    # ---- structure -------------------------------------------------------------------------------------
    def stages(self, model: nn.Module) -> list[nn.Sequential]:
        return list(model.stages)

    def is_droppable(self, block: nn.Module) -> bool:
        return block.downsample is None

    def branch_outputs(self, block: nn.Module) -> list[nn.Module]:
        return [block.conv3] + layers_of(block.downsample, nn.Conv2d)

    def branch_inputs(self, block: nn.Module) -> list[nn.Module]:
        return [block.conv1] + layers_of(block.downsample, nn.Conv2d)

    def stage_entry_outputs(self, model: nn.Module, stage: int) -> list[nn.Module]:
        return layers_of(model.stem, nn.Conv2d)[-1:] if stage == 0 else []

    def stage_exit_inputs(self, model: nn.Module, stage: int) -> list[nn.Module]:
        if stage + 1 == len(model.stages):
            return layers_of(model.final_conv, nn.Conv2d)
        return super().stage_exit_inputs(model, stage)

    # ---- saving ------------------------------------------------------------------------------------------
    def block_args(self, model: nn.Module) -> dict[str, Any]:
        return {"depths": [len(stage) for stage in model.stages]}

    native_reload_why = (
        "timm gives each NFNet block a `beta` from the blocks before it: only a drop of trailing blocks of the last "
        "stage keeps every kept block's beta in a rebuilt model"
    )

    def reloads_natively(self, model: nn.Module) -> bool:
        """Whether `depths` rebuild these blocks with their betas (only when the last stage lost trailing blocks;
        built on the meta device, so the check costs no memory or time)."""
        import timm
        from timm.models._hub import get_model_args

        if not getattr(model, REMOVED_ATTR, None):
            return True
        try:
            with torch.device("meta"):
                rebuilt = timm.create_model(
                    model.pretrained_cfg["architecture"], **get_model_args(model, self.block_args(model))
                )
        except TypeError:
            return False
        return _betas(rebuilt) == _betas(model)
