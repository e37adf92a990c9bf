"""What every registered family must satisfy, on tiny random models of each (see tests/tiny_models.py).

Identity adaptors leave the output unchanged; folded adaptors equal the adapted network and leave only the
original layer types; every candidate keeps its input's shape; dropping k blocks removes exactly k and leaves
the original alone; a dropped model reloads with its own library, in a process without hf_practise, with
identical logits.
"""

from __future__ import annotations

import re

import pytest
import torch

from hf_practise import get_family
from hf_practise.adaptors import adapted_layers, fold_adaptors
from hf_practise.backbones import registered_families
from hf_practise.backbones.base import BlockGroup, folds_exactly
from hf_practise.files import save_directory_atomically
from hf_practise.recoverability import build_pruned

from .tiny_models import TINY_IDS, TINY_MODELS, logits, tiny_model


@pytest.fixture(params=TINY_IDS)
def model_id(request) -> str:
    return request.param


@pytest.fixture
def x() -> torch.Tensor:
    return torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def test_every_registered_family_has_tiny_models():
    families = registered_families()
    assert len(families) >= 6 and {f.name for f in families} == set(TINY_MODELS)
    assert all(TINY_MODELS[f.name] for f in families), [f.name for f in families if not f.tiny_models]
    # each tiny model is handled by the family that lists it
    for model_id in TINY_IDS:
        assert get_family(tiny_model(model_id)).name == model_id.split("/")[0], model_id


def test_an_incomplete_family_fails_at_registration():
    from hf_practise.backbones import register_family
    from hf_practise.backbones.timm_common import TimmFamily

    class NoBlockArgs(TimmFamily):  # forgets block_args (and the structure)
        name = "incomplete"

        @classmethod
        def matches(cls, model):
            return False

    with pytest.raises(TypeError, match="does not implement .*block_args"):
        register_family(NoBlockArgs)
    assert "incomplete" not in {f.name for f in registered_families()}


def test_found_structurally_and_candidates_keep_their_shape(model_id, x):
    model = tiny_model(model_id)
    family = get_family(model)
    assert family.name == model_id.split("/")[0]
    cands = family.candidates(model)
    assert cands and set(cands) <= set(family.blocks(model))
    # a candidate's input (of its first block, for a group) and output (of its last) have the same shape
    ins, outs = {}, {}
    hooks = []
    for r in cands:
        block = family.resolve(model, r)
        first, last = (block.blocks[0], block.blocks[-1]) if isinstance(block, BlockGroup) else (block, block)
        # (hooks must return None: a returned value would replace the input or output)
        hooks.append(first.register_forward_pre_hook(lambda m, i, key=r: ins.setdefault(key, i[0].shape) and None))
        hooks.append(
            last.register_forward_hook(
                lambda m, i, o, key=r: outs.setdefault(key, (o[0] if isinstance(o, tuple) else o).shape) and None
            )
        )
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    assert len(ins) == len(outs) == len(cands) and all(ins[r] == outs[r] for r in cands)


def test_the_head_of_the_features_gives_the_logits(model_id, x):
    # the default finetune distils the logits the student computes from its own features (objective features+kd)
    model = tiny_model(model_id).eval()
    family = get_family(model)
    with torch.no_grad():
        torch.testing.assert_close(family.forward_head(model, family.forward_features(model, x)), logits(model, x))
    assert any(True for _ in family.classifier(model).parameters())


def test_identity_adaptors_then_exact_fold(model_id, x):
    model = tiny_model(model_id)
    family = get_family(model)
    cands = family.candidates(model)
    for dropped in ([cands[0]], family.feasible(model, cands[::-1])[:3]):
        plain = build_pruned(model, family, dropped, adaptors=False).eval()
        types = sorted({type(m).__name__ for m in plain.modules()})
        adapted = build_pruned(model, family, dropped).eval()
        if not adapted_layers(adapted):
            # only where no site could take one exactly (weight-standardised convs, as in BiT)
            sites = family.adaptor_sites(model, dropped, exact_only=False)
            assert sites and not any(folds_exactly(s.module) for s in sites), "no adaptor was placed"
            with torch.no_grad():
                torch.testing.assert_close(logits(adapted, x), logits(plain, x), rtol=0, atol=0)
            continue
        called = set()
        hooks = [w.register_forward_hook(lambda m, i, o: called.add(id(m))) for w in adapted_layers(adapted)]
        with torch.no_grad():
            torch.testing.assert_close(logits(adapted, x), logits(plain, x), rtol=0, atol=0)
            # every adapted layer runs as a module (a model that reads only its `.weight` would skip the adaptor)
            assert called == {id(w) for w in adapted_layers(adapted)}, [
                w.key for w in adapted_layers(adapted) if id(w) not in called
            ]
            for h in hooks:
                h.remove()
            g = torch.Generator().manual_seed(2)
            for wrapper in adapted_layers(adapted):
                for a in wrapper.adaptors().values():
                    a.weight.add_(0.1 * torch.randn(a.weight.shape, generator=g))
            before = logits(adapted, x)
            assert not torch.allclose(before, logits(plain, x))  # the adaptors do change the function
            assert fold_adaptors(adapted) > 0
            after = logits(adapted, x)
        assert (after - before).norm() / before.norm() < 1e-4 and not adapted_layers(adapted)
        assert sorted({type(m).__name__ for m in adapted.modules()}) == types  # only the original layer types


