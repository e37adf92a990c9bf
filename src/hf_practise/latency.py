"""Latency, MACs and parameter counts that can be trusted on a noisy machine.

Timings are medians over repeats after warm-up, with fixed threads, batch and input size, on the device the
model's weights live on. Two models are compared by alternating them (A B A B ...) and taking the median of
the per-pair ratios, so drift in machine load hits both alike. Per-block savings are timed on each block's own
recorded input, interleaved round-robin with the whole model, which is far less noisy than timing whole
networks that differ by one block.
"""

from __future__ import annotations

import contextlib
import platform
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass

import torch
from torch import nn

from .backbones.base import BackboneFamily, BlockRef, entry_module
from .config import LatencyConfig

__all__ = [
    "LatencyStats",
    "LatencyComparison",
    "measure_latency",
    "compare_latency",
    "block_latency_table",
    "count_macs",
    "count_params",
    "device_name",
]


@dataclass
class LatencyStats:
    """One model's latency for one batch."""

    median_ms: float
    p25_ms: float
    p75_ms: float
    repeats: int
    batch_size: int
    input_size: tuple[int, int, int]
    threads: int
    device: str
    device_name: str
    dtype: str
    torch_version: str
    channels_last: bool

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class LatencyComparison:
    """Base vs candidate, measured alternately; `reduction` is 1 - median(candidate / base) over pairs."""

    base: LatencyStats
    candidate: LatencyStats
    reduction: float
    reduction_p25: float
    reduction_p75: float

    def to_dict(self) -> dict:
        return asdict(self)


