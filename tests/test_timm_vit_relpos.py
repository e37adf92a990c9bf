"""timm relative-position ViT specifics: the position-bias MLP never gets an adaptor (even where its hidden width
equals the embedding width), and every entry point rebuilds a block-dropped depth natively.

The invariants every family shares (exact folding, shapes, native reload) are in test_family_invariants.py.
"""

from __future__ import annotations

import torch

from hf_practise import get_family

from .tiny_models import assert_native_rebuild, dropped, pretrained_meta


def test_the_position_bias_mlp_gets_no_adaptor():
    import timm

    with torch.device("meta"):
        # width 384, and a position MLP as wide (its default width is 128)
        model = timm.create_model("vit_relpos_small_patch16_224", rel_pos_dim=384)
    family = get_family(model)
    block = model.blocks[0]
    assert block.attn.rel_pos.mlp.fc2.in_features == model.embed_dim  # a shape test alone would take it
    assert family.branch_inputs(block) == [block.attn.qkv, block.mlp.fc1]
    assert family.branch_outputs(block) == [block.attn.proj, block.mlp.fc2]


def test_every_entry_point_takes_the_depth_of_a_dropped_model():
    """The entry points let `depth` from `model_args` override theirs (built on the meta device: no weights)."""
    for arch, model in pretrained_meta("vision_transformer_relpos").items():
        family = dropped(arch, model, "timm-vit-relpos", slice(3, 5))
        assert family.block_args(model) == {"depth": len(model.blocks)}
        assert_native_rebuild(arch, family, model)
