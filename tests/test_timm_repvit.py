"""timm RepViT specifics: parity-keeping candidates, adaptor sites, and inference fusion of a compressed model.

The invariants every family shares (exact folding, shapes, native reload) are in test_family_invariants.py.
"""

from __future__ import annotations

import pytest
import torch

from hf_practise import get_family
from hf_practise.adaptors import adapted_layers, fold_adaptors
from hf_practise.recoverability import build_pruned

from .tiny_models import tiny_model


def test_candidates_keep_the_squeeze_excite_parity_and_timm_rebuilds_it():
    import timm

    model = tiny_model("timm-repvit/repvit")  # depths 2-3-4-2
    family = get_family(model)
    refs = {r.path: r for r in family.candidates(model)}
    assert set(refs) == {
        "stages.0.blocks.0+1",
        "stages.1.blocks.0+1",
        "stages.1.blocks.2",
        "stages.2.blocks.0+1",
        "stages.2.blocks.2+3",
        "stages.3.blocks.0+1",
    }
    pruned = build_pruned(model, family, [refs["stages.1.blocks.0+1"], refs["stages.2.blocks.0+1"]], adaptors=False)
    depths = family.block_args(pruned)["depth"]
    assert depths == [2, 1, 2, 2]
    rebuilt = timm.create_model("repvit_m0_9", num_classes=5, embed_dim=(8, 16, 16, 24), depth=depths)
    has_se = [[not isinstance(b.se, torch.nn.Identity) for b in s.blocks] for s in pruned.stages]
    assert has_se == [[not isinstance(b.se, torch.nn.Identity) for b in s.blocks] for s in rebuilt.stages]


def test_adaptor_sites_around_a_pair():
    model = tiny_model("timm-repvit/repvit")
    family = get_family(model)
    hole = next(r for r in family.candidates(model) if r.path == "stages.2.blocks.0+1")
    sites = {(s.key, s.side) for s in family.adaptor_sites(model, [hole])}
    assert sites == {
        ("stages.2.downsample.channel_downsample.c", "post"),  # the downsampling writes the stage's input
        ("stages.2.downsample.ffn.conv2.c", "post"),
        ("stages.2.blocks.2.channel_mixer.conv1.c", "pre"),
        ("stages.2.blocks.3.channel_mixer.conv1.c", "pre"),
        ("stages.3.downsample.pre_block.channel_mixer.conv1.c", "pre"),  # the next stage reads its output
    }


@pytest.mark.parametrize("variant", ["repvit", "repvit-legacy"])
def test_a_compressed_model_still_fuses_for_inference(variant):
    """What a user does next with a RepViT: fuse conv + BatchNorm and the token mixer's branches (timm's
    `reparameterize_model`, or the model's own `fuse`); the folded adaptors must not stand in the way."""
    from timm.utils.model import reparameterize_model

    model = tiny_model(f"timm-repvit/{variant}")
    family = get_family(model)
    dropped = family.feasible(model, family.candidates(model)[::-1])[:2]
    adapted = build_pruned(model, family, dropped).eval()
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for wrapper in adapted_layers(adapted):
            for a in wrapper.adaptors().values():
                a.weight.add_(0.1 * torch.randn(a.weight.shape, generator=g))
    assert fold_adaptors(adapted) > 0
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = adapted(x)
        fused = reparameterize_model(adapted)
        assert not any(type(m).__name__ == "ConvNorm" for m in fused.modules())
        torch.testing.assert_close(fused(x), expected, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(adapted.fuse()(x), expected, rtol=1e-4, atol=1e-4)


def test_a_fused_model_is_not_taken_for_the_training_form():
    model = tiny_model("timm-repvit/repvit").fuse()
    with pytest.raises(ValueError, match="No backbone adapter for `RepVit`"):
        get_family(model)
