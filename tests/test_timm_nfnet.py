"""timm NormFreeNet specifics: no adaptor folds into a weight-standardised conv, the per-index betas decide
between a native and an hf_practise-format save (both reload with identical logits), and native depths on every
pretrained entry point.

The invariants every family shares (shapes, reload) are in test_family_invariants.py.
"""

from __future__ import annotations

import pytest
import torch

from hf_practise import get_family, load_compressed
from hf_practise.backbones.base import BlockRef
from hf_practise.files import save_directory_atomically
from hf_practise.recoverability import build_pruned

from .tiny_models import tiny_model


def test_no_adaptor_goes_into_a_weight_standardised_conv():
    model = tiny_model("timm-nfnet/nf-regnet")  # depths 2-3-2-2
    family = get_family(model)
    hole = next(r for r in family.candidates(model) if r.path == "stages.1.1")
    assert family.adaptor_sites(model, [hole]) == []
    assert {(s.key, s.side) for s in family.adaptor_sites(model, [hole], exact_only=False)} == {
        ("stages.1.0.conv3", "post"),
        ("stages.1.0.downsample.conv", "post"),
        ("stages.1.2.conv1", "pre"),
        ("stages.2.0.conv1", "pre"),
        ("stages.2.0.downsample.conv", "pre"),
    }
    assert "stages.2.0" not in {r.path for r in family.candidates(model)}  # a stage's first block downsamples
    sites = family.adaptor_sites(model, [BlockRef(stage=0, index=1, path="stages.0.1")], exact_only=False)
    assert {s.key for s in sites} >= {"stem.conv", "stages.0.0.conv3"}


@pytest.mark.parametrize(("path", "native"), [("stages.3.1", True), ("stages.1.2", False), ("stages.1.1", False)])
def test_the_betas_decide_how_a_dropped_model_reloads(tmp_path, path, native):
    """The last stage's last block: every kept beta stays, plain timm rebuilds the model from `depths`. Any other
    (here the second stage's middle or last block) would change a later block's beta in the rebuilt model (the next
    stage's first block counts the blocks before it), so it is saved for `load_compressed`, which keeps them."""
    import timm

    model = tiny_model("timm-nfnet/nfnet")  # skip-init gains, depths 2-3-2-2
    family = get_family(model)
    hole = next(r for r in family.candidates(model) if r.path == path)
    pruned = build_pruned(model, family, [hole], adaptors=False).eval()
    assert family.reloads_natively(pruned) is native
    with torch.device("meta"):
        rebuilt = timm.create_model("dm_nfnet_f0", **{**pruned._model_args, **family.block_args(pruned)})
    betas = [[[b.beta for b in stage] for stage in m.stages] for m in (rebuilt, pruned)]
    assert (betas[0] == betas[1]) is native
    folder = save_directory_atomically(
        tmp_path / "saved", lambda d: family.save_pretrained(pruned, d, source_config={})
    )
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    reload = timm.create_model(f"local-dir:{folder}", pretrained=True) if native else load_compressed(folder)
    with torch.no_grad():
        torch.testing.assert_close(reload.eval()(x), pruned(x), rtol=0, atol=0)
        assert not torch.allclose(pruned(x), model(x))  # the block did something


ARCHS = [  # every pretrained NormFreeNet architecture (timm.list_models(pretrained=True, module="nfnet"))
    *(f"dm_nfnet_f{i}" for i in range(7)),
    *(f"eca_nfnet_l{i}" for i in range(3)),
    "nf_regnet_b1",
    "nf_resnet50",
    "nfnet_l0",
    "test_nfnet",
]


def _meta(arch: str, **kwargs) -> torch.nn.Module:
    """Built on the meta device: no weights."""
    import timm

    with torch.device("meta"):
        return timm.create_model(arch, num_classes=5, **kwargs)


@pytest.mark.parametrize("arch", ARCHS)
def test_every_entry_point_takes_the_depths_of_a_trailing_drop(arch):
    model = _meta(arch)
    family = get_family(model)
    # each stage's first block downsamples; the others are candidates
    assert family.name == "timm-nfnet" and len(family.candidates(model)) == sum(len(s) - 1 for s in model.stages)
    family.drop_blocks(model, family.candidates(model)[-1:])  # the last block of the last stage: betas kept
    assert family.reloads_natively(model), arch
    rebuilt = _meta(arch, **family.block_args(model))
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}


def test_the_list_of_pretrained_architectures_is_complete():
    import timm

    assert {n.split(".")[0] for n in timm.list_models(pretrained=True, module="nfnet")} == set(ARCHS)
