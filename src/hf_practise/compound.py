"""Depth and int8 together: the compressed model quantized from the same tiny set, measured beside int8 alone.

A user with a few hundred images would first try post-training int8 on the teacher. With
`CompressionConfig(quantize="int8")` the run quantizes both the teacher and the compressed model in the latency
backend (`quantize.quantize_int8`, calibrated on the tiny set) and times the four models (teacher and compressed,
fp32 and int8) in the same alternating rounds of that runtime, so the report shows what depth adds on top of
int8, and the total speed-up over the fp32 teacher.
"""

from __future__ import annotations

import logging
import statistics
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn

from .config import LatencyConfig
from .latency import (
    LatencyComparison,
    LatencyStats,
    _eval_format,
    _example,
    _stats,
    _threads,
    paired_comparison,
    time_alternating,
)
from .quantize import Int8Model, quantize_int8
from .runtimes import make_runner

logger = logging.getLogger(__name__)

__all__ = ["ROWS", "Int8Comparison", "Int8Module", "compare_int8", "int8_latency_comparison"]

#: the four models, in the order they are timed (and rotated) and tabled; the first is the reference
ROWS = ("teacher fp32", "teacher int8", "compressed fp32", "compressed int8")


@dataclass
class Int8Comparison:
    """Teacher and compressed model, fp32 and int8, timed in the same rounds of one runtime.

    Attributes:
        backend: the runtime ("onnxruntime" or "openvino").
        latency: row name (`ROWS`) -> its latency.
        speedup: row name -> median over rounds of (fp32 teacher time / its time).
        teacher, compressed: the int8 models and what their calibration measured against their fp32 models.
        top1: row name -> top-1 on the eval set, filled in when the run had one.
    """

    backend: str
    latency: dict[str, LatencyStats]
    speedup: dict[str, float]
    teacher: Int8Model
    compressed: Int8Model
    top1: dict[str, float] = field(default_factory=dict)

    @property
    def depth_speedup_int8(self) -> float:
        """What dropping blocks adds once both models are int8 (int8 teacher time / int8 compressed time)."""
        return self.speedup["compressed int8"] / self.speedup["teacher int8"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "latency": {k: v.to_dict() for k, v in self.latency.items()},
            "speedup": self.speedup,
            "depth_speedup_int8": self.depth_speedup_int8,
            "top1": self.top1,
            "teacher": self.teacher.to_dict(),
            "compressed": self.compressed.to_dict(),
        }

    def table(self) -> str:
        """The four models side by side, as a markdown table."""
        lines = [
            "| model | latency (ms) | speed-up vs fp32 teacher | top-1 | top-1 agreement with its fp32 model |",
            "|---|---|---|---|---|",
        ]
        agreement = {"teacher int8": self.teacher.agreement, "compressed int8": self.compressed.agreement}
        for row in ROWS:
            top1 = f"{100 * self.top1[row]:.2f}%" if row in self.top1 else "-"
            agree = f"{100 * agreement[row]:.1f}%" if row in agreement else "-"
            lines.append(f"| {row} | {self.latency[row].median_ms:.2f} | {self.speedup[row]:.2f}x | {top1} | {agree} |")
        return "\n".join(lines)


class Int8Module(nn.Module):
    """An int8 model as a module that returns its logits (on the CPU runtime), for the eval loop."""

    def __init__(self, int8: Int8Model, threads: int = 1) -> None:
        super().__init__()
        self.int8, self.threads = int8, threads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.int8.logits(x.detach().float().cpu(), threads=self.threads).to(x.device)


@torch.no_grad()
def compare_int8(
    teacher: nn.Module,
    compressed: nn.Module,
    images: torch.Tensor,
    *,
    input_size: tuple[int, ...],
    config: LatencyConfig,
    calibration: str = "auto",
    seed: int = 0,
    compressed_int8: Int8Model | None = None,
) -> Int8Comparison:
    """Quantize `teacher` and `compressed` to int8 on the tiny-set `images` in `config.backend` (or take
    `compressed_int8`, e.g. from quantization-aware training), and time the four models in the same alternating
    rounds (batch, threads and repeats of `config`)."""
    backend = config.backend
    int8 = {
        name: quantize_int8(model, images, backend=backend, calibration=calibration, seed=seed, threads=config.threads)
        for name, model in (("teacher", teacher), ("compressed", compressed))
        if name == "teacher" or compressed_int8 is None
    }
    int8.setdefault("compressed", compressed_int8)
    device = next(teacher.parameters()).device
    with _threads(config.threads) as threads, _eval_format([teacher, compressed], config.channels_last):
        x = _example(teacher, config, input_size)
        runners = {
            "teacher fp32": make_runner(teacher, (x,), {}, backend=backend, threads=threads),
            "teacher int8": int8["teacher"].runner(x.cpu(), threads),
            "compressed fp32": make_runner(compressed, (x,), {}, backend=backend, threads=threads),
            "compressed int8": int8["compressed"].runner(x.cpu(), threads),
        }
        times = time_alternating(runners, config=config, device=device)
    reference = times[ROWS[0]]
    speedup = {row: statistics.median(a / b for a, b in zip(reference, times[row])) for row in ROWS}
    latency = {}
    for row in ROWS:
        model = teacher if row.startswith("teacher") else compressed
        stats = _stats(times[row], model, config, input_size, threads, runners[row])
        latency[row] = replace(stats, dtype="int8", device="cpu") if row.endswith("int8") else stats
    result = Int8Comparison(backend, latency, speedup, int8["teacher"], int8["compressed"])
    logger.info(
        "int8 (%s): %s",
        backend,
        ", ".join(f"{row} {latency[row].median_ms:.2f} ms ({speedup[row]:.2f}x)" for row in ROWS),
    )
    return result


#: the calibration of the int8 models that selection times (only their latency is read: one method is enough)
TIMING_CALIBRATION = {"onnxruntime": "minmax", "openvino": "performance"}


@torch.no_grad()
def int8_latency_comparison(
    base: Int8Model, base_model: nn.Module, model: nn.Module, images: torch.Tensor, *, config: LatencyConfig
) -> LatencyComparison:
    """`model` quantized on `images` and timed against the int8 `base` (the int8 teacher) in the same rounds: what
    dropping blocks saves once both are int8. The reduction is 1 - median of the per-round ratios."""
    quantized = quantize_int8(
        model, images, backend=base.backend, calibration=TIMING_CALIBRATION[base.backend], holdout=0,
        threads=config.threads,
    )  # fmt: skip
    with _threads(config.threads) as threads:
        x = _example(base_model, config, tuple(images.shape[1:])).cpu()
        runners = {"base": base.runner(x, threads), "candidate": quantized.runner(x, threads)}
        times = time_alternating(runners, config=config)
    size = tuple(images.shape[1:])
    stats = {
        name: replace(_stats(times[name], m, config, size, threads, runners[name]), dtype="int8", device="cpu")
        for name, m in (("base", base_model), ("candidate", model))
    }
    return paired_comparison(times["base"], times["candidate"], stats["base"], stats["candidate"])
