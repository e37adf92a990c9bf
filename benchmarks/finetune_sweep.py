"""Finetune settings on one teacher: the same blocks, other optimizers, learning rates, objectives and step counts.

    python benchmarks/finetune_sweep.py timm-mobilenetv2 --runs sgd:0.01:500 adamw:1e-4:500 adamw:1e-3:1000:features+kd:mixup

In the families benchmark's work dir of the teacher (committed, or trained and cached by `families.py`): the scan
and latency shares measured once, a finished finetune reused; the first run chooses the blocks (or `--blocks`), every
later one drops them through `CompressionConfig.blocks`. Runs: `optimizer:lr:iterations[:objective[:options]]`,
options `bn`, `flip`, `crop`, `mixup` `+`-joined.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import NamedTuple

import fmnist
import harness as h

from hf_practise import CompressionConfig, FinetuneConfig, LatencyConfig, PractiseCompressor, ScanConfig
from hf_practise.provenance import model_fingerprint

OPTIONS = ("bn", "flip", "crop", "mixup")


class Run(NamedTuple):
    """One finetune of the sweep; its text is its `optimizer:lr:iterations[:objective[:options]]` name."""

    optimizer: str
    lr: float
    iterations: int
    objective: str = "features"
    recalibrate_norms: bool = False
    augmentation: str = "none"

    def __str__(self) -> str:
        return run_name(*self)


def parse_run(text: str) -> Run:
    """`optimizer:lr:iterations[:objective[:options]]`, options `+`-joined from OPTIONS: `bn` re-estimates BatchNorm
    statistics after the finetune, `flip` / `crop` / `mixup` set the finetune's augmentation."""
    try:
        parts = text.split(":")
        options = parts[4].split("+") if len(parts) == 5 else []
        augmentations = [o for o in options if o != "bn"]
        if not 3 <= len(parts) <= 5 or any(o not in OPTIONS for o in options) or len(augmentations) > 1:
            raise ValueError(text)
        objective = parts[3] if len(parts) > 3 else "features"
        return Run(parts[0], float(parts[1]), int(parts[2]), objective, "bn" in options, *augmentations)
    except ValueError as e:
        raise argparse.ArgumentTypeError(
            f"`{text}`: expected optimizer:lr:iterations[:objective[:options]] with options among {OPTIONS} joined by "
            "`+` (at most one of flip/crop/mixup), e.g. adamw:1e-4:500 or adamw:1e-4:500:features+kd:bn+mixup"
        ) from e


def run_name(optimizer: str, lr: float, iterations: int, objective: str, bn: bool, augmentation: str = "none") -> str:
    options = (["bn"] if bn else []) + ([augmentation] if augmentation != "none" else [])
    tail = [objective, "+".join(options)] if options else [objective] if objective != "features" else []
    return ":".join([optimizer, f"{lr:g}", str(iterations), *tail])


