# Compress a pretrained timm backbone with PRACTISE on a tiny set of images, and save it so plain timm reloads it.
#
# What it shows: the whole hf_practise pipeline from the command line. It loads a model (a timm name or a
# `local-dir:` checkpoint), draws a seeded few-shot sample from a local dataset (an imagefolder, i.e. one
# sub-folder of images per class, or a folder written by `datasets.save_to_disk`), scores every droppable
# block by recoverability, drops the best ones until the latency target holds, finetunes by feature mimicking
# and writes a timm-native checkpoint.
#
#   python examples/compress.py --model local-dir:teacher --dataset data/ --num-samples 500 \
#       --latency-reduction 0.22 --output-dir out/
#   accelerate launch examples/compress.py ...            # same flags, any number of processes
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from accelerate import Accelerator
from accelerate.logging import get_logger

from hf_practise import CompressionConfig, FinetuneConfig, LatencyConfig, PractiseCompressor, ScanConfig, load_image_dataset

logger = get_logger(__name__)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__ or "Compress a timm backbone with PRACTISE.")
    p.add_argument("--model", required=True, help="timm model name or local-dir:PATH of a timm checkpoint")
    p.add_argument("--dataset", required=True, help="local imagefolder or datasets.save_to_disk directory")
    p.add_argument("--split", default=None, help="split to draw the tiny set from (default: train, or the only one)")
    p.add_argument("--eval-split", default=None, help="labelled split to measure top-1 on before and after")
    p.add_argument("--eval-num-samples", type=int, default=None, help="evaluate on a seeded subset of this size")
    p.add_argument("--image-column", default=None, help="image column (detected when omitted)")
    p.add_argument("--label-column", default=None, help="label column (detected when omitted; labels are optional)")
    p.add_argument("--num-samples", type=int, default=500, help="tiny-set size (50-500 work well)")
    p.add_argument("--seed", type=int, default=0)
    target = p.add_mutually_exclusive_group()
    target.add_argument("--latency-reduction", type=float, default=None, help="target fraction, e.g. 0.22 (default)")
    target.add_argument("--num-blocks", type=int, default=None, help="drop exactly this many blocks instead")
    p.add_argument("--output-dir", required=True, help="where the compressed model is written")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --output-dir")
    p.add_argument("--work-dir", default=None, help="keep scan rows and finetune checkpoints here to resume")
    # scan
    p.add_argument("--scan-iterations", type=int, default=ScanConfig.iterations)
    p.add_argument("--scan-lr", type=float, default=ScanConfig.lr)
    p.add_argument("--scan-batch-size", type=int, default=ScanConfig.batch_size)
    # finetune
    p.add_argument("--iterations", type=int, default=FinetuneConfig.iterations, help="mimic finetune steps")
    p.add_argument("--lr", type=float, default=FinetuneConfig.lr)
    p.add_argument("--batch-size", type=int, default=FinetuneConfig.batch_size)
    p.add_argument("--optimizer", choices=["sgd", "adamw"], default=FinetuneConfig.optimizer)
    p.add_argument("--weight-decay", type=float, default=FinetuneConfig.weight_decay)
    p.add_argument("--schedule", choices=["cosine", "constant"], default=FinetuneConfig.schedule)
    p.add_argument("--adaptor-init", choices=["scan", "identity"], default=FinetuneConfig.adaptor_init)
    p.add_argument("--augmentation", choices=["none", "timm"], default=FinetuneConfig.augmentation)
    # latency
    p.add_argument("--latency-batch-size", type=int, default=LatencyConfig.batch_size)
    p.add_argument("--latency-threads", type=int, default=None)
    p.add_argument("--latency-repeats", type=int, default=LatencyConfig.repeats)
    p.add_argument(
        "--latency-table", default=None,
        help="json {block path: share of the model's latency} measured on your deployment device; replaces local timing",
    )
    p.add_argument("--cpu", action="store_true", help="run on the CPU even when a GPU is present")
    p.add_argument("--report-to", default=None, help="Accelerate tracker(s) for the finetune loss: tensorboard, wandb, all")
    return p.parse_args(argv)


def build_config(args: argparse.Namespace) -> CompressionConfig:
    return CompressionConfig(
        latency_reduction=None if args.num_blocks is not None else (args.latency_reduction or 0.22),
        num_blocks=args.num_blocks,
        seed=args.seed,
        work_dir=args.work_dir,
        scan=ScanConfig(iterations=args.scan_iterations, lr=args.scan_lr, batch_size=args.scan_batch_size),
        finetune=FinetuneConfig(
            iterations=args.iterations,
            lr=args.lr,
            batch_size=args.batch_size,
            optimizer=args.optimizer,
            weight_decay=args.weight_decay,
            schedule=args.schedule,
            adaptor_init=args.adaptor_init,
            augmentation=args.augmentation,
        ),
        latency=LatencyConfig(batch_size=args.latency_batch_size, threads=args.latency_threads, repeats=args.latency_repeats),
        latency_table=json.loads(Path(args.latency_table).read_text()) if args.latency_table else None,
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.WARNING)
    logging.getLogger("hf_practise").setLevel(logging.INFO)
    try:
        return run(args)
    except (ValueError, FileNotFoundError, FileExistsError, FloatingPointError) as e:
        logging.getLogger(__name__).debug("failed", exc_info=True)
        sys.exit(f"error: {e}")


def run(args: argparse.Namespace) -> int:
    out = Path(args.output_dir)
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        sys.exit(f"error: --output-dir {out} exists and is not empty; choose another one or pass --overwrite.")
    config = build_config(args)
    accelerator = Accelerator(cpu=args.cpu, log_with=args.report_to)
    if args.report_to:
        accelerator.init_trackers("hf_practise", config={k: v for k, v in vars(args).items() if v is not None})

    tiny = load_image_dataset(args.dataset, args.split)
    if args.num_samples > len(tiny):
        sys.exit(
            f"error: --num-samples {args.num_samples} is larger than the {len(tiny)} images of {args.dataset}; "
            f"use at most {len(tiny)}."
        )
    eval_set = None
    if args.eval_split:
        eval_set = load_image_dataset(args.dataset, args.eval_split)
        if args.eval_num_samples:
            eval_set = eval_set.shuffle(seed=args.seed).select(range(min(args.eval_num_samples, len(eval_set))))

    compressor = PractiseCompressor.from_pretrained(args.model, config, accelerator=accelerator)
    result = compressor.compress(
        tiny, eval_set, num_samples=args.num_samples, image_column=args.image_column, label_column=args.label_column
    )
    if accelerator.is_main_process:
        print("\nRecoverability scan (lower score = better block to drop):\n")
        print(result.scan_table())
        print(f"\nDropped: {', '.join(r.block for r in result.dropped)}\n")
        print(result.summary())
        print("\nWall seconds per phase: " + json.dumps({k: round(v, 1) for k, v in result.phase_seconds.items()}))
        path = result.save_pretrained(out, overwrite=args.overwrite)
        print(f"\nSaved to {path}. Reload with plain timm:\n  timm.create_model('local-dir:{path}', pretrained=True)")
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return 0


if __name__ == "__main__":
    sys.exit(main())
