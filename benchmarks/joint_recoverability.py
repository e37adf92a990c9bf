"""Does the selection's cost of a set of blocks say how well the set finetunes? (issue #25, the beaten points)

Selection adds the blocks' own recoverabilities (each measured with that block alone dropped) and takes the
cheapest set inside the latency window. For every point of the operating-points runs
(`benchmarks/results/operating_points_<teacher>.json`) this measures, on the same tiny set and scan settings, the
recoverability of the point's blocks dropped together (one adaptor training around all the holes,
`hf_practise.recoverability.set_recoverability`) beside that sum, and asks which of the two orders the points like
their finetuned top-1: over every pair of a teacher's points (distinct block sets, different top-1), the share of
pairs where the set with the lower cost has the higher top-1; and, for each point another point beats, whether the
cost said so.

    python benchmarks/joint_recoverability.py                         # every teacher's default operating points
    python benchmarks/joint_recoverability.py --teachers timm-convnext hf-convnext

Not a timing: each teacher's numbers are cached under --cache/<teacher>.json (delete it to measure again).
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import harness as h

from hf_practise import ScanConfig, get_family
from hf_practise.card import beats
from hf_practise.recoverability import set_recoverability, teacher_features

CACHE = h.CACHE / "joint_recoverability"


def points_of(name: str, results: Path) -> tuple[dict, list[dict]] | None:
    """The operating-points record of `name` and its points, one per distinct block set (None: no record)."""
    path = Path(results) / f"operating_points_{name}.json"
    if not path.exists():
        return None
    record = h.read_json(path)
    seen, points = set(), []
    for point in record["multi"]["points"]:
        key = tuple(sorted(point["dropped"]))
        if key not in seen:
            seen.add(key)
            points.append(point)
    return record, points


def default_runs(results: Path) -> list[str]:
    """The teachers whose operating points were chosen with the default (summed) set cost: the cost compared here."""
    records = sorted(Path(results).glob("operating_points_*.json"))
    return [f.stem.removeprefix("operating_points_") for f in records if "set_cost" not in h.read_json(f)]


def measure(name: str, record: dict, points: list[dict]) -> dict | None:
    """Each block's own recoverability and each point's joint one, on the points run's tiny set and seed."""
    loaded = h.committed_or_cached_teacher(name)
    if loaded is None:
        print(f"skipped {name}: no committed or cached teacher")
        return None
    model, _ = loaded
    family = get_family(model)
    by_path = {b.path: b for b in family.candidates(model)}
    images = h.tiny_images(record["num_samples"], seed=record["seed"])
    targets = teacher_features(model, family, images, batch_size=64).cpu()
    config = ScanConfig().resolved(family)
    seed = record["seed"]

    def recoverability(blocks: list[str]) -> float:
        missing = [b for b in blocks if b not in by_path]
        if missing:
            raise SystemExit(f"{name}: {missing} are not candidates of the teacher (was the record made with units?)")
        refs = [by_path[b] for b in blocks]
        return set_recoverability(model, family, refs, images, targets, config=config, seed=seed)["recoverability"]

    blocks = sorted({b for p in points for b in p["dropped"]}, key=list(by_path).index)
    single = {}
    for b in blocks:
        single[b] = recoverability([b])
        print(f"{name} {b}: {single[b]:.4g}", flush=True)
    rows = []
    for p in points:
        joint = recoverability(p["dropped"])
        rows.append(
            {
                "target": p["target"],
                "cut": p["latency_reduction"],
                "top1": p["top1"],
                "change": 100 * (p["top1"] - record["teacher_top1"]),
                "blocks": len(p["dropped"]),
                "summed": sum(single[b] for b in p["dropped"]),
                "joint": joint,
            }
        )
        print(f"{name} {p['target']:g}: summed {rows[-1]['summed']:.4g}, joint {joint:.4g}", flush=True)
    return {"teacher_top1": record["teacher_top1"], "single": single, "points": rows}


def agreement(rows: list[dict], key: str) -> tuple[int, int]:
    """(pairs ordered like top-1 by `key`, pairs compared): lower cost with higher top-1 agrees."""
    agree = total = 0
    for a, b in itertools.combinations(rows, 2):
        if a["top1"] == b["top1"]:
            continue
        total += 1
        agree += (a[key] < b[key]) == (a["top1"] > b["top1"])
    return agree, total


def beaten_pairs(rows: list[dict]) -> list[tuple[dict, dict]]:
    """(beaten, by) pairs: `by` cuts at least as much and scores at least as high, one of them strictly."""
    return [(a, b) for a, b in itertools.permutations(rows, 2) if beats((b["cut"], b["top1"]), (a["cut"], a["top1"]))]


def run(p, args) -> dict | None:
    if h.skipped():
        return None
    teachers = {}
    for name in args.teachers or default_runs(args.results):
        found = points_of(name, args.results)
        if found is None:
            print(f"skipped {name}: no operating_points_{name}.json (run benchmarks/operating_points.py first)")
            continue
        cache = Path(args.cache) / f"{name}.json"
        if cache.exists():
            teachers[name] = h.read_json(cache)
            continue
        with h.threads(args.threads):
            measured = measure(name, *found)
        if measured is not None:
            h.write_json(cache, measured)
            teachers[name] = measured
    return {"teachers": teachers}


def render(record: dict) -> list[str]:
    lines = ["# Summed against joint recoverability", ""]
    lines += [
        "For every point of the operating-points runs: *summed*, the cost selection gives its blocks (each block's "
        "recoverability with that block alone dropped, added up); *joint*, the recoverability of the point's blocks "
        "dropped together (one adaptor training around all the holes, the scan's steps and rate). Same tiny set and "
        "seed as the points run. *Agrees*: of the pairs of a teacher's points, those where the lower cost has the "
        "higher finetuned top-1.",
        "",
    ]
    lines += h.table(
        "teacher | point: cut, top-1 change, summed, joint | >summed agrees | >joint agrees | beaten point: cost says so (summed, joint)",
        (
            [
                name,
                "<br>".join(
                    f"{100 * r['cut']:.1f}%: {r['change']:+.2f}, {r['summed']:.3g}, {r['joint']:.3g}"
                    for r in t["points"]
                ),
                "{}/{}".format(*agreement(t["points"], "summed")),
                "{}/{}".format(*agreement(t["points"], "joint")),
                ", ".join(
                    f"{100 * a['cut']:.0f}% by {100 * b['cut']:.0f}% ({'yes' if b['summed'] < a['summed'] else 'no'}, "
                    f"{'yes' if b['joint'] < a['joint'] else 'no'})"
                    for a, b in beaten_pairs(t["points"])
                )
                or "none beaten",
            ]
            for name, t in record["teachers"].items()
        ),
    )
    both = [agreement(t["points"], k) for t in record["teachers"].values() for k in ("summed", "joint")]
    summed = [sum(x) for x in zip(*both[0::2])] if both else [0, 0]
    joint = [sum(x) for x in zip(*both[1::2])] if both else [0, 0]
    lines += [
        "",
        f"All teachers: the summed cost orders {summed[0]} of {summed[1]} pairs like top-1, the joint one {joint[0]} of {joint[1]}.",
    ]
    return lines + ["", f"Command: `{record['command']}`", "", f"Machine: {record['machine']}"]


def main() -> int:
    p = h.parser(__doc__)
    p.add_argument("--teachers", nargs="+", default=None, help="default: every teacher with operating points")
    p.add_argument("--threads", type=int, default=None)
    h.folders(p, cache=CACHE)
    return h.study(p, stem="joint_recoverability", run=run, render=render)


if __name__ == "__main__":
    sys.exit(main())
