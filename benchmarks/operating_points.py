"""Every operating point from one scan (issue #25): what a multi-target run costs against a one-target run at its
largest target, whether its points are that run's, and whether any point is dominated.

Two runs of the same teacher, tiny set and seed, each in a fresh work dir, one after the other on this machine:
`--latency-reduction MAX` alone, then `--latency-reduction T1 ... MAX` (one latency table, one scan, one selection
and one finetune per target). Wall time of each, by phase; for the largest target the blocks and the largest weight
difference between the two models; for every point, whether it lies on or above the line from the teacher to the
point with the largest cut (top-1 against measured latency cut).

    python benchmarks/operating_points.py                                  # resnet34-fmnist, 0.2 0.3 0.4 0.5
    python benchmarks/operating_points.py --teacher timm-vit --targets 0.22 0.5
    python benchmarks/operating_points.py --teacher timm-repvit --no-single   # the multi-target run alone

`--no-single` runs only the multi-target run (its points and the dominance check, no wall-time ratio). After every
run, `operating_points_families.md` and `operating_points.png` gather the points of every teacher recorded so far:
top-1 loss against the measured cut, the teacher at the origin.

Timing: nothing else may run on the machine meanwhile (the ratio is of two wall times).
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import fmnist
import harness as h
import torch

from hf_practise import CompressionConfig, FinetuneConfig, LatencyConfig, PractiseCompressor
from hf_practise.card import beats
from hf_practise.files import atomic_write_text

logger = logging.getLogger("operating_points")


def one_run(teacher: torch.nn.Module, targets: list[float], args, tiny, test) -> tuple[object, float]:
    """(the result, its wall seconds) of one compression at `targets` in a fresh work dir."""
    with tempfile.TemporaryDirectory(prefix="points-") as work:
        config = CompressionConfig(
            latency_reduction=targets if len(targets) > 1 else targets[0],
            seed=args.seed,
            work_dir=work,
            finetune=FinetuneConfig(checkpoint_every=0, iterations=args.iterations),
            latency=LatencyConfig(batch_size=64, repeats=20, input_size=h.INPUT),
            set_cost=args.set_cost,
        )
        start = time.perf_counter()
        result = PractiseCompressor(teacher, config).compress(tiny, test)
        return result, time.perf_counter() - start


def point_record(result) -> dict:
    return {
        "target": result.config.latency_reduction,
        "latency_reduction": result.latency.reduction,
        "top1": result.top1_after,
        "dropped": sorted(r.block for r in result.dropped),
        "phase_seconds": result.phase_seconds,
        "selection": [c.to_dict() for c in result.selection],
    }


SHARED_PHASES = ("data", "latency_table", "teacher_features", "scan", "rescore")


def one_target_seconds(points: list[dict]) -> float:
    """What a one-target run at the largest target would take, from the multi-target run's phases: the shared ones
    (latency table, scan, ...) and the own ones (selection, finetune, measurement, evaluation) of the point that
    finetuned the largest target's blocks (an earlier target's, when they chose the same ones). An estimate: the
    resnet34's measured one-target run took 211 s where this gives 206 s."""
    last = max(points, key=lambda p: p["target"])
    first = next(p for p in sorted(points, key=lambda p: p["target"]) if p["dropped"] == last["dropped"])
    shared = sum(v for k, v in last["phase_seconds"].items() if k in SHARED_PHASES)
    return shared + sum(v for k, v in first["phase_seconds"].items() if k not in SHARED_PHASES)


def models(points: list[dict]) -> list[dict]:
    """The distinct models among the points: targets that chose the same blocks are one model (since the library
    reuses such a point, one measurement; records made before that timed it once per target, averaged here)."""
    groups: dict[tuple, list[dict]] = {}
    for p in points:
        groups.setdefault(tuple(p["dropped"]), []).append(p)
    mean = lambda ps, k: sum(p[k] for p in ps) / len(ps)  # noqa: E731
    return [
        {
            "targets": [p["target"] for p in ps],
            "latency_reduction": mean(ps, "latency_reduction"),
            "top1": mean(ps, "top1"),
        }
        for ps in groups.values()
    ]


def dominated(points: list[dict], teacher_top1: float) -> list[float]:
    """The targets whose model lies below the line from the teacher (cut 0) to the model with the largest cut."""
    ms = models(points)
    last = max(ms, key=lambda m: m["latency_reduction"])
    slope = (last["top1"] - teacher_top1) / last["latency_reduction"]
    below = [m for m in ms if m["top1"] < teacher_top1 + slope * m["latency_reduction"] - 1e-9]
    return sorted(t for m in below for t in m["targets"])


def beaten(points: list[dict]) -> list[float]:
    """The targets whose model another model beats: at least as large a cut and at least as high a top-1, one of
    them strictly (what a user choosing an operating point would never take)."""
    ms = models(points)
    key = lambda m: (m["latency_reduction"], m["top1"])  # noqa: E731
    worse = [m for m in ms if any(n is not m and beats(key(n), key(m)) for n in ms)]
    return sorted(t for m in worse for t in m["targets"])


