"""timm TinyViT specifics: adaptor sites (the depthwise local conv and the strided depthwise downsampling take
none) and native depths on every entry point.

The invariants every family shares (exact folding, shapes, native reload) are in test_family_invariants.py.
"""

from __future__ import annotations

import torch

from hf_practise import get_family

from .tiny_models import tiny_model


def _sites(stage: int, index: int) -> set[tuple[str, str]]:
    model = tiny_model("timm-tiny-vit/tiny-vit")  # depths 2-2-3-2
    family = get_family(model)
    hole = next(r for r in family.candidates(model) if (r.stage, r.index) == (stage, index))
    return {(s.key, s.side) for s in family.adaptor_sites(model, [hole])}


def test_adaptor_sites_around_an_attention_block():
    assert _sites(2, 1) == {
        ("stages.2.downsample.conv3.conv", "post"),  # the patch merging's last 1x1 conv writes the stage's input
        ("stages.2.blocks.0.attn.proj", "post"),
        ("stages.2.blocks.0.mlp.fc2", "post"),
        ("stages.2.blocks.2.attn.qkv", "pre"),
        ("stages.2.blocks.2.mlp.fc1", "pre"),
        ("stages.3.downsample.conv1.conv", "pre"),  # the next stage's patch merging reads the output
    }


def test_adaptor_sites_around_an_mbconv_block():
    assert _sites(0, 0) == {
        ("patch_embed.conv2.conv", "post"),
        ("stages.0.blocks.1.conv1.conv", "pre"),
        ("stages.1.downsample.conv1.conv", "pre"),
    }


def test_every_entry_point_takes_the_depths_of_a_dropped_model():
    """The entry points let `depths` from `model_args` override theirs (built on the meta device: no weights)."""
    import timm

    for arch in timm.list_models("tiny_vit_*"):
        with torch.device("meta"):
            model = timm.create_model(arch, num_classes=5)
        family = get_family(model)
        assert len(family.candidates(model)) == sum(len(s.blocks) for s in model.stages), arch  # every block
        family.drop_blocks(model, [family.candidates(model)[2]])  # stage 1's first block, after the merging
        depths = family.block_args(model)["depths"]
        assert depths == [2, 1, 6, 2] and family.reloads_natively(model), arch
        with torch.device("meta"):
            shapes = {k: v.shape for k, v in timm.create_model(arch, num_classes=5, depths=depths).state_dict().items()}
        assert shapes == {k: v.shape for k, v in model.state_dict().items()}, arch
