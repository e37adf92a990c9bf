"""timm LeViT specifics: adaptor sites in linear and conv mode (the downsampling's attention and MLP both write a
stage's input, its keys/values and queries read the previous stage's output), the input size the attention biases
fix, both heads frozen, and native depths on every entry point.

The invariants every family shares (exact folding, shapes, native reload) are in test_family_invariants.py.
"""

from __future__ import annotations

import pytest
import torch

from hf_practise import get_family

from .tiny_models import tiny_model


@pytest.mark.parametrize("variant", ["levit", "levit-conv"])
def test_adaptor_sites_around_a_block(variant):
    model = tiny_model(f"timm-levit/{variant}")  # depths 2-3-2
    family = get_family(model)
    hole = next(r for r in family.candidates(model) if (r.stage, r.index) == (1, 1))
    assert {(s.key, s.side) for s in family.adaptor_sites(model, [hole])} == {
        ("stages.1.downsample.attn_downsample.proj.ln.linear", "post"),  # the subsampling attention widens ...
        ("stages.1.downsample.mlp.ln2.linear", "post"),  # ... and its residual MLP adds to the stage's input
        ("stages.1.blocks.0.attn.proj.ln.linear", "post"),
        ("stages.1.blocks.0.mlp.ln2.linear", "post"),
        ("stages.1.blocks.2.attn.qkv.linear", "pre"),
        ("stages.1.blocks.2.mlp.ln1.linear", "pre"),
        ("stages.2.downsample.attn_downsample.kv.linear", "pre"),
        ("stages.2.downsample.attn_downsample.q.ln.linear", "pre"),  # after the token subsampling
    }
    first = family.candidates(model)[0]  # stage 0: written by the stem
    assert ("stem.conv3.linear", "post") in {(s.key, s.side) for s in family.adaptor_sites(model, [first])}


def test_the_input_size_is_the_one_the_attention_biases_were_built_for():
    import timm

    # timm's pretrained_cfg of levit_128s says 224 whatever `img_size` the model was built with
    model = tiny_model("timm-levit/levit")  # img_size=32
    assert get_family(model).data_config(model)["input_size"] == (3, 32, 32)
    with torch.device("meta"):
        model = timm.create_model("levit_conv_192", img_size=(160, 192))
    assert get_family(model).data_config(model)["input_size"] == (3, 160, 192)


def test_both_heads_of_a_distilled_model_stay_frozen():
    import timm

    with torch.device("meta"):
        distilled, plain = timm.create_model("levit_128s"), timm.create_model("levit_512")
    assert [id(m) for m in get_family(distilled).classifier(distilled)] == [id(distilled.head), id(distilled.head_dist)]
    assert get_family(plain).classifier(plain) is plain.head


def test_every_entry_point_takes_the_depths_of_a_dropped_model():
    """The entry points let `depth` from `model_args` override theirs (built on the meta device: no weights)."""
    import timm

    for arch in timm.list_models("levit*"):
        with torch.device("meta"):
            model = timm.create_model(arch, num_classes=5)
        family = get_family(model)
        assert family.name == "timm-levit" and len(family.candidates(model)) == sum(len(s.blocks) for s in model.stages)
        family.drop_blocks(model, family.candidates(model)[:2])  # stage 0 emptied on levit_128s (depths 2-3-4)
        depth = family.block_args(model)["depth"]
        assert sum(depth) == len(family.candidates(model)) and family.reloads_natively(model), arch
        with torch.device("meta"):
            shapes = {k: v.shape for k, v in timm.create_model(arch, num_classes=5, depth=depth).state_dict().items()}
        assert shapes == {k: v.shape for k, v in model.state_dict().items()}, arch
