# Compress a pretrained timm or transformers backbone with PRACTISE on a tiny set of images, and save it so its own
# library (timm or transformers) reloads it.
#
# What it shows: the whole hf_practise pipeline from the command line. It loads a model (a timm name,
# `hf-hub:ORG/NAME`, `local-dir:PATH`, a Hub repo id or a local timm/transformers folder; safetensors only),
# draws a seeded few-shot sample (N images or K per class) from a Hub dataset or a local one (an imagefolder,
# i.e. one sub-folder of images per class, or a folder written by `datasets.save_to_disk`), scores every
# droppable block by recoverability, drops the best ones until the latency target holds, finetunes by feature
# mimicking, writes a native checkpoint (timm or transformers) with its model card, and optionally pushes it
# to the Hub.
#
#   python examples/compress.py --model local-dir:teacher --dataset data/ --num-samples 500 \
#       --latency-reduction 0.22 --output-dir out/
#   accelerate launch examples/compress.py ...            # same flags, any number of processes
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from accelerate import Accelerator
from accelerate.logging import get_logger
from safetensors import SafetensorError

from hf_practise import CompressionConfig, FinetuneConfig, LatencyConfig, PractiseCompressor, ScanConfig
from hf_practise.checkpoint import read_json
from hf_practise.compressor import input_paths
from hf_practise.config import check_latency_table
from hf_practise.files import check_output_location, check_writable_parent
from hf_practise.hub import load_dataset_source
from hf_practise.provenance import recorded_command
from hf_practise.result import check_replaceable_output
from hf_practise.runtimes import require_backend

