"""Scoring candidate blocks by recoverability, and choosing which to drop.

For each candidate block: drop it, put identity adaptors around the hole, train only the adaptors so the
pruned network's pre-pooling features match the original's (MSE) on the tiny set, and keep the error that
remains: the block's recoverability. A block that is cheap to recover from and slow to run is the one to drop,
so the score is recoverability / latency saved, and the lowest scores go first.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .adaptors import adaptor_parameters, adaptor_state, insert_adaptors
from .backbones.base import BackboneFamily, BlockRef
from .config import ScanConfig
from .files import DiskFullError, is_disk_full
from .forward_cut import CutCache, CutForward
from .training import check_finite, cosine_schedule

logger = logging.getLogger(__name__)

#: each retry of an adaptor training that raised the feature error runs at this fraction of the previous rate
RETRY_FACTOR = 0.1

__all__ = [
    "ScanRow",
    "build_pruned",
    "teacher_features",
    "feature_error",
    "score_block",
    "scan_blocks",
    "rank_blocks",
    "set_recoverability",
]


@dataclass
class ScanRow:
    """One candidate's line in the scan table."""

    block: str  # dotted path, for display
    stage: int
    index: int
    initial_error: float  # feature MSE right after dropping, adaptors at identity
    recoverability: float  # feature MSE after training the adaptors
    latency_saving: float  # fraction of the model's latency the block takes
    seconds: float  # wall time of this candidate's adaptor training
    trained: bool = True  # False: adaptor training raised the error, so the identity adaptors were kept
    lr: float = float("nan")  # the adaptors' learning rate of the run that was kept (after any retries)
    retried: int = 0  # how many times adaptor training started again at a smaller rate
    adaptors: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)

    @property
    def ref(self) -> BlockRef:
        return BlockRef(stage=self.stage, index=self.index, path=self.block)

    @property
    def score(self) -> float:
        """Recoverability per unit of latency saved; lower is a better block to drop."""
        if self.latency_saving <= 0:
            return math.inf
        return self.recoverability / self.latency_saving

    def to_dict(self) -> dict:
        d = {k: v for k, v in asdict(self).items() if k != "adaptors"}
        d["score"] = self.score
        return d


def _copy(model: nn.Module) -> nn.Module:
    try:
        return copy.deepcopy(model)
    except RuntimeError as e:
        if "created explicitly by the user" not in str(e):
            raise
    # a cache that a forward with gradients filled cannot be copied (transformers LeViT keeps its attention biases
    # in eval mode); a switch to train mode and back empties it
    training = model.training
    model.train()
    model.train(training)
    return copy.deepcopy(model)


def build_pruned(
    teacher: nn.Module, family: BackboneFamily, blocks: Sequence[BlockRef], *, adaptors: bool = True
) -> nn.Module:
    """A copy of `teacher` without `blocks`, with identity adaptors around the holes when `adaptors`."""
    student = _copy(teacher)
    if adaptors:
        insert_adaptors(student, family.adaptor_sites(student, blocks))
    family.drop_blocks(student, blocks)
    return student


@torch.no_grad()
def teacher_features(
    teacher: nn.Module, family: BackboneFamily, images: torch.Tensor, *, batch_size: int
) -> torch.Tensor:
    """The teacher's pre-pooling features for every image, computed once (eval mode) on the teacher's device."""
    device = next(teacher.parameters()).device
    was_training = teacher.training
    teacher.eval()
    out = [
        family.forward_features(teacher, images[i : i + batch_size].to(device))
        for i in range(0, len(images), batch_size)
    ]
    teacher.train(was_training)
    return torch.cat(out)


@torch.no_grad()
def feature_error(
    student: nn.Module, family: BackboneFamily, images: torch.Tensor, targets: torch.Tensor, *, batch_size: int
) -> float:
    """Mean squared error between the student's pre-pooling features and `targets`, over all images."""
    return _error(_direct_features(student, family, images), targets, batch_size)


def _direct_features(
    student: nn.Module, family: BackboneFamily, images: torch.Tensor
) -> Callable[[slice | torch.Tensor], torch.Tensor]:
    """`idx -> features of images[idx]`, each forward from the image."""
    device = next(student.parameters()).device
    return lambda idx: family.forward_features(student, images[idx].to(device))


@torch.no_grad()
def _error(features: Callable[[slice | torch.Tensor], torch.Tensor], targets: torch.Tensor, batch_size: int) -> float:
    total, count = 0.0, 0
    for i in range(0, len(targets), batch_size):
        feats = features(slice(i, i + batch_size))
        t = targets[i : i + batch_size].to(feats.device)
        total += torch.nn.functional.mse_loss(feats, t, reduction="sum").item()
        count += t.numel()
    return total / max(count, 1)


