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

from collections.abc import Sequence
from typing import Any

from torch import nn

from .base import BlockRef, layers_of
from .branches import BranchUnit, NoBranch, branch_present, branch_units, refs_of, remove_branches
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


#: a timm `Block`'s two residual branches, by part in call order (norm, branch, layer scale, drop path)
BRANCH_PARTS = {"attn": ("norm1", "attn", "ls1", "drop_path1"), "mlp": ("norm2", "mlp", "ls2", "drop_path2")}


def _branches(block: nn.Module) -> list[tuple[nn.Module, str]]:
    """The residual branches of a block or of a branch unit, each with the name of the linear that writes it."""
    if isinstance(block, BranchUnit):
        return [(block.parts[1], "proj" if block.kind == "attn" else "fc2")]
    return [(b, name) for b, name in ((block.attn, "proj"), (block.mlp, "fc2")) if not isinstance(b, NoBranch)]


def _halved(model: nn.Module) -> bool:
    """Whether some block of `model` has lost one of its branches."""
    blocks = getattr(model, "blocks", [])
    return any(isinstance(m, NoBranch) for b in blocks for m in b.children())


def timm_vit_tiny(arch: str, **kwargs: Any) -> TinyBuilder:
    """A tiny ViT-like timm model (32x32 inputs, 16 patches, 3 blocks of width 32; `kwargs` on top)."""
    return timm_tiny(arch, **{**dict(img_size=32, patch_size=8, depth=3, embed_dim=32, num_heads=2), **kwargs})


@register_family
class TimmViTFamily(TimmFamily):
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

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        return super().matches(model) and all(_is_block(b) for b in model.blocks)

    # ---- structure -------------------------------------------------------------------------------------
    def stages(self, model: nn.Module) -> list[nn.Sequential] | list[list[BranchUnit]]:
        if self.units == "branches":
            return [branch_units(model.blocks, BRANCH_PARTS)]
        return [model.blocks]

    def blocks(self, model: nn.Module) -> list[BlockRef]:
        return refs_of(model, self.stages(model)) if self.units == "branches" else super().blocks(model)

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

    # ---- attention and MLP as units of their own (units="branches") ---------------------------------------
    def offers_branches(self, model: nn.Module) -> bool:
        from timm.models.vision_transformer import Block

        # subclasses (Swin, EVA, BEiT, CaiT, XCiT) have other blocks or stages; DeiT-distilled has these
        own = type(self).stages is TimmViTFamily.stages
        return own and all(type(b) is Block for b in model.blocks)

    def feasible(self, model: nn.Module, ordered: Sequence[BlockRef]) -> list[BlockRef]:
        """As the base class; with branch units, the last attention stays (without one, the class token never sees
        the image), and that is the only rule (it keeps a block)."""
        if self.units != "branches":
            return super().feasible(model, ordered)
        units = self.stages(model)[0]
        left = sum(u.kind == "attn" for u in units)
        out = []
        for ref in ordered:
            if units[ref.index].kind == "attn":
                if left == 1:
                    continue
                left -= 1
            out.append(ref)
        return out

    def drop_blocks(self, model: nn.Module, blocks: Sequence[BlockRef]) -> None:
        if self.units == "branches":
            units = self.stages(model)[0]
            gone = {r.index for r in blocks if 0 <= r.index < len(units)}
            if not any(u.kind == "attn" for i, u in enumerate(units) if i not in gone):
                raise ValueError(
                    f"Dropping these units leaves no attention in the model; a {self.name} model keeps at least one "
                    "(the class token reads the image through it). Drop fewer attention units."
                )
        super().drop_blocks(model, blocks)

    def remove_blocks(self, model: nn.Module, gone: set[tuple[int, int]]) -> None:
        if self.units != "branches":
            return super().remove_blocks(model, gone)
        for _, kept in remove_branches(self.stages(model), gone):
            if len(kept) != len(model.blocks):
                model.blocks = nn.Sequential(*kept)

    def reloads_natively(self, model: nn.Module) -> bool:
        # timm builds every block with both branches: a block without one is hf_practise's format
        return not _halved(model) and super().reloads_natively(model)

    def architecture_summary(self, model: nn.Module) -> dict[str, Any]:
        summary: dict[str, Any] = {"depths": [len(model.blocks)]}
        for kind, parts in BRANCH_PARTS.items():
            without = [i for i, b in enumerate(model.blocks) if not branch_present(b, parts)]
            if without:
                summary[f"blocks without {'attention' if kind == 'attn' else 'MLP'}"] = without
        return summary

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
