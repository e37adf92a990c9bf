"""Where latency is measured changes what PRACTISE drops: each block's share of the time in PyTorch eager, ONNX
Runtime and OpenVINO, the blocks each backend's shares choose at each target (one recoverability scan), and every
chosen model's cut measured in every backend.

    python benchmarks/latency_backends.py                       # resnet34-fmnist, the timm ConvNeXt and ViT teachers
    python benchmarks/latency_backends.py --teachers resnet34-fmnist --threads 2
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from pathlib import Path

import harness as h

from hf_practise import CompressionConfig, LatencyConfig, PractiseCompressor, compare_latency
from hf_practise.data import load_tiny_set
from hf_practise.provenance import machine
from hf_practise.recoverability import build_pruned
from hf_practise.runtimes import BACKENDS

logger = logging.getLogger("latency_backends")
TEACHERS = ["resnet34-fmnist", "timm-convnext", "timm-vit"]


def scan_teacher(name: str, args, tiny):
    """The teacher and its recoverability scan (cached in the work dir): no timing, so other jobs may run."""
    found = h.find_teacher(name, cache=Path(args.cache) / "families", train_steps=args.train_steps)
    if found is None:
        raise FileNotFoundError(f"no teacher {name} (the shared teachers are not on this machine)")
    teacher = h.load_native(found[0]).eval()
    work = Path(args.cache) / "latency_backends" / name
    comp = PractiseCompressor(teacher, CompressionConfig(work_dir=str(work), latency=LatencyConfig(input_size=h.INPUT)))
    rows = comp.scan(tiny, latency_saving={c.path: 0.05 for c in comp.candidates()})
    return teacher, found[1], rows


def run_teacher(name: str, args, teacher, meta, rows) -> dict:
    work = Path(args.cache) / "latency_backends" / name
    record: dict = {"teacher": name, "teacher_meta": meta, "backends": {}}
    for backend in args.backends:
        latency = LatencyConfig(
            batch_size=64, repeats=args.repeats, threads=args.threads, input_size=h.INPUT, backend=backend
        )
        comp = PractiseCompressor(
            teacher, CompressionConfig(latency_reduction=0.22, latency=latency, work_dir=str(work))
        )
        start = time.perf_counter()
        shares, stats = comp.latency_table()
        table_seconds = time.perf_counter() - start
        scan = [dataclasses.replace(r, latency_saving=shares[r.block]) for r in rows]
        entry = {
            "runtime": stats.runtime() if stats is not None else None,
            "whole_ms": stats.median_ms if stats is not None else None,
            "share_check": stats.share_check if stats is not None else None,
            "table_seconds": table_seconds,
            "shares": shares,
            "targets": {},
        }
        for target in args.targets:
            comp.config = dataclasses.replace(comp.config, latency_reduction=target)
            try:
                chosen, checks = comp.select(scan)
            except ValueError as e:
                entry["targets"][str(target)] = {"error": str(e)}
                logger.warning("%s %s @%.0f%%: %s", name, backend, 100 * target, e)
                continue
            pruned = build_pruned(teacher, comp.family, [r.ref for r in chosen], adaptors=False).eval()
            cuts = {}
            for other in args.backends:  # the chosen model's cut where it may be deployed
                cfg = dataclasses.replace(latency, backend=other)
                cuts[other] = compare_latency(teacher, pruned, input_size=h.INPUT, config=cfg).reduction
            entry["targets"][str(target)] = {
                "dropped": sorted(r.block for r in chosen),
                "checks": checks,
                "cut": cuts,
            }
            logger.info(
                "%s %s @%.0f%%: drops %s; cut %s",
                name,
                backend,
                100 * target,
                ", ".join(sorted(r.block for r in chosen)),
                ", ".join(f"{b} {100 * v:.1f}%" for b, v in cuts.items()),
            )
        record["backends"][backend] = entry
    return record


def render(doc: dict) -> list[str]:
    lines = [
        "# Latency by backend",
        "",
        "Each candidate block's share of the model's latency, measured in PyTorch eager, ONNX Runtime and OpenVINO "
        f"(batch 64, 32x32 inputs, {doc['threads']} threads; shares are medians of per-round ratios to the whole "
        "model, scaled to the measured saving of removing them all, see `hf_practise/latency.py`), the blocks "
        "each backend's shares choose at each target (same recoverability scan), and each chosen model's cut "
        "measured in every backend.",
        "",
        f"Command: `{doc['command']}`  ",
        f"Machine: {doc['machine']['cpu']}, {doc['machine']['cores']} cores, torch {doc['machine']['torch']}; "
        f"load average when the timing started {doc['load_average']} (1, 5, 15 min)"
        + ("; other jobs of the machine were stopped while timing." if doc.get("paused_pids") else "."),
        "",
    ]
    for rec in doc["records"]:
        backends = list(rec["backends"])
        lines += [f"## {rec['teacher']}", ""]
        lines += ["| block | " + " | ".join(backends) + " |", "| --- |" + " ---: |" * len(backends)]
        blocks = list(rec["backends"][backends[0]]["shares"])
        for b in blocks:
            lines.append(
                f"| {b} | " + " | ".join(f"{100 * rec['backends'][k]['shares'][b]:.1f}%" for k in backends) + " |"
            )
        lines.append(
            "| *shares vs removal* | "
            + " | ".join(
                (
                    f"{100 * c['shares_sum']:.0f}% vs {100 * c['measured_saving']:.0f}% (x{c['factor']:.2f})"
                    if (c := rec["backends"][k]["share_check"])
                    else "-"
                )
                for k in backends
            )
            + " |"
        )
        lines.append("")
        lines += ["Runtimes: " + "; ".join(f"{k}: {rec['backends'][k]['runtime']}" for k in backends), ""]
        lines += [
            "| target | shares from | blocks dropped | " + " | ".join(f"cut in {k}" for k in backends) + " |",
            "| ---: | --- | --- |" + " ---: |" * len(backends),
        ]
        for target in doc["targets"]:
            chosen_sets = []
            for k in backends:
                t = rec["backends"][k]["targets"].get(str(target), {})
                if "error" in t:
                    lines.append(f"| {100 * target:.0f}% | {k} | {t['error']} |" + " |" * len(backends))
                    continue
                chosen_sets.append(tuple(t["dropped"]))
                cuts = " | ".join(f"{100 * t['cut'][b]:.1f}%" for b in backends)
                lines.append(f"| {100 * target:.0f}% | {k} | {', '.join(t['dropped'])} | {cuts} |")
            same = len(set(chosen_sets)) <= 1
            lines.append(
                f"| | | *{'the same blocks in every backend' if same else 'the backends choose different blocks'}* |"
                + " |" * len(backends)
            )
        lines.append("")
    return lines


def run(p, args) -> dict | None:
    if h.skipped():
        return None
    tiny = load_tiny_set(h.tiny_images(args.num_samples))
    doc = {
        "command": args.command,
        "machine": machine(),
        "paused_pids": bool(args.pause_pids),
        "threads": args.threads,
        "targets": args.targets,
        "records": [],
    }
    scanned = {}
    with h.threads(args.scan_threads):
        for name in args.teachers:  # the scans first: recoverability does not depend on the backend
            try:
                scanned[name] = scan_teacher(name, args, tiny)
            except FileNotFoundError as e:
                print(f"skipped {name}: {e}")
    with h.paused(args.pause_pids):
        doc["load_average"] = [round(v, 2) for v in os.getloadavg()]
        for name, (teacher, meta, rows) in scanned.items():
            doc["records"].append(run_teacher(name, args, teacher, meta, rows))
    return doc if doc["records"] else None


def main() -> int:
    p = h.parser(__doc__)
    p.add_argument("--teachers", nargs="+", default=TEACHERS)
    p.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=list(BACKENDS))
    p.add_argument("--targets", type=float, nargs="+", default=[0.22, 0.5])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--num-samples", type=int, default=500)
    p.add_argument("--train-steps", type=int, default=1500, help="steps of a families teacher trained here")
    p.add_argument("--cache", default=str(h.CACHE))
    p.add_argument("--results", default=str(h.RESULTS))
    h.job_flags(p)

    def stem(args) -> Path:
        name = "latency_backends" if args.teachers == TEACHERS else "latency_backends_" + "_".join(args.teachers)
        return Path(args.results) / name

    return h.study(p, stem=stem, run=run, render=render)


if __name__ == "__main__":
    raise SystemExit(main())
