"""What `make demo` shows, under the default finetune and under others, on one machine in one run.

    python benchmarks/demo_check.py                              # default, paper's finetune, 1,000 steps
    python benchmarks/demo_check.py --variants "" "--iterations 1000"

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

from hf_practise.provenance import machine

DEMO = h.HERE.parent / "examples" / "demo.py"
DEFAULT_VARIANTS = ["", "--objective features --augmentation none", "--iterations 1000"]


def render(doc: dict) -> list[str]:
    lines = [
        "# `make demo`, finetune variants",
        "",
        "`examples/demo.py` (scikit-learn digits, resnet18 teacher, 200 images, 30% latency target, scan 50 steps), "
        "each variant in one folder: the same digits, teacher and scan; the selection is timed in each run, so the "
        "blocks can differ where a set sits at the target's edge. Top-1 on the 450 test digits; a run's wall time "
        "includes training the teacher when the folder held none.",
        "",
        "| demo flags | objective | augmentation | steps | lr | top-1 before | after | latency | dropped | wall |",
        "| --- | --- | --- | ---: | --- | ---: | ---: | ---: | --- | ---: |",
    ]
    lines += [
        f"| `{r['variant']}` | {r['objective']} | {r['augmentation']} | {r['iterations']} | {r['lr']:g}"
        + (f" (diverged at {', '.join(f'{x:g}' for x in r['diverged_lrs'])})" if r["diverged_lrs"] else "")
        + " | "
        f"{100 * r['top1_before']:.2f}% | {100 * r['top1_after']:.2f}% | -{100 * r['latency_reduction']:.1f}% | "
        f"{', '.join(r['dropped'])} | {r['seconds']:.0f} s |"
        for r in doc["rows"]
    ]
    return lines + ["", f"Command: `{doc['command']}` ({h.machine_text(doc['machine'])})"]


def run(p, args) -> dict:
    rows = []
    for variant in args.variants:
        began = time.perf_counter()
        cmd = [sys.executable, str(DEMO), "--output-dir", args.output_dir, *shlex.split(variant)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        seconds = time.perf_counter() - began
        if done.returncode != 0:
            print(done.stdout[-3000:], done.stderr[-3000:])
            raise SystemExit(f"demo failed with `{variant}`")
        report = h.read_json(Path(args.output_dir) / "compressed" / "practise_report.json")
        ft = report["config"]["finetune"]
        r = {"variant": variant or "(as is)", **{k: ft[k] for k in ("objective", "augmentation", "iterations", "lr")}}
        r.update({"diverged_lrs": report.get("finetune_diverged_lrs", [])})
        r.update({k: report[k] for k in ("top1_before", "top1_after", "latency_reduction")})
        rows.append({**r, "dropped": report["dropped_blocks"], "seconds": seconds})
        print(
            f"{r['variant']}: top-1 {100 * r['top1_before']:.2f}% -> {100 * r['top1_after']:.2f}%, latency "
            f"-{100 * r['latency_reduction']:.1f}%, {seconds:.0f} s",
            flush=True,
        )
    command = "python benchmarks/demo_check.py" + (
        "" if args.variants == DEFAULT_VARIANTS else " --variants " + " ".join(shlex.quote(v) for v in args.variants)
    )
    return {"rows": rows, "command": command, "machine": machine()}


def main() -> int:
    p = h.parser(__doc__)
    p.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS, help="extra demo.py flags per run ('' = as is)")
    p.add_argument("--output-dir", default=str(h.CACHE / "demo_check"))
    p.add_argument("--results", default=str(h.RESULTS))
    return h.study(p, stem=lambda a: Path(a.results) / "demo", run=run, render=render)


if __name__ == "__main__":
    sys.exit(main())