def parser() -> argparse.ArgumentParser:
    p = h.parser(__doc__)
    p.add_argument("name", help="a teacher folder under benchmarks/teachers")
    p.add_argument(
        "--runs", nargs="+", type=parse_run, required=True, help="optimizer:lr:iterations[:objective[:options]]"
    )
    p.add_argument("--target", type=float, default=0.22)
    p.add_argument("--num-samples", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    blocks = (
        "drop exactly these candidate blocks in every run instead of selecting (the --target is then only recorded)"
    )
    p.add_argument("--blocks", nargs="+", default=None, help=blocks)
    p.add_argument("--suffix", default="", help="appended to the results' file name (finetune_sweep_NAME_SUFFIX)")
    h.folders(p, cache=h.CACHE / "families")
    return p


def config(args, run: Run, blocks: list[str] | None, work_dir: Path) -> CompressionConfig:
    """The compression of one run: the target's selection until `blocks` are known, those blocks after."""
    return CompressionConfig(
        latency_reduction=args.target,
        blocks=blocks,
        seed=args.seed,
        work_dir=str(work_dir),
        scan=ScanConfig(),
        finetune=FinetuneConfig(checkpoint_every=0, **run._asdict()),
        latency=LatencyConfig(batch_size=64, repeats=20, input_size=h.INPUT),
    )


def sweep(teacher, runs: list[Run], make_config, tiny, test, done=lambda rows: None) -> list[dict]:
    """Each run compressed with `make_config(run, blocks)`: `blocks` None for the first run (unless given), then the
    blocks it dropped. `done(rows)` after each run."""
    rows, blocks = [], None
    for run in runs:
        start = time.perf_counter()
        result = PractiseCompressor(teacher, make_config(run, blocks)).compress(tiny, test)
        blocks = [r.block for r in result.dropped]
        rows.append({**run._asdict(), "top1": result.top1_after, "teacher_top1": result.top1_before})
        rows[-1].update(dropped=blocks, latency_reduction=result.latency.reduction)
        rows[-1].update(reused_finished_finetune=bool(result.finetune and result.finetune.reused_finished))
        rows[-1]["seconds"] = time.perf_counter() - start
        print(f"{run}: top-1 {100 * result.top1_after:.2f}%", flush=True)
        done(rows)
    return rows


def render(record: dict) -> list[str]:
    rows, m = record["rows"], record["machine"]
    lines = [
        f"# Finetune settings on `{record['teacher']}` ({record['target']:.0%} target)",
        "",
        f"{record['num_samples']} Fashion-MNIST train images (seed {record['seed']}), the same blocks for every run "
        f"({', '.join(rows[0]['dropped'])}; measured latency -{100 * rows[0]['latency_reduction']:.1f}%), top-1 on "
        f"the 10,000 test images; teacher {100 * rows[0]['teacher_top1']:.2f}%.",
        "",
    ]
    head = "optimizer | >lr | >steps | objective | augmentation | ^BN re-estimated | >top-1 | >vs teacher"
    lines += h.table(
        head,
        [
            [r["optimizer"], f"{r['lr']:g}", r["iterations"], r.get("objective", "features")]
            + [r.get("augmentation", "none"), "yes" if r.get("recalibrate_norms") else "no", f"{100 * r['top1']:.2f}%"]
            + [f"{100 * (r['top1'] - r['teacher_top1']):+.2f}"]
            for r in rows
        ],
    )
    lines += ["", f"Command: `{record['command']}`", "", f"Machine: {m['cpu']}, torch {m['torch']}"]
    planned = len(h.flags(parser(), record).runs)
    return lines + (["", f"*{len(rows)} of the command's {planned} runs so far.*"] if len(rows) < planned else [])


def run(p: argparse.ArgumentParser, args) -> dict | None:
    if h.skipped():
        return None
    found = h.find_teacher(args.name, cache=args.cache, train_steps=None)  # never trains: families.py does
    if found is None:
        p.error(
            f"no teacher `{args.name}`: neither committed under {h.TEACHERS / args.name} (benchmarks/train_teacher.py"
            f" {args.name}) nor cached under {Path(args.cache) / args.name / 'teacher'} (python benchmarks/families.py "
            f"--families {args.name})"
        )
    teacher = h.load_native(found[0]).eval()
    # the families benchmark's work dir of this teacher: its scan, latency shares and blocks
    work = Path(args.cache) / args.name / f"work_{args.num_samples}_{args.seed}_{model_fingerprint(teacher)[:8]}"
    record = {"teacher": args.name, "target": args.target, "seed": args.seed, "num_samples": args.num_samples}
    record.update(rows=[], command=args.command, machine=h.machine())

    def make_config(run: Run, blocks: list[str] | None) -> CompressionConfig:
        return config(args, run, args.blocks or blocks, work)

    def done(rows: list[dict]) -> None:
        h.publish(stem(args), {**record, "rows": rows}, render)  # the runs done so far

    tiny, test = h.tiny_images(args.num_samples, args.seed), fmnist.load("test")
    return {**record, "rows": sweep(teacher, args.runs, make_config, tiny, test, done)}


def stem(args) -> Path:
    return Path(args.results) / (f"finetune_sweep_{args.name}" + (f"_{args.suffix}" if args.suffix else ""))


def main() -> int:
    return h.study(parser(), stem=stem, run=run, render=render, level=logging.WARNING)


if __name__ == "__main__":
    sys.exit(main())
