"""Finetune settings on one teacher: the same blocks, other optimizers, learning rates, objectives and step counts.

    python benchmarks/finetune_sweep.py timm-mobilenetv2 --runs sgd:0.01:500 adamw:1e-4:500 adamw:1e-3:1000:features+kd:mixup

In the families benchmark's work dir of the teacher (committed, or trained and cached by `families.py`): the scan
and latency shares measured once, a finished finetune reused; every run drops the blocks the first one chose (or
`--blocks`). Runs: `optimizer:lr:iterations[:objective[:options]]`, options `bn`, `flip`, `crop`, `mixup` `+`-joined.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import fmnist
import harness as h

from hf_practise import CompressionConfig, FinetuneConfig, LatencyConfig, ScanConfig, get_family
from hf_practise.provenance import machine, model_fingerprint

OPTIONS = ("bn", "flip", "crop", "mixup")
AUGMENTATIONS = ("flip", "crop", "mixup")
FIELDS = ("optimizer", "lr", "iterations", "objective", "recalibrate_norms", "augmentation")


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


def parser() -> argparse.ArgumentParser:
    p = h.parser(__doc__)
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
    p.add_argument("--cache", default=str(h.CACHE / "families"))
    p.add_argument("--results", default=str(h.RESULTS))
    p.add_argument(
        "--suffix", default="", help="appended to the results' file name (results/finetune_sweep_NAME_SUFFIX)"
    )
    return p


def render(record: dict) -> list[str]:
    rows, m = record["rows"], record["machine"]
    lines = [
        f"# Finetune settings on `{record['teacher']}` ({record['target']:.0%} target)",
        "",
        f"{record['num_samples']} Fashion-MNIST train images (seed {record['seed']}), the same blocks for every run "
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
    command = f"python benchmarks/finetune_sweep.py {args.name} --runs " + " ".join(run_name(*r) for r in args.runs)
    command += "".join(
        f" --{k.replace('_', '-')} {getattr(args, k)}"
        for k in ("target", "num_samples", "seed")
        if getattr(args, k) != p.get_default(k)
    )
    command += (" --blocks " + " ".join(args.blocks) if args.blocks else "") + (
        f" --suffix {args.suffix}" if args.suffix else ""
    )
    teacher = h.load_native(found[0]).eval()
    fingerprint = model_fingerprint(teacher)
    tiny, test = h.tiny_images(args.num_samples, args.seed), fmnist.load("test")
    fixed: dict = {}
    if args.blocks:
        known = [b.path for b in get_family(teacher).candidates(teacher)]
        unknown = [b for b in args.blocks if b not in known]
        if unknown:
            p.error(f"--blocks {' '.join(unknown)}: not candidates of {args.name} (its candidates: {', '.join(known)})")
        fixed.update(blocks=list(args.blocks), checks=[])
    record = {"teacher": args.name, "target": args.target, "seed": args.seed, "num_samples": args.num_samples}
    record.update(rows=[], command=command, machine=machine())
    for spec in args.runs:
        settings = dict(zip(FIELDS, spec))
        config = CompressionConfig(
            latency_reduction=args.target,
            seed=args.seed,
            # the families benchmark's work dir of this teacher: its scan, latency shares and blocks
            work_dir=str(Path(args.cache) / args.name / f"work_{args.num_samples}_{args.seed}_{fingerprint[:8]}"),
            scan=ScanConfig(),
            finetune=FinetuneConfig(checkpoint_every=0, **settings),
            latency=LatencyConfig(batch_size=64, repeats=20, input_size=h.INPUT),
        )
        start = time.perf_counter()
        result = h.SameBlocks(teacher, config, fixed=fixed).compress(tiny, test)
        record["rows"].append(
            {
                **settings,
                "top1": result.top1_after,
                "teacher_top1": result.top1_before,
                "dropped": [r.block for r in result.dropped],
                "latency_reduction": result.latency.reduction,
                "reused_finished_finetune": bool(result.finetune and result.finetune.reused_finished),
                "seconds": time.perf_counter() - start,
            }
        )
        print(f"{run_name(*spec)}: top-1 {100 * result.top1_after:.2f}%", flush=True)
        h.publish(stem(args), record, render)  # the runs done so far
    return record


def stem(args) -> Path:
    return Path(args.results) / (f"finetune_sweep_{args.name}" + (f"_{args.suffix}" if args.suffix else ""))


def main() -> int:
    p = parser()
    return h.study(p, stem=stem, run=run, render=render, level=logging.WARNING)


if __name__ == "__main__":
    sys.exit(main())
