"""timm EfficientViT (MIT) specifics: the depths timm counts in two ways, on every entry point, and adaptor sites
(the attention's grouped aggregation convs take none).

The invariants every family shares (exact folding, shapes, native reload) are in test_family_invariants.py.
"""

from __future__ import annotations

import pytest
import torch

from hf_practise import get_family

from .tiny_models import tiny_model

ARCHS = ["efficientvit_b0", "efficientvit_b1", "efficientvit_b2", "efficientvit_b3"]
ARCHS += ["efficientvit_l1", "efficientvit_l2", "efficientvit_l3"]


@pytest.mark.parametrize("arch", ARCHS)
def test_every_entry_point_rebuilds_a_model_with_whole_stages_of_candidates_dropped(arch):
    """A convolutional and an attention stage emptied of candidates: the depths still say which is which (built on
    the meta device: no weights)."""
    import timm

    with torch.device("meta"):
        model = timm.create_model(arch, num_classes=5)
    family = get_family(model)
    assert family.name == "timm-efficientvit"
    cands = family.candidates(model)
    assert len(cands) == sum(len(s.blocks) - 1 for s in model.stages)  # all but each stage's first block
    family.drop_blocks(model, [r for r in cands if r.stage in (1, len(model.stages) - 1)])
    assert family.reloads_natively(model)
    depths = family.block_args(model)["depths"]
    with torch.device("meta"):
        rebuilt = timm.create_model(arch, num_classes=5, depths=depths)
    assert [len(s.blocks) for s in rebuilt.stages] == [len(s.blocks) for s in model.stages]
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}


def test_adaptor_sites_around_an_attention_block():
    model = tiny_model("timm-efficientvit/efficientvit")  # depths 1-2-3-2-2: stage 2 holds 2 attention blocks
    family = get_family(model)
    hole = next(r for r in family.candidates(model) if r.path == "stages.2.blocks.1")
    assert {(s.key, s.side) for s in family.adaptor_sites(model, [hole])} == {
        ("stages.2.blocks.0.main.point_conv.conv", "post"),  # the widening first block writes the stage's input
        ("stages.2.blocks.2.context_module.main.qkv.conv", "pre"),  # (not the grouped aggregation convs)
        ("stages.2.blocks.2.local_module.main.inverted_conv.conv", "pre"),
        ("stages.3.blocks.0.main.inverted_conv.conv", "pre"),  # the next stage's first block reads the output
    }


def test_adaptor_sites_around_a_fused_mbconv():
    model = tiny_model("timm-efficientvit/efficientvit-large")  # depths 1-1-2-2-2
    family = get_family(model)
    hole = next(r for r in family.candidates(model) if r.path == "stages.1.blocks.1")
    assert {(s.key, s.side) for s in family.adaptor_sites(model, [hole])} == {
        ("stages.1.blocks.0.main.point_conv.conv", "post"),
        ("stages.1.blocks.2.main.spatial_conv.conv", "pre"),  # a fused MBConv reads through its full 3x3 conv
        ("stages.2.blocks.0.main.inverted_conv.conv", "pre"),
    }
