"""The `hf-practise` command line: `hf-practise compress --model ... --dataset ... --output-dir ...`.

The flags of the config dataclasses are generated from their fields: each field's `metadata["help"]` is its help,
its type gives the choices (`Literal`), a switch (`bool`), a number or a list, so a new knob is one new field. The
run-level flags (model, data, output, Hub, Accelerate) are written here. For several processes:
`accelerate launch -m hf_practise.cli compress ...` (or `accelerate launch examples/compress.py ...`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import types
import typing
from pathlib import Path
from typing import Any, Literal

from accelerate import Accelerator
from safetensors import SafetensorError

from . import card
from .checkpoint import read_json
from .compressor import PractiseCompressor, input_paths
from .config import CompressionConfig, FinetuneConfig, LatencyConfig, ScanConfig, check_latency_table
from .files import check_output_location, check_writable_parent
from .hub import load_dataset_source
from .provenance import recorded_command
from .quantize import require_int8_backend
from .result import check_replaceable_output
from .runtimes import require_backend

logger = logging.getLogger(__name__)

#: config section (attribute of `CompressionConfig`, "" for its own fields) -> its dataclass and flag prefix:
#: `--scan-lr`, `--latency-threads`; the finetune's and the top-level fields' flags are plain (`--lr`, `--seed`).
#: A field's metadata: "help" (required), "flag" (another name), "no_flag" (the reason it has none), "registry" (a
#: dict name -> object with a `help` line: the choices are "auto" and its names), "cli_default" (the flag's default
#: when it differs from the field's), "exclusive" (a group name: its flags exclude each other), "metavar".
SECTIONS: dict[str, tuple[type, str]] = {
    "": (CompressionConfig, "--"),
    "scan": (ScanConfig, "--scan-"),
    "finetune": (FinetuneConfig, "--"),
    "latency": (LatencyConfig, "--latency-"),
}

#: the program name the model card records, so the command reruns from a checkout of the repository
RECORDED_PROG = "accelerate launch examples/compress.py"

#: options whose values are local paths: the recorded command keeps only their last component
PATH_OPTIONS = ("model", "dataset", "output_dir", "work_dir", "latency_table", "metric")


def field_flag(f: dataclasses.Field, prefix: str) -> str | None:
    """The flag of a config field (None: the field has none, `metadata["no_flag"]` says why)."""
    if "no_flag" in f.metadata:
        return None
    return f.metadata.get("flag") or prefix + f.name.replace("_", "-")


def config_flags() -> list[tuple[str, dataclasses.Field, str]]:
    """(section, field, flag) for every config field that has a flag, in declaration order."""
    return [
        (section, f, flag)
        for section, (cls, prefix) in SECTIONS.items()
        for f in dataclasses.fields(cls)
        if (flag := field_flag(f, prefix)) is not None
    ]


def dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


class StoreTuple(argparse.Action):
    """Stores the values of an `nargs=N` flag as a tuple, the type of the field."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        setattr(namespace, self.dest, tuple(values))


def _argument(f: dataclasses.Field, hint: Any) -> dict[str, Any]:
    """`add_argument` keywords for a field of type `hint`: choices from a Literal (or `metadata["registry"]`),
    store_true for a bool, nargs for a tuple, append for a list; `X | None` is X with default None."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        hint = next(a for a in args if a is not type(None))
        args = typing.get_args(hint)
    origin = typing.get_origin(hint)
    default = f.default if f.default is not dataclasses.MISSING else None
    default = f.metadata.get("cli_default", default)
    registry = f.metadata.get("registry")
    if "nargs" in f.metadata:  # one value or several (several latency targets)
        return {"type": hint, "nargs": f.metadata["nargs"], "default": default}
    if hint is bool:
        return {"action": argparse.BooleanOptionalAction if default else "store_true", "default": default}
    if registry is not None:
        return {"choices": ["auto", *registry], "default": default}
    if origin is Literal:
        return {"choices": list(args), "default": default}
    if origin is tuple:
        return {"type": args[0], "nargs": len(args), "action": StoreTuple, "default": default}
    if origin is list:  # argparse appends to a default list: None stands for the dataclass default
        return {"type": args[0], "action": "append", "default": None}
    if origin is dict:  # a JSON file's path (the latency table: `build_config` reads it)
        return {"metavar": "JSON", "default": default}
    return {"type": hint, "default": default}


def _help(f: dataclasses.Field, default: Any) -> str:
    text = f.metadata.get("help", "")
    if default is not None and default is not False and "default" not in text:
        text += f" (default: {default})"
    if "registry" in f.metadata:  # read when the parser is built, so a registered plug-in is listed
        text += ": " + "; ".join(f"{name} = {item.help}" for name, item in f.metadata["registry"].items())
    return text.replace("%", "%%")


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per config field (see `SECTIONS`), grouped by section; fields with the same
    `metadata["exclusive"]` name are mutually exclusive (the compression target)."""
    groups: dict[str, Any] = {}
    exclusive: dict[str, Any] = {}
    for section, f, flag in config_flags():
        cls = SECTIONS[section][0]
        if section not in groups:
            title = f"{section} ({cls.__name__})" if section else f"compression ({cls.__name__})"
            groups[section] = parser.add_argument_group(title)
        group = groups[section]
        if "exclusive" in f.metadata:
            name = f.metadata["exclusive"]
            if name not in exclusive:
                exclusive[name] = group.add_mutually_exclusive_group()
            group = exclusive[name]
        kwargs = _argument(f, typing.get_type_hints(cls)[f.name])
        if "metavar" in f.metadata:
            kwargs["metavar"] = f.metadata["metavar"]
        group.add_argument(flag, dest=dest(flag), help=_help(f, kwargs["default"]), **kwargs)


