"""Every knob of a PRACTISE run, as dataclasses.

A run has three phases that each get their own config: the recoverability scan (adaptor-only training per
candidate block), the mimic finetune of the chosen pruned network, and latency measurement. The top-level
`CompressionConfig` holds them plus the compression target.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal

from .metrics import check_metrics
from .objectives import AUGMENTATIONS, OBJECTIVES


def option(
    default: Any = dataclasses.MISSING, doc: str = "", *, factory: Any = dataclasses.MISSING, **metadata: Any
) -> Any:
    """A config field and its CLI help, written once (`hf_practise.cli` makes the flag; `metadata`: see there)."""
    return field(default=default, default_factory=factory, metadata={"help": doc, **metadata})


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def _choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    _check(value in choices, f"`{name}` must be one of {', '.join(map(repr, choices))}; got {value!r}.")


def _positive(name: str, value: Any, flag: str | None, *, allow_zero: bool = False, integer: bool = False) -> None:
    """`value` must be a finite number > 0 (>= 0 with `allow_zero`); the message names the CLI flag, if any."""
    kind = int if integer else (int, float)
    ok = isinstance(value, kind) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value >= 0 if allow_zero else value > 0)
    bound = ">= 0" if allow_zero else "> 0"
    cli = f" (CLI: {flag})" if flag else ""
    _check(ok, f"`{name}`{cli} must be {'an integer' if integer else 'a number'} {bound}; got {value!r}.")


@dataclass
class ScanConfig:
    """Recoverability scan: train only the adaptors around each dropped candidate."""

    iterations: int | None = option(
        None,
        (
            "optimiser steps of adaptor training per candidate block (default: the family's "
            "`scan_iterations`: 100, or 400 for a Swin or transformers ViT, 600 for a ConvNeXt, 800 for a timm ViT; "
            "the fewest whose ranking matches the 1,000-step one to Kendall tau 0.9, "
            "benchmarks/results/scan_tau_summary.md)"
        ),
    )
    batch_size: int = option(64, "images per step of adaptor training")
    lr: float = option(1e-3, "peak learning rate of the adaptors (cosine decay; see `lr_width`)")
    lr_width: int = option(
        256,
        (
            "with AdamW, adaptors wider than this many channels train at `lr * lr_width / width`: every AdamW step "
            "moves each weight by about the rate, so a wider adaptor's output moves more (on a Bottleneck ResNet-50 "
            "one rate for all widths raised the feature error of 4 of 12 candidates, this rule of none: "
            "benchmarks/results/scan_rate.md); 0: one rate for every width"
        ),
    )
    weight_decay: float = option(0.0, "weight decay of the adaptors (they start at identity; decay pulls them to zero)")
    optimizer: Literal["adamw", "sgd"] = option(
        "adamw", "adaptor optimizer (sgd: momentum 0.9, as the official code with --scan-lr 0.02)"
    )
    retries: int = option(
        2,
        (
            "when adaptor training of a candidate raises the error, start again from identity at a tenth of "
            "the rate, this many times, before keeping the identity adaptors"
        ),
    )
    stage_cache_mb: int = option(
        2048,
        (
            "memory (MB) for the teacher's activations where a candidate's changes begin, so each step runs "
            "from there instead of from the image (0: always from the image; same recoverabilities either way)"
        ),
    )

    def __post_init__(self) -> None:
        _choice("scan.optimizer", self.optimizer, ("adamw", "sgd"))
        if self.iterations is not None:
            _positive("scan.iterations", self.iterations, "--scan-iterations", allow_zero=True, integer=True)
        _positive("scan.batch_size", self.batch_size, "--scan-batch-size", integer=True)
        _positive("scan.lr", self.lr, "--scan-lr")
        _positive("scan.lr_width", self.lr_width, "--scan-lr-width", allow_zero=True, integer=True)
        _positive("scan.weight_decay", self.weight_decay, "--scan-weight-decay", allow_zero=True)
        _positive("scan.retries", self.retries, "--scan-retries", allow_zero=True, integer=True)
        _positive("scan.stage_cache_mb", self.stage_cache_mb, "--scan-stage-cache-mb", allow_zero=True, integer=True)

    def adaptor_lr(self, width: int) -> float:
        """The starting rate of adaptors `width` channels wide (`lr_width`; SGD keeps `lr`, as the official code)."""
        if self.optimizer != "adamw" or not self.lr_width or width <= self.lr_width:
            return self.lr
        return self.lr * self.lr_width / width

    def resolved(self, family: Any) -> ScanConfig:
        """This config with `iterations=None` replaced by the family's step count (`scan_iterations`)."""
        if self.iterations is not None:
            return self
        return dataclasses.replace(self, iterations=family.scan_iterations)


