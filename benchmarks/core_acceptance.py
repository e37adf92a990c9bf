"""Issue-2 acceptance on a real teacher: compress a shared timm teacher at given latency targets on a tiny
Fashion-MNIST set (the scan shared between targets through the work dir), evaluated on the full test split.

    python benchmarks/core_acceptance.py --targets 0.22 0.5
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import fmnist
import harness as h

from hf_practise import CompressionConfig, FinetuneConfig, LatencyConfig, PractiseCompressor

NUM_SAMPLES, SEED = 500, 0


def render(records: list[dict]) -> list[str]:
    first = records[0]
    lines = [
        f"# PRACTISE on {first['teacher']}: {first['num_samples']} Fashion-MNIST train images (seed {first['seed']})",
        "",
        f"Command: `{first['command']}`",
        "",
        f"Machine: {json.dumps(first['machine'])}",
        "",
    ]
    lines += h.table(
        ">target | >measured latency reduction | >teacher top-1 | >compressed top-1 | dropped | >MACs | >wall s",
        (
            [
                f"{100 * r['latency_target']:.0f}%",
                f"{100 * r['latency_reduction']:.1f}%",
                f"{100 * r['top1_before']:.2f}%",
            ]
            + [f"{100 * r['top1_after']:.2f}%", ", ".join(r["dropped_blocks"])]
            + [f"-{100 * (1 - r['macs_after'] / r['macs_before']):.1f}%", f"{r['wall_seconds']:.0f}"]
            for r in records
        ),
    )
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
        ]
        lines += h.table(
            "block | >initial error | >recoverability | >latency share | >score",
            (
                [
                    s["block"] + (" **dropped**" if s["block"] in r["dropped_blocks"] else ""),
                    f"{s['initial_error']:.3g}",
                ]
                + [f"{s['recoverability']:.3g}", f"{100 * s['latency_saving']:.1f}%", f"{s['score']:.3g}"]
                for s in r["scan"]
            ),
        )
    return lines


def run(p, args) -> list[dict] | None:
    if h.skipped(h.RESNET34):
        return None
    tiny, test = fmnist.load("train", num_samples=NUM_SAMPLES, seed=SEED), fmnist.load("test")
    records = []
    for target in args.targets:
        finetune = FinetuneConfig(adaptor_init=args.adaptor_init, checkpoint_every=0)
        latency = LatencyConfig(batch_size=64, repeats=20)
        config = CompressionConfig(target, seed=SEED, work_dir=args.cache, finetune=finetune, latency=latency)
        start = time.perf_counter()
        result = PractiseCompressor.from_pretrained(f"local-dir:{h.RESNET34}", config).compress(tiny, test)
        rec = {"teacher": h.RESNET34.name, "latency_target": target, "num_samples": NUM_SAMPLES, "seed": SEED}
        rec.update(wall_seconds=time.perf_counter() - start, command=args.command, machine=h.machine())
        records.append({**rec, **result.to_dict()})
        print(result.scan_table())
        print(result.summary())
    return records


def main() -> int:
    p = h.parser(__doc__)
    p.add_argument("--targets", type=float, nargs="+", default=[0.22, 0.5])
    p.add_argument("--adaptor-init", default=FinetuneConfig.adaptor_init)
    p.add_argument("--tag", default="core")
    h.folders(p, cache=h.CACHE / "core")
    return h.study(p, stem=lambda a: Path(a.results) / f"{a.tag}_{h.RESNET34.name}", run=run, render=render)


if __name__ == "__main__":
    sys.exit(main())
