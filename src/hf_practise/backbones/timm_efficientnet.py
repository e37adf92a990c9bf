"""timm EfficientNet and MobileNetV3 models (EfficientNet B0-B8 and V2, tf_ variants, MobileNetV2/V3/V4-conv,
MNASNet, FBNet, TinyNet, ...): stages of inverted-residual, depthwise-separable, edge-residual and universal
inverted-residual blocks, MixNet, and MobileNetV4's hybrids (mobile multi-query attention blocks).

Stages are the Sequentials of `model.blocks`. A block with a skip (`has_skip`: stride 1, same width) is a
candidate; each stage's first block changes width or resolution and stays. A block reads the stream through its
first ungrouped conv (the expansion `conv_pw`, an edge-residual's `conv_exp`; in a depthwise-separable block,
whose first conv is depthwise, the pointwise conv after it: a channel mix cannot fold into a depthwise conv)
and writes it through its last (`conv_pwl`, or the separable block's pointwise conv). Squeeze-excite convs act
on pooled channels and never hold adaptors. The stream entering the first stage is written by `conv_stem`; the
one leaving the last stage is read by EfficientNet's `conv_head` (MobileNetV3 pools first, so its head does not
act on the mimicked features). MixNet's split convs (`MixedConv2d`: one conv per channel slice, each with its own
kernel size) count as one layer whose slice convs each take an adaptor of their own slice; CondConv's per-image
mixture of weights takes none, so those networks are not matched. A MobileNetV4 attention block (`MobileAttention`:
a depthwise positional conv, a norm, attention under a layer scale) reads the stream through its query, key and
value projections and writes it through its output projection.

timm builds these stages from an architecture string that `model_args` cannot override, so a block-dropped
model is saved in hf_practise's format and reloads with `hf_practise.load_compressed`.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from .registry import register_family
from .timm_common import TimmFamily
from .tiny import timm_tiny


def _classes() -> tuple[tuple[type, ...], tuple[type, ...]]:
    from timm.models import _efficientnet_blocks as blocks
    from timm.models.efficientnet import EfficientNet
    from timm.models.mobilenetv3 import MobileNetV3

    kinds = (
        blocks.ConvBnAct,
        blocks.DepthwiseSeparableConv,
        blocks.InvertedResidual,
        blocks.EdgeResidual,
        blocks.UniversalInvertedResidual,
        blocks.MobileAttention,
    )
    return (EfficientNet, MobileNetV3), kinds


def _mixing_layers(block: nn.Module) -> list[list[nn.Conv2d]]:
    """The block's channel-mixing layers in forward order, each as its convs, less its squeeze-excite's (they see
    pooled channels): an ungrouped conv, or the ungrouped convs of a MixNet `MixedConv2d`, which splits the channels
    and runs one conv per slice (each takes an adaptor of its own slice: block-diagonal, still folded exactly)."""
    from timm.layers import MixedConv2d
    from timm.models._efficientnet_blocks import MobileAttention

    excluded = {id(m) for name in ("se", "aa") for m in (getattr(block, name, None) or nn.Identity()).modules()}
    layers: list[list[nn.Conv2d]] = []
    for m in block.modules():
        if id(m) in excluded:
            continue
        if isinstance(m, MixedConv2d):
            convs = [c for c in m.children() if isinstance(c, nn.Conv2d)]
            excluded.update(id(c) for c in convs)
            if all(c.groups == 1 for c in convs):
                layers.append(convs)
        elif isinstance(m, nn.Conv2d) and m.groups == 1:
            layers.append([m])
    if isinstance(block, MobileAttention) and len(layers) > 2:
        # multi-query attention reads the stream through its query, key and value projections alike
        layers = [[c for group in layers[:-1] for c in group], layers[-1]]
    return layers


def _plain(block: nn.Module) -> bool:
    """Plain or split convs only (a conditional conv's weight is a per-image mixture: no adaptor folds into it)."""
    from timm.layers import CondConv2d

    return not any(isinstance(m, CondConv2d) for m in block.modules()) and bool(_mixing_layers(block))


def _audible(model: nn.Module) -> nn.Module:
    """`model` with its attention blocks' layer scales at 0.5 (timm starts them at 1e-5, where an attention block
    barely changes the stream and a test cannot tell its adaptors from none)."""
    from timm.layers import LayerScale2d

    for m in model.modules():
        if isinstance(m, LayerScale2d):
            nn.init.constant_(m.gamma, 0.5)
    return model


@register_family
class TimmEfficientNetFamily(TimmFamily):
    name = "timm-efficientnet"
    native_reload = False
    native_reload_why = "timm builds these stages from an architecture string inside the entry point (`arch_def`); `model_args` cannot make a stage shallower"
    # depthwise-separable networks: AdamW. Measured on the MobileNetV2 Fashion-MNIST teacher (89.62%), 22% target,
    # 500 images, 500 steps, seed 0, same 5 blocks: SGD lr 0.01 76.33%, SGD 0.001 78.93%, AdamW 1e-4 87.26%
    finetune_optimizer = "adamw"
    tiny_models = {
        "mobilenetv2": timm_tiny("mobilenetv2_035"),
        "efficientnet": timm_tiny("tinynet_e"),
        "mobilenetv3": timm_tiny("mobilenetv3_small_050"),
        "efficientnetv2-edge": timm_tiny("tf_efficientnetv2_b0", channel_multiplier=0.25),
        "mobilenetv4-uir": timm_tiny("mobilenetv4_conv_small"),
        "mixnet": timm_tiny("mixnet_s"),
        "mobilenetv4-hybrid": lambda seed=0: _audible(timm_tiny("mobilenetv4_hybrid_medium")(seed)),
    }

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        try:
            models, kinds = _classes()
        except ImportError:
            return False
        return isinstance(model, models) and all(
            isinstance(b, kinds) and _plain(b) for stage in model.blocks for b in stage
        )

    # ---- structure -------------------------------------------------------------------------------------
    def stages(self, model: nn.Module) -> list[nn.Sequential]:
        return list(model.blocks)

    def is_droppable(self, block: nn.Module) -> bool:
        return bool(getattr(block, "has_skip", False))

    def branch_outputs(self, block: nn.Module) -> list[nn.Module]:
        return _mixing_layers(block)[-1]

    def branch_inputs(self, block: nn.Module) -> list[nn.Module]:
        return _mixing_layers(block)[0]

    def stage_entry_outputs(self, model: nn.Module, stage: int) -> list[nn.Module]:
        return [model.conv_stem] if stage == 0 and isinstance(model.conv_stem, nn.Conv2d) else []

    def stage_exit_inputs(self, model: nn.Module, stage: int) -> list[nn.Module]:
        from timm.models.efficientnet import EfficientNet

        last = stage == len(model.blocks) - 1
        if last and isinstance(model, EfficientNet) and isinstance(model.conv_head, nn.Conv2d):
            return [model.conv_head]
        return super().stage_exit_inputs(model, stage)

    # ---- saving ------------------------------------------------------------------------------------------
    def block_args(self, model: nn.Module) -> dict[str, Any]:
        return {}  # not used: saved in hf_practise's format (native_reload is False)