@dataclass
class FinetuneConfig:
    """End-to-end feature-mimicking finetune of the pruned network (classifier frozen)."""

    iterations: int = option(1000, "mimic finetune steps (optimiser steps)")
    batch_size: int = option(
        64,
        (
            "images per finetune step over all processes (the global batch; each of N processes trains on "
            "its share of it, so N processes take the steps one would)"
        ),
    )
    lr: float | None = option(None, "finetune peak learning rate (default: 0.01 for SGD, 1e-4 for AdamW)")
    optimizer: Literal["auto", "sgd", "adamw"] = option(
        "auto",
        (
            "finetune optimizer (auto: the family's: SGD for BatchNorm ResNets, AdamW for LayerNorm ViTs and "
            "ConvNeXts); SGD uses nesterov momentum 0.9"
        ),
    )
    weight_decay: float = option(1e-4, "finetune weight decay, on weights only, never on norms, biases or adaptors")
    schedule: Literal["cosine", "constant"] = option("cosine", "finetune learning-rate schedule after warm-up")
    warmup_iterations: int = option(0, "linear warm-up steps of the finetune")
    adaptor_init: Literal["scan", "identity"] = option(
        "scan", "start the finetune from the scan's trained adaptors, or from identity"
    )
    augmentation: str = option(
        "auto",
        (
            "finetune augmentation, a name in `objectives.AUGMENTATIONS` (auto: mixup, or none for an "
            "objective that needs labels: blended images have no label); the teacher's features of the augmented "
            "batch are the targets"
        ),
        registry=AUGMENTATIONS,
    )
    train_norm_stats: bool = option(
        False, "update BatchNorm running statistics during the finetune (default: keep the teacher's)"
    )
    objective: str = option(
        "auto",
        (
            "finetune loss, a name in `objectives.OBJECTIVES` (auto: features+kd, or features for a model "
            "without a classifier; the defaults come from benchmarks/results: resnet34 compare, 3 seeds, and the "
            "families rows)"
        ),
        registry=OBJECTIVES,
    )
    holdout: int = option(
        0,
        (
            "tiny-set images held out of the finetune: every --holdout-every steps the student's feature "
            "error on them (against the teacher's features, no labels) is measured, and the weights of the step "
            "where it was lowest are kept (0: train on every image, keep the last weights)"
        ),
    )
    holdout_every: int = option(50, "finetune steps between two measures on the holdout")
    recalibrate_norms: bool = option(
        False, "after the finetune, re-estimate BatchNorm statistics on the tiny set (default: keep the teacher's)"
    )
    kd_temperature: float = option(4.0, "softmax temperature of the kd objective")
    checkpoint_every: int = option(
        200, "finetune steps between resumable checkpoints in --work-dir (0: only the finished one)"
    )
    retries: int = option(
        2,
        (
            "a finetune whose loss turns NaN/inf starts again (from the scan's adaptors) at a tenth of the "
            "rate, up to this many times"
        ),
    )

    def __post_init__(self) -> None:
        _positive("finetune.iterations", self.iterations, "--iterations", allow_zero=True, integer=True)
        _positive("finetune.batch_size", self.batch_size, "--batch-size", integer=True)
        if self.lr is not None:
            _positive("finetune.lr", self.lr, "--lr")
        _choice("finetune.optimizer", self.optimizer, ("auto", "sgd", "adamw"))
        _positive("finetune.weight_decay", self.weight_decay, "--weight-decay", allow_zero=True)
        _choice("finetune.schedule", self.schedule, ("cosine", "constant"))
        _positive(
            "finetune.warmup_iterations", self.warmup_iterations, "--warmup-iterations", allow_zero=True, integer=True
        )
        _choice("finetune.adaptor_init", self.adaptor_init, ("scan", "identity"))
        _choice("finetune.augmentation", self.augmentation, ("auto", *AUGMENTATIONS))
        _positive("finetune.holdout", self.holdout, "--holdout", allow_zero=True, integer=True)
        _positive("finetune.holdout_every", self.holdout_every, "--holdout-every", integer=True)
        _choice("finetune.objective", self.objective, ("auto", *OBJECTIVES))
        labelled = self.objective != "auto" and OBJECTIVES[self.objective].needs_labels
        if labelled and self.augmentation != "auto" and not AUGMENTATIONS[self.augmentation].keeps_labels:
            label_free = ", ".join(n for n, o in OBJECTIVES.items() if not o.needs_labels)
            raise ValueError(
                f"finetune.augmentation={self.augmentation!r} changes the images so their labels no longer hold: use "
                f"it with a label-free objective ({label_free}), or --augmentation flip."
            )
        _positive("finetune.kd_temperature", self.kd_temperature, "--kd-temperature")
        _positive(
            "finetune.checkpoint_every", self.checkpoint_every, "--checkpoint-every", allow_zero=True, integer=True
        )
        _positive("finetune.retries", self.retries, "--retries", allow_zero=True, integer=True)

    def resolved(self, family: Any, model: Any = None) -> FinetuneConfig:
        """This config with every "auto" (and `lr=None`) replaced by what runs for this family and model.

        A BatchNorm ResNet takes SGD at 0.01; a LayerNorm network (ViT, ConvNeXt) is ruined by that and takes
        AdamW at 1e-4 (measured in benchmarks/results/families.md). The objective is features+kd when `model` has a
        classifier with weights (a headless backbone has no logits to distil: features), and the augmentation
        mixup unless the objective needs the images' labels (ce)."""
        optimizer = family.finetune_optimizer if self.optimizer == "auto" else self.optimizer
        if optimizer not in DEFAULT_LR:
            raise ValueError(f"Unknown optimizer `{optimizer}`; choose `auto`, `sgd` or `adamw`.")
        lr = DEFAULT_LR[optimizer] if self.lr is None else self.lr
        objective = self.objective
        if objective == "auto":
            headless = model is not None and not any(True for _ in family.classifier(model).parameters())
            objective = "features" if headless else "features+kd"
        augmentation = self.augmentation
        if augmentation == "auto":
            augmentation = "none" if OBJECTIVES[objective].needs_labels else "mixup"
        return dataclasses.replace(self, optimizer=optimizer, lr=lr, objective=objective, augmentation=augmentation)