def _adaptor_student(
    teacher: nn.Module, family: BackboneFamily, blocks: Sequence[BlockRef]
) -> tuple[nn.Module, list[nn.Parameter]]:
    """The teacher without `blocks`, identity adaptors around the holes, in eval mode; only the adaptors train."""
    student = build_pruned(teacher, family, blocks)
    student.eval()
    for p in student.parameters():
        p.requires_grad_(False)
    params = adaptor_parameters(student)
    for p in params:
        p.requires_grad_(True)
    return student, params


def score_block(
    teacher: nn.Module,
    family: BackboneFamily,
    block: BlockRef,
    images: torch.Tensor,
    targets: torch.Tensor,
    *,
    config: ScanConfig,
    seed: int = 0,
    latency_saving: float = float("nan"),
    cut: CutForward | None = None,
) -> ScanRow:
    """Recoverability of one block: train identity adaptors around its hole and measure the remaining error.

    With `cut` (the teacher's inputs at a point before anything the hole changes), every forward runs from
    there; the result is the same to float rounding (checked on this student before it is used)."""
    config = config.resolved(family)  # iterations None: the family's step count
    start = time.perf_counter()
    student, params = _adaptor_student(teacher, family, [block])
    with cut.install(student) if cut is not None else nullcontext() as features:
        features = features or _direct_features(student, family, images)
        row = _train_adaptors(_AdaptorFit(params, features, targets, block), config=config, seed=seed)
    return ScanRow(
        block=block.path,
        stage=block.stage,
        index=block.index,
        latency_saving=latency_saving,
        seconds=time.perf_counter() - start,
        adaptors=adaptor_state(student),
        **row,
    )


def set_recoverability(
    teacher: nn.Module,
    family: BackboneFamily,
    blocks: Sequence[BlockRef],
    images: torch.Tensor,
    targets: torch.Tensor,
    *,
    config: ScanConfig,
    seed: int = 0,
) -> dict:
    """Recoverability of several blocks dropped together: one adaptor training around all their holes at once, as
    the scan does for one block. Selection adds the blocks' own recoverabilities instead; this measures what the sum
    stands for (`benchmarks/joint_recoverability.py` compares the two).

    Returns:
        `initial_error`, `recoverability`, `trained`, `lr` and `retried`, as a scan row has them.
    """
    if not blocks:
        raise ValueError("set_recoverability needs at least one block.")
    config = config.resolved(family)
    student, params = _adaptor_student(teacher, family, blocks)
    # the fit names its blocks in log lines and errors: all of them, joined
    named = replace(blocks[0], path=" + ".join(b.path for b in blocks))
    fit = _AdaptorFit(params, _direct_features(student, family, images), targets, named)
    return _train_adaptors(fit, config=config, seed=seed)


@dataclass
class _AdaptorFit:
    """What adaptor training of one candidate works on: the adaptors, `idx -> features`, and the targets."""

    params: list[nn.Parameter]
    features: Callable[[slice | torch.Tensor], torch.Tensor]
    targets: torch.Tensor
    block: BlockRef

    def error(self, batch_size: int) -> float:
        return _error(self.features, self.targets, batch_size)

    def steps(self, config: ScanConfig, *, lr: float, seed: int) -> None:
        """`config.iterations` steps on seeded batches of the tiny set (cosine decay)."""
        device = self.params[0].device
        if config.optimizer == "sgd":
            optimizer = torch.optim.SGD(self.params, lr=lr, momentum=0.9, weight_decay=config.weight_decay)
        else:
            optimizer = torch.optim.AdamW(self.params, lr=lr, weight_decay=config.weight_decay)
        schedule = cosine_schedule(optimizer, iterations=config.iterations)
        g = torch.Generator().manual_seed(seed)
        order = torch.empty(0, dtype=torch.long)
        n_images = len(self.targets)
        bs = min(config.batch_size, n_images)
        for step in range(config.iterations):
            if len(order) < bs:
                order = torch.cat([order, torch.randperm(n_images, generator=g)])
            idx, order = order[:bs], order[bs:]
            loss = torch.nn.functional.mse_loss(self.features(idx), self.targets[idx].to(device))
            check_finite(loss, phase="scan", step=step, block=self.block.path)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()


