"""timm ViTs with relative position (`VisionTransformerRelPos`: the vit_relpos / vit_srelpos models).

One stage: `model.blocks`, ViT blocks (see `timm_vit`) whose attention adds a relative position bias, pre-norm
(`RelPosBlock`) or with residual post-norm (`ResPostRelPosBlock`, the `_rpn` models: `x + norm1(attn(x))`, so
the attention reads the raw stream). A branch reads the stream through `qkv` / `fc1` and writes it through
`proj` / `fc2`; the small MLP that computes a block's position bias from coordinates (`attn.rel_pos`) reads no
stream, so it gets no adaptor (its hidden width, `rel_pos_dim`, may equal the embedding width: the branch layers
are picked by name, not by shape).
Per-block bias tables go with their block, a shared one (`shared_rel_pos`, the srelpos models) stays with the
model; no block depends on its index. The entry points let `depth` from `model_args` override theirs, so plain
timm reloads the result with `model_args={"depth": n}`.
"""

from __future__ import annotations

from torch import nn

from .registry import register_family
from .timm_vit import TimmViTFamily, timm_vit_tiny


@register_family
class TimmViTRelPosFamily(TimmViTFamily):
    name = "timm-vit-relpos"
    tiny_models = {
        "relpos": timm_vit_tiny("vit_relpos_small_patch16_224"),  # per-block position MLP, fc_norm
        "srelpos": timm_vit_tiny("vit_srelpos_small_patch16_224", rel_pos_dim=16),  # one position MLP, shared
        "cls": timm_vit_tiny("vit_relpos_medium_patch16_cls_224", rel_pos_dim=16),  # class token, token pooling
        "rpn": timm_vit_tiny("vit_relpos_small_patch16_rpn_224"),  # residual post-norm
    }
    model_class = "timm.models.vision_transformer_relpos:VisionTransformerRelPos"
    block_classes = (
        "timm.models.vision_transformer_relpos:RelPosBlock",
        "timm.models.vision_transformer_relpos:ResPostRelPosBlock",
    )

    def branch_outputs(self, block: nn.Module) -> list[nn.Module]:
        return [block.attn.proj, block.mlp.fc2]

    def branch_inputs(self, block: nn.Module) -> list[nn.Module]:
        return [block.attn.qkv, block.mlp.fc1]