def check_latency_table(table: Any, *, source: str = "the latency table") -> dict[str, float]:
    """`table` as {block path: share}, refusing anything but finite shares in (0, 1) that sum to at most 1.

    Raises:
        ValueError: naming the entries that are wrong and `source` (a file name, when read from one).
    """
    if not isinstance(table, dict) or not table:
        raise ValueError(
            f"{source} must be a non-empty JSON object {{block path: share of the model's latency}}, e.g. "
            '{"layer1.1": 0.05}; got ' + type(table).__name__ + "."
        )
    bad = {}
    for key, value in table.items():
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if not (isinstance(key, str) and ok and 0.0 < value < 1.0):
            bad[key] = value
    if bad:
        raise ValueError(
            f"{source} has shares that are not finite fractions in (0, 1): {bad}. Each entry is the block's share "
            "of the whole model's latency on your device (block time / model time), e.g. 0.05."
        )
    total = sum(table.values())
    if total > 1.0 + 1e-6:
        raise ValueError(
            f"The shares in {source} add up to {total:.3f}, more than the whole model; each must be the block's "
            "share of the model's latency (block time / model time)."
        )
    return {k: float(v) for k, v in table.items()}


#: the finetune's peak learning rate per optimizer when `FinetuneConfig.lr` is None
DEFAULT_LR = {"sgd": 0.01, "adamw": 1e-4}


