"""Finetune settings on one committed teacher: the same blocks, other optimizers, learning rates and step counts.

    python benchmarks/finetune_sweep.py timm-mobilenetv2 --runs sgd:0.01:500 sgd:0.001:500 adamw:1e-4:500 \
        adamw:3e-4:500 adamw:1e-4:1000 adamw:1e-3:1000:features+kd:mixup

Compresses `benchmarks/teachers/NAME` (or, for a family without one, the teacher `benchmarks/families.py` trained
and cached) at one latency target from 500 seeded Fashion-MNIST train images (seed 0) with each
`optimizer:lr:iterations[:objective[:options]]` (options: `bn`, `flip`, `crop`, `mixup`, joined by `+`), sharing
one work dir (so the scan and the latency shares are measured once; a finished finetune is reused); every run drops
the blocks the first run's selection chose (or the `--blocks` given, to rerun the blocks of an earlier row). Reports top-1 on the 10,000 test images and writes
results/finetune_sweep_NAME.{json,md}. Needs Debian's `dataset-fashion-mnist`.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import fmnist  # noqa: E402
from compare import write_json  # noqa: E402
from families import TEACHERS, load_native  # noqa: E402

from hf_practise import CompressionConfig, FinetuneConfig, LatencyConfig, PractiseCompressor, ScanConfig  # noqa: E402
from hf_practise.provenance import machine, model_fingerprint  # noqa: E402

OPTIONS = ("bn", "flip", "crop", "mixup")
AUGMENTATIONS = ("flip", "crop", "mixup")


class SameBlocks(PractiseCompressor):
    """A compressor whose selection is `fixed` once made: the sweep's first run selects and stores its blocks in the
    dict it shares with the later runs, which drop the same ones (the selection times the pruned model, and a timing
    that moves, on a busy machine, can change the blocks between runs)."""

    def __init__(self, *args, fixed: dict, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fixed = fixed

    def select(self, rows, **kwargs):
        if not self.fixed:
            chosen, checks = super().select(rows, **kwargs)
            self.fixed.update(blocks=[r.block for r in chosen], checks=checks)
        by_block = {r.block: r for r in rows}
        return [by_block[b] for b in self.fixed["blocks"]], self.fixed["checks"]


def parse_run(text: str) -> tuple[str, float, int, str, bool, str]:
    """`optimizer:lr:iterations[:objective[:options]]`, options `+`-joined from OPTIONS: `bn` re-estimates BatchNorm
    statistics after the finetune, `flip` / `crop` / `mixup` set the finetune's augmentation."""
    try:
        parts = text.split(":")
        if not 3 <= len(parts) <= 5:
            raise ValueError(text)
        optimizer, lr, iterations = parts[:3]
        objective = parts[3] if len(parts) > 3 else "features"
        options = parts[4].split("+") if len(parts) == 5 else []
        augmentations = [o for o in options if o in AUGMENTATIONS]
        if any(o not in OPTIONS for o in options) or len(augmentations) > 1:
            raise ValueError(text)
        return optimizer, float(lr), int(iterations), objective, "bn" in options, (augmentations or ["none"])[0]
    except ValueError as e:
        raise argparse.ArgumentTypeError(
            f"`{text}`: expected optimizer:lr:iterations[:objective[:options]] with options among {OPTIONS} joined by "
            "`+` (at most one of flip/crop/mixup), e.g. adamw:1e-4:500 or adamw:1e-4:500:features+kd:bn+mixup"
        ) from e


def run_name(optimizer: str, lr: float, iterations: int, objective: str, bn: bool, augmentation: str = "none") -> str:
    options = (["bn"] if bn else []) + ([augmentation] if augmentation != "none" else [])
    return (
        f"{optimizer}:{lr:g}:{iterations}"
        + (f":{objective}" if objective != "features" or options else "")
        + (f":{'+'.join(options)}" if options else "")
    )


