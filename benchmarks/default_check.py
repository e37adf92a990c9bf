"""Does a finetune default cost any families row? The paper's finetune and the others of each sweep on the same blocks.

    python benchmarks/default_check.py                  # reads results/finetune_sweep_*_newdefault*.json

Each `*_newdefault*` sweep (benchmarks/finetune_sweep.py: one teacher, target and seed, the same blocks for every
run) holds the paper's finetune (features, no augmentation) and others at the same optimizer, rate and steps. A new
default may cost no row more than `--max-loss` points (issue rule: 0.3).
"""

from __future__ import annotations

import sys
from pathlib import Path

import harness as h

PAPER = ("features", "none", False)
PATTERN = "finetune_sweep_*_newdefault*.json"


def finetune_key(row: dict) -> str:
    """`objective[, augmentation][, bn]` of a sweep row."""
    parts = [row.get("objective", "features")]
    parts += [row["augmentation"]] if row.get("augmentation", "none") != "none" else []
    return ", ".join(parts + (["bn"] if row.get("recalibrate_norms") else []))


def rows_of(sweep: dict) -> list[dict]:
    """Each non-paper run of `sweep` beside the paper's run at the same optimizer, rate and steps."""
    out = []
    for base in sweep["rows"]:
        if (
            base.get("objective", "features"),
            base.get("augmentation", "none"),
            base.get("recalibrate_norms"),
        ) != PAPER:
            continue
        for other in sweep["rows"]:
            same = all(other[k] == base[k] for k in ("optimizer", "lr", "iterations"))
            # before finetune_sweep fixed the blocks for every run, a re-timed selection could change them
            if other is base or not same or sorted(other["dropped"]) != sorted(base["dropped"]):
                continue
            row = {k: sweep[k] for k in ("teacher", "target", "seed")}
            row.update({k: base[k] for k in ("optimizer", "lr", "iterations", "dropped")}, paper_top1=base["top1"])
            row.update(finetune=finetune_key(other), top1=other["top1"], difference=other["top1"] - base["top1"])
            out.append({**row, "teacher_top1": base["teacher_top1"]})
    return out


def run(p, args) -> dict | None:
    files = sorted(Path(args.results).glob(args.pattern))
    if not files:
        print(f"no sweeps matching {args.pattern} under {args.results}: run benchmarks/finetune_sweep.py first")
        raise SystemExit(1)
    sweeps = {f.name: h.read_json(f) for f in files}
    rows, seen, skipped = [], set(), []
    for name, sweep in sweeps.items():  # a run in two sweeps of one work dir (a finished finetune reused) counts once
        if len({tuple(sorted(r["dropped"])) for r in sweep["rows"]}) > 1:
            skipped.append(name)
        for r in rows_of(sweep):
            key = tuple(r[k] for k in ("teacher", "target", "seed", "optimizer", "lr", "iterations", "finetune"))
            if key not in seen:
                seen.add(key)
                rows.append(r)
    rows.sort(key=lambda r: (r["teacher"], r["target"], r["seed"], r["iterations"], r["finetune"]))
    machines = sorted({f"{s['machine']['cpu']}, torch {s['machine']['torch']}" for s in sweeps.values()})
    command = "python benchmarks/default_check.py" + (f" --pattern '{args.pattern}'" if args.pattern != PATTERN else "")
    record = {"rows": rows, "files": list(sweeps), "max_loss": args.max_loss, "command": command, "machines": machines}
    return record | {"commands": [s["command"] for s in sweeps.values()], "skipped": skipped, "finetune": args.finetune}


def render(record: dict) -> list[str]:
    rows, limit, finetune = record["rows"], record["max_loss"], record["finetune"]
    lines = [
        "# A finetune default against the paper's, on every families row",
        "",
        "Each row: one teacher, target and seed, the same blocks for both finetunes (a `benchmarks/finetune_sweep.py` "
        "sweep in the families benchmark's work dir: its scan, its selection re-timed, so the blocks can differ from "
        "the families row's where a timing moved), 500 Fashion-MNIST train images, top-1 on the 10,000 test images. "
        "*Paper*: feature mimicking (MSE on pre-pooling features), no augmentation.",
        "",
        "| teacher | target | seed | optimizer, steps | paper | finetune | top-1 | difference |",
        "| --- | ---: | ---: | --- | ---: | --- | ---: | ---: |",
    ]
    for r in rows:
        mark = " **(over the limit)**" if r["finetune"] == finetune and 100 * r["difference"] < -limit else ""
        lines.append(
            f"| {r['teacher']} | {100 * r['target']:.0f}% | {r['seed']} | {r['optimizer']} {r['lr']:g}, "
            f"{r['iterations']} | {100 * r['paper_top1']:.2f}% | {r['finetune']} | {100 * r['top1']:.2f}% "
            f"| {100 * r['difference']:+.2f}{mark} |"
        )
    lines.append("")
    for steps in sorted({r["iterations"] for r in rows}):
        mine = [r for r in rows if r["finetune"] == finetune and r["iterations"] == steps]
        if not mine:
            continue
        over = [
            f"{r['teacher']} {100 * r['target']:.0f}% seed {r['seed']}" for r in mine if 100 * r["difference"] < -limit
        ]
        worst = min(mine, key=lambda r: r["difference"])
        lines.append(
            f"- `{finetune}` at {steps} steps, {len(mine)} rows: worst {100 * worst['difference']:+.2f} points "
            f"({worst['teacher']} {100 * worst['target']:.0f}% seed {worst['seed']}); "
            + (
                f"{len(over)} lose more than {limit:g}: " + ", ".join(over)
                if over
                else f"none loses more than {limit:g}."
            )
        )
    if record["skipped"]:
        lines += [
            "",
            "Runs whose blocks differ from the paper's run of their sweep (a re-timed selection, before the sweep kept "
            "the first run's blocks) are left out: " + ", ".join(f"`{n}`" for n in record["skipped"]) + ".",
        ]
    lines += ["", "Sweeps read:", ""] + [f"- `{n}`: `{c}`" for n, c in zip(record["files"], record["commands"])]
    return lines + ["", f"Command: `{record['command']}`; the sweeps ran on: {'; '.join(record['machines'])}."]


def main() -> int:
    p = h.parser(__doc__)
    p.add_argument("--results", default=str(h.RESULTS))
    p.add_argument("--pattern", default=PATTERN)
    p.add_argument("--finetune", default="features+kd, mixup", help="the candidate default, as the table names it")
    p.add_argument("--max-loss", type=float, default=0.3, help="points a row may lose")
    return h.study(p, stem=lambda a: Path(a.results) / "default_check", run=run, render=render)


if __name__ == "__main__":
    sys.exit(main())