@dataclass
class LatencyConfig:
    """How latency is measured; it is measured on the device the model runs on."""

    batch_size: int = option(64, "images per timed forward pass")
    threads: int | None = option(None, "CPU threads while timing (default: torch's current setting)")
    warmup: int = option(3, "untimed passes before timing")
    repeats: int = option(15, "timed passes (A/B pairs when comparing two models)")
    input_size: tuple[int, int, int] | None = option(
        None,
        "channels, height, width of the timed input (default: the model's pretrained config)",
        metavar=("C", "H", "W"),
    )
    channels_last: bool = option(False, "time in channels_last memory format")
    backend: Literal["torch", "onnxruntime", "openvino"] = option(
        "torch",
        (
            "where latency is measured: PyTorch eager, or the exported model in ONNX Runtime (CPU; CUDA on "
            'a GPU; pip install "hf-practise[onnx]") or OpenVINO (CPU; pip install "hf-practise[openvino]")'
        ),
    )
    precision: Literal["fp32", "bf16", "fp16"] = option(
        "fp32",
        (
            "autocast precision of the timed passes, torch backend only (CLI default: the --mixed-precision "
            "one, else fp32)"
        ),
        cli_default=None,
    )

    def __post_init__(self) -> None:
        _choice("latency.backend", self.backend, ("torch", "onnxruntime", "openvino"))
        _choice("latency.precision", self.precision, ("fp32", "bf16", "fp16"))
        _check(
            self.precision == "fp32" or self.backend == "torch",
            f"`latency.precision` {self.precision!r} needs the torch backend (CLI: --latency-backend torch); the "
            "runtimes time the exported fp32 model.",
        )
        _positive("latency.batch_size", self.batch_size, "--latency-batch-size", integer=True)
        if self.threads is not None:
            _positive("latency.threads", self.threads, "--latency-threads", integer=True)
        _positive("latency.warmup", self.warmup, "--latency-warmup", allow_zero=True, integer=True)
        _positive("latency.repeats", self.repeats, "--latency-repeats", integer=True)
        if self.input_size is not None:
            size = tuple(self.input_size)
            _check(
                len(size) == 3 and all(isinstance(v, int) and v > 0 for v in size),
                f"`latency.input_size` is (channels, height, width) of positive integers; got {self.input_size!r}.",
            )


