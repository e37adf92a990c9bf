"""timm EVA models (`Eva`: EVA-02, EVA-CLIP, and the ViTs timm builds on the same class: PE, Meta's DINOv3 ViTs,
...): ViT blocks with rotary position embeddings, SwiGLU MLPs and optional post-norm (see `timm_vit`). The
rotary embedding is computed once and handed to every block, so a drop leaves it as it was; plain timm reloads
the result with `model_args={"depth": n}`. Mixed RoPE (learned per-block frequencies, e.g. the `rope_mixed`
ViTs) keeps one frequency table per block: a dropped block's table goes with it.

With `units="branches"` (pre-norm `EvaBlock`s; see `branches.py`), a block's attention and MLP are candidates of their
own; a dropped branch's layer scale (`gamma_1` / `gamma_2`, a parameter of the block) stays and scales its zero.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from .registry import register_family
from .timm_vit import TimmViTFamily, timm_vit_tiny


@register_family
class TimmEvaFamily(TimmViTFamily):
    name = "timm-eva"
    tiny_models = {
        "eva02-rope-swiglu": timm_vit_tiny("eva02_tiny_patch14_224"),
        "rope-mixed": timm_vit_tiny("vit_small_patch16_rope_mixed_224"),
        "eva-clip-postnorm": timm_vit_tiny("eva02_tiny_patch14_224", use_post_norm=True),
        # Sapiens2: grouped-query attention in the middle blocks (one key/value head count per block)
        "sapiens2-gqa": timm_vit_tiny(
            "vit_base_patch16_sapiens2", depth=4, num_heads=4, num_kv_heads=(4, 2, 2, 4), img_size=32
        ),
    }
    model_class = "timm.models.eva:Eva"
    #: an `EvaBlock`'s branches, by part in call order; the layer scales are parameters of the block (or None)
    branch_parts = {
        "attn": ("norm1", "attn", "gamma_1", "drop_path1"),
        "mlp": ("norm2", "mlp", "gamma_2", "drop_path2"),
    }

    def branch_blocks_ok(self, model: nn.Module) -> bool:
        from timm.models.eva import EvaBlock

        # the pre-norm block (`EvaBlockPostNorm` normalises each branch's output, after it)
        return all(type(b) is EvaBlock for b in model.blocks)

    def remove_blocks(self, model: nn.Module, gone: set[tuple[int, int]]) -> None:
        before = list(model.blocks)
        super().remove_blocks(model, gone)
        # mixed RoPE learns frequencies per block (`freqs`: 2 x depth x heads x dim): the removed blocks' go too,
        # so block i keeps its own, as a model built with the new depth indexes them (a block goes when it is
        # dropped, or when it lost both branches)
        rope = getattr(model, "rope", None)
        freqs = getattr(rope, "freqs", None)
        if getattr(model, "rope_mixed", False) and isinstance(freqs, nn.Parameter) and freqs.dim() >= 2:
            after = {id(b) for b in model.blocks}
            kept = [i for i, b in enumerate(before) if id(b) in after]
            if len(kept) != freqs.shape[1]:
                rope.freqs = nn.Parameter(freqs.detach()[:, kept].clone(), requires_grad=freqs.requires_grad)
                rope.depth = len(kept)

    def block_args(self, model: nn.Module) -> dict[str, Any]:
        """The depth, and the kept blocks' key/value head counts where the attention has them: Sapiens2's entry
        points pass one count per block (grouped-query attention in the middle blocks only), which must match the
        depth; a count equal to the heads is plain multi-head attention, as timm builds it from None."""
        args = super().block_args(model)
        kv_heads = [getattr(block.attn, "num_kv_heads", None) for block in model.blocks]
        if kv_heads and None not in kv_heads:
            args["num_kv_heads"] = kv_heads
        return args