@pytest.mark.parametrize("k", [1, 2])
def test_dropping_k_blocks_removes_exactly_k(model_id, x, k):
    model = tiny_model(model_id)
    family = get_family(model)
    before = sum(len(s) for s in family.stages(model))
    dropped = family.feasible(model, family.candidates(model))[-k:]
    pruned = build_pruned(model, family, dropped, adaptors=False)
    assert sum(len(s) for s in family.stages(pruned)) == before - k
    assert sum(len(s) for s in family.stages(model)) == before  # the original is untouched
    with torch.no_grad():
        assert logits(pruned, x).shape == logits(model, x).shape


RELOAD_TEST = "test_dropped_model_reloads_natively_with_identical_logits"


@pytest.fixture(scope="session")
def reloads(request, tmp_path_factory) -> dict:
    """Every selected tiny model with two blocks dropped, saved, and reloaded in fresh processes, all at once
    (one process imports timm and transformers once for all of them, instead of once per model): model id ->
    (expected logits, native?, {library: logits or the error})."""
    from benchmarks.native import reload_many

    ids = sorted(
        {
            item.callspec.params["model_id"]
            for item in request.session.items
            if getattr(item, "originalname", "") == RELOAD_TEST and "model_id" in item.callspec.params
        }
    )
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    expected, jobs = {}, []
    for model_id in ids:
        model = tiny_model(model_id)
        family = get_family(model)
        dropped = family.feasible(model, family.candidates(model))[:2]
        pruned = build_pruned(model, family, dropped, adaptors=False).eval()
        folder = save_directory_atomically(
            tmp_path_factory.mktemp("reload") / "saved", lambda d: family.save_pretrained(pruned, d, source_config={})
        )
        with torch.no_grad():
            out = logits(pruned, x)
        native = family.reloads_natively(pruned)
        expected[model_id] = (out, native)
        # native: plain timm / transformers; otherwise hf_practise's loader, and plain timm / transformers, which
        # must refuse the folder loudly (it builds the original network, whose blocks the weights lack)
        libraries = [family.library_name] if native else ["hf_practise", family.library_name]
        jobs += [(model_id, library, folder) for library in libraries]
    results = reload_many([(folder, library, x) for _, library, folder in jobs])
    out: dict = {model_id: (*expected[model_id], {}) for model_id in ids}
    for (model_id, library, _), result in zip(jobs, results):
        out[model_id][2][library] = result
    return out


def test_dropped_model_reloads_natively_with_identical_logits(model_id, reloads):
    family = get_family(tiny_model(model_id))
    expected, native, reloaded = reloads[model_id]
    if native:
        # transformers keeps loaded weights as views into the safetensors file at unaligned addresses, and some
        # single-thread conv kernels then round differently (bit-identical weights, logits 1e-7 apart: see
        # benchmarks/results/coverage.md); timm copies them and must match exactly
        atol = 1e-6 if family.library_name == "transformers" else 0.0
        torch.testing.assert_close(reloaded[family.library_name], expected, rtol=0, atol=atol)
        return
    # the family's library cannot rebuild it: hf_practise's loader does, and plain timm/transformers refuses the
    # folder loudly (transformers: the folder's model type is hf_practise's, which transformers does not know)
    torch.testing.assert_close(reloaded["hf_practise"], expected, rtol=0, atol=0)
    refused = reloaded[family.library_name]
    assert isinstance(refused, RuntimeError)
    assert re.search(r"(?i)missing key|size mismatch|does not recognize", str(refused)), str(refused)[-500:]


def test_a_model_that_needs_the_loader_says_why(model_id):
    """The card and the load snippet name why the family's library cannot rebuild a drop: a reason of the family's
    own, never the base class's words."""
    from hf_practise.backbones.base import BackboneFamily

    model = tiny_model(model_id)
    family = get_family(model)
    pruned = build_pruned(model, family, family.feasible(model, family.candidates(model))[:2], adaptors=False)
    why = family.why_not_native(pruned)
    assert (why == "") is family.reloads_natively(pruned)
    assert why != BackboneFamily.native_reload_why


def test_the_scan_from_a_cut_scores_like_the_full_scan(model_id):
    """Every family: the scan's shortcut (run from where the hole's changes begin) leaves the recoverability as it
    is, or is not taken."""
    from hf_practise import ScanConfig
    from hf_practise.forward_cut import CutCache
    from hf_practise.recoverability import score_block, teacher_features

    model = tiny_model(model_id).eval()
    family = get_family(model)
    images = torch.randn(12, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    targets = teacher_features(model, family, images, batch_size=6)
    block = family.candidates(model)[-1]
    cut = CutCache(model, family, images, batch_size=6, max_bytes=2**30).for_block(block)
    config = ScanConfig(iterations=3, batch_size=6)
    full = score_block(model, family, block, images, targets, config=config)
    fast = score_block(model, family, block, images, targets, config=config, cut=cut)
    assert fast.recoverability == pytest.approx(full.recoverability, rel=1e-5, abs=1e-12)
    assert fast.initial_error == pytest.approx(full.initial_error, rel=1e-5, abs=1e-12)
