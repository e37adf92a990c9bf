"""timm DLA specifics: which blocks of an aggregation tree are candidates, that dropping one equals silencing its
branch, and that plain timm (which loads DLA weights non-strictly) refuses a block-dropped checkpoint.

The invariants every family shares (shapes, exact folding, reload with `load_compressed`) are in
test_family_invariants.py.
"""

from __future__ import annotations

import pytest
import torch

from hf_practise import get_family
from hf_practise.backbones.timm_dla import DlaSkip
from hf_practise.files import save_directory_atomically
from hf_practise.recoverability import build_pruned

from .tiny_models import pretrained_meta, tiny_model


def test_a_tree_of_levels_n_offers_all_its_blocks_but_the_first():
    for arch, model in pretrained_meta("dla").items():
        family = get_family(model)
        assert family.name == "timm-dla", arch
        levels = [model.level2.levels, model.level3.levels, model.level4.levels, model.level5.levels]
        per_stage = [sum(r.stage == s for r in family.candidates(model)) for s in range(len(levels))]
        assert per_stage == [2**n - 1 for n in levels], arch


@pytest.mark.parametrize("variant", ["dla", "dla-bottleneck", "dla-res2next"])
def test_dropping_a_block_equals_silencing_its_branch(variant):
    """A candidate computes relu(x + branch(x)) on a non-negative x: with its last BatchNorm zeroed it hands x on,
    which is what `DlaSkip` does (in a stride-1 tree's first block too, which the tree calls with its shortcut)."""
    model = tiny_model(f"timm-dla/{variant}")
    family = get_family(model)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    for ref in family.candidates(model):
        pruned = build_pruned(model, family, [ref], adaptors=False).eval()
        silenced = build_pruned(model, family, [], adaptors=False).eval()
        bn = [m for m in family.resolve(silenced, ref).modules() if isinstance(m, torch.nn.BatchNorm2d)][-1]
        with torch.no_grad():
            bn.weight.zero_()
            bn.bias.zero_()
            torch.testing.assert_close(pruned(x), silenced(x), rtol=0, atol=1e-6)
            assert not torch.allclose(pruned(x), model(x)), ref.path  # the block did something
        assert sum(isinstance(m, DlaSkip) for m in pruned.modules()) == 1


def test_plain_timm_refuses_a_dropped_checkpoint(tmp_path):
    import timm

    model = tiny_model("timm-dla/dla")
    family = get_family(model)
    pruned = build_pruned(model, family, family.candidates(model)[:1], adaptors=False).eval()
    assert not family.reloads_natively(pruned)
    folder = save_directory_atomically(
        tmp_path / "saved", lambda d: family.save_pretrained(pruned, d, source_config={})
    )
    with pytest.raises(RuntimeError, match=r"size mismatch for level2\.tree2\.conv1\.weight"):
        timm.create_model(f"local-dir:{folder}", pretrained=True)