def run(p, args) -> dict | None:
    found = h.committed_or_cached_teacher(args.teacher)
    if found is None:
        return None
    teacher, meta = found
    tiny, test = h.tiny_images(args.num_samples, args.seed), fmnist.load("test")
    targets = sorted(args.targets)
    single, single_s = one_run(teacher, targets[-1:], args, tiny, test) if args.single else (None, None)
    multi, multi_s = one_run(teacher, targets, args, tiny, test)
    points = [point_record(r) for r in multi.points or [multi]]
    same = gap = None
    if single is not None:
        same = sorted(r.block for r in single.dropped) == points[-1]["dropped"]
    if same:  # the two models of the largest target: weights to float rounding when the blocks agree
        a, b = single.model.state_dict(), multi.model.state_dict()
        gap = max((a[k].float() - b[k].float()).abs().max().item() for k in a if a[k].is_floating_point())
    return {
        "teacher": args.teacher,
        **({"set_cost": args.set_cost} if args.set_cost != "summed" else {}),
        "family": multi.family.name,
        "teacher_top1": meta["top1"],
        "num_samples": args.num_samples,
        "seed": args.seed,
        "targets": targets,
        "single": {**point_record(single), "wall_seconds": single_s} if single is not None else None,
        "multi": {"wall_seconds": multi_s, "points": points},
        "ratio": multi_s / single_s if single is not None else None,
        "largest_same_blocks": same,
        "largest_max_weight_difference": gap,
        "dominated": dominated(points, meta["top1"]),
    }


def render(r: dict) -> list[str]:
    targets = " ".join(f"{t:g}" for t in r["targets"])
    single = r["single"]
    lines = [f"# Operating points from one scan: {label(r)}", ""]
    if single is None:
        lines += [
            f"{r['num_samples']} Fashion-MNIST train images (seed {r['seed']}); top-1 on the 10,000 test images. "
            f"`--latency-reduction {targets}` in one run from a fresh work dir: "
            f"{r['multi']['wall_seconds'] / 60:.1f} min (no one-target run beside it: `--no-single`; from the "
            f"phases, one at {100 * r['targets'][-1]:.0f}% would take about "
            f"{one_target_seconds(r['multi']['points']) / 60:.1f} min: "
            f"{r['multi']['wall_seconds'] / one_target_seconds(r['multi']['points']):.2f}x).",
            "",
        ]
    else:
        lines += [
            f"{r['num_samples']} Fashion-MNIST train images (seed {r['seed']}); top-1 on the 10,000 test images. "
            f"`--latency-reduction {targets}` in one run against `--latency-reduction {r['targets'][-1]:g}` alone, "
            "each from a fresh work dir, one after the other.",
            "",
            f"**Wall time: {r['multi']['wall_seconds'] / 60:.1f} min for {len(r['targets'])} targets against "
            f"{single['wall_seconds'] / 60:.1f} min for one: {r['ratio']:.2f}x.**",
            "",
        ]
    phases = sorted({k for p in [*([single] if single else []), *r["multi"]["points"]] for k in p["phase_seconds"]})
    rows = []
    if single is not None:
        rows.append(
            ["one target", f"{100 * single['target']:.0f}%", f"-{100 * single['latency_reduction']:.1f}%"]
            + [f"{100 * single['top1']:.2f}%"]
            + [f"{single['phase_seconds'].get(k, 0):.0f}" for k in phases]
        )
    for p in r["multi"]["points"]:
        rows.append(
            [
                "one scan",
                f"{100 * p['target']:.0f}%",
                f"-{100 * p['latency_reduction']:.1f}%",
                f"{100 * p['top1']:.2f}%",
            ]
            + [f"{p['phase_seconds'].get(k, 0):.0f}" for k in phases]
        )
    lines += h.table(" | ".join(["run", ">target", ">measured cut", ">top-1", *(f">{k} (s)" for k in phases)]), rows)
    lines += [
        "",
        "Phase seconds: each point's own (selection, finetune, measurement) after the shared ones (latency table, "
        "scan), which every point of the multi-target run repeats in its row.",
        "",
    ]
    if single is not None:
        lines.append(
            f"- Largest target: the same blocks in both runs: {'yes' if r['largest_same_blocks'] else 'no'}"
            + (
                f"; largest weight difference {r['largest_max_weight_difference']:.2g}"
                if r["largest_max_weight_difference"] is not None
                else " (each run timed its own latency table; a different table can select other blocks)"
            )
            + "."
        )
    lines += [
        f"- Teacher {100 * r['teacher_top1']:.2f}%. Points below the line from the teacher to the largest cut: "
        + (", ".join(f"{100 * t:.0f}%" for t in dominated(r["multi"]["points"], r["teacher_top1"])) or "none")
        + ". Points another point beats (as large a cut or larger, as high a top-1 or higher): "
        + (", ".join(f"{100 * t:.0f}%" for t in beaten(r["multi"]["points"])) or "none")
        + ".",
        "",
        f"Command: `{r['command']}` ({r['machine']['cpu']}, {r['machine']['threads']} threads, torch "
        f"{r['machine']['torch']}).",
    ]
    return lines


