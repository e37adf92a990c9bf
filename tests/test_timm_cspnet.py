"""timm CspNet specifics: where the adaptors go in a cross stage (the expansion conv writes the blocks' half, the
stage's transition conv reads it), in a CS3 stage and in a DarkNet stage (downsampling convs), and why timm cannot
rebuild a shallower model, on every pretrained architecture.

The invariants every family shares (exact folding, shapes, reload) are in test_family_invariants.py.
"""

from __future__ import annotations

import pytest
import torch

from hf_practise import get_family


def _meta(arch: str) -> torch.nn.Module:
    import timm

    with torch.device("meta"):
        return timm.create_model(arch, num_classes=5)


def _sites(arch: str, path: str) -> set[tuple[str, str]]:
    model = _meta(arch)
    family = get_family(model)
    hole = next(r for r in family.candidates(model) if r.path == path)
    return {(s.key, s.side) for s in family.adaptor_sites(model, [hole])}


def test_a_cross_stage_is_written_by_its_expansion_and_read_by_its_transition():
    assert _sites("cspresnet50", "stages.1.blocks.1") == {  # depths 3-3-5-2, bottleneck blocks
        ("stages.1.conv_exp.conv", "post"),  # its output is split: the blocks run on one half
        ("stages.1.blocks.0.conv3.conv", "post"),
        ("stages.1.blocks.2.conv1.conv", "pre"),
        ("stages.1.conv_transition_b.conv", "pre"),  # not the next stage's downsampling conv
    }
    # CS3 stages: one transition conv, on the concatenation of both halves; dark blocks write through conv2
    assert _sites("cs3darknet_s", "stages.2.blocks.3") == {  # depths 1-3-4-1
        ("stages.2.conv_exp.conv", "post"),
        ("stages.2.blocks.0.conv2.conv", "post"),
        ("stages.2.blocks.1.conv2.conv", "post"),
        ("stages.2.blocks.2.conv2.conv", "post"),
        ("stages.2.conv_transition.conv", "pre"),
    }


def test_a_darknet_stage_is_written_and_read_by_downsampling_convs():
    # darknetaa53 downsamples by average pooling then a 1x1 conv (`conv_down.1`)
    assert _sites("darknetaa53", "stages.1.blocks.0") == {
        ("stages.1.conv_down.1.conv", "post"),
        ("stages.1.blocks.1.conv1.conv", "pre"),
        ("stages.2.conv_down.1.conv", "pre"),
    }
    # the last stage's output is pooled before the classifier: nothing reads it
    assert _sites("darknet53", "stages.4.blocks.3") == {
        ("stages.4.conv_down.conv", "post"),
        *{(f"stages.4.blocks.{i}.conv2.conv", "post") for i in range(3)},
    }


ARCHS = [  # every pretrained CspNet architecture (timm.list_models(pretrained=True, module="cspnet"))
    "cs3darknet_focus_l",
    "cs3darknet_focus_m",
    "cs3darknet_focus_s",
    "cs3darknet_l",
    "cs3darknet_m",
    "cs3darknet_x",
    "cs3edgenet_x",
    "cs3se_edgenet_x",
    "cs3sedarknet_l",
    "cs3sedarknet_x",
    "cspdarknet53",
    "cspresnet50",
    "cspresnext50",
    "darknet53",
    "darknetaa53",
]


@pytest.mark.parametrize("arch", ARCHS)
def test_every_block_of_every_entry_point_is_a_candidate_but_no_depth_argument(arch):
    """Every block is residual; the entry point passes the architecture's `cfg` itself, so `model_args` cannot
    make it shallower (built on the meta device: no weights)."""
    import timm

    model = _meta(arch)
    family = get_family(model)
    assert family.name == "timm-cspnet"
    assert len(family.candidates(model)) == sum(len(stage.blocks) for stage in model.stages) > 0
    assert family.reloads_natively(model)  # nothing dropped yet: the library's own architecture
    family.drop_blocks(model, family.candidates(model)[-1:])
    assert not family.reloads_natively(model)
    with torch.device("meta"), pytest.raises(TypeError, match="multiple values for keyword argument 'cfg'"):
        timm.create_model(arch, num_classes=5, cfg={})


def test_the_list_of_pretrained_architectures_is_complete():
    import timm

    assert {n.split(".")[0] for n in timm.list_models(pretrained=True, module="cspnet")} == set(ARCHS)
