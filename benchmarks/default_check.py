"""Does a finetune default cost any families row? The paper's finetune and the others of each sweep on the same blocks.

    python benchmarks/default_check.py                  # reads results/finetune_sweep_*_newdefault*.json

Each `*_newdefault*` sweep (benchmarks/finetune_sweep.py: one teacher, target and seed, the same blocks for every
run) holds the paper's finetune (features, no augmentation) and others at the same optimizer, rate and steps. A new
default may cost no row more than 0.3 points (the issue's rule).
"""

from __future__ import annotations

import sys
from pathlib import Path

import harness as h

PATTERN = "finetune_sweep_*_newdefault*.json"
FINETUNE, MAX_LOSS = "features+kd, mixup", 0.3  # the candidate default, as the table names it; points a row may lose
SAME = ("optimizer", "lr", "iterations")


def finetune_key(row: dict) -> str:
    """`objective[, augmentation][, bn]` of a sweep row."""
    parts = [row.get("objective", "features")]
    parts += [row["augmentation"]] if row.get("augmentation", "none") != "none" else []
    return ", ".join(parts + (["bn"] if row.get("recalibrate_norms") else []))


def rows_of(sweep: dict) -> list[dict]:
    """Each non-paper run of `sweep` beside the paper's run at the same optimizer, rate and steps (and blocks: before
    finetune_sweep fixed the blocks for every run, a re-timed selection could change them)."""
    out = []
    for base in (r for r in sweep["rows"] if finetune_key(r) == "features"):  # the paper's finetune
        for other in sweep["rows"]:
            if other is base or [other[k] for k in SAME] != [base[k] for k in SAME]:
                continue
            if sorted(other["dropped"]) == sorted(base["dropped"]):
                row = {k: sweep[k] for k in ("teacher", "target", "seed")}
                row.update(
                    {k: base[k] for k in (*SAME, "dropped")}, paper_top1=base["top1"], finetune=finetune_key(other)
                )
                row.update(
                    top1=other["top1"], difference=other["top1"] - base["top1"], teacher_top1=base["teacher_top1"]
                )
                out.append(row)
    return out


def run(p, args) -> dict | None:
    sweeps = {f.name: h.read_json(f) for f in sorted(Path(args.results).glob(PATTERN))}
    if not sweeps:
        print(f"no sweeps matching {PATTERN} under {args.results}: run benchmarks/finetune_sweep.py first")
        raise SystemExit(1)
    rows, seen, skipped = [], set(), []
    for name, sweep in sweeps.items():  # a run in two sweeps of one work dir (a finished finetune reused) counts once
        if len({tuple(sorted(r["dropped"])) for r in sweep["rows"]}) > 1:
            skipped.append(name)
        for r in rows_of(sweep):
            key = tuple(r[k] for k in ("teacher", "target", "seed", *SAME, "finetune"))
            if key not in seen:
                seen.add(key)
                rows.append(r)
    rows.sort(key=lambda r: (r["teacher"], r["target"], r["seed"], r["iterations"], r["finetune"]))
    machines = sorted({f"{s['machine']['cpu']}, torch {s['machine']['torch']}" for s in sweeps.values()})
    record = {"rows": rows, "files": list(sweeps), "max_loss": MAX_LOSS, "machines": machines, "skipped": skipped}
    return {**record, "commands": [s["command"] for s in sweeps.values()], "finetune": FINETUNE}


def render(record: dict) -> list[str]:
    rows, limit, finetune = record["rows"], record["max_loss"], record.get("finetune", FINETUNE)
    over = [r for r in rows if r["finetune"] == finetune and 100 * r["difference"] < -limit]
    lines = [
        "# A finetune default against the paper's, on every families row",
        "",
        "Each row: one teacher, target and seed, the same blocks for both finetunes (a `benchmarks/finetune_sweep.py` "
        "sweep in the families benchmark's work dir: its scan, its selection re-timed, so the blocks can differ from "
        "the families row's where a timing moved), 500 Fashion-MNIST train images, top-1 on the 10,000 test images. "
        "*Paper*: feature mimicking (MSE on pre-pooling features), no augmentation.",
        "",
        *h.table(
            "teacher | >target | >seed | optimizer, steps | >paper | finetune | >top-1 | >difference",
            (
                [
                    r["teacher"],
                    f"{100 * r['target']:.0f}%",
                    r["seed"],
                    f"{r['optimizer']} {r['lr']:g}, {r['iterations']}",
                ]
                + [f"{100 * r['paper_top1']:.2f}%", r["finetune"], f"{100 * r['top1']:.2f}%"]
                + [f"{100 * r['difference']:+.2f}" + (" **(over the limit)**" if r in over else "")]
                for r in rows
            ),
        ),
        "",
    ]
    for steps in sorted({r["iterations"] for r in rows}):
        mine = [r for r in rows if r["finetune"] == finetune and r["iterations"] == steps]
        if not mine:
            continue
        lost = [f"{r['teacher']} {100 * r['target']:.0f}% seed {r['seed']}" for r in mine if r in over]
        worst = min(mine, key=lambda r: r["difference"])
        lines.append(
            f"- `{finetune}` at {steps} steps, {len(mine)} rows: worst {100 * worst['difference']:+.2f} points "
            f"({worst['teacher']} {100 * worst['target']:.0f}% seed {worst['seed']}); "
            + (
                f"{len(lost)} lose more than {limit:g}: " + ", ".join(lost)
                if lost
                else f"none loses more than {limit:g}."
            )
        )
    if record.get("skipped"):
        lines += [
            "",
            "Runs whose blocks differ from the paper's run of their sweep (a re-timed selection, before the sweep kept "
            "the first run's blocks) are left out: " + ", ".join(f"`{n}`" for n in record["skipped"]) + ".",
        ]
    # a record from before the sweeps' commands were kept names the files only
    commands = [f": `{c}`" for c in record.get("commands", [])] or [""] * len(record["files"])
    lines += h.section("Sweeps read:", [f"- `{n}`{c}" for n, c in zip(record["files"], commands)])
    return lines + ["", f"Command: `{record['command']}`; the sweeps ran on: {'; '.join(record['machines'])}."]


def main() -> int:
    p = h.parser(__doc__)
    h.folders(p)
    return h.study(p, stem="default_check", run=run, render=render)


if __name__ == "__main__":
    sys.exit(main())
