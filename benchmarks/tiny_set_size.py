"""Is a compressed model short of its teacher for want of images, or of the blocks it lost? The same blocks, finetuned
the same way, from tiny sets of several sizes.

A point that stays short of the teacher with ten times the images is limited by what was dropped (choose other
blocks, or a smaller cut); one that closes the gap is limited by the tiny set (more images, or stronger
augmentation, may reach it).

    python benchmarks/tiny_set_size.py --teacher timm-vit --units branches --sizes 500 5000 \\
        --blocks blocks.2.mlp blocks.4.mlp ... --iterations 4000 --lr 0.0005

Each size is its own compression in a fresh work dir: the given blocks only (`CompressionConfig.blocks`: no
selection), scanned for the finetune's starting adaptors, then the finetune; top-1 on the 10,000 test images.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import fmnist
import harness as h

from hf_practise import CompressionConfig, FinetuneConfig, LatencyConfig, PractiseCompressor, ScanConfig


def run(p, args) -> dict | None:
    found = h.committed_or_cached_teacher(args.teacher)
    if found is None:
        return None
    teacher, meta = found
    test = fmnist.load("test")
    rows = []
    for n in args.sizes:
        finetune = FinetuneConfig(
            checkpoint_every=0,
            iterations=args.iterations,
            lr=args.lr,
            optimizer=args.optimizer,
            objective=args.objective,
            augmentation=args.augmentation,
        )
        with tempfile.TemporaryDirectory(prefix="size-") as work:
            config = CompressionConfig(
                blocks=args.blocks,
                units=args.units,
                seed=args.seed,
                work_dir=work,
                finetune=finetune,
                scan=ScanConfig(iterations=args.scan_iterations) if args.scan_iterations else ScanConfig(),
                latency=LatencyConfig(batch_size=64, repeats=5, input_size=h.INPUT),
            )
            result = PractiseCompressor(teacher, config).compress(h.tiny_images(n, args.seed), test)
        ft = result.config.finetune
        rows.append(
            {
                "num_samples": n,
                "top1": result.top1_after,
                "latency_reduction": result.latency.reduction,
                "finetune": {k: getattr(ft, k) for k in ("optimizer", "lr", "iterations", "objective", "augmentation")},
                "finetune_seconds": result.phase_seconds.get("finetune"),
                "scan_iterations": result.config.scan.iterations,
            }
        )
        print(f"{n} images: {100 * result.top1_after:.2f}%", flush=True)
    return {"teacher": args.teacher, "teacher_top1": meta["top1"], "blocks": args.blocks, "rows": rows}


def render(r: dict) -> list[str]:
    rows = [
        [
            f"{x['num_samples']:,}",
            f"{100 * x['top1']:.2f}%",
            f"{100 * (x['top1'] - r['teacher_top1']):+.2f}",
            f"-{100 * x['latency_reduction']:.1f}%",
        ]
        for x in r["rows"]
    ]
    ft = r["rows"][0]["finetune"]
    return [
        f"# The same blocks from tiny sets of several sizes: {r['teacher']}",
        "",
        f"Dropped: {', '.join(r['blocks'])}. Finetune: {ft['iterations']} steps, {ft['optimizer']} lr {ft['lr']:g}, "
        f"{ft['objective']}, augmentation {ft['augmentation']}, from adaptors scanned for "
        f"{r['rows'][0]['scan_iterations']} steps. Teacher {100 * r['teacher_top1']:.2f}%; top-1 on "
        "the 10,000 test images; the latency cut is measured with 5 repeats (a check, not a benchmark).",
        "",
        *h.table("tiny-set images | >top-1 | >vs teacher | >measured cut", rows),
        "",
        f"Command: `{r['command']}` ({r['machine']['cpu']}, {r['machine']['threads']} threads, torch "
        f"{r['machine']['torch']}).",
    ]


def main() -> int:
    p = h.parser(__doc__)
    p.add_argument("--teacher", default="timm-vit")
    p.add_argument("--blocks", nargs="+", required=True, help="the blocks (or units) to drop, as the scan names them")
    p.add_argument("--units", choices=("blocks", "branches"), default="blocks")
    p.add_argument("--sizes", type=int, nargs="+", default=[500, 5000])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--iterations", type=int, default=FinetuneConfig.iterations)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--optimizer", default="auto")
    p.add_argument("--objective", default="auto")
    p.add_argument("--augmentation", default="auto")
    p.add_argument("--scan-iterations", type=int, default=None, help="adaptor steps per block (default: the family's)")
    p.add_argument("--suffix", default="", help="appended to the results' file name")
    h.folders(p)
    return h.study(p, stem=lambda a: Path(a.results) / f"tiny_set_size_{a.teacher}{a.suffix}", run=run, render=render)


if __name__ == "__main__":
    raise SystemExit(main())
