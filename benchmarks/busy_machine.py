"""Choosing blocks on a busy machine: what the CLI does before the finetune (latency table, scan, selection) on the
resnet34 teacher while a Python loop spins on one core, then the chosen blocks' cut measured again with the loop
stopped, beside what the raw (unscaled) shares alone would have chosen.

    python benchmarks/busy_machine.py                 # 22% on resnet34-fmnist, one core kept busy
    python benchmarks/busy_machine.py --target 0.5
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
from pathlib import Path

import harness as h

from hf_practise import CompressionConfig, LatencyConfig, PractiseCompressor, compare_latency
from hf_practise.data import load_tiny_set
from hf_practise.recoverability import build_pruned, rank_blocks

SPIN = "import os\nos.sched_setaffinity(0, {0})\nwhile True:\n    pass\n"
QUIET_REPEATS = 40  # A/B pairs of the quiet re-measurement


def run(p, args) -> dict | None:
    if h.skipped(h.RESNET34):
        return None
    teacher = h.load_native(h.RESNET34).eval()
    tiny = load_tiny_set(h.tiny_images(500))
    latency = LatencyConfig(input_size=h.INPUT)
    config = CompressionConfig(latency_reduction=args.target, work_dir=args.cache, latency=latency)
    comp = PractiseCompressor(teacher, config)
    # the scan first (cached in the work dir): only the latency measurements need the busy core
    with h.threads(args.scan_threads):
        rows = comp.scan(tiny, latency_saving={c.path: 0.05 for c in comp.candidates()})
    (Path(args.cache) / "latency_shares.json").unlink(missing_ok=True)  # measured afresh, beside the spinner
    with h.paused(args.pause_pids):  # other jobs of this machine stopped: the spinner is the only one
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
        pruned = [
            build_pruned(teacher, comp.family, [r.ref for r in b], adaptors=False).eval()
            for b in (chosen, old_rows[:old_k])
        ]
        load_quiet = os.getloadavg()
        quiet_cfg = dataclasses.replace(latency, repeats=QUIET_REPEATS)
        quiet, old_quiet = (compare_latency(teacher, m, input_size=h.INPUT, config=quiet_cfg) for m in pruned)
    inside = args.target <= quiet.reduction <= args.target + config.latency_tolerance
    record = {"target": args.target, "tolerance": config.latency_tolerance}
    record.update(
        load_average_busy=[round(v, 2) for v in load_busy], load_average_quiet=[round(v, 2) for v in load_quiet]
    )
    record.update(threads=stats.threads, share_check=stats.share_check, shares=shares, raw_shares=raw, selection=checks)
    record.update(dropped=[r.block for r in chosen], quiet_cut=quiet.reduction)
    record.update(quiet_cut_iqr=[quiet.reduction_p25, quiet.reduction_p75], inside_window=inside)
    return {
        **record,
        "without_check": {"dropped": [r.block for r in old_rows[:old_k]], "quiet_cut": old_quiet.reduction},
    }


def render(doc: dict) -> list[str]:
    target, tol, raw, old = doc["target"], doc["tolerance"], doc["raw_shares"], doc["without_check"]
    window = f"{'inside' if doc['inside_window'] else 'outside'} [{100 * target:.0f}%, {100 * (target + tol):.0f}%]"
    lines = [
        "# Choosing blocks on a busy machine",
        "",
        f"resnet34-fmnist, target {100 * target:.0f}% (tolerance {100 * tol:.0f} points), "
        f"default latency settings ({doc['threads']} threads, batch 64), while a Python loop kept one core busy "
        f"(load average {doc['load_average_busy'][0]}); then the chosen blocks' cut measured again with the loop "
        f"stopped ({QUIET_REPEATS} alternating pairs).",
        "",
        *h.table(
            " | blocks dropped | >cut on the quiet machine",
            [
                ["hf_practise (shares checked against the removal, selection with back-off)", ", ".join(doc["dropped"])]
                + [f"**-{100 * doc['quiet_cut']:.1f}%** ({window})"],
                [
                    "the raw shares, greedy until their sum meets the target (before this check)",
                    ", ".join(old["dropped"]),
                ]
                + [f"-{100 * old['quiet_cut']:.1f}%"],
            ],
        ),
        "",
    ]
    if c := doc["share_check"]:
        lines += [
            f"Share check while busy: the {len(c['removed'])} removable blocks' raw shares summed to "
            f"{100 * c['shares_sum']:.1f}%, removing them measured {100 * c['measured_saving']:.1f}% "
            f"(attempt {c['attempts']}); shares scaled by {c['factor']:.2f}.",
            "",
        ]
    checks = "; ".join(f"{c.get('step')} {c['blocks']} blocks -{100 * c['measured']:.1f}%" for c in doc["selection"])
    lines += [f"Selection checks: {checks}", ""]
    lines += h.table(
        "block | >raw share (busy) | >scaled share",
        ([k, f"{100 * raw[k]:.1f}%", f"{100 * v:.1f}%"] for k, v in doc["shares"].items()),
    )
    return lines + ["", f"Command: `{doc['command']}` ({h.machine_text(doc['machine'])})"]


def main() -> int:
    p = h.parser(__doc__)
    p.add_argument("--target", type=float, default=0.22)
    h.folders(p, cache=h.CACHE / "busy_machine")
    h.job_flags(p)

    def stem(args) -> Path:
        return Path(args.results) / (
            "busy_machine" + ("" if args.target == 0.22 else f"_{int(round(100 * args.target))}")
        )

    return h.study(p, stem=stem, run=run, render=render)


if __name__ == "__main__":
    raise SystemExit(main())
