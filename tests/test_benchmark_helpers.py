"""The benchmark scripts' small pure helpers (which target stands in for one that a family cannot reach, how a row
names its finetune) and their harness (a page rendered from its record, a recorded command, where teachers come from)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import families  # noqa: E402
import harness  # noqa: E402


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


def test_a_page_is_rendered_from_its_record_and_report_renders_it_again(tmp_path, monkeypatch):
    def parser() -> argparse.ArgumentParser:
        p = harness.parser("a toy study")
        p.add_argument("--results", default=str(tmp_path))
        p.add_argument("--n", type=int, default=1)
        return p

    runs = []

    def run(p, args):
        runs.append(args.command)
        return {"n": args.n, "value": 0.1 + 0.2, "command": args.command}

    def render(record):
        return [f"# n = {record['n']}", "", f"value {record['value']!r}", f"Command: `{record['command']}`"]

    study = dict(stem=lambda args: Path(args.results) / "toy", run=run, render=render)
    monkeypatch.setattr(sys, "argv", ["toy.py", "--n", "3"])
    assert harness.study(parser(), **study) == 0
    page = "# n = 3\n\nvalue 0.30000000000000004\nCommand: `python benchmarks/toy.py --n 3`\n"
    assert (tmp_path / "toy.md").read_text() == page
    assert json.loads((tmp_path / "toy.json").read_text())["n"] == 3
    (tmp_path / "toy.md").write_text("stale")
    monkeypatch.setattr(sys, "argv", ["toy.py", "--n", "3", "--report"])
    assert harness.study(parser(), **study) == 0
    assert (tmp_path / "toy.md").read_text() == page and len(runs) == 1  # rendered again, not rerun
    assert harness.study(parser(), **study, check=lambda record: f"n is {record['n']}") == 1


def test_a_records_command_names_its_folders_by_name_and_keeps_its_flags():
    p = argparse.ArgumentParser()
    p.add_argument("--teacher", default="t")
    p.add_argument("--targets", type=float, nargs="*", default=None)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(["--teacher", "/home/me/teachers/vit", "--targets", "0.22", "0.5", "--threads", "2"])
    command = harness.command("latency_backends.py", p, args, paths=("teacher",))
    assert command == "python benchmarks/latency_backends.py --teacher vit --targets 0.22 0.5 --threads 2"


def test_teachers_are_looked_up_committed_first_then_in_the_cache_and_never_trained_unasked(tmp_path, monkeypatch):
    folder, meta = harness.find_teacher("timm-vit", cache=tmp_path, train_steps=None)
    assert folder == harness.TEACHERS / "timm-vit" and meta["committed"] == "benchmarks/teachers/timm-vit"
    assert harness.find_teacher("no-such-teacher", cache=tmp_path) is None
    # every recipe's teacher is committed: a recipe without one, as on a branch that adds a recipe
    monkeypatch.setattr(harness, "TEACHERS", tmp_path / "committed")
    uncommitted = harness.FAMILIES[0]
    assert harness.committed_teacher(uncommitted) is None
    assert harness.find_teacher(uncommitted, cache=tmp_path, train_steps=None) is None  # not trained here
    (tmp_path / uncommitted).mkdir()
    (tmp_path / uncommitted / "teacher.json").write_text(json.dumps({"top1": 0.5}))
    assert harness.find_teacher(uncommitted, cache=tmp_path, train_steps=None) == (
        tmp_path / uncommitted / "teacher",
        {"top1": 0.5},
    )


def _coverage_script():
    """benchmarks/coverage.py under a name of its own (`coverage` is also coverage.py's package name)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("coverage_benchmark", Path(harness.__file__).parent / "coverage.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_coverage_tries_three_architectures_and_caps_what_a_try_costs_not_parameters():
    coverage = _coverage_script()
    # real timm names (their pretrained configs give the input size); parameters as on the meta device
    archs = [
        {"arch": "maxvit_base_tf_512", "checkpoints": 2, "params": 119_876_380, "layer_types": ["A"]},
        {"arch": "maxvit_base_tf_224", "checkpoints": 1, "params": 119_470_000, "layer_types": ["A"]},
        {"arch": "maxvit_tiny_tf_224", "checkpoints": 3, "params": 30_916_528, "layer_types": ["A"]},
        {"arch": "maxvit_rmlp_pico_rw_256", "checkpoints": 1, "params": 7_515_980, "layer_types": ["A", "B"]},
        {"arch": "maxvit_small_tf_224", "checkpoints": 1, "params": 68_930_000, "layer_types": ["A"]},
    ]
    # a fixed 512x512 input costs 5.2x a 224x224 one: 120M parameters there are over the cap, at 224 under it
    assert coverage.run_cost(archs[0]) > coverage.MAX_PARAMS >= coverage.run_cost(archs[1])
    # an architecture that takes any input size runs at 64x64: its cost is its parameters
    assert coverage.run_cost({"arch": "resnet50", "params": 25_557_032}) == 25_557_032
    picked = [a["arch"] for a in coverage.pick("demo.Class", archs)]
    assert picked[0] == "maxvit_tiny_tf_224"  # the most checkpoints
    assert {"maxvit_rmlp_pico_rw_256", "maxvit_base_tf_224"} <= set(picked)  # the smallest, the largest under cap
    assert "maxvit_base_tf_512" not in picked[1:3] and len(picked) >= 3
    assert picked == [a["arch"] for a in coverage.pick("demo.Class", archs)]  # the random pick is seeded


def test_a_point_below_the_line_from_the_teacher_to_the_largest_cut_is_dominated():
    import operating_points

    points = [
        {"target": 0.2, "latency_reduction": 0.25, "top1": 0.90, "dropped": ["a"]},  # the line 0.92 -> 0.84: above
        {"target": 0.3, "latency_reduction": 0.30, "top1": 0.86, "dropped": ["a", "b"]},  # the line: 0.872, below
        {"target": 0.5, "latency_reduction": 0.50, "top1": 0.84, "dropped": ["a", "b", "c"]},
    ]
    assert operating_points.dominated(points, teacher_top1=0.92) == [0.3]
    assert operating_points.dominated(points[:1] + points[2:], teacher_top1=0.92) == []


def test_targets_that_chose_the_same_blocks_are_one_model_in_the_checks():
    """Two targets with one set of blocks are one model: timed twice (records made before the library reused such a
    point), the noise between its two timings must not make it beat itself or fall below its own line."""
    import operating_points

    points = [
        {"target": 0.2, "latency_reduction": 0.34, "top1": 0.911, "dropped": ["a", "b"]},
        {"target": 0.3, "latency_reduction": 0.35, "top1": 0.911, "dropped": ["a", "b"]},
        {"target": 0.4, "latency_reduction": 0.50, "top1": 0.890, "dropped": ["a", "b", "c"]},
        {"target": 0.5, "latency_reduction": 0.52, "top1": 0.890, "dropped": ["a", "b", "c"]},
    ]
    assert operating_points.beaten(points) == [] and operating_points.dominated(points, 0.92) == []
    for p, own in zip(points, (50.0, 0.0, 40.0, 0.0)):  # the 30% and 50% targets reused a finetune
        p["phase_seconds"] = {"scan": 100.0, "select": 1.0, "finetune": own}
    assert operating_points.one_target_seconds(points) == 141.0  # the scan, and the 40% point's own phases
    (m,) = [m for m in operating_points.models(points) if m["targets"] == [0.2, 0.3]]
    assert m["latency_reduction"] == pytest.approx(0.345)
    worse = [{**points[0], "target": 0.25, "latency_reduction": 0.33, "top1": 0.90, "dropped": ["d"]}]
    assert operating_points.beaten(points + worse) == [0.25] and operating_points.dominated(points + worse, 0.92) == [
        0.25
    ]


def test_a_multi_target_run_alone_renders_and_joins_the_families_page(tmp_path):
    """`--no-single` records the multi-target run only: its page says so, and the families page and figure gather
    every teacher's points (with the ones below the line) from the records under --results."""
    from types import SimpleNamespace

    import operating_points

    phases = {"scan": 10.0, "finetune": 5.0}
    points = [
        {"target": t, "latency_reduction": c, "top1": a, "dropped": list(b), "phase_seconds": phases}
        for t, c, a, b in ((0.2, 0.22, 0.91, "a"), (0.3, 0.31, 0.86, "ab"), (0.5, 0.52, 0.84, "abc"))
    ]
    record = {"teacher": "timm-x", "family": "timm-x", "teacher_top1": 0.92, "num_samples": 50, "seed": 0}
    record.update(targets=[0.2, 0.3, 0.5], single=None, multi={"wall_seconds": 120.0, "points": points}, ratio=None)
    record.update(largest_same_blocks=None, largest_max_weight_difference=None, command="python op.py")
    record.update(dominated=operating_points.dominated(points, 0.92), machine={"cpu": "c", "threads": 2, "torch": "t"})
    page = "\n".join(operating_points.render(record))
    # the one-target run at 50% from the phases: the shared scan (10 s) and its own finetune (5 s)
    assert (
        "(no one-target run beside it: `--no-single`; from the phases, one at 50% would take about 0.2 min: 8.00x)"
        in page
    )
    assert "Wall time" not in page
    assert "| one scan | 30% | -31.0% | 86.00% |" in page and "Largest target" not in page
    assert "Points below the line from the teacher to the largest cut: 30%." in page
    assert "Points another point beats (as large a cut or larger, as high a top-1 or higher): none." in page
    level = [{**points[0], "target": 0.25, "latency_reduction": 0.25, "top1": 0.91, "dropped": ["d"]}]  # beats 20%
    assert operating_points.beaten(points + level) == [0.2]
    operating_points.h.write_json(tmp_path / "operating_points_timm-x.json", record)
    operating_points.families_page(record, SimpleNamespace(results=str(tmp_path)))
    summary = (tmp_path / "operating_points_families.md").read_text()
    row = (
        "| timm-x | 92.00 | -22.0%: -1.00, -31.0%: -6.00, -52.0%: -8.00 | 30% | none | 8.00x (est.) | `python op.py` |"
    )
    assert row in summary
    assert (tmp_path / "operating_points.png").stat().st_size > 0


def test_coverage_measures_batchnorm_statistics_of_a_random_net_as_training_would():
    import torch

    from .conftest import tiny_resnet

    coverage = _coverage_script()
    model = tiny_resnet("resnet18").eval()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()  # timm's init: mean 0, variance 1, whatever the activations are
    model = coverage.trained_like_norms(model, (3, 32, 32))
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert not model.training and all(m.momentum == 0.1 for m in norms)
    assert all(not torch.allclose(m.running_var, torch.ones_like(m.running_var)) for m in norms)
    # in eval mode each norm now normalises its input as a trained one does: the stem's output is standardised
    x = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = model.bn1(model.conv1(x))
    assert y.std(dim=(0, 2, 3)).mean().item() == pytest.approx(model.bn1.weight.abs().mean().item(), rel=0.3)
