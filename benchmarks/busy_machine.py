"""Choosing blocks on a busy machine: a latency target on the resnet34 teacher while another process keeps one
core busy, then the chosen model's cut re-measured once that process has stopped.

    python benchmarks/busy_machine.py                 # 22% on resnet34-fmnist, one core kept busy
    python benchmarks/busy_machine.py --target 0.5

The run is what a user's CLI run does up to the choice of blocks (latency table, recoverability scan on 500
images, selection with its latency checks; the finetune does not change the architecture, so it is skipped),
with the default latency settings (2 threads on this machine). The busy process is a Python loop spinning on one
core. Afterwards, on the quiet machine, the same blocks are removed and the cut is measured again, and the
shares' raw (unscaled) values show what the old selection would have taken. Writes
`benchmarks/results/busy_machine.{json,md}`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import fmnist  # noqa: E402
import quiet as jobs  # noqa: E402
from compare import write_json  # noqa: E402
from families import INPUT, load_native  # noqa: E402

from hf_practise import CompressionConfig, LatencyConfig, PractiseCompressor, compare_latency  # noqa: E402
from hf_practise.data import load_tiny_set  # noqa: E402
from hf_practise.provenance import machine, recorded_command  # noqa: E402
from hf_practise.recoverability import build_pruned, rank_blocks  # noqa: E402

logger = logging.getLogger("busy_machine")
RESULTS = HERE / "results"
TEACHER = HERE.parent.parent / "shared" / "teachers" / "resnet34-fmnist"
SPIN = "import os\nos.sched_setaffinity(0, {0})\nwhile True:\n    pass\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", type=float, default=0.22)
    p.add_argument("--num-samples", type=int, default=500)
    p.add_argument("--quiet-repeats", type=int, default=40, help="A/B pairs of the quiet re-measurement")
    p.add_argument("--cache", default=str(HERE / "cache" / "busy_machine"))
    p.add_argument("--results", default=str(RESULTS))
    jobs.add_arguments(p)
    args = p.parse_args()
    logging.basicConfig(format="%(asctime)s %(name)s: %(message)s", level=logging.INFO)
    if not fmnist.available() or not TEACHER.exists():
        print("skipped: needs Fashion-MNIST and ../shared/teachers/resnet34-fmnist")
        return 0
    teacher = load_native(TEACHER, "timm").eval()
    tiny = load_tiny_set(fmnist.load("train", num_samples=args.num_samples, seed=0).tensors[0])
    config = CompressionConfig(
        latency_reduction=args.target, work_dir=args.cache, latency=LatencyConfig(input_size=INPUT)
    )
    comp = PractiseCompressor(teacher, config)
    # the scan first (cached in the work dir): only the latency measurements need the busy core
    with jobs.threads(args.scan_threads):
        rows = comp.scan(tiny, latency_saving={c.path: 0.05 for c in comp.candidates()})
    (Path(args.cache) / "latency_shares.json").unlink(missing_ok=True)  # measured afresh, beside the spinner
    with jobs.paused(args.pause_pids):  # other jobs of this machine stopped: the spinner is the only one
        spinner = subprocess.Popen([sys.executable, "-c", SPIN])
        try:
            time.sleep(2.0)
            load_busy = os.getloadavg()
            shares, stats = comp.latency_table()
            rows = [dataclasses.replace(r, latency_saving=shares[r.block]) for r in rows]
            chosen, checks = comp.select(rows)
        finally:
            spinner.kill()
            spinner.wait()
        factor = stats.share_check["factor"] if stats.share_check else 1.0
        raw = {k: v / factor for k, v in shares.items()}
        # what the selection without the share check would have predicted: greedy on the raw shares
        old_rows = rank_blocks([dataclasses.replace(r, latency_saving=raw[r.block]) for r in rows])
        predicted, old_k = 0.0, 0
        while old_k < len(old_rows) and predicted < args.target:
            predicted += old_rows[old_k].latency_saving
            old_k += 1
        time.sleep(5.0)
        quiet_cfg = dataclasses.replace(config.latency, repeats=args.quiet_repeats)
        pruned = build_pruned(teacher, comp.family, [r.ref for r in chosen], adaptors=False).eval()
        old_pruned = build_pruned(teacher, comp.family, [r.ref for r in old_rows[:old_k]], adaptors=False).eval()
        load_quiet = os.getloadavg()
        quiet = compare_latency(teacher, pruned, input_size=INPUT, config=quiet_cfg)
        old_quiet = compare_latency(teacher, old_pruned, input_size=INPUT, config=quiet_cfg)
    inside = args.target <= quiet.reduction <= args.target + config.latency_tolerance
    doc = {
        "command": recorded_command("python benchmarks/busy_machine.py", p, args, paths=("cache", "results")),
        "machine": machine(),
        "target": args.target,
        "tolerance": config.latency_tolerance,
        "load_average_busy": [round(v, 2) for v in load_busy],
        "load_average_quiet": [round(v, 2) for v in load_quiet],
        "threads": stats.threads,
        "share_check": stats.share_check,
        "shares": shares,
        "raw_shares": raw,
        "selection": checks,
        "dropped": [r.block for r in chosen],
        "quiet_cut": quiet.reduction,
        "quiet_cut_iqr": [quiet.reduction_p25, quiet.reduction_p75],
        "inside_window": inside,
        "without_check": {"dropped": [r.block for r in old_rows[:old_k]], "quiet_cut": old_quiet.reduction},
    }
    results = Path(args.results)
    stem = "busy_machine" if args.target == 0.22 else f"busy_machine_{int(round(100 * args.target))}"
    write_json(results / f"{stem}.json", doc)
    lines = [
        "# Choosing blocks on a busy machine",
        "",
        f"resnet34-fmnist, target {100 * args.target:.0f}% (tolerance {100 * config.latency_tolerance:.0f} points), "
        f"default latency settings ({stats.threads} threads, batch 64), while a Python loop kept one core busy "
        f"(load average {doc['load_average_busy'][0]}); then the chosen blocks' cut measured again with the loop "
        f"stopped ({args.quiet_repeats} alternating pairs).",
        "",
        "| | blocks dropped | cut on the quiet machine |",
        "| --- | --- | ---: |",
        f"| hf_practise (shares checked against the removal, selection with back-off) | {', '.join(doc['dropped'])} "
        f"| **-{100 * quiet.reduction:.1f}%** ({'inside' if inside else 'outside'} "
        f"[{100 * args.target:.0f}%, {100 * (args.target + config.latency_tolerance):.0f}%]) |",
        f"| the raw shares, greedy until their sum meets the target (before this check) "
        f"| {', '.join(doc['without_check']['dropped'])} | -{100 * old_quiet.reduction:.1f}% |",
        "",
    ]
    if stats.share_check:
        c = stats.share_check
        lines.append(
            f"Share check while busy: the {len(c['removed'])} removable blocks' raw shares summed to "
            f"{100 * c['shares_sum']:.1f}%, removing them measured {100 * c['measured_saving']:.1f}% "
            f"(attempt {c['attempts']}); shares scaled by {c['factor']:.2f}."
        )
        lines.append("")
    lines.append(
        "Selection checks: "
        + "; ".join(f"{c.get('step')} {c['blocks']} blocks -{100 * c['measured']:.1f}%" for c in checks)
    )
    lines += ["", "| block | raw share (busy) | scaled share |", "| --- | ---: | ---: |"]
    lines += [f"| {k} | {100 * raw[k]:.1f}% | {100 * v:.1f}% |" for k, v in shares.items()]
    m = doc["machine"]
    lines += ["", f"Command: `{doc['command']}` ({m['cpu']}, {m['cores']} cores, torch {m['torch']})"]
    (results / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(json.dumps({"quiet_cut": quiet.reduction, "inside": inside}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
