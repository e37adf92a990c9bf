"""What `make demo` shows, under the default finetune and under others, on one machine in one run.

    python benchmarks/demo_check.py                              # default, paper's finetune, 1,000 steps
    python benchmarks/demo_check.py --variants "" "--iterations 1000"

Runs `examples/demo.py` (scikit-learn digits, a resnet18 teacher trained for a minute, 200 images, 30% latency
target) once per variant, every variant in one output folder, so the digits, the teacher and the scan are the
same for all of them (the demo reuses what its folder holds), and reads each compressed model's
`practise_report.json`: top-1 before and after, the measured latency reduction, the dropped blocks and the wall
time. Writes results/demo.{json,md}. Needs nothing but the package (no ../shared, no network).
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from compare import write_json  # noqa: E402

from hf_practise.provenance import machine  # noqa: E402

DEMO = HERE.parent / "examples" / "demo.py"
DEFAULT_VARIANTS = ["", "--objective features --augmentation none", "--iterations 1000"]


def write_markdown(out: Path) -> None:
    """results/demo.md from results/demo.json."""
    doc = json.loads(out.with_suffix(".json").read_text())
    rows, command, m = doc["rows"], doc["command"], doc["machine"]
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
        for r in rows
    ]
    lines += ["", f"Command: `{command}` ({m['cpu']}, {m['cores']} cores, torch {m['torch']})"]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS, help="extra demo.py flags per run ('' = as is)")
    p.add_argument("--output-dir", default=str(HERE / "cache" / "demo_check"))
    p.add_argument("--results", default=str(HERE / "results"))
    p.add_argument("--report", action="store_true", help="only rewrite results/demo.md from results/demo.json")
    args = p.parse_args()
    if args.report:
        write_markdown(Path(args.results) / "demo")
        return 0
    rows = []
    for variant in args.variants:
        cmd = [sys.executable, str(DEMO), "--output-dir", args.output_dir, *shlex.split(variant)]
        began = time.perf_counter()
        run = subprocess.run(cmd, capture_output=True, text=True)
        seconds = time.perf_counter() - began
        if run.returncode != 0:
            print(run.stdout[-3000:], run.stderr[-3000:])
            raise SystemExit(f"demo failed with `{variant}`")
        report = json.loads((Path(args.output_dir) / "compressed" / "practise_report.json").read_text())
        ft = report["config"]["finetune"]
        rows.append(
            {
                "variant": variant or "(as is)",
                "objective": ft["objective"],
                "augmentation": ft["augmentation"],
                "iterations": ft["iterations"],
                "lr": ft["lr"],
                "diverged_lrs": report.get("finetune_diverged_lrs", []),
                "top1_before": report["top1_before"],
                "top1_after": report["top1_after"],
                "latency_reduction": report["latency_reduction"],
                "dropped": report["dropped_blocks"],
                "seconds": seconds,
            }
        )
        r = rows[-1]
        print(
            f"{r['variant']}: top-1 {100 * r['top1_before']:.2f}% -> {100 * r['top1_after']:.2f}%, latency "
            f"-{100 * r['latency_reduction']:.1f}%, {seconds:.0f} s",
            flush=True,
        )
    command = "python benchmarks/demo_check.py" + (
        "" if args.variants == DEFAULT_VARIANTS else " --variants " + " ".join(shlex.quote(v) for v in args.variants)
    )
    out = Path(args.results) / "demo"
    write_json(out.with_suffix(".json"), {"rows": rows, "command": command, "machine": machine()})
    write_markdown(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