@dataclass
class CompressionConfig:
    """The target and every phase of a PRACTISE compression."""

    latency_reduction: float | list[float] | None = option(
        0.22,
        (
            "drop blocks until measured latency falls by this fraction, e.g. 0.22; several (0.2 0.3 0.5) give one "
            "model per target from one latency table and one scan"
        ),
        exclusive="target",
        nargs="+",
    )
    num_blocks: int | list[int] | None = option(
        None,
        (
            "drop exactly this many blocks instead (overrides latency_reduction); several (2 4 6) give one model per "
            "count from one latency table and one scan"
        ),
        exclusive="target",
        nargs="+",
    )
    blocks: list[str] | None = option(
        None,
        (
            "drop exactly these blocks (dotted paths, as the scan table names them) instead of choosing: "
            "only they are scanned, for the finetune's starting adaptors (CLI: repeatable)"
        ),
        exclusive="target",
    )
    latency_tolerance: float = option(
        0.06, "a measured cut more than this above the target is an overshoot: selection comes back"
    )
    units: Literal["blocks", "branches"] = option(
        "blocks",
        (
            "what a candidate is: whole residual blocks, or (timm ViT / DeiT, transformers ViT-like models) each "
            "block's attention and MLP apart; "
            "a model that keeps a block without one of them reloads with hf_practise.load_compressed"
        ),
    )
    rescore: int = option(
        0,
        (
            "re-score as blocks go: after every this many drops, scan the remaining candidates again on the network "
            "without the blocks chosen so far (0: score once, as PRACTISE does); each round costs a scan of what is "
            "left (the 'rescore' phase)"
        ),
    )
    set_cost: Literal["summed", "joint"] = option(
        "summed",
        (
            "what a set of blocks costs when selection comes back from an overshoot: summed (the blocks' own "
            "recoverabilities added up, as PRACTISE scores them) or joint (the set's blocks dropped together, their "
            "adaptors trained as the scan trains one block's): beside the cheapest set by the sum, the cheapest set "
            "holding each block the overshooting set dropped and it does not is measured, and of those inside the "
            "window the one that recovers best is kept (a scan step per set, in the 'select' phase)"
        ),
    )
    seed: int = option(0, "seeds sampling, shuffling and adaptor training")
    scan: ScanConfig = field(default_factory=ScanConfig, metadata={"no_flag": "a section: its fields have flags"})
    finetune: FinetuneConfig = field(
        default_factory=FinetuneConfig, metadata={"no_flag": "a section: its fields have flags"}
    )
    latency: LatencyConfig = field(
        default_factory=LatencyConfig, metadata={"no_flag": "a section: its fields have flags"}
    )
    latency_table: dict[str, float] | None = option(
        None,
        (
            "block path -> share of the model's latency, measured on the deployment device; replaces local "
            "timing, and selection trusts its sum instead of re-measuring (CLI: a JSON file, e.g. from "
            "examples/latency_table.py)"
        ),
    )
    work_dir: str | None = option(
        None, "where scan rows and finetune checkpoints are kept so a run can resume (rerun the same command)"
    )
    eval_batch_size: int = option(256, "images per step when measuring top-1")
    eval_metrics: list[str] = option(
        factory=lambda: ["accuracy", "top_k_accuracy"],
        doc=(
            "`evaluate` metric modules run on the eval set besides top-1 (CLI: repeatable): the shipped "
            "accuracy / top_k_accuracy (offline, the default), or with --trust-remote-code any evaluate metric "
            "name or local module folder"
        ),
        flag="--metric",
    )
    trust_remote_code: bool = option(
        False,
        (
            "allow `eval_metrics` other than the shipped ones (their module's code runs); the CLI flag also "
            "lets a transformers repo's own code run"
        ),
    )
    quantize: Literal["none", "int8"] = option(
        "none",
        (
            "int8: also quantize the compressed model and the teacher in the latency backend (onnxruntime: static "
            "QDQ; openvino: NNCF), calibrated on the tiny set, and time the four side by side; the int8 model is "
            "saved beside the fp32 one"
        ),
    )
    quantize_aware: int = option(
        0,
        (
            "with quantize='int8' and the openvino backend: steps of quantization-aware mimic finetuning of the "
            "compressed model after its finetune (NNCF fake quantization of weights and activations, trained on the "
            "tiny set); its int8 model replaces the post-training one; 0: post-training only"
        ),
    )
    quantize_aware_lr: float = option(1e-5, "peak rate of the quantization-aware steps (AdamW, cosine decay)")
    int8_calibration: Literal["auto", "minmax", "entropy", "percentile", "performance", "mixed"] = option(
        "auto",
        (
            "int8 calibration (auto: the method with the lowest logit error on held-out tiny-set images; "
            "onnxruntime: minmax, entropy, percentile; openvino: NNCF's performance or mixed preset)"
        ),
    )

    def __post_init__(self) -> None:
        _choice("units", self.units, ("blocks", "branches"))
        if self.blocks is not None:
            _check(
                isinstance(self.blocks, (list, tuple))
                and len(self.blocks) > 0
                and all(isinstance(b, str) and b for b in self.blocks)
                and len(set(self.blocks)) == len(self.blocks),
                f"`blocks` (CLI: --blocks) is a non-empty list of distinct block paths; got {self.blocks!r}.",
            )
            _check(self.num_blocks is None, "Set `blocks` or `num_blocks` (CLI: --blocks / --num-blocks), not both.")
            self.blocks = list(self.blocks)
            self.latency_reduction = None  # the blocks are the target
        elif self.num_blocks is None and self.latency_reduction is None:
            raise ValueError("Set a target: `latency_reduction` (e.g. 0.22) or `num_blocks` (e.g. 3).")
        if self.num_blocks is not None:
            counts = self.num_blocks if isinstance(self.num_blocks, (list, tuple)) else [self.num_blocks]
            _check(
                len(counts) > 0
                and len(set(counts)) == len(counts)
                and all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in counts),
                "`num_blocks` (CLI: --num-blocks) must be at least 1 (one count, or several distinct ones); got "
                f"{counts[0] if len(counts) == 1 else self.num_blocks!r}.",
            )
            self.num_blocks = sorted(counts) if len(counts) > 1 else counts[0]
        elif self.blocks is None:
            several = self.latency_reduction if isinstance(self.latency_reduction, (list, tuple)) else None
            _check(
                several is None or (len(several) > 0 and len(set(several)) == len(several)),
                f"`latency_reduction` (CLI: --latency-reduction) takes distinct targets; got {several!r}.",
            )
            for r in several or [self.latency_reduction]:
                _check(
                    isinstance(r, (int, float)) and not isinstance(r, bool) and math.isfinite(r) and 0.0 < r < 1.0,
                    f"`latency_reduction` (CLI: --latency-reduction) is a fraction in (0, 1), e.g. 0.22 for 22%; "
                    f"got {r!r}.",
                )
            if several is not None:  # one target is a number; several, in ascending order
                self.latency_reduction = sorted(map(float, several)) if len(several) > 1 else float(several[0])
        _positive("seed", self.seed, "--seed", allow_zero=True, integer=True)
        _positive("rescore", self.rescore, "--rescore", allow_zero=True, integer=True)
        _choice("set_cost", self.set_cost, ("summed", "joint"))
        _positive("latency_tolerance", self.latency_tolerance, "--latency-tolerance")
        _positive("eval_batch_size", self.eval_batch_size, "--eval-batch-size", integer=True)
        _check(
            isinstance(self.eval_metrics, (list, tuple)) and all(isinstance(m, str) and m for m in self.eval_metrics),
            f"`eval_metrics` (CLI: --metric) is a list of `evaluate` metric names or paths; got {self.eval_metrics!r}.",
        )
        self.eval_metrics = list(dict.fromkeys(["accuracy", *self.eval_metrics]))  # top-1 is always reported
        check_metrics(self.eval_metrics, trust_remote_code=self.trust_remote_code)
        for name, kind in (("scan", ScanConfig), ("finetune", FinetuneConfig), ("latency", LatencyConfig)):
            _check(isinstance(getattr(self, name), kind), f"`{name}` must be a `{kind.__name__}`.")
        if self.latency_table is not None:
            self.latency_table = check_latency_table(self.latency_table)
        self._check_quantize()

    def _check_quantize(self) -> None:
        from .quantize import INT8_BACKENDS, METHODS

        _choice("quantize", self.quantize, ("none", "int8"))
        _positive("quantize_aware", self.quantize_aware, "--quantize-aware", allow_zero=True, integer=True)
        _positive("quantize_aware_lr", self.quantize_aware_lr, "--quantize-aware-lr")
        _check(
            not self.quantize_aware or self.quantize == "int8",
            "`quantize_aware` trains for int8: add --quantize int8 (CompressionConfig(quantize='int8')).",
        )
        if self.quantize == "none":
            return
        backend = self.latency.backend
        _check(
            backend in INT8_BACKENDS,
            f"`quantize='int8'` (CLI: --quantize int8) runs in ONNX Runtime or OpenVINO, not in the {backend!r} "
            "latency backend: add --latency-backend onnxruntime (or openvino), "
            "LatencyConfig(backend='onnxruntime') in Python.",
        )
        _check(
            not self.quantize_aware or backend == "openvino",
            f"`quantize_aware` (CLI: --quantize-aware) runs in OpenVINO, not in the {backend!r} latency backend: "
            "NNCF's trained torch quantizers become int8 kernels only through OpenVINO's converter (ONNX Runtime "
            "does not run their ONNX op). Add --latency-backend openvino (LatencyConfig(backend='openvino')).",
        )
        methods = ("auto", *METHODS[backend])
        _check(
            self.int8_calibration in methods,
            f"`int8_calibration` (CLI: --int8-calibration) for {backend} is one of {', '.join(methods)}; "
            f"got {self.int8_calibration!r}.",
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def points(self) -> list[float] | list[int]:
        """The targets of a run that makes one model per target (latency reductions or block counts; empty for a
        single target)."""
        for several in (self.num_blocks, self.latency_reduction):
            if isinstance(several, list):
                return list(several)
        return []

    def for_target(self, target: float | int) -> CompressionConfig:
        """This config with the one target `target` (a block count where the run has several, else a latency
        reduction)."""
        if isinstance(self.num_blocks, list):
            return dataclasses.replace(self, num_blocks=target)
        return dataclasses.replace(self, latency_reduction=target)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CompressionConfig:
        d = dict(d)
        scan = ScanConfig(**d.pop("scan", {}))
        finetune = FinetuneConfig(**d.pop("finetune", {}))
        lat = dict(d.pop("latency", {}))
        if lat.get("input_size") is not None:
            lat["input_size"] = tuple(lat["input_size"])
        return cls(scan=scan, finetune=finetune, latency=LatencyConfig(**lat), **d)
