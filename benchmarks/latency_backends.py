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
from hf_practise.recoverability import build_pruned
from hf_practise.runtimes import BACKENDS

logger = logging.getLogger("latency_backends")
TEACHERS, TARGETS, REPEATS = ["resnet34-fmnist", "timm-convnext", "timm-vit"], [0.22, 0.5], 20


def scan_teacher(name: str, args, tiny):
    """The teacher and its recoverability scan (cached in the work dir): no timing, so other jobs may run."""
    found = h.find_teacher(name, cache=Path(args.cache) / "families")
    if found is None:
        raise FileNotFoundError(f"no teacher {name} (the shared teachers are not on this machine)")
    teacher = h.load_native(found[0]).eval()
    work = Path(args.cache) / "latency_backends" / name
    comp = PractiseCompressor(teacher, CompressionConfig(work_dir=str(work), latency=LatencyConfig(input_size=h.INPUT)))
    rows = comp.scan(tiny, latency_saving={c.path: 0.05 for c in comp.candidates()})
    return teacher, found[1], rows, work


def run_teacher(name: str, args, teacher, meta, rows, work: Path) -> dict:
    record: dict = {"teacher": name, "teacher_meta": meta, "backends": {}}
    for backend in BACKENDS:
        latency = LatencyConfig(
            batch_size=64, repeats=REPEATS, threads=args.threads, input_size=h.INPUT, backend=backend
        )
        comp = PractiseCompressor(
            teacher, CompressionConfig(latency_reduction=0.22, latency=latency, work_dir=str(work))
        )
        start = time.perf_counter()
        shares, stats = comp.latency_table()
        entry = {"runtime": stats and stats.runtime(), "whole_ms": stats and stats.median_ms}
        entry.update(share_check=stats and stats.share_check, table_seconds=time.perf_counter() - start)
        entry.update(shares=shares, targets={})
        scan = [dataclasses.replace(r, latency_saving=shares[r.block]) for r in rows]
        for target in TARGETS:
            comp.config = dataclasses.replace(comp.config, latency_reduction=target)
            try:
                chosen, checks = comp.select(scan)
            except ValueError as e:
                entry["targets"][str(target)] = {"error": str(e)}
                logger.warning("%s %s @%.0f%%: %s", name, backend, 100 * target, e)
                continue
            pruned = build_pruned(teacher, comp.family, [r.ref for r in chosen], adaptors=False).eval()
            cuts = {  # the chosen model's cut where it may be deployed
                other: compare_latency(
                    teacher, pruned, input_size=h.INPUT, config=dataclasses.replace(latency, backend=other)
                ).reduction
                for other in BACKENDS
            }
            dropped = sorted(r.block for r in chosen)
            entry["targets"][str(target)] = {"dropped": dropped, "checks": checks, "cut": cuts}
            cut_text = ", ".join(f"{b} {100 * v:.1f}%" for b, v in cuts.items())
            logger.info("%s %s @%.0f%%: drops %s; cut %s", name, backend, 100 * target, ", ".join(dropped), cut_text)
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
        found = rec["backends"]
        backends = list(found)
        lines += [f"## {rec['teacher']}", ""]
        rows = [[b, *(f"{100 * found[k]['shares'][b]:.1f}%" for k in backends)] for b in found[backends[0]]["shares"]]
        check = "{:.0%} vs {:.0%} (x{:.2f})"
        checks = [
            check.format(c["shares_sum"], c["measured_saving"], c["factor"]) if (c := found[k]["share_check"]) else "-"
            for k in backends
        ]
        lines += h.table(" | ".join(["block", *(f">{k}" for k in backends)]), [*rows, ["*shares vs removal*", *checks]])
        lines += ["", "Runtimes: " + "; ".join(f"{k}: {found[k]['runtime']}" for k in backends), ""]
        rows = []
        for target in doc["targets"]:
            chosen = [found[k]["targets"].get(str(target), {}) for k in backends]
            for k, t in zip(backends, chosen):
                cuts = (
                    [t["error"], *[None] * len(backends)]
                    if "error" in t
                    else [", ".join(t["dropped"]), *(f"{100 * t['cut'][b]:.1f}%" for b in backends)]
                )
                rows.append([f"{100 * target:.0f}%", k, *cuts])
            same = len({tuple(t["dropped"]) for t in chosen if "error" not in t}) <= 1
            verdict = "the same blocks in every backend" if same else "the backends choose different blocks"
            rows.append([None, None, f"*{verdict}*", *[None] * len(backends)])
        head = " | ".join([">target", "shares from", "blocks dropped", *(f">cut in {k}" for k in backends)])
        lines += [*h.table(head, rows), ""]
    return lines


def run(p, args) -> dict | None:
    if h.skipped():
        return None
    tiny = load_tiny_set(h.tiny_images(500))
    doc = {"paused_pids": bool(args.pause_pids), "threads": args.threads, "targets": TARGETS, "records": []}
    scanned = {}
    with h.threads(args.scan_threads):
        for name in args.teachers:  # the scans first: recoverability does not depend on the backend
            try:
                scanned[name] = scan_teacher(name, args, tiny)
            except FileNotFoundError as e:
                print(f"skipped {name}: {e}")
    with h.paused(args.pause_pids):
        doc["load_average"] = [round(v, 2) for v in os.getloadavg()]
        doc["records"] = [run_teacher(name, args, *found) for name, found in scanned.items()]
    return doc if doc["records"] else None


def main() -> int:
    p = h.parser(__doc__)
    p.add_argument("--teachers", nargs="+", default=TEACHERS)
    p.add_argument("--threads", type=int, default=2)
    h.folders(p, cache=h.CACHE)
    h.job_flags(p)

    def stem(args) -> Path:
        return Path(args.results) / "_".join(
            ["latency_backends", *(args.teachers if args.teachers != TEACHERS else [])]
        )

    return h.study(p, stem=stem, run=run, render=render)


if __name__ == "__main__":
    raise SystemExit(main())