logger = get_logger(__name__)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__ or "Compress a timm or transformers vision backbone with PRACTISE.")
    p.add_argument(
        "--model",
        required=True,
        help="timm name, hf-hub:ORG/NAME, local-dir:PATH, a Hub repo id or a local model folder (safetensors only)",
    )
    p.add_argument("--revision", default=None, help="branch, tag or commit of the model's Hub repo")
    p.add_argument("--token", default=None, help="Hub token (default: the one from `huggingface-cli login`)")
    p.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="allow a transformers repo's own code to run, and the code of a --metric module that is not shipped",
    )
    p.add_argument(
        "--dataset", required=True, help="Hub dataset id, local imagefolder or datasets.save_to_disk directory"
    )
    p.add_argument("--dataset-revision", default=None, help="branch, tag or commit of the dataset's Hub repo")
    p.add_argument("--split", default=None, help="split to draw the tiny set from (default: train, or the only one)")
    p.add_argument("--eval-split", default=None, help="labelled split to measure top-1 on before and after")
    p.add_argument("--eval-num-samples", type=int, default=None, help="evaluate on a seeded subset of this size")
    p.add_argument(
        "--metric",
        action="append",
        default=None,
        help="an `evaluate` metric to report on the eval split besides top-1 (repeatable): the shipped "
        "top_k_accuracy (default), or with --trust-remote-code any evaluate metric name or local module folder",
    )
    p.add_argument("--image-column", default=None, help="image column (detected when omitted)")
    p.add_argument("--label-column", default=None, help="label column (detected when omitted; labels are optional)")
    p.add_argument("--num-samples", type=int, default=500, help="tiny-set size (50-500 work well)")
    p.add_argument("--per-class", type=int, default=None, help="draw this many images per class instead")
    p.add_argument(
        "--skip-broken-images", action="store_true", help="leave out tiny-set images that cannot be decoded (logged)"
    )
    p.add_argument("--seed", type=int, default=0)
    target = p.add_mutually_exclusive_group()
    target.add_argument("--latency-reduction", type=float, default=None, help="target fraction, e.g. 0.22 (default)")
    target.add_argument("--num-blocks", type=int, default=None, help="drop exactly this many blocks instead")
    p.add_argument("--output-dir", required=True, help="where the compressed model is written")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace --output-dir when it holds an earlier hf_practise output (nothing else is ever replaced)",
    )
    p.add_argument("--push-to-hub", action="store_true", help="upload the saved folder to --hub-model-id")
    p.add_argument("--hub-model-id", default=None, help="ORG/NAME of the Hub repo to push to")
    p.add_argument("--private", action="store_true", help="create the Hub repo as private")
    p.add_argument("--work-dir", default=None, help="keep scan rows and finetune checkpoints here to resume")
    p.add_argument(
        "--checkpoint-every",
        type=int,
        default=FinetuneConfig.checkpoint_every,
        help="finetune steps between checkpoints in --work-dir (0: only the finished one)",
    )
    # scan
    p.add_argument(
        "--scan-iterations",
        type=int,
        default=ScanConfig.iterations,
        help="adaptor steps per candidate (default: the family's: 100, or 400 for a Swin or a transformers ViT, "
        "600 for a ConvNeXt, 800 for a timm ViT)",
    )
    p.add_argument("--scan-lr", type=float, default=ScanConfig.lr)
    p.add_argument(
        "--scan-retries",
        type=int,
        default=ScanConfig.retries,
        help="when adaptor training raises a candidate's error, retry from identity at a tenth of the rate this often",
    )
    p.add_argument("--scan-batch-size", type=int, default=ScanConfig.batch_size)
    p.add_argument(
        "--scan-optimizer",
        choices=["adamw", "sgd"],
        default=ScanConfig.optimizer,
        help="adaptor optimizer of the scan (sgd: momentum 0.9, as the official code with --scan-lr 0.02)",
    )
    # finetune
    p.add_argument("--iterations", type=int, default=FinetuneConfig.iterations, help="mimic finetune steps")
    p.add_argument("--lr", type=float, default=None, help="finetune peak lr (default: 0.01 for SGD, 1e-4 for AdamW)")
    p.add_argument("--batch-size", type=int, default=FinetuneConfig.batch_size)
    p.add_argument(
        "--optimizer",
        choices=["auto", "sgd", "adamw"],
        default=FinetuneConfig.optimizer,
        help="auto: SGD for BatchNorm ResNets, AdamW for LayerNorm ViTs and ConvNeXts",
    )
    p.add_argument("--weight-decay", type=float, default=FinetuneConfig.weight_decay)
    p.add_argument("--schedule", choices=["cosine", "constant"], default=FinetuneConfig.schedule)
    p.add_argument("--adaptor-init", choices=["scan", "identity"], default=FinetuneConfig.adaptor_init)
    p.add_argument(
        "--holdout",
        type=int,
        default=FinetuneConfig.holdout,
        help="tiny-set images held out of the finetune; the weights of the step with the lowest feature error on "
        "them (against the teacher's, no labels) are kept (0: train on all, keep the last)",
    )
    p.add_argument(
        "--augmentation",
        choices=["auto", "none", "timm", "flip", "crop", "mixup"],
        default=FinetuneConfig.augmentation,
        help="finetune augmentation (auto: mixup, or none with --objective ce): timm = the model's own training transform (needs the original images); flip / crop / "
        "mixup = mirrored / mirrored and shifted / blended tiny-set images, the teacher's features of them as targets "
        "(no labels needed)",
    )
    p.add_argument(
        "--objective",
        choices=["auto", "features", "kd", "ce", "features+kd", "features+stages"],
        default=FinetuneConfig.objective,
        help="finetune loss (auto: features+kd, or features for a model without a classifier): features = MSE on pre-pooling features (PRACTISE, no labels needed); kd = KL to the "
        "teacher's logits; ce = cross-entropy on the tiny set's labels; features+kd = the feature MSE relative to "
        "the teacher features' mean square plus the KL; features+stages = the relative MSE of the features and of "
        "every stage's output",
    )
    p.add_argument(
        "--recalibrate-norms",
        action="store_true",
        help="after the finetune, re-estimate BatchNorm statistics on the tiny set (default: keep the teacher's)",
    )
    p.add_argument("--kd-temperature", type=float, default=FinetuneConfig.kd_temperature)
    # latency
    p.add_argument("--latency-batch-size", type=int, default=LatencyConfig.batch_size)
    p.add_argument("--latency-threads", type=int, default=None)
    p.add_argument("--latency-repeats", type=int, default=LatencyConfig.repeats)
    p.add_argument(
        "--latency-tolerance",
        type=float,
        default=CompressionConfig.latency_tolerance,
        help="a measured cut more than this above the target is an overshoot, and selection comes back toward it",
    )
    p.add_argument(
        "--latency-backend",
        choices=["torch", "onnxruntime", "openvino"],
        default=LatencyConfig.backend,
        help="where latency is measured: PyTorch eager, or the exported model in ONNX Runtime "
        '(pip install "hf-practise[onnx]") or OpenVINO (pip install "hf-practise[openvino]")',
    )
    p.add_argument(
        "--latency-precision",
        choices=["fp32", "bf16", "fp16"],
        default=None,
        help="time the torch model under autocast in this precision (default: the --mixed-precision one, else fp32)",
    )
    p.add_argument(
        "--mixed-precision",
        choices=["no", "bf16", "fp16"],
        default=None,
        help="finetune under Accelerate's mixed precision (default: what `accelerate launch --mixed_precision` "
        "or `accelerate config` set); latency is then timed in the same precision unless --latency-precision",
    )
    p.add_argument(
        "--latency-table",
        default=None,
        help="json {block path: share of the model's latency} measured on your deployment device; replaces local timing",
    )
    p.add_argument(
        "--export",
        choices=["onnx"],
        default=None,
        help="also write the compressed model as model.onnx (dynamic batch; checked against PyTorch in ONNX Runtime) "
        'beside the checkpoint, and upload it with --push_to_hub (pip install "hf-practise[onnx]")',
    )
    p.add_argument("--cpu", action="store_true", help="run on the CPU even when a GPU is present")
    p.add_argument(
        "--report-to", default=None, help="Accelerate tracker(s) for the finetune loss: tensorboard, wandb, all"
    )
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


