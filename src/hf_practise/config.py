"""Every knob of a PRACTISE run, as dataclasses.

A run has three phases that each get their own config: the recoverability scan (adaptor-only training per
candidate block), the mimic finetune of the chosen pruned network, and latency measurement. The top-level
`CompressionConfig` holds them plus the compression target.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass
class ScanConfig:
    """Recoverability scan: train only the adaptors around each dropped candidate."""

    iterations: int = 100  # optimiser steps of adaptor training per candidate block
    batch_size: int = 64  # images per step
    lr: float = 1e-3  # peak learning rate of the adaptors (AdamW, cosine decay)
    weight_decay: float = 0.0  # adaptors start at identity; decay would pull them to zero


@dataclass
class FinetuneConfig:
    """End-to-end feature-mimicking finetune of the pruned network (classifier frozen)."""

    iterations: int = 1000  # optimiser steps
    batch_size: int = 64  # images per step and process
    lr: float | None = None  # peak learning rate (None: 0.01 for SGD, 1e-4 for AdamW)
    optimizer: Literal["auto", "sgd", "adamw"] = "auto"  # auto: the family's (SGD for BatchNorm ResNets, AdamW
    # for LayerNorm ViTs and ConvNeXts); SGD uses nesterov momentum 0.9
    weight_decay: float = 1e-4  # applied to weights only, never to norms, biases or adaptors
    schedule: Literal["cosine", "constant"] = "cosine"  # learning-rate schedule after warm-up
    warmup_iterations: int = 0  # linear warm-up steps
    adaptor_init: Literal["scan", "identity"] = "scan"  # start from the scan's trained adaptors, or from identity
    augmentation: Literal["none", "timm"] = "none"  # "timm": the model's own training transform from its config
    train_norm_stats: bool = False  # update BatchNorm running statistics (False keeps the teacher's)
    objective: Literal["features", "kd", "ce"] = "features"  # features: MSE on pre-pooling features (PRACTISE);
    # kd: KL to the teacher's logits; ce: cross-entropy on the tiny set's labels (the baselines of the paper)
    kd_temperature: float = 4.0  # softmax temperature of the kd objective
    checkpoint_every: int = 200  # steps between resumable checkpoints when a work_dir is set (0: never)

    def resolved(self, family: Any) -> FinetuneConfig:
        """This config with `optimizer="auto"` and `lr=None` replaced by the family's choice and its learning rate.

        A BatchNorm ResNet takes SGD at 0.01; a LayerNorm network (ViT, ConvNeXt) is ruined by that and takes
        AdamW at 1e-4 (measured in benchmarks/results/families.md)."""
        optimizer = family.finetune_optimizer if self.optimizer == "auto" else self.optimizer
        if optimizer not in DEFAULT_LR:
            raise ValueError(f"Unknown optimizer `{optimizer}`; choose `auto`, `sgd` or `adamw`.")
        lr = DEFAULT_LR[optimizer] if self.lr is None else self.lr
        return dataclasses.replace(self, optimizer=optimizer, lr=lr)


#: the finetune's peak learning rate per optimizer when `FinetuneConfig.lr` is None
DEFAULT_LR = {"sgd": 0.01, "adamw": 1e-4}


@dataclass
class LatencyConfig:
    """How latency is measured; it is measured on the device the model runs on."""

    batch_size: int = 64  # images per forward pass
    threads: int | None = None  # CPU threads while timing (None: torch's current setting)
    warmup: int = 3  # untimed passes before timing
    repeats: int = 15  # timed passes (A/B pairs when comparing two models)
    input_size: tuple[int, int, int] | None = None  # (C, H, W); None reads the model's pretrained config
    channels_last: bool = False  # time in channels_last memory format


@dataclass
class CompressionConfig:
    """The target and every phase of a PRACTISE compression."""

    latency_reduction: float | None = 0.22  # drop blocks until measured latency falls by this fraction
    num_blocks: int | None = None  # or drop exactly this many blocks (overrides latency_reduction)
    seed: int = 0  # seeds sampling, shuffling and adaptor training
    scan: ScanConfig = field(default_factory=ScanConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    latency: LatencyConfig = field(default_factory=LatencyConfig)
    latency_table: dict[str, float] | None = None  # block path -> share of the model's latency, measured on
    # the deployment device; replaces local timing, and selection trusts its sum instead of re-measuring
    work_dir: str | None = None  # where scan rows and finetune checkpoints are kept so a run can resume
    eval_batch_size: int = 256  # images per step when measuring top-1

    def __post_init__(self) -> None:
        if self.num_blocks is None and self.latency_reduction is None:
            raise ValueError("Set a target: `latency_reduction` (e.g. 0.22) or `num_blocks` (e.g. 3).")
        if self.num_blocks is not None and self.num_blocks < 1:
            raise ValueError(f"`num_blocks` must be at least 1, got {self.num_blocks}.")
        if self.num_blocks is None and not 0.0 < float(self.latency_reduction) < 1.0:
            raise ValueError(
                f"`latency_reduction` is a fraction in (0, 1), e.g. 0.22 for 22%; got {self.latency_reduction}."
            )
        for name in ("scan", "finetune"):
            phase = getattr(self, name)
            if phase.iterations < 0 or phase.batch_size < 1:
                raise ValueError(f"`{name}.iterations` must be >= 0 and `{name}.batch_size` >= 1.")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CompressionConfig:
        d = dict(d)
        scan = ScanConfig(**d.pop("scan", {}))
        finetune = FinetuneConfig(**d.pop("finetune", {}))
        lat = dict(d.pop("latency", {}))
        if lat.get("input_size") is not None:
            lat["input_size"] = tuple(lat["input_size"])
        return cls(scan=scan, finetune=finetune, latency=LatencyConfig(**lat), **d)
