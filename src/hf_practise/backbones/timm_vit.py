"""timm Vision Transformers (ViT, DeiT and the other `VisionTransformer` models with pre-norm blocks).

One stage: `model.blocks`, every block of which keeps its input's shape, so all are droppable. Each block
has two residual branches, attention and MLP; an attention branch reads the stream through its first linear
(`qkv`) and writes it through its last (`proj`), an MLP through `fc1` and `fc2`. Whatever writes the stream
before the first block is the patch embedding's conv. Adaptors are linear layers (1x1 conv at the patch
embedding) and fold into those weights exactly. Dropping rebuilds `blocks` without the block, so plain timm
reloads the result with `model_args={"depth": n}`.

With `units="branches"` (models built of timm's standard `Block`), the candidates are each block's attention and MLP
branches (`branches.py`); a model that keeps a block without one of them reloads with `hf_practise.load_compressed`.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from .base import layers_of
from .branches import BranchUnit, BranchUnitsMixin, NoBranch
from .registry import register_family
from .timm_common import TimmFamily
from .tiny import TinyBuilder, timm_tiny


def _is_block(block: nn.Module) -> bool:
    """A pre-norm block with an attention and an MLP branch, each a chain of at least two linear layers."""
    attn, mlp = getattr(block, "attn", None), getattr(block, "mlp", None)
    # a branch dropped as a unit of its own (`NoBranch`) leaves the block one of this family
    return all(
        isinstance(branch, NoBranch) or (branch is not None and len(layers_of(branch, nn.Linear)) >= 2)
        for branch in (attn, mlp)
    )


def _output(branch: nn.Module, name: str) -> nn.Linear:
    """The linear that writes a branch's result to the stream: `proj` / `fc2` where the branch has it (CaiT
    registers its talking-heads linears after `proj`), else its last linear."""
    layer = getattr(branch, name, None)
    return layer if isinstance(layer, nn.Linear) else layers_of(branch, nn.Linear)[-1]


def _branches(block: nn.Module) -> list[tuple[nn.Module, str]]:
    """The residual branches of a block or of a branch unit, each with the name of the linear that writes it."""
    if isinstance(block, BranchUnit):
        return [(block.main, "proj" if block.kind == "attn" else "fc2")]
    return [(b, name) for b, name in ((block.attn, "proj"), (block.mlp, "fc2")) if not isinstance(b, NoBranch)]


def timm_vit_tiny(arch: str, **kwargs: Any) -> TinyBuilder:
    """A tiny ViT-like timm model (32x32 inputs, 16 patches, 3 blocks of width 32; `kwargs` on top)."""
    return timm_tiny(arch, **{**dict(img_size=32, patch_size=8, depth=3, embed_dim=32, num_heads=2), **kwargs})


@register_family
class TimmViTFamily(BranchUnitsMixin, TimmFamily):
    name = "timm-vit"
    tiny_models = {
        "vit": timm_vit_tiny("vit_tiny_patch16_224", depth=4),
        "deit": timm_vit_tiny("deit_tiny_patch16_224"),
        "vit-layerscale": timm_vit_tiny("vit_tiny_patch16_224", init_values=0.5),
    }
    finetune_optimizer = "adamw"  # LayerNorm: SGD at 0.01 is too rough
    min_blocks_per_stage = 1  # with no block left, the class token never sees the image
    scan_iterations = 800  # ranking tau against 1,000 steps: 0.857 at 50 to 600, 0.929 at 800
    # (benchmarks/results/scan_tau_summary.md)

    model_class = "timm.models.vision_transformer:VisionTransformer"
    #: a timm `Block`'s two residual branches, by part in call order (norm, branch, layer scale, drop path)
    branch_parts = {"attn": ("norm1", "attn", "ls1", "drop_path1"), "mlp": ("norm2", "mlp", "ls2", "drop_path2")}

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        return super().matches(model) and all(_is_block(b) for b in model.blocks)

    # ---- structure -------------------------------------------------------------------------------------
    def block_stages(self, model: nn.Module) -> list[nn.Sequential]:
        return [model.blocks]

    def is_droppable(self, block: nn.Module) -> bool:
        return True  # x + attn(x), then + mlp(x): the token shape never changes

    def branch_outputs(self, block: nn.Module) -> list[nn.Module]:
        return [_output(branch, last) for branch, last in _branches(block)]

    def branch_inputs(self, block: nn.Module) -> list[nn.Module]:
        # the linears of a branch that read the (normalised) stream: qkv, or q/k/v; fc1, or the two halves of a
        # gated MLP (not, e.g., CaiT's talking-heads mixes, which act across heads)
        out = []
        for branch, name in _branches(block):
            last = _output(branch, name)
            # BEiT / EVA attention with separate q/v biases calls `F.linear(x, qkv.weight, bias)`: the qkv module
            # itself never runs, so an adaptor around it would be skipped in the forward and still folded after
            skip = getattr(branch, "qkv", None) if getattr(branch, "q_bias", None) is not None else None
            out += [
                m
                for m in layers_of(branch, nn.Linear)
                if m is not last and m is not skip and m.in_features == last.out_features
            ]
        return out

    # ---- attention and MLP as units of their own (units="branches": `BranchUnitsMixin`) ---------------------
    def branch_blocks_ok(self, model: nn.Module) -> bool:
        from timm.models.vision_transformer import Block

        # timm's own pre-norm Block (not the parallel, post-norm or scaling variants, which run their branches
        # otherwise)
        return all(type(b) is Block for b in model.blocks)

    def stage_entry_outputs(self, model: nn.Module, stage: int) -> list[nn.Module]:
        proj = getattr(getattr(model, "patch_embed", None), "proj", None)
        return [proj] if isinstance(proj, (nn.Conv2d, nn.Linear)) else []

    # ---- forward -----------------------------------------------------------------------------------------
    def data_config(self, model: nn.Module) -> dict[str, Any]:
        """timm's data config, with the input size the patch embedding was built for (a ViT created with
        `img_size=32` keeps its architecture's pretrained_cfg, which may still say 224)."""
        config = super().data_config(model)
        img_size = getattr(getattr(model, "patch_embed", None), "img_size", None)
        if img_size is not None and not getattr(model, "dynamic_img_size", False):
            config["input_size"] = (config["input_size"][0], *img_size)
        return config

    # ---- saving ------------------------------------------------------------------------------------------
    def block_args(self, model: nn.Module) -> dict[str, Any]:
        return {"depth": len(model.blocks)}
