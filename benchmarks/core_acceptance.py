"""Issue-2 acceptance on a real teacher: compress a shared timm teacher at given latency targets on a tiny
Fashion-MNIST set, evaluate on the full test split, and write json + markdown to benchmarks/results/.

    python benchmarks/core_acceptance.py --teacher ../shared/teachers/resnet34-fmnist --targets 0.22 0.5

Needs `../shared/teachers` (ours, not users') and Debian's `dataset-fashion-mnist`; exits with a message
without them. The scan is shared between targets through --work-dir.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fmnist  # noqa: E402

from hf_practise import CompressionConfig, FinetuneConfig, LatencyConfig, PractiseCompressor, ScanConfig  # noqa: E402
from hf_practise.provenance import machine, recorded_command  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def write_markdown(stem: Path, records: list[dict]) -> None:
    lines = [
        f"# PRACTISE on {records[0]['teacher']}: {records[0]['num_samples']} Fashion-MNIST train images (seed {records[0]['seed']})",
        "",
    ]
    lines += [f"Command: `{records[0]['command']}`", "", f"Machine: {json.dumps(records[0]['machine'])}", ""]
    lines += [
        "| target | measured latency reduction | teacher top-1 | compressed top-1 | dropped | MACs | wall s |",
        "| ---: | ---: | ---: | ---: | --- | ---: | ---: |",
    ]
    for r in records:
        lines.append(
            f"| {100 * r['latency_target']:.0f}% | {100 * r['latency_reduction']:.1f}% | {100 * r['top1_before']:.2f}% "
            f"| {100 * r['top1_after']:.2f}% | {', '.join(r['dropped_blocks'])} | "
            f"-{100 * (1 - r['macs_after'] / r['macs_before']):.1f}% | {r['wall_seconds']:.0f} |"
        )
    for r in records:
        lines += ["", f"## Target {100 * r['latency_target']:.0f}%", ""]
        lines.append(
            f"Latency (batch {r['latency']['base']['batch_size']}, {r['latency']['base']['threads']} threads, "
            f"{r['latency']['base']['device_name']}): teacher {r['latency']['base']['median_ms']:.1f} ms, "
            f"compressed {r['latency']['candidate']['median_ms']:.1f} ms."
        )
        lines.append("")
        lines.append("Seconds per phase: " + ", ".join(f"{k} {v:.0f}" for k, v in r["phase_seconds"].items()))
        lines += [
            "",
            "| block | initial error | recoverability | latency share | score |",
            "| --- | ---: | ---: | ---: | ---: |",
        ]
        for s in r["scan"]:
            mark = " **dropped**" if s["block"] in r["dropped_blocks"] else ""
            lines.append(
                f"| {s['block']}{mark} | {s['initial_error']:.3g} | {s['recoverability']:.3g} | "
                f"{100 * s['latency_saving']:.1f}% | {s['score']:.3g} |"
            )
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--teacher", default=str(Path(__file__).resolve().parents[2] / "shared/teachers/resnet34-fmnist"))
    p.add_argument("--targets", type=float, nargs="+", default=[0.22, 0.5])
    p.add_argument("--num-samples", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scan-iterations", type=int, default=ScanConfig.iterations)
    p.add_argument("--iterations", type=int, default=FinetuneConfig.iterations)
    p.add_argument("--lr", type=float, default=FinetuneConfig.lr)
    p.add_argument("--adaptor-init", default=FinetuneConfig.adaptor_init)
    p.add_argument("--work-dir", default=str(Path(__file__).resolve().parent / "cache" / "core"))
    p.add_argument("--tag", default="core")
    p.add_argument("--report", action="store_true", help="only rewrite the markdown from the json of --tag")
    args = p.parse_args()
    if args.report:
        stem = RESULTS / f"{args.tag}_{Path(args.teacher).name}"
        write_markdown(stem, json.loads(stem.with_suffix(".json").read_text()))
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    teacher = Path(args.teacher)
    if not (teacher / "config.json").exists() or not fmnist.available():
        print(f"skipped: needs the teacher at {teacher} and Fashion-MNIST under {fmnist.FMNIST_DIR}")
        return 0
    name = teacher.name
    tiny = fmnist.load("train", num_samples=args.num_samples, seed=args.seed)
    test = fmnist.load("test")
    command = recorded_command("python benchmarks/core_acceptance.py", p, args, paths=("teacher", "results"))
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
        wall = time.perf_counter() - start
        rec = {
            "teacher": name,
            "latency_target": target,
            "num_samples": args.num_samples,
            "seed": args.seed,
            "wall_seconds": wall,
            "command": command,
            "machine": machine(),
            **result.to_dict(),
        }
        records.append(rec)
        print(result.scan_table())
        print(result.summary())
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = RESULTS / f"{args.tag}_{name}"
    stem.with_suffix(".json").write_text(json.dumps(records, indent=2, default=str))
    write_markdown(stem, records)
    print(f"wrote {stem}.json and {stem}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
