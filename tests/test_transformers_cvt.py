"""transformers CvT specifics: stage i reloads natively only with more than i layers; below that, hf_practise's
format. (The invariants every family shares are in test_family_invariants.py.)"""

from __future__ import annotations

import json

import pytest
import torch

from hf_practise import get_family
from hf_practise.files import save_directory_atomically
from hf_practise.hub import load_model
from hf_practise.recoverability import build_pruned

from .tiny_models import tiny_model

pytest.importorskip("transformers")


def _save(model, family, dropped, folder):
    pruned = build_pruned(model, family, dropped, adaptors=False).eval()
    return pruned, save_directory_atomically(folder, lambda d: family.save_pretrained(pruned, d, source_config={}))


@pytest.mark.parametrize(
    "stage, drops, native",
    [(2, 1, True), (2, 2, False), (1, 1, True), (1, 2, False)],  # tiny depths [2, 3, 4]
)
def test_a_stage_cut_to_its_index_reloads_through_hf_practise(stage, drops, native, tmp_path):
    """transformers' CvT reads stage i's drop-path rate at position i of the stage's own list: stage 2 needs 3
    layers. A cut below that is saved in hf_practise's format (the original depths) and reloads exactly."""
    model = tiny_model("transformers-cvt/cvt")
    family = get_family(model)
    dropped = [r for r in family.candidates(model) if r.stage == stage][:drops]
    assert [len(s) for s in family.stages(model)] == [2, 3, 4] and len(dropped) == drops
    pruned, folder = _save(model, family, dropped, tmp_path / "out")
    assert family.reloads_natively(pruned) is native
    config = json.loads((folder / "config.json").read_text())
    depths = [len(s) for s in family.stages(pruned)]
    assert config["depth"] == (depths if native else [2, 3, 4])
    assert (config["model_type"] == "cvt") is native  # hf_practise's format hides the type from transformers
    reloaded, source = load_model(str(folder))
    assert source["library"] == "transformers" and [len(s) for s in family.stages(reloaded)] == depths
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(reloaded.eval()(x).logits, pruned(x).logits, rtol=0, atol=1e-6)


def test_the_head_reads_the_normalised_cls_token():
    model = tiny_model("transformers-cvt/cvt")
    family = get_family(model)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        features = family.forward_features(model, x)
        assert features.shape[1] == 1 + 2 * 2  # the [CLS] token, then the last stage's 2x2 map
        changed = features.clone()
        changed[:, 1:] += 1.0  # the map does not reach the head: only the [CLS] token does
        torch.testing.assert_close(family.forward_head(model, changed), model(x).logits)