def _train_adaptors(fit: _AdaptorFit, *, config: ScanConfig, seed: int) -> dict:
    """Train the adaptors (retrying at smaller rates while training raises the error); the row's measured fields."""
    params, block = fit.params, fit.block
    initial = fit.error(config.batch_size)
    start = config.adaptor_lr(max((p.shape[1] for p in params), default=0))  # weights: (out, in[, 1, 1])
    final, trained, lr, attempt = initial, False, start, 0
    if params and config.iterations > 0:
        for attempt in range(config.retries + 1):
            lr = start * RETRY_FACTOR**attempt
            try:
                fit.steps(config, lr=lr, seed=seed)
                final = fit.error(config.batch_size)
            except FloatingPointError:
                if attempt == config.retries:
                    raise
                final = math.inf
            if final <= initial:
                trained = True
                break
            # the adaptors are free to stay at identity: training that made things worse is undone, and tried
            # again with smaller steps (wide adaptors take too large ones at the default rate)
            logger.info(
                "scan: %s adaptor training at lr %.3g raised the error (%.4g -> %.4g)%s",
                block.path,
                lr,
                initial,
                final,
                "; trying smaller steps" if attempt < config.retries else "; keeping identity",
            )
            with torch.no_grad():
                for p in params:
                    p.copy_(torch.eye(p.shape[0], dtype=p.dtype, device=p.device).reshape(p.shape))
            final = initial
    if not math.isfinite(final):
        raise FloatingPointError(f"Non-finite feature error in the scan phase for block {block.path}; lower `scan.lr`.")
    return {"initial_error": initial, "recoverability": final, "trained": trained, "lr": lr, "retried": attempt}


def _cache_paths(cache_dir: Path, block: BlockRef) -> tuple[Path, Path]:
    stem = f"s{block.stage}_b{block.index}"
    return cache_dir / f"{stem}.json", cache_dir / f"{stem}.safetensors"


def _load_cached(cache_dir: Path, block: BlockRef, fingerprint: str) -> ScanRow | None:
    meta_path, weights_path = _cache_paths(cache_dir, block)
    if not (meta_path.exists() and weights_path.exists()):
        return None
    meta = json.loads(meta_path.read_text())
    # the same position may be another candidate: a whole block or one of its branches (`units`)
    if meta.pop("fingerprint", None) != fingerprint or meta.get("block") != block.path:
        return None
    meta.pop("score", None)
    return ScanRow(**meta, adaptors=load_file(str(weights_path)))


def _save_cached(cache_dir: Path, row: ScanRow, fingerprint: str) -> None:
    cache_dir.mkdir(parents=True, exist_ok=True)
    meta_path, weights_path = _cache_paths(cache_dir, row.ref)
    tmp_w, tmp_m = weights_path.with_suffix(".tmp.safetensors"), meta_path.with_suffix(".tmp.json")
    try:
        save_file({k: v.contiguous() for k, v in row.adaptors.items()}, str(tmp_w))
        tmp_m.write_text(json.dumps({**row.to_dict(), "fingerprint": fingerprint}, indent=2))
    except Exception as e:
        for tmp in (tmp_w, tmp_m):
            tmp.unlink(missing_ok=True)
        if is_disk_full(e):
            raise DiskFullError(tmp_w) from e
        raise
    tmp_w.replace(weights_path)
    tmp_m.replace(meta_path)


def scan_blocks(
    teacher: nn.Module,
    family: BackboneFamily,
    blocks: Sequence[BlockRef],
    images: torch.Tensor,
    targets: torch.Tensor,
    *,
    config: ScanConfig,
    seed: int = 0,
    latency_saving: dict[str, float] | None = None,
    cache_dir: str | Path | None = None,
    fingerprint: str = "",
    on_row: Callable[[ScanRow], None] | None = None,
) -> list[ScanRow]:
    """Score each block in `blocks`; rows already in `cache_dir` (same tiny set and settings) are reused."""
    latency_saving = latency_saving or {}
    rows = []
    cuts: CutCache | None = None
    for block in blocks:
        row = _load_cached(Path(cache_dir), block, fingerprint) if cache_dir else None
        if row is None:
            if cuts is None and config.stage_cache_mb > 0:
                cuts = CutCache(
                    teacher, family, images, batch_size=config.batch_size, max_bytes=config.stage_cache_mb * 2**20
                )
            row = score_block(
                teacher,
                family,
                block,
                images,
                targets,
                config=config,
                seed=seed,
                latency_saving=latency_saving.get(block.path, float("nan")),
                cut=cuts.for_block(block) if cuts is not None else None,
            )
            if cache_dir:
                _save_cached(Path(cache_dir), row, fingerprint)
        else:
            row.latency_saving = latency_saving.get(block.path, row.latency_saving)
            logger.info("scan: %s reused from %s", block.path, cache_dir)
        rows.append(row)
        if on_row is not None:
            on_row(row)
    return rows


def rank_blocks(rows: Sequence[ScanRow], *, criterion: str = "score") -> list[ScanRow]:
    """Rows from best to worst block to drop.

    Args:
        criterion: "score" (recoverability / latency saved, PRACTISE), "recoverability", or "initial_error"
            (the error right after dropping, with no recovery: the baseline criterion of the paper).
    """
    keys = {
        "score": lambda r: r.score,
        "recoverability": lambda r: r.recoverability,
        "initial_error": lambda r: r.initial_error / r.latency_saving if r.latency_saving > 0 else math.inf,
    }
    if criterion not in keys:
        raise ValueError(f"Unknown criterion `{criterion}`; choose from {sorted(keys)}.")
    return sorted(rows, key=keys[criterion])