def write_results(args: argparse.Namespace, command: str, rows: list[dict]) -> Path:
    """results/finetune_sweep_NAME[_SUFFIX].{json,md} with the runs done so far (rewritten after each run)."""
    record = {
        "teacher": args.name,
        "target": args.target,
        "seed": args.seed,
        "num_samples": args.num_samples,
        "rows": rows,
        "command": command,
        "machine": machine(),
    }
    out = Path(args.results) / (f"finetune_sweep_{args.name}" + (f"_{args.suffix}" if args.suffix else ""))
    write_json(out.with_suffix(".json"), record)
    lines = [
        f"# Finetune settings on `{args.name}` ({args.target:.0%} target)",
        "",
        f"{args.num_samples} Fashion-MNIST train images (seed {args.seed}), the same blocks for every run "
        f"({', '.join(rows[0]['dropped'])}; measured latency -{100 * rows[0]['latency_reduction']:.1f}%), top-1 on "
        f"the 10,000 test images; teacher {100 * rows[0]['teacher_top1']:.2f}%.",
        "",
        "| optimizer | lr | steps | objective | augmentation | BN re-estimated | top-1 | vs teacher |",
        "| --- | ---: | ---: | --- | --- | :---: | ---: | ---: |",
    ]
    lines += [
        f"| {r['optimizer']} | {r['lr']:g} | {r['iterations']} | {r.get('objective', 'features')} "
        f"| {r.get('augmentation', 'none')} | {'yes' if r.get('recalibrate_norms') else 'no'} | {100 * r['top1']:.2f}% "
        f"| {100 * (r['top1'] - r['teacher_top1']):+.2f} |"
        for r in rows
    ]
    lines += [
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {record['machine']['cpu']}, torch {record['machine']['torch']}",
    ]
    if len(rows) < len(args.runs):
        lines += ["", f"*{len(rows)} of the command's {len(args.runs)} runs so far.*"]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    return out.with_suffix(".md")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", help="a teacher folder under benchmarks/teachers")
    p.add_argument(
        "--runs", nargs="+", type=parse_run, required=True, help="optimizer:lr:iterations[:objective[:options]]"
    )
    p.add_argument("--target", type=float, default=0.22)
    p.add_argument("--num-samples", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--blocks",
        nargs="+",
        default=None,
        help="drop exactly these candidate blocks in every run instead of selecting (e.g. an earlier sweep's or "
        "families row's blocks; the --target is then only recorded)",
    )
    p.add_argument("--cache", default=str(HERE / "cache" / "families"))
    p.add_argument("--results", default=str(HERE / "results"))
    p.add_argument(
        "--suffix", default="", help="appended to the results' file name (results/finetune_sweep_NAME_SUFFIX)"
    )
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if not fmnist.available():
        print(f"skipped: needs Fashion-MNIST under {fmnist.FMNIST_DIR} (apt-get install dataset-fashion-mnist)")
        return 0
    folder = TEACHERS / args.name
    if not (folder / "teacher_metrics.json").exists():
        # a teacher benchmarks/families.py trained and cached (the families without a committed one)
        folder = Path(args.cache) / args.name / "teacher"
        if not (folder / "config.json").exists():
            p.error(
                f"no teacher `{args.name}`: neither committed under {TEACHERS / args.name} (benchmarks/train_teacher.py"
                f" {args.name}) nor cached under {folder} (python benchmarks/families.py --families {args.name})"
            )
    command = f"python benchmarks/finetune_sweep.py {args.name} --runs " + " ".join(run_name(*r) for r in args.runs)
    command += (
        "".join(
            f" --{k.replace('_', '-')} {getattr(args, k)}"
            for k in ("target", "num_samples", "seed")
            if getattr(args, k) != p.get_default(k)
        )
        + (" --blocks " + " ".join(args.blocks) if args.blocks else "")
        + "".join(f" --{k} {getattr(args, k)}" for k in ("suffix",) if getattr(args, k))
    )
    library = "timm" if args.name.startswith("timm") else "transformers"
    teacher = load_native(folder, library).eval()
    fingerprint = model_fingerprint(teacher)
    tiny = fmnist.load("train", num_samples=args.num_samples, seed=args.seed).tensors[0]
    test = fmnist.load("test")
    rows, fixed = [], {}
    if args.blocks:
        from hf_practise import get_family

        known = [b.path for b in get_family(teacher).candidates(teacher)]
        unknown = [b for b in args.blocks if b not in known]
        if unknown:
            p.error(f"--blocks {' '.join(unknown)}: not candidates of {args.name} (its candidates: {', '.join(known)})")
        fixed.update(blocks=list(args.blocks), checks=[])
    for optimizer, lr, iterations, objective, bn, augmentation in args.runs:
        config = CompressionConfig(
            latency_reduction=args.target,
            seed=args.seed,
            # the families benchmark's work dir of this teacher: its scan, latency shares and blocks
            work_dir=str(Path(args.cache) / args.name / f"work_{args.num_samples}_{args.seed}_{fingerprint[:8]}"),
            scan=ScanConfig(),
            finetune=FinetuneConfig(
                iterations=iterations,
                checkpoint_every=0,
                optimizer=optimizer,
                lr=lr,
                objective=objective,
                recalibrate_norms=bn,
                augmentation=augmentation,
            ),
            latency=LatencyConfig(batch_size=64, repeats=20, input_size=(3, 32, 32)),
        )
        start = time.perf_counter()
        result = SameBlocks(teacher, config, fixed=fixed).compress(tiny, test)
        row = {
            "optimizer": optimizer,
            "lr": lr,
            "iterations": iterations,
            "objective": objective,
            "recalibrate_norms": bn,
            "augmentation": augmentation,
            "top1": result.top1_after,
            "teacher_top1": result.top1_before,
            "dropped": [r.block for r in result.dropped],
            "latency_reduction": result.latency.reduction,
            "reused_finished_finetune": bool(result.finetune and result.finetune.reused_finished),
            "seconds": time.perf_counter() - start,
        }
        print(
            f"{run_name(optimizer, lr, iterations, objective, bn, augmentation)}: top-1 {100 * row['top1']:.2f}%",
            flush=True,
        )
        rows.append(row)
        write_results(args, command, rows)
    print(write_results(args, command, rows).read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