#: options whose values are local paths: the recorded command keeps only their last component
PATH_OPTIONS = ("model", "dataset", "output_dir", "work_dir", "latency_table", "metric")


def reproduce_command(args: argparse.Namespace) -> str:
    """The command line for the model card, rebuilt from the parsed arguments: no token, however it was typed,
    and no absolute local paths."""
    return recorded_command("accelerate launch examples/compress.py", build_parser(), args, paths=PATH_OPTIONS)


def read_latency_table(path: str) -> dict[str, float]:
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"--latency-table `{path}` does not exist.")
    return check_latency_table(read_json(file, "The latency table"), source=f"The latency table `{path}`")


def latency_precision(args: argparse.Namespace) -> str:
    """--latency-precision, else the finetune's mixed precision (flag or `accelerate launch` setting), else fp32."""
    if args.latency_precision is not None:
        return args.latency_precision
    mixed = args.mixed_precision or os.environ.get("ACCELERATE_MIXED_PRECISION", "no")
    return {"bf16": "bf16", "fp16": "fp16"}.get(mixed, "fp32") if args.latency_backend == "torch" else "fp32"


def build_config(args: argparse.Namespace) -> CompressionConfig:
    return CompressionConfig(
        latency_reduction=None
        if args.num_blocks is not None
        else (0.22 if args.latency_reduction is None else args.latency_reduction),
        num_blocks=args.num_blocks,
        latency_tolerance=args.latency_tolerance,
        eval_metrics=args.metric or ["accuracy", "top_k_accuracy"],
        trust_remote_code=args.trust_remote_code,
        seed=args.seed,
        work_dir=args.work_dir,
        scan=ScanConfig(
            iterations=args.scan_iterations,
            lr=args.scan_lr,
            retries=args.scan_retries,
            batch_size=args.scan_batch_size,
            optimizer=args.scan_optimizer,
        ),
        finetune=FinetuneConfig(
            iterations=args.iterations,
            lr=args.lr,
            batch_size=args.batch_size,
            optimizer=args.optimizer,
            weight_decay=args.weight_decay,
            schedule=args.schedule,
            adaptor_init=args.adaptor_init,
            augmentation=args.augmentation,
            objective=args.objective,
            holdout=args.holdout,
            recalibrate_norms=args.recalibrate_norms,
            kd_temperature=args.kd_temperature,
            checkpoint_every=args.checkpoint_every,
        ),
        latency=LatencyConfig(
            batch_size=args.latency_batch_size,
            threads=args.latency_threads,
            repeats=args.latency_repeats,
            backend=args.latency_backend,
            precision=latency_precision(args),
        ),
        latency_table=read_latency_table(args.latency_table) if args.latency_table else None,
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.WARNING)
    logging.getLogger("hf_practise").setLevel(logging.INFO)
    try:
        return run(args)
    except KeyboardInterrupt:  # Ctrl-C: finished scan rows and finetune checkpoints are whole in the work dir
        print(interrupted_message(args), file=sys.stderr)
        sys.exit(130)
    # OSError: missing files, permissions, a full disk; SafetensorError: what safetensors raises for an I/O error
    except (ValueError, OSError, ImportError, FloatingPointError, SafetensorError) as e:
        logging.getLogger(__name__).debug("failed", exc_info=True)
        sys.exit(f"error: {e}")


def interrupted_message(args: argparse.Namespace) -> str:
    if args.work_dir:
        return f"interrupted; rerun the same command to resume from the work dir `{args.work_dir}`."
    return (
        "interrupted; nothing can be resumed, as no --work-dir was given: rerun with --work-dir DIR, and after "
        "another interruption the same command resumes from it."
    )


