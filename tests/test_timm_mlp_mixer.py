"""timm MLP-Mixer / ResMLP / gMLP specifics: the adaptor sites of each block type (the channel MLP only, never the
token-mixing linears), every entry point handled and saved in hf_practise's format (timm's entry points refuse a
`num_blocks`), and the input size the token-mixing layers fix.

The invariants every family shares (exact folding, shapes, reload) are in test_family_invariants.py.
"""

from __future__ import annotations

import pytest
import torch

from hf_practise import get_family

from .tiny_models import dropped, pretrained_meta, tiny_model


@pytest.mark.parametrize("variant", ["mixer", "resmlp", "gmlp"])
def test_adaptor_sites_are_the_channel_mlps(variant):
    model = tiny_model(f"timm-mlp-mixer/{variant}")
    family = get_family(model)
    hole = family.candidates(model)[2]
    sites = {(s.key, s.side) for s in family.adaptor_sites(model, [hole])}
    n = len(model.blocks)
    assert sites == {
        ("stem.proj", "post"),
        *((f"blocks.{i}.mlp_channels.fc2", "post") for i in range(2)),
        *((f"blocks.{i}.mlp_channels.fc1", "pre") for i in range(3, n)),
    }
    # every site mixes the embedding's channels, never the tokens
    for site in family.adaptor_sites(model, [hole]):
        m = site.module
        channels = (
            m.out_channels if site.key == "stem.proj" else m.out_features if site.side == "post" else m.in_features
        )
        assert channels == model.embed_dim, site.key


def test_every_entry_point_is_handled_and_saved_in_hf_practise_format():
    import timm

    for arch, model in pretrained_meta("mlp_mixer").items():
        family = dropped(arch, model, "timm-mlp-mixer", slice(1, 2))
        assert not family.reloads_natively(model), arch
        with pytest.raises(TypeError, match="num_blocks"), torch.device("meta"):
            timm.create_model(arch, num_blocks=len(model.blocks))  # why: the entry points pass it themselves


def test_the_input_size_is_the_one_the_token_mixing_was_built_for():
    model = tiny_model("timm-mlp-mixer/mixer")  # img_size=32; the architecture's pretrained_cfg says 224
    assert get_family(model).data_config(model)["input_size"] == (3, 32, 32)