def label(record: dict) -> str:
    """The teacher's name, and the set cost where it is not the default."""
    cost = record.get("set_cost", "summed")
    return record["teacher"] + (f" (--set-cost {cost})" if cost != "summed" else "")


def families_page(record: dict, args) -> None:
    """`operating_points_families.md` and `operating_points.png` from every teacher's record under --results: each
    teacher's points as top-1 loss against the measured cut, with the points below its teacher-to-largest line."""
    records = [h.read_json(p) for p in sorted(Path(args.results).glob("operating_points_*.json"))]
    curves = [(r, sorted(r["multi"]["points"], key=lambda p: p["latency_reduction"])) for r in records if "multi" in r]
    rows = []
    for r, pts in curves:
        cells = ", ".join(
            f"-{100 * p['latency_reduction']:.1f}%: {100 * (p['top1'] - r['teacher_top1']):+.2f}" for p in pts
        )
        below = ", ".join(f"{100 * t:.0f}%" for t in dominated(r["multi"]["points"], r["teacher_top1"])) or "none"
        worse = ", ".join(f"{100 * t:.0f}%" for t in beaten(r["multi"]["points"])) or "none"
        ratio = r["ratio"] or r["multi"]["wall_seconds"] / one_target_seconds(r["multi"]["points"])
        measured = "" if r["ratio"] else " (est.)"
        rows.append(
            [label(r), f"{100 * r['teacher_top1']:.2f}", cells, below, worse, f"{ratio:.2f}x{measured}"]
            + [f"`{r['command']}`"]
        )
    lines = [
        "# Operating points of every teacher",
        "",
        "One multi-target run per teacher (`benchmarks/operating_points.py`): each point's measured latency cut and "
        "its top-1 against the teacher's (points). *Below the line*: points under the straight line from the teacher "
        "to the point with the largest cut. *Beaten*: points another point beats (as large a cut or larger and as "
        "high a top-1 or higher); both count targets that chose the same blocks as one model. *Wall time*: the "
        "multi-target run's against a one-target run at its largest target, measured, or (est.) estimated from "
        "the run's phases (the shared ones, and the own ones of the point that finetuned the largest target's "
        "blocks).",
        "",
        *h.table(
            "teacher | >teacher top-1 (%) | points (cut: top-1 change) | below the line | beaten | >wall time | command",
            rows,
        ),
        "",
        "![top-1 loss against the measured cut](operating_points.png)",
    ]
    atomic_write_text(Path(args.results) / "operating_points_families.md", "\n".join(lines) + "\n")
    plt = h.pyplot()
    if plt is None:
        return
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r, pts in curves:
        xs = [0.0] + [100 * p["latency_reduction"] for p in pts]
        ys = [0.0] + [100 * (p["top1"] - r["teacher_top1"]) for p in pts]
        joint = r.get("set_cost") == "joint"
        ax.plot(xs, ys, marker="o", markersize=4, label=label(r), linestyle="--" if joint else "-")
    ax.axhline(0, color="grey", linewidth=0.5)
    ax.set_xlabel("measured latency cut (%)")
    ax.set_ylabel("top-1 change against the teacher (points)")
    ax.set_title("Every operating point from one scan, per teacher (Fashion-MNIST, 500 images)", fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(Path(args.results) / "operating_points.png", dpi=120)
    plt.close(fig)


def main() -> int:
    p = h.parser(__doc__)
    p.add_argument("--teacher", default=h.RESNET34.name, help="a families teacher name, or resnet34-fmnist")
    p.add_argument("--targets", type=float, nargs="+", default=[0.2, 0.3, 0.4, 0.5])
    p.add_argument("--num-samples", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--iterations", type=int, default=FinetuneConfig.iterations, help="finetune steps per point")
    single = "also run the largest target alone first (the wall-time ratio and the same-blocks check)"
    p.add_argument("--single", action=argparse.BooleanOptionalAction, default=True, help=single)
    cost = "how selection costs a set of blocks (CompressionConfig.set_cost); joint writes operating_points_<teacher>_joint"
    p.add_argument("--set-cost", choices=("summed", "joint"), default="summed", help=cost)
    h.folders(p)
    suffix = lambda a: "" if a.set_cost == "summed" else f"_{a.set_cost}"  # noqa: E731
    stem = lambda a: Path(a.results) / f"operating_points_{a.teacher}{suffix(a)}"  # noqa: E731
    return h.study(p, stem=stem, run=run, render=render, after=families_page)


if __name__ == "__main__":
    raise SystemExit(main())
