"""timm VOLO specifics: adaptor sites across the transformer stages that share one stream, the token-labelling head
frozen with the head, the input size the position embedding fixes, and every entry point handled and saved in
hf_practise's format (timm's entry points refuse `layers`).

The invariants every family shares (exact folding, shapes, reload) are in test_family_invariants.py.
"""

from __future__ import annotations

import pytest
import torch

from hf_practise import get_family

from .tiny_models import dropped, pretrained_meta, tiny_model


def test_adaptor_sites_follow_the_stream_across_stages():
    model = tiny_model("timm-volo/volo")  # network: outlookers x4, downsample, transformers x4, x8, x2
    family = get_family(model)
    hole = next(r for r in family.candidates(model) if (r.stage, r.index) == (2, 0))  # network.3.0
    sites = {(s.key, s.side) for s in family.adaptor_sites(model, [hole])}
    writers = {"network.1.proj"} | {f"network.2.{i}.{m}" for i in range(4) for m in ("attn.proj", "mlp.fc2")}
    readers = {f"network.3.{i}.{m}" for i in range(1, 8) for m in ("attn.qkv", "mlp.fc1")}
    readers |= {f"network.4.{i}.{m}" for i in range(2) for m in ("attn.qkv", "mlp.fc1")}
    assert sites == {(k, "post") for k in writers} | {(k, "pre") for k in readers}
    # an outlooker reads the stream through `v` and (pooled) `attn`; the downsampling conv reads its stage's end
    hole = next(r for r in family.candidates(model) if (r.stage, r.index) == (0, 1))
    sites = {(s.key, s.side) for s in family.adaptor_sites(model, [hole])}
    assert {("patch_embed.proj", "post"), ("network.0.2.attn.v", "pre"), ("network.0.2.attn.attn", "pre")} <= sites
    assert ("network.1.proj", "pre") in sites


def test_the_token_labelling_head_stays_frozen_and_the_input_size_is_the_built_one():
    model = tiny_model("timm-volo/volo")
    family = get_family(model)
    assert [id(m) for m in family.classifier(model)] == [id(model.head), id(model.aux_head)]
    assert family.data_config(model)["input_size"] == (3, 32, 32)  # the pretrained_cfg says 224


def test_every_entry_point_is_handled_and_saved_in_hf_practise_format():
    import timm

    for arch, model in pretrained_meta("volo").items():
        family = dropped(arch, model, "timm-volo", slice(1, 2))
        assert not family.reloads_natively(model), arch
        with pytest.raises(TypeError, match="layers"), torch.device("meta"):
            timm.create_model(arch, layers=(1, 1, 1, 1))  # why: the entry points pass it themselves
