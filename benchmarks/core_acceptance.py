"""Issue-2 acceptance on a real teacher: compress a shared timm teacher at given latency targets on a tiny
Fashion-MNIST set (the scan shared between targets through --work-dir), evaluated on the full test split.

    python benchmarks/core_acceptance.py --teacher ../shared/teachers/resnet34-fmnist --targets 0.22 0.5
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import fmnist
import harness as h

from hf_practise import CompressionConfig, FinetuneConfig, LatencyConfig, PractiseCompressor, ScanConfig
from hf_practise.provenance import machine


def render(records: list[dict]) -> list[str]:
    first = records[0]
    lines = [
        f"# PRACTISE on {first['teacher']}: {first['num_samples']} Fashion-MNIST train images (seed {first['seed']})",
        "",
        f"Command: `{first['command']}`",
        "",
        f"Machine: {json.dumps(first['machine'])}",
        "",
        "| target | measured latency reduction | teacher top-1 | compressed top-1 | dropped | MACs | wall s |",
        "| ---: | ---: | ---: | ---: | --- | ---: | ---: |",
    ]
    lines += [
        f"| {100 * r['latency_target']:.0f}% | {100 * r['latency_reduction']:.1f}% | {100 * r['top1_before']:.2f}% "
        f"| {100 * r['top1_after']:.2f}% | {', '.join(r['dropped_blocks'])} | "
        f"-{100 * (1 - r['macs_after'] / r['macs_before']):.1f}% | {r['wall_seconds']:.0f} |"
        for r in records
    ]
    for r in records:
        base = r["latency"]["base"]
        lines += [
            "",
            f"## Target {100 * r['latency_target']:.0f}%",
            "",
            f"Latency (batch {base['batch_size']}, {base['threads']} threads, {base['device_name']}): teacher "
            f"{base['median_ms']:.1f} ms, compressed {r['latency']['candidate']['median_ms']:.1f} ms.",
            "",
            "Seconds per phase: " + ", ".join(f"{k} {v:.0f}" for k, v in r["phase_seconds"].items()),
            "",
            "| block | initial error | recoverability | latency share | score |",
            "| --- | ---: | ---: | ---: | ---: |",
        ]
        lines += [
            f"| {s['block']}{' **dropped**' if s['block'] in r['dropped_blocks'] else ''} | {s['initial_error']:.3g} "
            f"| {s['recoverability']:.3g} | {100 * s['latency_saving']:.1f}% | {s['score']:.3g} |"
            for s in r["scan"]
        ]
    return lines


def run(p, args) -> list[dict] | None:
    teacher = Path(args.teacher)
    if h.skipped(teacher):
        return None
    tiny = fmnist.load("train", num_samples=args.num_samples, seed=args.seed)
    test = fmnist.load("test")
    records = []
    for target in args.targets:
        config = CompressionConfig(
            latency_reduction=target,
            seed=args.seed,
            work_dir=args.work_dir,
            scan=ScanConfig(iterations=args.scan_iterations),
            finetune=FinetuneConfig(
                iterations=args.iterations, lr=args.lr, adaptor_init=args.adaptor_init, checkpoint_every=0
            ),
            latency=LatencyConfig(batch_size=64, repeats=20),
        )
        start = time.perf_counter()
        result = PractiseCompressor.from_pretrained(f"local-dir:{teacher}", config).compress(tiny, test)
        rec = {"teacher": teacher.name, "latency_target": target, "num_samples": args.num_samples, "seed": args.seed}
        rec.update(wall_seconds=time.perf_counter() - start, command=args.command, machine=machine())
        records.append({**rec, **result.to_dict()})
        print(result.scan_table())
        print(result.summary())
    return records


def main() -> int:
    p = h.parser(__doc__)
    p.add_argument("--teacher", default=str(h.RESNET34))
    p.add_argument("--targets", type=float, nargs="+", default=[0.22, 0.5])
    p.add_argument("--num-samples", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scan-iterations", type=int, default=ScanConfig.iterations)
    p.add_argument("--iterations", type=int, default=FinetuneConfig.iterations)
    p.add_argument("--lr", type=float, default=FinetuneConfig.lr)
    p.add_argument("--adaptor-init", default=FinetuneConfig.adaptor_init)
    p.add_argument("--work-dir", default=str(h.CACHE / "core"))
    p.add_argument("--tag", default="core")
    return h.study(
        p,
        stem=lambda a: h.RESULTS / f"{a.tag}_{Path(a.teacher).name}",
        run=run,
        paths=("teacher", "results"),
        render=render,
    )


if __name__ == "__main__":
    sys.exit(main())
