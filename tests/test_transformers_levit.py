"""transformers LeViT specifics: (attention, MLP) units as candidates, adaptor sites around the subsampling tails,
an emptied stage that transformers still rebuilds, and the classifier types the coverage benchmark builds.

The invariants every family shares (exact folding, shapes, native reload) are in test_family_invariants.py.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from hf_practise import get_family
from hf_practise.recoverability import build_pruned

from .tiny_models import tiny_model

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _coverage_script():
    """benchmarks/coverage.py, under a name of its own (`coverage` is also coverage.py's package name)."""
    sys.path.insert(0, str(BENCHMARKS))  # for its `harness`
    spec = importlib.util.spec_from_file_location("coverage_benchmark", BENCHMARKS / "coverage.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_candidates_are_the_units_the_depths_count_and_transformers_rebuilds_a_dropped_model():
    import transformers

    model = tiny_model("transformers-levit/levit")  # depths 2-3-2
    family = get_family(model)
    refs = {r.path: r for r in family.candidates(model)}
    assert set(refs) == {
        f"levit.encoder.stages.{s}.layers.{2 * i}+{2 * i + 1}"
        for s, depth in enumerate([2, 3, 2])
        for i in range(depth)
    }  # the subsampling attention and the MLP after it (layers 4-5 of stage 0) are no candidates
    # a whole stage may go: transformers builds a stage of depth 0 (its subsampling tail only)
    dropped = [refs["levit.encoder.stages.0.layers.0+1"], refs["levit.encoder.stages.0.layers.2+3"]]
    pruned = build_pruned(model, family, dropped + [refs["levit.encoder.stages.1.layers.2+3"]], adaptors=False)
    config = family.pruned_config(pruned)
    assert list(config.depths) == [0, 2, 2]
    rebuilt = transformers.LevitForImageClassification(config)
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in pruned.state_dict().items()}
    rebuilt.load_state_dict(pruned.state_dict())
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.eval()(x).logits, pruned(x).logits, rtol=0, atol=0)


def test_adaptor_sites_around_a_unit():
    model = tiny_model("transformers-levit/levit")
    family = get_family(model)
    hole = next(r for r in family.candidates(model) if r.path == "levit.encoder.stages.1.layers.2+3")
    stage = "levit.encoder.stages"
    assert {(s.key, s.side) for s in family.adaptor_sites(model, [hole])} == {
        # the previous stage's tail writes the stage's input: the subsampling attention, then its MLP
        (f"{stage}.0.layers.4.projection.linear", "post"),
        (f"{stage}.0.layers.5.module.linear_down.linear", "post"),
        (f"{stage}.1.layers.0.module.projection.linear", "post"),
        (f"{stage}.1.layers.1.module.linear_down.linear", "post"),
        (f"{stage}.1.layers.4.module.queries_keys_values.linear", "pre"),
        (f"{stage}.1.layers.5.module.linear_up.linear", "pre"),
        # this stage's tail reads its output
        (f"{stage}.1.layers.6.keys_values.linear", "pre"),
        (f"{stage}.1.layers.6.queries.linear", "pre"),
    }
    first = family.candidates(model)[0]
    assert ("levit.patch_embeddings.embedding_layer_4.convolution", "post") in {
        (s.key, s.side) for s in family.adaptor_sites(model, [first])
    }


def test_the_head_with_teacher_averages_both_classifiers():
    model = tiny_model("transformers-levit/levit-with-teacher")
    family = get_family(model)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = model(x)
        torch.testing.assert_close(family.forward_head(model, family.forward_features(model, x)), out.logits)
        assert not torch.allclose(out.cls_logits, out.logits)  # both heads count
    assert len(list(family.classifier(model).children())) == 2


@pytest.mark.parametrize(
    "model_type, class_name",
    [("levit", "LevitForImageClassification"), ("perceiver", "PerceiverForImageClassificationLearned")],
)
def test_the_coverage_benchmark_builds_the_types_that_map_to_several_classes(model_type, class_name):
    """transformers' `AutoModelForImageClassification.from_config` fails on these ("'NoneType' object is not
    iterable"); the benchmark builds the class it names, and a type without a family says so in one line."""
    coverage = _coverage_script()
    model = coverage.meta_classifier(model_type, class_name)
    assert type(model).__name__ == class_name
    family = coverage.family_for(model)
    if model_type == "levit":
        assert family is not None and family.name == "transformers-levit"
        return
    assert family is None
    with pytest.raises(ValueError, match=f"^No backbone adapter for `{class_name}`; supported: [^\n]*$"):
        get_family(model)


def test_a_forward_with_gradients_before_compressing_does_not_break_the_copy():
    # transformers' LeViT caches its attention biases in eval mode; filled by a forward with gradients, the cache
    # held non-leaf tensors that deepcopy refuses
    model = tiny_model("transformers-levit/levit").eval()
    model(torch.randn(2, 3, 32, 32)).logits.sum().backward()
    family = get_family(model)
    student = build_pruned(model, family, family.candidates(model)[:1])
    assert not model.training and sum(p.numel() for p in student.parameters()) < sum(
        p.numel() for p in model.parameters()
    )