def device_name(device: torch.device) -> str:
    """A human-readable name of the device: the GPU model, or the CPU model."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    with contextlib.suppress(OSError):
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


@contextlib.contextmanager
def _threads(n: int | None) -> Iterator[int]:
    old = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(old)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _model_device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    p = next(model.parameters())
    return p.device, p.dtype


def _timer(fn: Callable[[], object], device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return (time.perf_counter() - start) * 1000.0


def _stats(times: Sequence[float], model: nn.Module, config: LatencyConfig, input_size, threads: int) -> LatencyStats:
    device, dtype = _model_device_dtype(model)
    q = statistics.quantiles(times, n=4) if len(times) > 1 else [times[0]] * 3
    return LatencyStats(
        median_ms=statistics.median(times),
        p25_ms=q[0],
        p75_ms=q[2],
        repeats=len(times),
        batch_size=config.batch_size,
        input_size=tuple(input_size),
        threads=threads,
        device=str(device),
        device_name=device_name(device),
        dtype=str(dtype).replace("torch.", ""),
        torch_version=torch.__version__,
        channels_last=config.channels_last,
    )


def _example(model: nn.Module, config: LatencyConfig, input_size: Sequence[int]) -> torch.Tensor:
    device, dtype = _model_device_dtype(model)
    x = torch.randn(config.batch_size, *input_size, device=device, dtype=dtype)
    return x.contiguous(memory_format=torch.channels_last) if config.channels_last else x


@contextlib.contextmanager
def _eval_format(models: Sequence[nn.Module], channels_last: bool) -> Iterator[None]:
    modes = [m.training for m in models]
    for m in models:
        m.eval()
        if channels_last:
            m.to(memory_format=torch.channels_last)
    try:
        yield
    finally:
        for m, mode in zip(models, modes):
            m.train(mode)
            if channels_last:
                m.to(memory_format=torch.contiguous_format)


# no_grad, not inference_mode: a model may cache tensors it builds in a forward (transformers' BEiT caches its
# relative position index), and an inference-mode tensor in that cache breaks the training that follows
@torch.no_grad()
def measure_latency(
    model: nn.Module, *, input_size: Sequence[int], config: LatencyConfig | None = None
) -> LatencyStats:
    """Median latency of one forward pass of a batch, in milliseconds."""
    config = config or LatencyConfig()
    device, _ = _model_device_dtype(model)
    with _threads(config.threads) as threads, _eval_format([model], config.channels_last):
        x = _example(model, config, input_size)
        for _ in range(config.warmup):
            model(x)
        times = [_timer(lambda: model(x), device) for _ in range(config.repeats)]
    return _stats(times, model, config, input_size, threads)


@torch.no_grad()
def compare_latency(
    base: nn.Module, candidate: nn.Module, *, input_size: Sequence[int], config: LatencyConfig | None = None
) -> LatencyComparison:
    """Time two models alternately on the same input; the reduction is the median of per-pair ratios."""
    config = config or LatencyConfig()
    device, _ = _model_device_dtype(base)
    with _threads(config.threads) as threads, _eval_format([base, candidate], config.channels_last):
        x = _example(base, config, input_size)
        for _ in range(config.warmup):
            base(x)
            candidate(x)
        a, b = [], []
        for i in range(config.repeats):
            # alternate which goes first too, so neither always runs on a warmer cache
            first, second = (base, candidate) if i % 2 == 0 else (candidate, base)
            t1 = _timer(lambda: first(x), device)
            t2 = _timer(lambda: second(x), device)
            ta, tb = (t1, t2) if i % 2 == 0 else (t2, t1)
            a.append(ta)
            b.append(tb)
    ratios = [tb / ta for ta, tb in zip(a, b)]
    q = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
    return LatencyComparison(
        base=_stats(a, base, config, input_size, threads),
        candidate=_stats(b, candidate, config, input_size, threads),
        reduction=1.0 - statistics.median(ratios),
        reduction_p25=1.0 - q[2],
        reduction_p75=1.0 - q[0],
    )


@torch.no_grad()
def block_latency_table(
    model: nn.Module,
    family: BackboneFamily,
    blocks: Sequence[BlockRef],
    *,
    input_size: Sequence[int],
    config: LatencyConfig | None = None,
) -> tuple[dict[str, float], LatencyStats]:
    """Fraction of the whole model's latency that each block takes, timed on the block's own input.

    Returns the fractions by block path and the whole model's latency, measured in the same interleaved rounds.
    """
    config = config or LatencyConfig()
    device, _ = _model_device_dtype(model)
    with _threads(config.threads) as threads, _eval_format([model], config.channels_last):
        x = _example(model, config, input_size)
        # each block's call as the model makes it (some blocks take more than the tensor, e.g. a size)
        calls: dict[str, tuple[tuple, dict]] = {}
        modules = {ref.path: family.resolve(model, ref) for ref in blocks}
        hooks = [
            entry_module(modules[ref.path]).register_forward_pre_hook(
                lambda m, args, kwargs, path=ref.path: calls.__setitem__(path, (args, kwargs)), with_kwargs=True
            )
            for ref in blocks
        ]
        try:
            model(x)
        finally:
            for h in hooks:
                h.remove()
        for _ in range(config.warmup):
            model(x)
            for path, m in modules.items():
                m(*calls[path][0], **calls[path][1])
        whole: list[float] = []
        per_block: dict[str, list[float]] = {path: [] for path in modules}
        for _ in range(config.repeats):
            whole.append(_timer(lambda: model(x), device))
            for path, m in modules.items():
                args, kwargs = calls[path]
                per_block[path].append(_timer(lambda m=m, a=args, k=kwargs: m(*a, **k), device))
    stats = _stats(whole, model, config, input_size, threads)
    return {path: statistics.median(t) / stats.median_ms for path, t in per_block.items()}, stats


def count_macs(model: nn.Module, *, input_size: Sequence[int]) -> int:
    """Multiply-accumulates of one image's forward pass (FLOPs / 2, counted by torch's FlopCounterMode)."""
    from torch.utils.flop_counter import FlopCounterMode

    device, dtype = _model_device_dtype(model)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.zeros(1, *input_size, device=device, dtype=dtype))
    finally:
        model.train(was_training)
    return int(counter.get_total_flops() // 2)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
