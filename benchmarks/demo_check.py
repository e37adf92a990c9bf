"""What `make demo` shows, under the default finetune and under others, on one machine in one run.

    python benchmarks/demo_check.py                              # default, paper's finetune, 1,000 steps

Runs `examples/demo.py` once per variant, every variant in one output folder (so the digits, the teacher and the
scan are the same for all), and reads each compressed model's `practise_report.json`. Needs nothing but the package.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import time
from pathlib import Path

import harness as h

DEMO = h.HERE.parent / "examples" / "demo.py"
VARIANTS = ["", "--objective features --augmentation none", "--iterations 1000"]


def render(doc: dict) -> list[str]:
    lines = [
        "# `make demo`, finetune variants",
        "",
        "`examples/demo.py` (scikit-learn digits, resnet18 teacher, 200 images, 30% latency target, scan 50 steps), "
        "each variant in one folder: the same digits, teacher and scan; the selection is timed in each run, so the "
        "blocks can differ where a set sits at the target's edge. Top-1 on the 450 test digits; a run's wall time "
        "includes training the teacher when the folder held none.",
        "",
    ]

    def lr(r: dict) -> str:
        diverged = ", ".join(f"{x:g}" for x in r["diverged_lrs"])
        return f"{r['lr']:g}" + (f" (diverged at {diverged})" if diverged else "")

    lines += h.table(
        "demo flags | objective | augmentation | >steps | lr | >top-1 before | >after | >latency | dropped | >wall",
        (
            [f"`{r['variant']}`", r["objective"], r["augmentation"], r["iterations"], lr(r)]
            + [
                f"{100 * r['top1_before']:.2f}%",
                f"{100 * r['top1_after']:.2f}%",
                f"-{100 * r['latency_reduction']:.1f}%",
            ]
            + [", ".join(r["dropped"]), f"{r['seconds']:.0f} s"]
            for r in doc["rows"]
        ),
    )
    return lines + ["", f"Command: `{doc['command']}` ({h.machine_text(doc['machine'])})"]


def run(p, args) -> dict:
    rows = []
    for variant in VARIANTS:
        began = time.perf_counter()
        cmd = [sys.executable, str(DEMO), "--output-dir", args.cache, *shlex.split(variant)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        seconds = time.perf_counter() - began
        if done.returncode != 0:
            print(done.stdout[-3000:], done.stderr[-3000:])
            raise SystemExit(f"demo failed with `{variant}`")
        report = h.read_json(Path(args.cache) / "compressed" / "practise_report.json")
        ft = report["config"]["finetune"]
        r = {"variant": variant or "(as is)", **{k: ft[k] for k in ("objective", "augmentation", "iterations", "lr")}}
        r.update(diverged_lrs=report.get("finetune_diverged_lrs", []))
        r.update({k: report[k] for k in ("top1_before", "top1_after", "latency_reduction")})
        rows.append({**r, "dropped": report["dropped_blocks"], "seconds": seconds})
        print(f"{r['variant']}: top-1 {100 * r['top1_before']:.2f}% -> {100 * r['top1_after']:.2f}%, latency "
              f"-{100 * r['latency_reduction']:.1f}%, {seconds:.0f} s", flush=True)  # fmt: skip
    return {"rows": rows}


def main() -> int:
    p = h.parser(__doc__)
    h.folders(p, cache=h.CACHE / "demo_check")  # the cache is the demo's output folder
    return h.study(p, stem="demo", run=run, render=render)


if __name__ == "__main__":
    sys.exit(main())