def add_compress_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of `hf-practise compress`: the run's own, then one per config field."""
    p.add_argument(
        "--model",
        required=True,
        help="timm name, hf-hub:ORG/NAME, local-dir:PATH, a Hub repo id or a local model folder (safetensors only)",
    )
    p.add_argument("--revision", default=None, help="branch, tag or commit of the model's Hub repo")
    p.add_argument("--token", default=None, help="Hub token (default: the one from `huggingface-cli login`)")
    p.add_argument(
        "--dataset", required=True, help="Hub dataset id, local imagefolder or datasets.save_to_disk directory"
    )
    p.add_argument("--dataset-revision", default=None, help="branch, tag or commit of the dataset's Hub repo")
    p.add_argument("--split", default=None, help="split to draw the tiny set from (default: train, or the only one)")
    p.add_argument("--eval-split", default=None, help="labelled split to measure top-1 on before and after")
    p.add_argument("--eval-num-samples", type=int, default=None, help="evaluate on a seeded subset of this size")
    p.add_argument("--image-column", default=None, help="image column (detected when omitted)")
    p.add_argument("--label-column", default=None, help="label column (detected when omitted; labels are optional)")
    p.add_argument("--num-samples", type=int, default=500, help="tiny-set size (50-500 work well; default: 500)")
    p.add_argument("--per-class", type=int, default=None, help="draw this many images per class instead")
    p.add_argument(
        "--skip-broken-images", action="store_true", help="leave out tiny-set images that cannot be decoded (logged)"
    )
    p.add_argument("--output-dir", required=True, help="where the compressed model is written")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace --output-dir when it holds an earlier hf_practise output (nothing else is ever replaced)",
    )
    p.add_argument("--push-to-hub", action="store_true", help="upload the saved folder to --hub-model-id")
    p.add_argument("--hub-model-id", default=None, help="ORG/NAME of the Hub repo to push to")
    p.add_argument("--private", action="store_true", help="create the Hub repo as private")
    p.add_argument(
        "--mixed-precision",
        choices=["no", "bf16", "fp16"],
        default=None,
        help="finetune under Accelerate's mixed precision (default: what `accelerate launch --mixed_precision` "
        "or `accelerate config` set); latency is then timed in the same precision unless --latency-precision",
    )
    p.add_argument(
        "--export",
        choices=["onnx"],
        default=None,
        help="also write the compressed model as model.onnx (dynamic batch; checked against PyTorch in ONNX Runtime) "
        'beside the checkpoint, and upload it with --push-to-hub (pip install "hf-practise[onnx]")',
    )
    p.add_argument("--cpu", action="store_true", help="run on the CPU even when a GPU is present")
    p.add_argument(
        "--report-to", default=None, help="Accelerate tracker(s) for the finetune loss: tensorboard, wandb, all"
    )
    add_config_arguments(p)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hf-practise", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    compress = commands.add_parser(
        "compress",
        help="compress a timm or transformers vision backbone with PRACTISE",
        description="Compress a timm or transformers vision backbone with PRACTISE on a tiny set of images.",
    )
    add_compress_arguments(compress)
    compress.set_defaults(func=run)
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def reproduce_command(args: argparse.Namespace) -> str:
    """The command line for the model card, rebuilt from the parsed arguments: no token, however it was typed,
    and no absolute local paths."""
    parser = argparse.ArgumentParser()
    add_compress_arguments(parser)
    return recorded_command(RECORDED_PROG, parser, args, paths=PATH_OPTIONS)


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


def section_values(args: argparse.Namespace, section: str) -> dict[str, Any]:
    """The fields of one config section that a flag set (a flag left at None keeps the dataclass default)."""
    values = {}
    for s, f, flag in config_flags():
        value = getattr(args, dest(flag))
        if s == section and value is not None:
            values[f.name] = value
    return values


def build_config(args: argparse.Namespace) -> CompressionConfig:
    """The `CompressionConfig` of the parsed flags: each flag's value goes to its field."""
    top = section_values(args, "")
    if args.num_blocks is not None or args.blocks is not None:
        top["latency_reduction"] = None
    top["latency_table"] = read_latency_table(args.latency_table) if args.latency_table else None
    latency = section_values(args, "latency") | {"precision": latency_precision(args)}
    return CompressionConfig(
        **top,
        scan=ScanConfig(**section_values(args, "scan")),
        finetune=FinetuneConfig(**section_values(args, "finetune")),
        latency=LatencyConfig(**latency),
    )


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