def validate(args: argparse.Namespace) -> None:
    """Everything that can be checked before the first forward pass, so a mistake costs seconds, not a run."""
    out = Path(args.output_dir)
    check_writable_parent(out)
    inputs = input_paths(args.model, work_dir=args.work_dir)
    if Path(args.dataset).exists():
        inputs["the dataset folder"] = args.dataset
    if args.latency_table:
        inputs["the latency table"] = args.latency_table
    check_output_location(out, inputs)
    if out.exists() and any(out.iterdir()):
        if not args.overwrite:
            raise FileExistsError(
                f"--output-dir {out} exists and is not empty; choose another one or pass --overwrite."
            )
        check_replaceable_output(out)
    if args.work_dir and Path(args.work_dir).exists() and not Path(args.work_dir).is_dir():
        raise ValueError(f"--work-dir {args.work_dir} is a file; pass a folder.")
    if args.push_to_hub:
        if not args.hub_model_id:
            raise ValueError("--push-to-hub needs --hub-model-id ORG/NAME.")
        from huggingface_hub.utils import HFValidationError, validate_repo_id

        try:
            validate_repo_id(args.hub_model_id)
        except HFValidationError as e:
            raise ValueError(f"--hub-model-id `{args.hub_model_id}` is not a Hub repo id (ORG/NAME): {e}") from e
    for flag, value in (("--num-samples", args.num_samples), ("--per-class", args.per_class)):
        if value is not None and value < 1:
            raise ValueError(f"{flag} must be at least 1, got {value}.")
    if args.eval_num_samples is not None and args.eval_num_samples < 1:
        raise ValueError(f"--eval-num-samples must be at least 1, got {args.eval_num_samples}.")
    if args.eval_num_samples is not None and not args.eval_split:
        raise ValueError("--eval-num-samples needs --eval-split (the labelled split to evaluate on).")


def run(args: argparse.Namespace) -> int:
    config = build_config(args)  # refuses bad numbers before anything is loaded
    validate(args)
    out = Path(args.output_dir)
    # a missing runtime is named before any data is read: the latency backend, and the export's check
    if config.latency_table is None:
        require_backend(config.latency.backend)
    if args.export == "onnx":
        require_backend("onnxruntime")
    accelerator = Accelerator(cpu=args.cpu, log_with=args.report_to, mixed_precision=args.mixed_precision)
    if args.report_to:
        accelerator.init_trackers(
            "hf_practise", config={k: v for k, v in vars(args).items() if v is not None and k != "token"}
        )

    tiny = load_dataset_source(args.dataset, args.split, revision=args.dataset_revision, token=args.token)
    if args.per_class is None and args.num_samples > len(tiny):
        sys.exit(
            f"error: --num-samples {args.num_samples} is larger than the {len(tiny)} images of {args.dataset}; "
            f"use at most {len(tiny)}."
        )
    eval_set = None
    if args.eval_split:
        eval_set = load_dataset_source(args.dataset, args.eval_split, revision=args.dataset_revision, token=args.token)
        if args.eval_num_samples:
            subset = eval_set.shuffle(seed=args.seed).select(range(min(args.eval_num_samples, len(eval_set))))
            for attr in ("_hf_practise_hub_id", "_hf_practise_path"):  # where it came from, for the card
                setattr(subset, attr, getattr(eval_set, attr, None))
            eval_set = subset

    compressor = PractiseCompressor.from_pretrained(
        args.model,
        config,
        accelerator=accelerator,
        revision=args.revision,
        token=args.token,
        trust_remote_code=args.trust_remote_code,
    )
    result = compressor.compress(
        tiny,
        eval_set,
        num_samples=None if args.per_class else args.num_samples,
        per_class=args.per_class,
        image_column=args.image_column,
        label_column=args.label_column,
        skip_broken=args.skip_broken_images,
    )
    result.command = reproduce_command(args)
    status = 0
    if accelerator.is_main_process:
        print("\nRecoverability scan (lower score = better block to drop):\n")
        print(result.scan_table())
        print(f"\nDropped: {', '.join(r.block for r in result.dropped)}\n")
        print(result.summary())
        if result.resume_note():
            print("\n" + result.resume_note())
        print("\nWall seconds per phase: " + json.dumps({k: round(v, 1) for k, v in result.phase_seconds.items()}))
        if args.export == "onnx":
            onnx = result.export_onnx()
            print(
                f"\nONNX export: max |logit difference| from PyTorch {onnx['max_abs_logit_diff']:.2g} "
                f"({onnx['relative_diff']:.2g} of the largest logit) on {onnx['images']} {onnx['images_from']} images"
            )
        path = result.save_pretrained(out, overwrite=args.overwrite, repo_id=args.hub_model_id)
        native = result.reloads_natively
        how = f"plain {result.family.library_name}" if native else "hf_practise's loader"
        print(f"\nSaved to {path}. Reload with {how}:")
        print("  " + result.family.load_snippet(str(path), hub=False, native=native).replace("\n", "\n  "))
        if args.push_to_hub:
            try:
                url = result.push_to_hub(args.hub_model_id, private=args.private or None, token=args.token)
                print(f"\nPushed to {args.hub_model_id}: {url}")
            except RuntimeError as e:
                print(f"error: {e}", file=sys.stderr)
                status = 1
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return status


if __name__ == "__main__":
    sys.exit(main())
