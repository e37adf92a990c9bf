"""The benchmark scripts' small pure helpers: how a run is spelled, and which target stands in for one that a
family cannot reach."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import families  # noqa: E402
import finetune_sweep  # noqa: E402


@pytest.mark.parametrize(
    "text, parsed",
    [
        ("adamw:1e-4:500", ("adamw", 1e-4, 500, "features", False, "none")),
        ("sgd:0.01:200:kd", ("sgd", 0.01, 200, "kd", False, "none")),
        ("adamw:1e-3:1000:features+kd:bn", ("adamw", 1e-3, 1000, "features+kd", True, "none")),
        ("adamw:1e-3:1000:features+kd:mixup", ("adamw", 1e-3, 1000, "features+kd", False, "mixup")),
        ("adamw:1e-3:1000:features:bn+flip", ("adamw", 1e-3, 1000, "features", True, "flip")),
    ],
)
def test_a_sweep_run_round_trips_through_its_name(text, parsed):
    assert finetune_sweep.parse_run(text) == parsed
    assert finetune_sweep.parse_run(finetune_sweep.run_name(*parsed)) == parsed


@pytest.mark.parametrize(
    "text", ["adamw:1e-4", "adamw:x:500", "adamw:1e-4:500:features:cutout", "adamw:1e-4:500:features:flip+mixup"]
)
def test_a_misspelled_sweep_run_is_refused_with_the_syntax(text):
    with pytest.raises(argparse.ArgumentTypeError, match="expected optimizer:lr:iterations"):
        finetune_sweep.parse_run(text)


def test_an_unreachable_target_falls_back_under_the_most_the_family_saves():
    # 48.6% at most (a MobileNetV2 at 32x32): run at 46%, a whole percent two points under it
    assert families.closest_target(0.486) == pytest.approx(0.46)
    assert families.closest_target(0.50) == pytest.approx(0.48)
    assert families.closest_target(0.06) is None  # nothing worth running
    record = {"latency_target": 0.46, "requested_target": 0.5}
    assert families.requested_target(record) == 0.5
    assert families.target_text(record) == "46% (asked 50%: unreachable)"
    assert families.target_text({"latency_target": 0.22}) == "22%"


def test_a_row_says_which_finetune_settings_departed_from_the_defaults():
    usual = {"optimizer": "sgd", "lr": 0.01, "iterations": 500, "objective": "features+kd", "augmentation": "mixup"}
    assert families.finetune_text(usual) == "500 steps"
    tuned = {"optimizer": "adamw", "lr": 1e-3, "iterations": 1000, "objective": "features+kd", "augmentation": "mixup"}
    assert families.finetune_text(tuned) == "1000 steps, lr 0.001"
    paper = {"optimizer": "adamw", "lr": 1e-4, "iterations": 500, "objective": "features", "augmentation": "none"}
    assert families.finetune_text(paper) == "500 steps, features, augmentation none"
    # records from before the keys existed ran the paper's objective without augmentation
    assert families.finetune_text({"optimizer": "adamw", "lr": 1e-4, "iterations": 500}) == (
        "500 steps, features, augmentation none"
    )


def test_a_rerun_replaces_its_rows_where_they_stood():
    kept = [
        {"family": "a", "latency_target": 0.22},
        {"family": "b", "latency_target": 0.22},
        {"family": "b", "latency_target": 0.5, "error": "unreachable"},
        {"family": "c", "latency_target": 0.22},
    ]
    new = [
        {"family": "b", "latency_target": 0.22, "top1": 1},
        {"family": "b", "latency_target": 0.47, "requested_target": 0.5, "top1": 2},
        {"family": "d", "latency_target": 0.22},
    ]
    merged = families.merge_records(kept, new)
    assert [(r["family"], r.get("top1")) for r in merged] == [("a", None), ("b", 1), ("b", 2), ("c", None), ("d", None)]
