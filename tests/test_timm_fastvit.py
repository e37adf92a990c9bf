"""timm FastViT specifics: adaptor sites (depthwise token mixers and downsampling take none), native depths on every
entry point, and timm's reparameterisation of a compressed, reloaded model.

The invariants every family shares (exact folding, shapes, native reload) are in test_family_invariants.py.
"""

from __future__ import annotations

import pytest
import torch

from hf_practise import get_family
from hf_practise.adaptors import fold_adaptors
from hf_practise.backbones.base import BlockRef
from hf_practise.files import save_directory_atomically
from hf_practise.recoverability import build_pruned

from .tiny_models import perturb_adaptors, tiny_model


def _sites(model_id: str, stage: int, index: int) -> set[tuple[str, str]]:
    model = tiny_model(model_id)
    family = get_family(model)
    hole = next(r for r in family.candidates(model) if (r.stage, r.index) == (stage, index))
    return {(s.key, s.side) for s in family.adaptor_sites(model, [hole])}


def test_repmixer_adaptor_sites_around_a_hole():
    assert _sites("timm-fastvit/fastvit", 2, 1) == {  # depths 2-2-3-2
        ("stages.2.downsample.proj.1.conv_kxk.0.conv", "post"),  # the downsampling's 1x1 MobileOne block
        ("stages.2.blocks.0.mlp.fc2", "post"),  # (the RepMixer token mixer is depthwise: no site)
        ("stages.2.blocks.2.mlp.fc1", "pre"),
        # the next stage reads the output through a depthwise large-kernel conv: no site
    }
    assert ("stem.2.conv_kxk.0.conv", "post") in _sites("timm-fastvit/fastvit", 0, 1)


def test_attention_adaptor_sites_around_a_hole():
    assert _sites("timm-fastvit/fastvit-sa", 3, 1) == {  # stage 3: three attention blocks
        ("stages.3.downsample.proj.1.conv_kxk.0.conv", "post"),  # then the positional encoding (depthwise)
        ("stages.3.blocks.0.token_mixer.proj", "post"),
        ("stages.3.blocks.0.mlp.fc2", "post"),
        ("stages.3.blocks.2.token_mixer.qkv", "pre"),
        ("stages.3.blocks.2.mlp.fc1", "pre"),
        # final_conv reads the last stage's output: depthwise, no site
    }


def test_squeeze_excite_of_the_downsampling_takes_no_adaptor():
    """MobileCLIP's stages 2 and 3 downsample with squeeze-excite after the large kernel: its convs see pooled
    channels, neither the stream entering the stage nor the one leaving the previous stage."""
    sites = _sites("timm-fastvit/fastvit-mci", 2, 2)  # the last block of stage 2
    assert sites == {
        ("stages.2.downsample.proj.1.conv_kxk.0.conv", "post"),
        ("stages.2.blocks.0.mlp.fc2", "post"),
        ("stages.2.blocks.1.mlp.fc2", "post"),
    }


ARCHS = [
    "fastvit_t8",
    "fastvit_t12",
    "fastvit_s12",
    "fastvit_sa12",
    "fastvit_sa24",
    "fastvit_sa36",
    "fastvit_ma36",
    "fastvit_mci0",
    "fastvit_mci1",
    "fastvit_mci2",
    "fastvit_mci3",
    "fastvit_mci4",
]


@pytest.mark.parametrize("arch", ARCHS)
def test_every_entry_point_takes_the_layers_of_a_dropped_model(arch):
    """The entry points let `layers` from `model_args` override theirs (built on the meta device: no weights)."""
    import timm

    with torch.device("meta"):
        model = timm.create_model(arch, num_classes=5)
    family = get_family(model)
    assert family.name == "timm-fastvit"
    assert len(family.candidates(model)) == sum(len(s.blocks) for s in model.stages)  # every block
    last = len(model.stages) - 1
    family.drop_blocks(model, [BlockRef(stage=last, index=0, path=f"stages.{last}.blocks.0")])
    assert family.reloads_natively(model)
    layers = family.block_args(model)["layers"]
    with torch.device("meta"):
        rebuilt = timm.create_model(arch, num_classes=5, layers=layers)
    assert [len(s.blocks) for s in rebuilt.stages] == layers
    assert [type(b) for s in rebuilt.stages for b in s.blocks] == [type(b) for s in model.stages for b in s.blocks]


@pytest.mark.parametrize("variant", ["fastvit", "fastvit-sa"])
def test_a_compressed_model_reloads_with_timm_and_still_reparameterises(variant, tmp_path):
    """What a user does next with a FastViT: reload it with plain timm and fuse its MobileOne, RepMixer and
    positional-encoding branches for inference (timm's `reparameterize_model`); the folded adaptors must survive."""
    import timm
    from timm.utils.model import reparameterize_model

    model = tiny_model(f"timm-fastvit/{variant}")
    family = get_family(model)
    dropped = family.feasible(model, family.candidates(model)[::-1])[:2]
    adapted = build_pruned(model, family, dropped).eval()
    perturb_adaptors(adapted)
    assert fold_adaptors(adapted) > 0
    folder = save_directory_atomically(
        tmp_path / "saved", lambda d: family.save_pretrained(adapted, d, source_config={})
    )
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = adapted(x)
        reloaded = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
        torch.testing.assert_close(reloaded(x), expected, rtol=0, atol=0)
        fused = reparameterize_model(reloaded)
        branches = [m for m in fused.modules() if hasattr(m, "reparam_conv")]
        assert branches and all(m.reparam_conv is not None for m in branches)  # every branch fused
        torch.testing.assert_close(fused(x), expected, rtol=1e-4, atol=1e-4)


def test_a_fused_or_headless_model_is_not_taken_for_the_training_form():
    from timm.utils.model import reparameterize_model

    with pytest.raises(ValueError, match="No backbone adapter for `FastVit`"):
        get_family(reparameterize_model(tiny_model("timm-fastvit/fastvit")))
    import timm

    with torch.device("meta"):
        for kwargs in (dict(inference_mode=True), dict(fork_feat=True)):
            with pytest.raises(ValueError, match="No backbone adapter for `FastVit`"):
                get_family(timm.create_model("fastvit_t8", **kwargs))
