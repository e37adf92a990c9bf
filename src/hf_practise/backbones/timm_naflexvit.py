"""timm NaFlexViT (`NaFlexVit`): ViTs for native aspect ratios and resolutions (NaFlex-trained ViTs, SigLIP, RADIO).

One stage: `model.blocks`, timm ViT blocks (EVA blocks where RoPE, SwiGLU or gated attention is configured), all
droppable (see `timm_vit`); they take the attention mask of padded patches as an argument, the same for every
block. The stream before the first block is written by the patch embedding's linear projection (`embeds.proj`, on
flattened patches; prefix tokens and position embeddings are added after it). After the last block come a norm and
average, class-token or attention (MAP) pooling. The entry points let `depth` from `model_args` override their
config, so plain timm reloads the result with `model_args={"depth": n}`.

Not handled (`matches` is False; no pretrained model has them): mixed RoPE, which learns frequencies per block
(`rope_is_mixed`), and per-block key/value head counts (`num_kv_heads` given as a sequence): `depth` alone does not
rebuild either.
"""

from __future__ import annotations

from torch import nn

from .registry import register_family
from .timm_vit import TimmViTFamily, timm_vit_tiny


@register_family
class TimmNaFlexViTFamily(TimmViTFamily):
    name = "timm-naflexvit"
    tiny_models = {
        # register tokens, layer scale (at 0.5: the 1e-5 of these models would make every block an identity), fc norm
        "gap": timm_vit_tiny("naflexvit_base_patch16_gap", init_values=0.5),
        "parfac": timm_vit_tiny("naflexvit_base_patch16_parfac_gap", init_values=0.5),  # factorised position embed
        "siglip-map": timm_vit_tiny("naflexvit_base_patch16_siglip"),  # attention pooling
        "radio": timm_vit_tiny("naflexvit_base_patch16_radio_v3", init_values=0.5, pos_embed_grid_size=(8, 8)),
    }
    model_class = "timm.models.naflexvit:NaFlexVit"

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        from timm.models._hub import get_model_args

        per_block_heads = isinstance(get_model_args(model).get("num_kv_heads"), (list, tuple))
        return super().matches(model) and not model.rope_is_mixed and not per_block_heads

    def stage_entry_outputs(self, model: nn.Module, stage: int) -> list[nn.Module]:
        proj = model.embeds.proj
        return [proj] if isinstance(proj, (nn.Conv2d, nn.Linear)) else []
