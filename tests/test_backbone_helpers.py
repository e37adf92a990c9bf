"""The helpers that families share: tiny-model variants, branch layers outside a shortcut, timm families named by
their classes, and the transformers shortcut-stage base (ResNet, BiT, RegNet)."""

from __future__ import annotations

from torch import nn

from hf_practise import get_family
from hf_practise.backbones.base import layers_outside
from hf_practise.backbones.timm_convnext import TimmConvNeXtFamily
from hf_practise.backbones.tiny import tiny_variants

from .tiny_models import tiny_model


def test_tiny_variants_put_each_variants_arguments_over_the_common_ones():
    def build(**kwargs):
        return kwargs

    got = tiny_variants(build, {"a": {"depth": 2}, "b": {"width": 4}}, depth=1, width=8)
    assert got == {"a": {"depth": 2, "width": 8}, "b": {"depth": 1, "width": 4}}


def test_layers_outside_leave_out_every_excluded_submodule():
    shortcut, se = nn.Conv2d(2, 2, 1), nn.Sequential(nn.Conv2d(2, 1, 1), nn.Conv2d(1, 2, 1))
    first, last = nn.Conv2d(2, 2, 3), nn.Conv2d(2, 2, 1)
    block = nn.Sequential(shortcut, first, se, last)
    assert layers_outside(block, nn.Conv2d, shortcut, se) == [first, last]
    assert layers_outside(block, nn.Conv2d, None) == [shortcut, first, *se, last]


def test_a_timm_family_matches_its_model_class_with_only_its_block_classes():
    model = tiny_model("timm-convnext/convnext")
    assert TimmConvNeXtFamily.matches(model)

    class OtherBlocks(TimmConvNeXtFamily):
        block_classes = ("timm.models.metaformer:MetaFormerBlock",)

    class MissingBlocks(TimmConvNeXtFamily):
        block_classes = ("timm.models.convnext:NoSuchBlock",)

    class NoModelClass(TimmConvNeXtFamily):
        model_class = ""

    assert not OtherBlocks.matches(model)
    assert not MissingBlocks.matches(model)  # a class this timm lacks: no match, no error
    assert NoModelClass.model_type() is None and not NoModelClass.matches(model)
    assert not TimmConvNeXtFamily.matches(tiny_model("timm-metaformer/poolformer"))


def test_shortcut_families_write_the_first_stage_from_the_embedder_except_resnet():
    model = tiny_model("transformers-regnet/regnety-se")
    family = get_family(model)
    assert family.stage_entry_outputs(model, 0) == [model.regnet.embedder.embedder.convolution]
    assert family.stage_entry_outputs(model, 1) == []
    # the squeeze-excite convs see pooled channels: no adaptor goes there
    se_convs = {id(m) for sub in model.modules() if hasattr(sub, "attention") for m in sub.modules()}
    assert se_convs
    for stage in family.stages(model):
        for block in stage:
            assert not {id(m) for m in family.branch_inputs(block) + family.branch_outputs(block)} & se_convs
    resnet = tiny_model("transformers-resnet/basic")  # its embedder ends with a max pool
    assert get_family(resnet).stage_entry_outputs(resnet, 0) == []
