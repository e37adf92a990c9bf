"""Finetune objectives and augmentations are registered objects: a new one is one class and one register call."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from hf_practise import (
    Augmentation,
    FinetuneConfig,
    Objective,
    get_family,
    mimic_finetune,
    register_augmentation,
    register_objective,
)
from hf_practise.objectives import AUGMENTATIONS, OBJECTIVES, get_objective
from hf_practise.recoverability import build_pruned, teacher_features

from .conftest import tiny_resnet


@dataclass(frozen=True)
class L1Features(Objective):
    """A toy objective: the mean absolute error of the pre-pooling features."""

    def loss(self, model, x, target, ctx):
        return (model(x) - target).abs().mean()


def _finetune(teacher, images, **config):
    from accelerate import Accelerator

    family = get_family(teacher)
    student = build_pruned(teacher, family, family.candidates(teacher)[:1])
    ft = FinetuneConfig(batch_size=len(images), lr=1e-3, optimizer="adamw", **config)
    res = mimic_finetune(student, teacher, family, images, config=ft, accelerator=Accelerator(), log_every=1)
    return student, family, res


def test_a_registered_objective_trains_by_its_name(monkeypatch):
    with pytest.raises(ValueError, match="must be one of"):
        FinetuneConfig(objective="l1")
    monkeypatch.setitem(OBJECTIVES, "l1", None)  # undone after the test: the registry is left as it was
    register_objective(L1Features("l1", help="L1 on features", card_text="L1 on pre-pooling features"))
    assert get_objective("l1").card_text == "L1 on pre-pooling features"
    teacher = tiny_resnet("resnet18")
    images = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    family = get_family(teacher)
    start = build_pruned(teacher, family, family.candidates(teacher)[:1])
    with torch.no_grad():
        error = (
            family.forward_features(start.eval(), images) - teacher_features(teacher, family, images, batch_size=8)
        ).abs()
    student, family, res = _finetune(teacher, images, iterations=2, objective="l1", augmentation="none")
    assert res.steps == 2 and len(res.losses) == 2
    assert res.losses[0] == pytest.approx(error.mean().item(), rel=1e-5)  # the first step's loss is the L1 error
    assert res.losses[1] < res.losses[0]
    # it does not train the classifier, so the classifier is frozen; labels are not needed
    assert not any(p.requires_grad for p in family.classifier(student).parameters())
    # the defaults for a label-free objective: mixup is allowed and chosen by "auto"
    assert FinetuneConfig(objective="l1").resolved(family, teacher).augmentation == "mixup"


def test_a_registered_batch_augmentation_runs_in_the_loop(monkeypatch):
    calls = []

    def upside_down(x, g):
        calls.append(len(x))
        return x.flip(-2)

    monkeypatch.setitem(AUGMENTATIONS, "vflip", None)
    register_augmentation(Augmentation("vflip", help="upside down", card_text="upside down", batch=upside_down))
    _finetune(
        tiny_resnet("resnet18"), torch.randn(8, 3, 32, 32), iterations=3, objective="features", augmentation="vflip"
    )
    assert calls == [8, 8, 8]


def test_a_label_objective_refuses_an_augmentation_that_breaks_labels(monkeypatch):
    monkeypatch.setitem(AUGMENTATIONS, "blend", None)
    register_augmentation(Augmentation("blend", keeps_labels=False, batch=lambda x, g: x))
    with pytest.raises(ValueError, match="labels no longer hold.*features"):
        FinetuneConfig(objective="ce", augmentation="blend")
    assert FinetuneConfig(objective="kd", augmentation="blend").augmentation == "blend"


def test_unknown_names_list_the_registered_choices():
    with pytest.raises(ValueError, match="'features', 'kd', 'ce', 'features\\+kd', 'features\\+stages'"):
        get_objective("mse")
    with pytest.raises(ValueError, match="'auto', 'none', 'timm', 'flip', 'crop', 'mixup'"):
        FinetuneConfig(augmentation="jitter")
    with pytest.raises(ValueError, match="other than"):
        register_objective(L1Features("auto"))


def test_builtin_objectives_say_what_they_train():
    assert {n for n, o in OBJECTIVES.items() if o.trains_classifier} == {"kd", "ce"}
    assert [n for n, o in OBJECTIVES.items() if o.needs_labels] == ["ce"]
    assert [n for n, o in AUGMENTATIONS.items() if not o.keeps_labels] == ["mixup", "crop+mixup"]
    assert [n for n, o in AUGMENTATIONS.items() if o.batch is not None] == ["flip", "crop", "mixup", "crop+mixup"]


@pytest.mark.parametrize(
    "model_id, units, drop",
    [
        ("timm-vit/vit", "branches", ["blocks.2.mlp", "blocks.1.attn"]),
        ("timm-vit/vit", "blocks", ["blocks.2"]),
        ("timm-swin/swin", "blocks", ["layers.1.blocks.0+1"]),
    ],
)
def test_unit_taps_pair_each_kept_unit_with_the_teachers(model_id, units, drop):
    # without adaptors the stream before the first hole is the teacher's: equal there, different after it
    from hf_practise.objectives import UnitTaps

    from .tiny_models import tiny_model

    teacher = tiny_model(model_id).eval()
    family = get_family(teacher).with_units(units, teacher)
    refs = [r for r in family.candidates(teacher) if r.path in drop]
    assert len(refs) == len(drop)
    student = build_pruned(teacher, family, refs, adaptors=False).eval()
    taps = UnitTaps(student, family, teacher), UnitTaps(teacher, family, teacher)
    with torch.no_grad():
        family.forward_features(teacher, torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)))
        family.forward_features(student, torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)))
    s, t = taps[0].take(), taps[1].take()
    for tap in taps:
        tap.remove()
    first_hole = min((r.stage, r.index) for r in refs)
    whole = units == "blocks"
    # a unit dropped whole has no tap in the student; a block that lost a branch still has its block's
    assert set(s) == set(t) - ({(r.stage, r.index) for r in refs} if whole else set())
    for key in s:
        before = key < first_hole
        assert torch.equal(s[key], t[key]) == before, key


def test_unit_taps_of_a_compressed_teacher_count_only_the_students_own_removals():
    from hf_practise.objectives import UnitTaps

    from .tiny_models import tiny_model

    original = tiny_model("timm-vit/vit").eval()
    family = get_family(original)
    teacher = build_pruned(original, family, family.candidates(original)[:1], adaptors=False).eval()
    student = build_pruned(teacher, family, family.candidates(teacher)[-1:], adaptors=False).eval()
    taps = UnitTaps(student, family, teacher), UnitTaps(teacher, family, teacher)
    with torch.no_grad():
        family.forward_features(teacher, torch.randn(2, 3, 32, 32))
    n = len(family.stages(teacher)[0])
    assert sorted(taps[1].take()) == [(0, i) for i in range(n)]
    with torch.no_grad():
        family.forward_features(student, torch.randn(2, 3, 32, 32))
    assert sorted(taps[0].take()) == [(0, i) for i in range(n - 1)]


def test_the_units_objective_adds_every_kept_units_error_to_features_and_kd():
    from accelerate import Accelerator

    from hf_practise.mimic import FeatureModel
    from hf_practise.objectives import LossContext, UnitTaps, relative_mse

    teacher = tiny_resnet("resnet18").eval()
    images = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    family = get_family(teacher)
    start = build_pruned(teacher, family, family.candidates(teacher)[:1]).eval()
    taps = UnitTaps(start, family, teacher), UnitTaps(teacher, family, teacher)
    ctx = LossContext(teacher, family, Accelerator(), 4.0, taps)
    model = FeatureModel(start, family)  # the student as an objective that keeps the classifier frozen gets it
    with torch.no_grad():
        target = family.forward_features(teacher, images)
        units = get_objective("features+kd+units").loss(model, images, target, ctx)
        family.forward_features(teacher, images)
        base = get_objective("features+kd").loss(model, images, target, ctx)
        s, t = taps[0].take(), taps[1].take()
    terms = [relative_mse(s[k], t[k]) for k in s]
    assert len(terms) == sum(len(stage) for stage in family.stages(start)) > 0
    assert units.item() == pytest.approx(base.item() + torch.stack(terms).mean().item(), rel=1e-5)
    # and it trains, taps and all, by its name
    student, _, res = _finetune(teacher, images, iterations=2, objective="features+kd+units", augmentation="none")
    assert res.steps == 2 and all(torch.isfinite(torch.tensor(res.losses)))
