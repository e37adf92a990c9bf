"""Latency, MACs and parameter counts that can be trusted on a noisy machine.

Timings are medians over repeats after warm-up, with fixed threads, batch and input size, on the device the
model's weights live on, in the backend the model will be deployed with (`LatencyConfig.backend`: PyTorch
eager, ONNX Runtime or OpenVINO; see `runtimes.py`). Two models are compared by alternating them (A B A B ...)
and taking the median of the per-pair ratios, so drift in machine load hits both alike. Per-block shares are
timed on each block's own recorded input, interleaved round-robin with the whole model, and each share is the
median of its per-round ratios to the whole model. The shares are then checked against the model with the
blocks removed, timed in the same rounds: where they do not add up to its measured saving they are measured
again, and finally scaled to it, so a busy machine cannot make every block look cheap.
"""

from __future__ import annotations

import contextlib
import logging
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from .backbones.base import BackboneFamily, BlockRef, entry_module
from .config import LatencyConfig
from .provenance import device_name
from .runtimes import Runner, make_runner

logger = logging.getLogger(__name__)

__all__ = [
    "LatencyStats",
    "LatencyComparison",
    "measure_latency",
    "compare_latency",
    "paired_comparison",
    "LatencyTable",
    "block_latency_table",
    "record_block_calls",
    "time_alternating",
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
    backend: str = "torch"  # what ran the passes: torch, onnxruntime or openvino
    backend_version: str = ""
    provider: str = ""  # torch: cpu/cuda; onnxruntime: its execution provider; openvino: its device
    precision: str = "fp32"  # autocast precision of the timed passes (torch backend)
    share_check: dict | None = None  # block tables: the shares' sum against the model without the blocks

    def to_dict(self) -> dict:
        return asdict(self)

    def runtime(self) -> str:
        """What ran the timed passes, in words: "PyTorch 2.x eager", "ONNX Runtime 1.x (CPUExecutionProvider)"."""
        precision = "" if self.precision == "fp32" else f", autocast {self.precision}"
        if self.backend == "torch":
            return f"PyTorch {self.torch_version} eager ({self.dtype}{precision})"
        name = {"onnxruntime": "ONNX Runtime", "openvino": "OpenVINO"}.get(self.backend, self.backend)
        return f"{name} {self.backend_version} ({self.provider}), ONNX exported by torch {self.torch_version}"


@dataclass
class LatencyTable:
    """Each candidate block's share of the whole model's latency (by block path), and the whole model's timing
    (None when the shares came from a table or the work dir). Unpacks as `shares, whole = table`."""

    shares: dict[str, float]
    whole: LatencyStats | None = None

    def __iter__(self) -> Iterator[Any]:
        return iter((self.shares, self.whole))


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


_AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


@contextlib.contextmanager
def _precision(config: LatencyConfig, device: torch.device) -> Iterator[None]:
    """Autocast to the deployment precision while timing (torch backend); fp32 changes nothing."""
    if config.precision == "fp32":
        yield
        return
    with torch.autocast(device_type=device.type, dtype=_AUTOCAST[config.precision]):
        yield


def _stats(
    times: Sequence[float], model: nn.Module, config: LatencyConfig, input_size, threads: int, runner: Runner
) -> LatencyStats:
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
        torch_version=str(torch.__version__),
        channels_last=config.channels_last,
        backend=runner.info.backend,
        backend_version=runner.info.version,
        provider=runner.info.provider,
        precision=config.precision,
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


def _runner(module: nn.Module, args: tuple, kwargs: dict, config: LatencyConfig, threads: int) -> Runner:
    return make_runner(module, args, kwargs, backend=config.backend, threads=threads)


# no_grad, not inference_mode: a model may cache tensors it builds in a forward (transformers' BEiT caches its
# relative position index), and an inference-mode tensor in that cache breaks the training that follows
@torch.no_grad()
def measure_latency(
    model: nn.Module, *, input_size: Sequence[int], config: LatencyConfig | None = None
) -> LatencyStats:
    """Median latency of one forward pass of a batch, in milliseconds."""
    config = config or LatencyConfig()
    device, _ = _model_device_dtype(model)
    with (
        _threads(config.threads) as threads,
        _eval_format([model], config.channels_last),
        _precision(config, device),
    ):
        run = _runner(model, (_example(model, config, input_size),), {}, config, threads)
        for _ in range(config.warmup):
            run()
        times = [_timer(run, device) for _ in range(config.repeats)]
    return _stats(times, model, config, input_size, threads, run)


@torch.no_grad()
def compare_latency(
    base: nn.Module, candidate: nn.Module, *, input_size: Sequence[int], config: LatencyConfig | None = None
) -> LatencyComparison:
    """Time two models alternately on the same input; the reduction is the median of per-pair ratios."""
    config = config or LatencyConfig()
    device, _ = _model_device_dtype(base)
    with (
        _threads(config.threads) as threads,
        _eval_format([base, candidate], config.channels_last),
        _precision(config, device),
    ):
        x = _example(base, config, input_size)
        run_a = _runner(base, (x,), {}, config, threads)
        run_b = _runner(candidate, (x,), {}, config, threads)
        for _ in range(config.warmup):
            run_a()
            run_b()
        a, b = [], []
        for i in range(config.repeats):
            # alternate which goes first too, so neither always runs on a warmer cache
            first, second = (run_a, run_b) if i % 2 == 0 else (run_b, run_a)
            t1 = _timer(first, device)
            t2 = _timer(second, device)
            ta, tb = (t1, t2) if i % 2 == 0 else (t2, t1)
            a.append(ta)
            b.append(tb)
    return paired_comparison(
        a,
        b,
        _stats(a, base, config, input_size, threads, run_a),
        _stats(b, candidate, config, input_size, threads, run_b),
    )


def paired_comparison(
    a: Sequence[float], b: Sequence[float], base: LatencyStats, candidate: LatencyStats
) -> LatencyComparison:
    """Base times `a` against candidate times `b` measured in the same rounds: the reduction is 1 - the median of
    the per-round ratios (and its quartiles)."""
    ratios = [tb / ta for ta, tb in zip(a, b)]
    q = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
    return LatencyComparison(
        base=base,
        candidate=candidate,
        reduction=1.0 - statistics.median(ratios),
        reduction_p25=1.0 - q[2],
        reduction_p75=1.0 - q[0],
    )


def time_alternating(
    runners: dict[str, Runner], *, config: LatencyConfig, device: torch.device | str = "cpu"
) -> dict[str, list[float]]:
    """Time several runners in the same rounds, each round in another order (rotated), so that none always
    runs first or on a warmer cache; milliseconds per pass, by name."""
    device = torch.device(device)
    names = list(runners)
    for _ in range(config.warmup):
        for name in names:
            runners[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for i in range(config.repeats):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            times[name].append(_timer(runners[name], device))
    return times


@torch.no_grad()
def record_block_calls(
    model: nn.Module, family: BackboneFamily, blocks: Sequence[BlockRef], x: torch.Tensor
) -> tuple[dict[str, nn.Module], dict[str, tuple[tuple, dict]]]:
    """Each block's module and the (args, kwargs) the model calls it with on `x` (some blocks take more than
    the tensor, e.g. a size or a mask): what a block is timed or exported with on its own."""
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
    return modules, calls


def _signature(module: nn.Module, args: tuple, kwargs: dict) -> tuple:
    """What a block's time depends on: its layers (types, parameter shapes, strides and groups) and the shapes of
    what it is called with."""

    def shapes(obj):
        from torch.utils import _pytree as pytree

        return tuple(tuple(v.shape) if isinstance(v, torch.Tensor) else repr(v) for v in pytree.tree_leaves((obj,)))

    layers = tuple(
        (
            type(m).__name__,
            tuple(tuple(p.shape) for p in m.parameters(recurse=False)),
            # (repr: some layers keep these as lists, e.g. transformers' TextNet its kernel size)
            tuple(repr(getattr(m, a, None)) for a in ("stride", "padding", "dilation", "groups", "kernel_size")),
        )
        for m in module.modules()
    )
    return layers, shapes(args), shapes(kwargs)


def _identical_blocks(modules: dict[str, nn.Module], calls: dict[str, tuple[tuple, dict]]) -> dict[tuple, list[str]]:
    """The blocks grouped by `_signature`: a group's members take the same time."""
    groups: dict[tuple, list[str]] = {}
    for path, m in modules.items():
        groups.setdefault(_signature(m, *calls[path]), []).append(path)
    return groups


#: the shares of the removed blocks may differ from the saving measured on the model without them by this factor
#: before they are measured again (in-context and isolated timings differ a little even on a quiet machine)
SHARE_AGREEMENT = 1.25
#: measurements of the block table when its shares and the saving do not agree
SHARE_ATTEMPTS = 3


@torch.no_grad()
def _pooled_shares(twins: dict, ratios: dict[str, list[float]]) -> dict[str, float]:
    """Each block's share, the median of its rounds; blocks of the same structure called on the same shapes do the
    same work, so pooling their rounds halves the noise a busy core puts into any one of them."""
    shares = {}
    for group in twins.values():
        pooled = statistics.median([v for path in group for v in ratios[path]])
        shares.update({path: pooled for path in group})
    return shares


def block_latency_table(
    model: nn.Module,
    family: BackboneFamily,
    blocks: Sequence[BlockRef],
    *,
    input_size: Sequence[int],
    config: LatencyConfig | None = None,
    without: tuple[nn.Module, Sequence[str]] | None = None,
) -> LatencyTable:
    """Fraction of the whole model's latency that each block takes, timed on the block's own input.

    Each round times the whole model, then every block, so a share is the median of ratios measured moments
    apart; blocks of identical structure called on identical shapes (most blocks of a stage) share the median
    of all their rounds. With `without` = (the model without some of the blocks, their paths), that model is timed in the
    same rounds and the shares of its missing blocks are checked against its measured saving: measured again
    (up to `SHARE_ATTEMPTS` times) while they disagree by more than `SHARE_AGREEMENT`, then all scaled by
    saving / sum, which `stats.share_check` records.

    Returns the fractions by block path and the whole model's latency.
    """
    config = config or LatencyConfig()
    device, _ = _model_device_dtype(model)
    models = [model] + ([without[0]] if without is not None else [])
    with (
        _threads(config.threads) as threads,
        _eval_format(models, config.channels_last),
        _precision(config, device),
    ):
        x = _example(model, config, input_size)
        modules, calls = record_block_calls(model, family, blocks, x)
        twins = _identical_blocks(modules, calls)
        whole_run = _runner(model, (x,), {}, config, threads)
        block_runs = {path: _runner(m, *calls[path], config, threads) for path, m in modules.items()}
        without_run = _runner(without[0], (x,), {}, config, threads) if without is not None else None
        for _ in range(config.warmup):
            for run in [whole_run, *block_runs.values(), *([without_run] if without_run is not None else [])]:
                run()
        for attempt in range(1, SHARE_ATTEMPTS + 1):
            whole: list[float] = []
            ratios: dict[str, list[float]] = {path: [] for path in modules}
            without_ratios: list[float] = []
            for _ in range(config.repeats):
                t_whole = _timer(whole_run, device)
                whole.append(t_whole)
                for path, run in block_runs.items():
                    ratios[path].append(_timer(run, device) / t_whole)
                if without_run is not None:
                    without_ratios.append(_timer(without_run, device) / t_whole)
            shares = _pooled_shares(twins, ratios)
            if without is None:
                check = None
                break
            predicted = sum(shares[p] for p in without[1])
            measured = 1.0 - statistics.median(without_ratios)
            factor = measured / predicted if predicted > 0 and measured > 0 else 1.0
            check = {
                "removed": list(without[1]),
                "shares_sum": predicted,
                "measured_saving": measured,
                "factor": factor,
                "attempts": attempt,
            }
            agree = 1.0 / SHARE_AGREEMENT <= factor <= SHARE_AGREEMENT
            logger.info(
                "block shares: %d removed blocks sum to %.1f%%, their removal measured %.1f%% (attempt %d)%s",
                len(without[1]),
                100 * predicted,
                100 * measured,
                attempt,
                "" if agree else ": they disagree, measuring again" if attempt < SHARE_ATTEMPTS else "",
            )
            if agree:
                break
        if check is not None and check["factor"] != 1.0:
            shares = {path: v * check["factor"] for path, v in shares.items()}
    stats = _stats(whole, model, config, input_size, threads, whole_run)
    stats.share_check = check
    return LatencyTable(shares, stats)


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
