"""Does a finetune default cost any families row? The old and the new default on the same blocks, per row.

    python benchmarks/default_check.py                  # reads results/finetune_sweep_*_newdefault*.json

Each finetune sweep named `*_newdefault*` (benchmarks/finetune_sweep.py, one teacher, one target, one seed, the
same blocks for every run) holds a run with the paper's objective (features, no augmentation) and runs with other
objectives and augmentations at the same optimizer, rate and steps. This prints, and writes to
results/default_check.{json,md}, one row per sweep: the paper's finetune, each other finetune of the sweep, and
their difference in points. A new default may cost no row more than `--max-loss` points (issue rule: 0.3).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from compare import write_json  # noqa: E402

RESULTS = HERE / "results"
PAPER = ("features", "none", False)
PATTERN = "finetune_sweep_*_newdefault*.json"


def finetune_key(row: dict) -> str:
    """`objective[, augmentation][, bn]` of a sweep row."""
    parts = [row.get("objective", "features")]
    if row.get("augmentation", "none") != "none":
        parts.append(row["augmentation"])
    if row.get("recalibrate_norms"):
        parts.append("bn")
    return ", ".join(parts)


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
            out.append(
                {
                    "teacher": sweep["teacher"],
                    "target": sweep["target"],
                    "seed": sweep["seed"],
                    "optimizer": base["optimizer"],
                    "lr": base["lr"],
                    "iterations": base["iterations"],
                    "dropped": base["dropped"],
                    "paper_top1": base["top1"],
                    "finetune": finetune_key(other),
                    "top1": other["top1"],
                    "difference": other["top1"] - base["top1"],
                    "teacher_top1": base["teacher_top1"],
                }
            )
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", default=str(RESULTS))
    p.add_argument("--pattern", default=PATTERN)
    p.add_argument("--finetune", default="features+kd, mixup", help="the candidate default, as the table names it")
    p.add_argument("--max-loss", type=float, default=0.3, help="points a row may lose")
    args = p.parse_args()
    files = sorted(Path(args.results).glob(args.pattern))
    if not files:
        print(f"no sweeps matching {args.pattern} under {args.results}: run benchmarks/finetune_sweep.py first")
        return 1
    sweeps = {f.name: json.loads(f.read_text()) for f in files}
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
        mark = (
            " **(over the limit)**" if r["finetune"] == args.finetune and 100 * r["difference"] < -args.max_loss else ""
        )
        lines.append(
            f"| {r['teacher']} | {100 * r['target']:.0f}% | {r['seed']} | {r['optimizer']} {r['lr']:g}, "
            f"{r['iterations']} | {100 * r['paper_top1']:.2f}% | {r['finetune']} | {100 * r['top1']:.2f}% "
            f"| {100 * r['difference']:+.2f}{mark} |"
        )
    lines.append("")
    for steps in sorted({r["iterations"] for r in rows}):
        mine = [r for r in rows if r["finetune"] == args.finetune and r["iterations"] == steps]
        if not mine:
            continue
        over = [r for r in mine if 100 * r["difference"] < -args.max_loss]
        worst = min(mine, key=lambda r: r["difference"])
        lines.append(
            f"- `{args.finetune}` at {steps} steps, {len(mine)} rows: worst {100 * worst['difference']:+.2f} points "
            f"({worst['teacher']} {100 * worst['target']:.0f}% seed {worst['seed']}); "
            + (
                f"{len(over)} lose more than {args.max_loss:g}: "
                + ", ".join(f"{r['teacher']} {100 * r['target']:.0f}% seed {r['seed']}" for r in over)
                if over
                else f"none loses more than {args.max_loss:g}."
            )
        )
    if skipped:
        lines += [
            "",
            "Runs whose blocks differ from the paper's run of their sweep (a re-timed selection, before the sweep kept "
            "the first run's blocks) are left out: " + ", ".join(f"`{n}`" for n in skipped) + ".",
        ]
    lines += ["", "Sweeps read:", ""] + [f"- `{name}`: `{sweep['command']}`" for name, sweep in sweeps.items()]
    machines = sorted({f"{s['machine']['cpu']}, torch {s['machine']['torch']}" for s in sweeps.values()})
    command = "python benchmarks/default_check.py" + (f" --pattern '{args.pattern}'" if args.pattern != PATTERN else "")
    lines += ["", f"Command: `{command}`; the sweeps ran on: {'; '.join(machines)}."]
    out = Path(args.results) / "default_check"
    write_json(
        out.with_suffix(".json"),
        {"rows": rows, "files": list(sweeps), "max_loss": args.max_loss, "command": command, "machines": machines},
    )
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
