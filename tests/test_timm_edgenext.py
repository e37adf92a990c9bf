"""timm EdgeNeXt specifics: a dropped transpose block lowers its stage's `global_block_counts` (else timm would
rebuild a conv block as a transpose one), small-rw's strided first blocks are no candidates, and the adaptors
around a hole.

The invariants every family shares (shapes, exact folding, reload) are in test_family_invariants.py.
"""

from __future__ import annotations

import torch

from hf_practise import get_family

from .tiny_models import assert_native_rebuild, pretrained_meta, sites_around, tiny_model


def test_a_dropped_transpose_block_reloads_with_plain_timm(tmp_path):
    import timm

    model = tiny_model("timm-edgenext/edgenext")  # depths 2-2-3-2, one transpose block ending stages 1-3
    family = get_family(model)
    last = family.candidates(model)[-1]  # the transpose block that ends the last stage
    assert type(family.resolve(model, last)).__name__ == "SplitTransposeBlock"
    family.drop_blocks(model, [last])
    assert family.block_args(model) == {"depths": [2, 2, 3, 1], "global_block_counts": [0, 1, 1, 0]}
    family.save_pretrained(model, tmp_path, source_config={})
    reloaded = timm.create_model(f"local-dir:{tmp_path}", pretrained=True).eval()
    assert [type(b).__name__ for b in reloaded.stages[3].blocks] == ["ConvBlock"]
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(reloaded(x), model(x), rtol=0, atol=0)


def test_strided_first_blocks_are_no_candidates():
    model = tiny_model("timm-edgenext/edgenext-rw")  # its stages 1-3 open with a strided conv block
    family = get_family(model)
    firsts = {(r.stage, r.index) for r in family.candidates(model) if r.index == 0}
    assert firsts == {(0, 0)}  # the first stage keeps the stem's stride and width
    # a hole after one: its MLP's last conv writes the stream (its depthwise shortcut conv takes no adaptor)
    hole = next(r for r in family.candidates(model) if r.path == "stages.1.blocks.1")
    sites = {(s.key, s.side) for s in family.adaptor_sites(model, [hole])}
    assert ("stages.1.blocks.0.mlp.fc2", "post") in sites and ("stages.1.blocks.0.conv_dw", "post") not in sites


def test_adaptor_sites_around_a_hole():
    assert sites_around("timm-edgenext/edgenext", "stages.2.blocks.0") == {
        ("stages.2.downsample.1", "post"),
        ("stages.2.blocks.1.mlp.fc1", "pre"),  # after a depthwise conv and a LayerNorm
        ("stages.2.blocks.2.xca.qkv", "pre"),
        ("stages.2.blocks.2.mlp.fc1", "pre"),  # reads the attention's inner residual sum
        ("stages.3.downsample.1", "pre"),
    }


def test_every_entry_point_takes_the_depths_of_a_dropped_model():
    """The entry points let `depths` and `global_block_counts` from `model_args` override theirs (on the meta
    device: no weights); each stage loses its last block, a transpose one where it has one."""
    for arch, model in pretrained_meta("edgenext").items():
        family = get_family(model)
        assert family.name == "timm-edgenext", arch
        last = [r for r in family.candidates(model) if r.index == len(family.stages(model)[r.stage]) - 1]
        family.drop_blocks(model, last)
        assert_native_rebuild(arch, family, model)