def load_sets(args: argparse.Namespace) -> tuple[Any, Any]:
    """The tiny-set split and the eval split (None without --eval-split; a seeded subset with --eval-num-samples)."""
    tiny = load_dataset_source(args.dataset, args.split, revision=args.dataset_revision, token=args.token)
    if args.per_class is None and args.num_samples > len(tiny):
        sys.exit(
            f"error: --num-samples {args.num_samples} is larger than the {len(tiny)} images of {args.dataset}; "
            f"use at most {len(tiny)}."
        )
    if not args.eval_split:
        return tiny, None
    eval_set = load_dataset_source(args.dataset, args.eval_split, revision=args.dataset_revision, token=args.token)
    if args.eval_num_samples:
        subset = eval_set.shuffle(seed=args.seed).select(range(min(args.eval_num_samples, len(eval_set))))
        for attr in ("_hf_practise_hub_id", "_hf_practise_path"):  # where it came from, for the card
            setattr(subset, attr, getattr(eval_set, attr, None))
        eval_set = subset
    return tiny, eval_set


def run(args: argparse.Namespace) -> int:
    """`hf-practise compress`: validate, compress, print the scan and the summary, save (and push)."""
    config = build_config(args)  # refuses bad numbers before anything is loaded
    validate(args)
    # a missing runtime is named before any data is read: the latency backend, and the export's check
    if config.latency_table is None:
        require_backend(config.latency.backend)
    if args.export == "onnx":
        require_backend("onnxruntime")
    if config.quantize == "int8":
        require_int8_backend(config.latency.backend)
    accelerator = Accelerator(cpu=args.cpu, log_with=args.report_to, mixed_precision=args.mixed_precision)
    if args.report_to:
        accelerator.init_trackers(
            "hf_practise",
            config={k: v for k, v in vars(args).items() if v is not None and k not in ("token", "func")},
        )
    tiny, eval_set = load_sets(args)
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
    for point in result.points or [result]:
        point.command = reproduce_command(args)
    status = report_and_save(result, args) if accelerator.is_main_process else 0
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return status


def report_and_save(result: Any, args: argparse.Namespace) -> int:
    """On the main process: print what was found and dropped, save (export, push); 1 when the push failed.

    The command's report goes to stdout (`print`), the library's progress to the log."""
    print("\nRecoverability scan (lower score = better block to drop):\n")
    print(result.scan_table())
    print(f"\nDropped: {', '.join(r.block for r in result.dropped)}\n")
    print(result.summary())
    if result.resume_note():
        print("\n" + result.resume_note())
    if result.int8 is not None:
        print(f"\nint8 in {result.int8.backend}, side by side (same alternating rounds):\n" + result.int8.table())
    print("\nWall seconds per phase: " + json.dumps({k: round(v, 1) for k, v in result.phase_seconds.items()}))
    if result.points:
        print("\nOperating points (one model per target, same scan):")
        for p in map(card.point_row, result.points, card.beaten_by(result.points)):
            top1 = f", top-1 {100 * p['top1']:.2f}%" if p["top1"] is not None else ""
            beaten = f" (beaten by the {p['beaten_by']} point: choose that one)" if p["beaten_by"] else ""
            print(
                f"  target {p['target_label']}: measured {100 * p['latency_reduction']:.1f}%{top1}, "
                f"{p['dropped']}{beaten}"
            )
    for point in result.points or [result]:
        if args.export == "onnx":
            onnx = point.export_onnx()
            print(
                f"\nONNX export: max |logit difference| from PyTorch {onnx.max_abs_logit_diff:.2g} "
                f"({onnx.relative_diff:.2g} of the largest logit) on {onnx.images} {onnx.images_from} images"
            )
    path = result.save_pretrained(Path(args.output_dir), overwrite=args.overwrite, repo_id=args.hub_model_id)
    native = result.reloads_natively
    why = result.family.why_not_native(result.model)
    how = f"plain {result.family.library_name}" if native else f"hf_practise's loader ({why})"
    where = path / card.point_folder(result) if result.points else path
    print(f"\nSaved to {path}. Reload with {how}:")
    print("  " + result.family.load_snippet(str(where), hub=False, native=native).replace("\n", "\n  "))
    if args.push_to_hub:
        try:
            url = result.push_to_hub(args.hub_model_id, private=args.private or None, token=args.token)
            print(f"\nPushed to {args.hub_model_id}: {url}")
        except RuntimeError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """`hf-practise COMMAND ...`: the exit status (a refused input exits with its message, without a traceback)."""
    args = parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.WARNING)
    logging.getLogger("hf_practise").setLevel(logging.INFO)
    try:
        return args.func(args)
    except KeyboardInterrupt:  # Ctrl-C: finished scan rows and finetune checkpoints are whole in the work dir
        print(interrupted_message(args), file=sys.stderr)
        sys.exit(130)
    # OSError: missing files, permissions, a full disk; SafetensorError: what safetensors raises for an I/O error
    except (ValueError, OSError, ImportError, FloatingPointError, SafetensorError) as e:
        logger.debug("failed", exc_info=True)
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    sys.exit(main())
