"""timm HGNet / HGNetV2 specifics: only a stage's residual blocks are candidates, where the adaptors go (v1's ESE
gate and the aggregation's concatenated input take none), why timm cannot rebuild a shallower model, and the
hf_practise-format round trip of an HGNet v1.

The invariants every family shares (exact folding, shapes, reload) run on HGNetV2 in test_family_invariants.py.
"""

from __future__ import annotations

import json

import pytest
import torch

from hf_practise import CompressionConfig, PractiseCompressor, get_family, load_compressed
from hf_practise.adaptors import fold_adaptors
from hf_practise.backbones.base import BlockRef
from hf_practise.backbones.tiny import timm_tiny
from hf_practise.files import save_directory_atomically
from hf_practise.recoverability import build_pruned

from .tiny_models import logits, perturb_adaptors, tiny_model

#: HGNet v1 (stem v1, ESE aggregation, plain conv chains): one candidate, so not in the shared suite's k=2 tests
hgnet_v1 = timm_tiny("hgnet_tiny", init="calibrate", head_hidden_size=32)


def _sites(model: torch.nn.Module, path: str) -> set[tuple[str, str]]:
    family = get_family(model)
    hole = next(r for r in family.candidates(model) if r.path == path)
    return {(s.key, s.side) for s in family.adaptor_sites(model, [hole])}


def test_v2_candidates_are_the_residual_blocks_and_their_adaptor_sites():
    model = tiny_model("timm-hgnet/hgnetv2")  # hgnetv2_b2: blocks per stage 1-1-3-1
    family = get_family(model)
    assert [r.path for r in family.candidates(model)] == ["stages.2.blocks.1", "stages.2.blocks.2"]
    with pytest.raises(ValueError, match="changes the shape of its input"):
        family.drop_blocks(model, [BlockRef(stage=2, index=0, path="stages.2.blocks.0")])
    assert _sites(model, "stages.2.blocks.1") == {
        ("stages.2.blocks.0.aggregation.1.conv", "post"),  # the stage's first block writes the stream
        ("stages.2.blocks.2.layers.0.conv1.conv", "pre"),  # a light block's 1x1 conv (its kxk is depthwise)
        ("stages.3.blocks.0.layers.0.conv1.conv", "pre"),  # after the next stage's depthwise downsampling
    }


def test_v1_writes_through_the_conv_before_its_ese_gate():
    assert _sites(hgnet_v1(0), "stages.2.blocks.1") == {
        ("stages.2.blocks.0.aggregation.0.conv", "post"),  # not aggregation.1.conv, the ESE conv on pooled channels
        ("stages.3.blocks.0.layers.0.conv", "pre"),
    }


def test_v1_adapts_folds_and_reloads_with_the_loader(tmp_path):
    import timm

    model = hgnet_v1(0)
    family = get_family(model)
    dropped = family.candidates(model)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    plain = build_pruned(model, family, dropped, adaptors=False).eval()
    adapted = build_pruned(model, family, dropped).eval()
    with torch.no_grad():
        torch.testing.assert_close(logits(adapted, x), logits(plain, x), rtol=0, atol=0)  # identity adaptors
        perturb_adaptors(adapted)
        before = adapted(x)
        assert not torch.allclose(before, plain(x))  # the adaptors do change the function
        assert fold_adaptors(adapted) == 2
        torch.testing.assert_close(adapted(x), before, rtol=1e-4, atol=1e-5)
    assert not family.reloads_natively(adapted)
    folder = save_directory_atomically(
        tmp_path / "saved", lambda d: family.save_pretrained(adapted, d, source_config={})
    )
    assert json.loads((folder / "config.json").read_text())["hf_practise"]["removed_blocks"] == [
        [[2, 1, "stages.2.blocks.1"]]
    ]
    with torch.no_grad():
        torch.testing.assert_close(load_compressed(folder)(x), before, rtol=1e-4, atol=1e-5)
    with pytest.raises(RuntimeError, match="Missing key"):  # plain timm builds the original and says so
        timm.create_model(f"local-dir:{folder}", pretrained=True)
    # its one candidate gone, there is nothing left to drop, and the compressor says so before reading data
    with pytest.raises(ValueError, match="There is nothing to drop in this `HighPerfGpuNet`"):
        PractiseCompressor(plain, CompressionConfig(num_blocks=1)).check_candidates()


ARCHS = {  # architecture -> candidates (blocks per stage less each stage's first)
    "hgnet_tiny": 1,
    "hgnet_small": 1,
    "hgnet_base": 4,
    "hgnetv2_b0": 1,
    "hgnetv2_b1": 1,
    "hgnetv2_b2": 2,
    "hgnetv2_b3": 2,
    "hgnetv2_b4": 2,
    "hgnetv2_b5": 6,
    "hgnetv2_b6": 10,
}


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_every_entry_point_has_residual_blocks_but_no_depth_argument(arch):
    """Every pretrained architecture has a candidate; its entry point passes the architecture's `cfg` itself, so
    `model_args` cannot make it shallower (built on the meta device: no weights)."""
    import timm

    with torch.device("meta"):
        model = timm.create_model(arch, num_classes=5)
    family = get_family(model)
    assert family.name == "timm-hgnet" and len(family.candidates(model)) == ARCHS[arch]
    assert family.reloads_natively(model)  # nothing dropped yet: the library's own architecture
    family.drop_blocks(model, family.candidates(model)[:1])
    assert not family.reloads_natively(model)
    with torch.device("meta"), pytest.raises(TypeError, match="multiple values for keyword argument 'cfg'"):
        timm.create_model(arch, num_classes=5, cfg={})
