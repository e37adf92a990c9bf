"""Feature-mimicking finetune, through Accelerate, and top-1 evaluation.

The pruned network (adaptors included) is trained end to end so its pre-pooling features match the teacher's
(MSE); the classifier is frozen, so the teacher's head keeps working on the student's features (other
objectives and the batch augmentations are registered objects of `objectives.py`). The same loop
runs on one CPU or many GPUs: the model and optimiser go through `accelerator.prepare`, the loss through
`accelerator.backward`, and each of N processes trains on its share of the same global batch, so N processes
compute what one does (up to float rounding). With a work directory, the run checkpoints (safetensors + JSON,
never pickles) and resumes exactly: the data order is a function of (seed, epoch) and the RNG states are
restored, so a resumed finetune ends with the weights an uninterrupted one would have.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from .adaptors import adaptor_parameters
from .backbones.base import BackboneFamily
from .checkpoint import load_checkpoint, save_checkpoint, set_rng_state
from .config import FinetuneConfig
from .objectives import (
    Augmentation,
    LossContext,
    Objective,
    StageTaps,
    UnitTaps,
    get_augmentation,
    get_objective,
)
from .recoverability import feature_error, teacher_features
from .training import FeatureModel, as_logits, check_finite, cosine_schedule, cycle, freeze_norm_stats

logger = logging.getLogger(__name__)

__all__ = ["FinetuneResult", "mimic_finetune", "evaluate_top1", "evaluate_metrics", "DEFAULT_METRICS"]


@dataclass
class FinetuneResult:
    steps: int
    seconds: float
    losses: list[float] = field(default_factory=list)  # mean loss of each logging window, the whole run
    resumed_from: int = 0  # the step a checkpoint put the run at (0: started fresh)
    reused_finished: bool = False  # a finished run's final checkpoint was loaded; no step was trained
    holdout_curve: list[tuple[int, float]] = field(default_factory=list)  # (step, held-out feature MSE)
    best_step: int | None = None  # with a held-out slice: the step whose weights were kept
    diverged_lrs: list[float] = field(default_factory=list)  # rates whose run hit a non-finite loss, then retried


class EpochSampler(Sampler[int]):
    """A fresh permutation each epoch, a pure function of (seed, epoch): a resumed run sees the same order."""

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())


#: checkpoint keys of the weights a held-out slice says to keep (beside the current weights)
BEST = "holdout_best/"


def augment_batch(x: torch.Tensor, kind: str, g: torch.Generator) -> torch.Tensor:
    """The batch-level augmentation `kind` ("flip", "crop", "mixup": see `objectives.AUGMENTATIONS`) of a
    preprocessed batch, drawn from `g`."""
    augmentation = get_augmentation(kind)
    if augmentation.batch is None:
        raise ValueError(f"Augmentation `{kind}` does not work on a preprocessed batch; choose flip, crop or mixup.")
    return augmentation.batch(x, g)


def rank_share(n: int, num_processes: int, process_index: int) -> slice:
    """The rows of a global batch of `n` that process `process_index` of `num_processes` trains on: consecutive,
    in rank order, the first `n % num_processes` ranks one row more than the others."""
    base, extra = divmod(n, num_processes)
    start = process_index * base + min(process_index, extra)
    return slice(start, start + base + (process_index < extra))


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    adaptor_ids = {id(p) for p in adaptor_parameters(model)}
    decay, no_decay = [], []
    for p in model.parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or id(p) in adaptor_ids else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


@dataclass
class _Progress:
    """Where a finetune is: what a checkpoint saves and a resumed run starts from."""

    step: int = 0
    losses: list[float] = field(default_factory=list)
    window: list[float] = field(default_factory=list)  # losses of the steps since the last logged mean
    curve: list[tuple[int, float]] = field(default_factory=list)
    best_step: int | None = None
    best_error: float = float("inf")
    best_state: dict | None = None


@dataclass
class _Data:
    """The tiny set as the finetune trains on it, and the held-out slice (images, teacher features), if any."""

    images: torch.Tensor | None
    targets: torch.Tensor | None
    labels: torch.Tensor | None
    augmented: Dataset | None
    held: tuple[torch.Tensor, torch.Tensor] | None = None


def _trainable(student: nn.Module, family: BackboneFamily, objective: Objective) -> nn.Module:
    """What the optimiser trains: the student, or (classifier frozen) the student up to its pre-pooling features."""
    for p in student.parameters():
        p.requires_grad_(True)
    if objective.trains_classifier:
        return student
    for p in family.classifier(student).parameters():
        p.requires_grad_(False)
    return FeatureModel(student, family)


def _hold_out(data: _Data, teacher: nn.Module, family: BackboneFamily, config: FinetuneConfig, seed: int) -> _Data:
    """`data` less a seeded slice of `config.holdout` images, never trained on: the student's feature error on it,
    against the teacher's features, says (without labels) which step's weights to keep."""
    images, n = data.images, config.holdout
    if images is None or n >= len(images):
        raise ValueError(
            f"finetune.holdout={n} must leave images to train on (the tiny set has "
            f"{0 if images is None else len(images)}); lower --holdout."
        )
    perm = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed * 1_000_003 + 17))
    out, keep = perm[:n].sort().values, perm[n:].sort().values
    held = (images[out], teacher_features(teacher, family, images[out], batch_size=config.batch_size).cpu())
    targets = data.targets
    if targets is not None and len(targets) == len(images):
        targets = targets[keep]
    labels = data.labels[keep] if data.labels is not None else None
    augmented = torch.utils.data.Subset(data.augmented, keep.tolist()) if data.augmented is not None else None
    return _Data(images[keep], targets, labels, augmented, held)


def _dataset(data: _Data, objective: Objective, teacher: nn.Module, family: BackboneFamily, batch_size: int) -> Dataset:
    """(image, target) pairs: the augmented dataset as it is, or the images with their labels or teacher targets."""
    if data.augmented is not None:
        return data.augmented
    targets = data.targets
    if objective.needs_labels:
        targets = data.labels
    elif targets is None:
        targets = teacher_features(teacher, family, data.images, batch_size=batch_size)
        if objective.target == "logits":
            with torch.no_grad():
                targets = torch.cat([family.forward_head(teacher, t) for t in targets.split(batch_size)])
    return torch.utils.data.TensorDataset(data.images, targets.cpu())


def _loader(dataset: Dataset, config: FinetuneConfig, accelerator, seed: int) -> DataLoader:
    # `batch_size` is the global batch. Every process draws the same global batch (its order is a function of
    # (seed, epoch)), augments it as one process would, and trains on its rank's rows of it; each rank's loss is
    # weighted by its share, so DDP's average of the gradients is the gradient of the global batch's mean loss
    # and N processes take the steps one would (the loader is not sharded by Accelerate, which would pad a tiny
    # set smaller than the batch with repeats and drop the rows of a batch that does not split evenly)
    global_batch = min(config.batch_size, len(dataset))
    if global_batch < accelerator.num_processes:
        raise ValueError(
            f"The finetune's global batch has {global_batch} images (finetune.batch_size={config.batch_size}, "
            f"{len(dataset)} tiny-set images to train on), fewer than the {accelerator.num_processes} processes: each "
            "process needs at least one image; raise --batch-size (or the tiny set) or launch fewer processes."
        )
    if accelerator.num_processes > 1 and config.train_norm_stats:
        logger.warning(
            "finetune: train_norm_stats=True on %d processes: BatchNorm normalises by each process's share of the "
            "batch, not by the global batch, so the run differs from a one-process run.",
            accelerator.num_processes,
        )
    return DataLoader(
        dataset,
        batch_size=config.batch_size,
        sampler=EpochSampler(len(dataset), seed),
        drop_last=len(dataset) >= config.batch_size,
    )


def _optimizer(model: nn.Module, config: FinetuneConfig):
    """The optimiser and its learning-rate schedule."""
    if config.optimizer == "sgd":
        optimizer = torch.optim.SGD(
            _param_groups(model, config.weight_decay), lr=config.lr, momentum=0.9, nesterov=True
        )
    elif config.optimizer == "adamw":
        optimizer = torch.optim.AdamW(_param_groups(model, config.weight_decay), lr=config.lr)
    else:
        raise ValueError(f"Unknown optimizer `{config.optimizer}`; choose `sgd` or `adamw`.")
    schedule = cosine_schedule(
        optimizer, iterations=config.iterations, warmup=config.warmup_iterations, kind=config.schedule
    )
    return optimizer, schedule


def _resume(ckpt_dir: Path | None, model: nn.Module, optimizer, schedule, accelerator) -> tuple[_Progress, dict | None]:
    """The progress of the last checkpoint in `ckpt_dir` (weights, optimiser and schedule loaded), or a fresh one."""
    saved = load_checkpoint(ckpt_dir) if ckpt_dir is not None else None
    if saved is None:
        return _Progress(), None
    kept = {k[len(BEST) :]: v for k, v in saved["model"].items() if k.startswith(BEST)}
    saved["model"] = {k: v for k, v in saved["model"].items() if not k.startswith(BEST)}
    accelerator.unwrap_model(model).load_state_dict(saved["model"], strict=True)
    optimizer.load_state_dict(saved["optimizer"])
    schedule.load_state_dict(saved["schedule"])
    progress = _Progress(
        step=saved["step"],
        losses=saved["losses"],
        window=saved["window"],
        curve=[tuple(c) for c in saved.get("holdout_curve", [])],
        best_step=saved.get("holdout_best_step"),
        best_error=saved.get("holdout_best_error", float("inf")),
        best_state=kept or None,
    )
    logger.info(
        "finetune: resumed from %s at step %d%s", ckpt_dir, progress.step, " (finished)" if saved["finished"] else ""
    )
    return progress, saved


def _checkpoint(
    ckpt_dir: Path, p: _Progress, model: nn.Module, optimizer, schedule, accelerator, finished: bool = False
) -> None:
    if accelerator.is_main_process:
        state = dict(accelerator.unwrap_model(model).state_dict())
        if p.best_state is not None:
            state.update({BEST + k: v for k, v in p.best_state.items()})
        save_checkpoint(
            ckpt_dir,
            step=p.step,
            model_state=state,
            optimizer_state=optimizer.state_dict(),
            extra={
                "schedule": schedule.state_dict(),
                "losses": p.losses,
                "window": p.window,
                "holdout_curve": p.curve,
                "holdout_best_step": p.best_step,
                "holdout_best_error": p.best_error,
            },
            finished=finished,
        )
    accelerator.wait_for_everyone()


def _batches(loader: DataLoader, p: _Progress, iterations: int, saved: dict | None):
    """The loader's batches from where `p` stands: the epoch's used batches skipped, the RNG put back."""
    per_epoch = len(loader)
    batches = cycle(loader, start_epoch=p.step // per_epoch if per_epoch else 0)
    if p.step < iterations:  # skip the batches this epoch already used (nothing to skip for a finished run)
        for _ in range(p.step % per_epoch if per_epoch else 0):
            next(batches)
    if saved is not None:  # after the skipped batches drew from it, the RNG is put back to where the run stopped
        set_rng_state(*saved["rng"])
    return batches


def _check_holdout(p: _Progress, held, model: nn.Module, student: nn.Module, config: FinetuneConfig, ctx) -> None:
    """The held-out feature error now; the weights are remembered when it is the lowest so far."""
    if held is None or (p.curve and p.curve[-1][0] == p.step):
        return
    net = ctx.accelerator.unwrap_model(model)
    net.eval()
    error = feature_error(student, ctx.family, *held, batch_size=config.batch_size)
    net.train()
    if not config.train_norm_stats:
        freeze_norm_stats(net)
    p.curve.append((p.step, error))
    if error < p.best_error:
        p.best_step, p.best_error = p.step, error
        p.best_state = {k: v.detach().cpu().clone() for k, v in student.state_dict().items()}


def _step_loss(
    model: nn.Module,
    batch,
    *,
    step: int,
    objective: Objective,
    augmentation: Augmentation | None,
    teacher_targets: bool,
    seed: int,
    ctx: LossContext,
) -> torch.Tensor:
    """This rank's loss on its share of one global batch, weighted by that share."""
    accelerator = ctx.accelerator
    x, t = (v.to(accelerator.device) for v in batch[:2])
    if augmentation is not None:  # a function of (seed, step): a resumed run augments as the uninterrupted one did
        x = augmentation.batch(x, torch.Generator().manual_seed(seed * 1_000_003 + step))
    mine = rank_share(len(x), accelerator.num_processes, accelerator.process_index)
    # this rank's mean loss counts for its share of the global batch (DDP divides the gradients' sum by N)
    weight = (mine.stop - mine.start) * accelerator.num_processes / len(x)
    x, t = x[mine], t[mine]
    if teacher_targets:  # the teacher's outputs of the images as trained on (augmented, or tapped by stage)
        with torch.no_grad():
            t = objective.teacher_target(ctx.teacher, ctx.family, x)
    loss = objective.loss(model, x, t, ctx)
    return loss * weight if weight != 1 else loss


def _step_fn(model: nn.Module, objective: Objective, augmentation: str, dataset_augmented: bool, seed: int, ctx):
    """`_step_loss` with what is fixed for the run bound: the batch augmentation (none when the dataset itself is
    augmented) and whether the targets are the teacher's outputs of each batch as trained on."""
    batch_aug = None if dataset_augmented else get_augmentation(augmentation)
    batch_aug = batch_aug if batch_aug is not None and batch_aug.batch is not None else None
    label_free = not objective.needs_labels and (dataset_augmented or batch_aug is not None)
    teacher_targets = label_free or ctx.taps is not None
    return functools.partial(
        _step_loss,
        model,
        objective=objective,
        augmentation=batch_aug,
        teacher_targets=teacher_targets,
        seed=seed,
        ctx=ctx,
    )


def _log_step(p: _Progress, loss: float, iterations: int, log_every: int, bar, schedule, accelerator) -> None:
    p.window.append(loss)
    bar.update(1)
    if p.step % log_every == 0 or p.step == iterations:
        p.losses.append(sum(p.window) / len(p.window))
        bar.set_postfix(loss=f"{p.losses[-1]:.4g}")
        logger.info("finetune: step %d/%d loss %.5g", p.step, iterations, p.losses[-1])
        accelerator.log({"finetune/loss": p.losses[-1], "finetune/lr": schedule.get_last_lr()[0]}, step=p.step)
        p.window = []


def _train(
    p: _Progress,
    model: nn.Module,
    optimizer,
    schedule,
    batches,
    step_loss,
    config: FinetuneConfig,
    held,
    student: nn.Module,
    ctx: LossContext,
    ckpt_dir: Path | None,
    log_every: int,
) -> None:
    """The optimiser steps from `p.step` to `config.iterations`: log, held-out checks and checkpoints on the way."""
    from tqdm.auto import tqdm

    accelerator = ctx.accelerator
    model.train()
    if not config.train_norm_stats:
        freeze_norm_stats(model)
    bar = tqdm(
        total=config.iterations, initial=p.step, desc="mimic finetune", disable=not accelerator.is_local_main_process
    )
    if p.step == 0:
        _check_holdout(p, held, model, student, config, ctx)  # the starting point (the scan's adaptors) may be best
    while p.step < config.iterations:
        loss = step_loss(next(batches), step=p.step)
        mean_loss = check_finite(loss, phase="finetune", step=p.step, accelerator=accelerator)
        optimizer.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        optimizer.step()
        schedule.step()
        p.step += 1
        _log_step(p, mean_loss.item(), config.iterations, log_every, bar, schedule, accelerator)
        if p.step % config.holdout_every == 0 or p.step == config.iterations:
            _check_holdout(p, held, model, student, config, ctx)
        every = config.checkpoint_every
        if ckpt_dir is not None and every and p.step % every == 0 and p.step < config.iterations:
            _checkpoint(ckpt_dir, p, model, optimizer, schedule, accelerator)
    bar.close()


def mimic_finetune(
    student: nn.Module,
    teacher: nn.Module,
    family: BackboneFamily,
    images: torch.Tensor | None,
    *,
    config: FinetuneConfig,
    accelerator,
    targets: torch.Tensor | None = None,
    labels: torch.Tensor | None = None,
    augmented: Dataset | None = None,
    seed: int = 0,
    work_dir: str | Path | None = None,
    log_every: int = 50,
) -> FinetuneResult:
    """Train `student` (in place) to mimic `teacher`'s pre-pooling features (or, as baselines, its logits or labels).

    Args:
        student: the pruned network, adaptors included; its classifier is frozen unless the objective trains it.
        teacher: the original network (only used when `targets` is None or with augmentation).
        family: the backbone family of both.
        images: the preprocessed tiny set (N, C, H, W); ignored when `augmented` is given.
        config: objective, augmentation, iterations, batch size, optimiser, schedule.
        accelerator: an `accelerate.Accelerator`.
        targets: the teacher's features of `images` (logits for the `kd` objective), if already computed.
        labels: class labels of `images`, for an objective that needs labels (`ce`).
        augmented: a Dataset of (augmented image, label) pairs to train on instead of `images`.
        seed: seeds shuffling.
        work_dir: where to checkpoint every `config.checkpoint_every` steps and resume from.
        log_every: steps per logged loss.
    """
    start = time.perf_counter()
    config = config.resolved(family, student)
    objective = get_objective(config.objective)
    model = _trainable(student, family, objective)
    taps = _taps(student, teacher, family, objective)
    if objective.needs_labels and augmented is None and labels is None:
        raise ValueError(
            f"The `{objective.name}` objective needs labels: give a labelled tiny set, or use `features` (no labels "
            "needed)."
        )
    teacher.eval()
    data = _Data(images, targets, labels, augmented)
    if config.holdout:
        data = _hold_out(data, teacher, family, config, seed)
    loader = _loader(_dataset(data, objective, teacher, family, config.batch_size), config, accelerator, seed)
    optimizer, schedule = _optimizer(model, config)
    # the schedule is stepped here once per optimiser step: prepared, Accelerate would step it once per process
    model, optimizer = accelerator.prepare(model, optimizer)
    ckpt_dir = Path(work_dir) if work_dir else None
    p, saved = _resume(ckpt_dir, model, optimizer, schedule, accelerator)
    resumed_from = p.step
    batches = _batches(loader, p, config.iterations, saved)
    ctx = LossContext(teacher, family, accelerator, config.kd_temperature, taps)
    step_loss = _step_fn(model, objective, config.augmentation, augmented is not None, seed, ctx)
    try:
        _train(p, model, optimizer, schedule, batches, step_loss, config, data.held, student, ctx, ckpt_dir, log_every)
    finally:
        for tap in taps or ():
            tap.remove()
    if not all(torch.isfinite(param).all() for param in student.parameters()):
        raise FloatingPointError(
            f"The finetune phase diverged: the weights hold NaN/inf after {p.step} steps. Lower `finetune.lr` (now "
            f"{config.lr})."
        )
    finished = saved is not None and saved["finished"]
    if ckpt_dir is not None and not finished:
        _checkpoint(ckpt_dir, p, model, optimizer, schedule, accelerator, finished=True)  # a rerun trains no step
    _keep_best(p, data.held, student)
    model.eval()
    return FinetuneResult(
        steps=p.step,
        seconds=time.perf_counter() - start,
        losses=p.losses,
        resumed_from=resumed_from,
        reused_finished=bool(finished),
        holdout_curve=p.curve,
        best_step=p.best_step if data.held is not None else None,
    )


def _taps(student: nn.Module, teacher: nn.Module, family: BackboneFamily, objective: Objective):
    """The (student, teacher) taps the objective reads beside the batch, if any."""
    if objective.stage_outputs:
        return StageTaps(student, family), StageTaps(teacher, family)
    if objective.unit_outputs:
        return UnitTaps(student, family, teacher), UnitTaps(teacher, family, teacher)
    return None


def _keep_best(p: _Progress, held, student: nn.Module) -> None:
    """With a held-out slice: the weights of the step where its error was lowest, if not the last step's."""
    if held is None or p.best_state is None or p.best_step == p.step:
        return
    logger.info(
        "finetune: held-out feature error lowest at step %d (%.4g), last %.4g: keeping step %d's weights",
        p.best_step,
        p.best_error,
        p.curve[-1][1] if p.curve else float("nan"),
        p.best_step,
    )
    student.load_state_dict(p.best_state, strict=True)


#: the eval metrics a compression reports by default (shipped `evaluate` modules: see `metrics/`)
DEFAULT_METRICS = ("accuracy", "top_k_accuracy")


def evaluate_metrics(
    model: nn.Module,
    dataset: Dataset,
    *,
    metrics: Sequence[str] = DEFAULT_METRICS,
    accelerator=None,
    batch_size: int = 256,
    desc: str = "eval",
    k: int = 5,
    trust_remote_code: bool = False,
) -> dict[str, float]:
    """Eval metrics of `model` on a Dataset of (image tensor, label) pairs, computed by `evaluate` modules.

    Predictions are gathered across processes with `accelerator.gather_for_metrics` (as the transformers example
    scripts do) and fed to each metric's `add_batch`: `top_k_accuracy` gets each image's k best class ids, every
    other metric (the shipped `accuracy`, or any `evaluate` classification metric) the predicted class id. Metrics
    that are not shipped run their module's code and need `trust_remote_code=True`.

    Returns:
        {metric name: value}; for `top_k_accuracy` the key is `top{k}_accuracy`.
    """
    from .metrics import check_metrics, load_metric

    check_metrics(metrics, trust_remote_code=trust_remote_code)  # all of them before any is loaded
    modules = {name: load_metric(name, trust_remote_code=trust_remote_code) for name in metrics}
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    if accelerator is not None:
        loader = accelerator.prepare_data_loader(loader)
        device = accelerator.device
        main = accelerator.is_local_main_process
    else:
        device = next(iter(model.parameters()), torch.empty(0)).device  # a runtime-backed module has none: cpu
        main = True
    was_training = model.training
    model.eval()
    from tqdm.auto import tqdm

    seen = 0
    with torch.no_grad():
        for x, y in tqdm(loader, desc=desc, disable=not main, leave=False):
            logits = as_logits(model(x.to(device)))
            top = logits.topk(min(k, logits.shape[-1]), dim=-1).indices
            y = y.to(device)
            if accelerator is not None:
                top, y = accelerator.gather_for_metrics((top, y))
            if (y < 0).any():
                raise ValueError("The eval set has unlabeled examples; top-1 needs a label for every image.")
            if (y >= logits.shape[-1]).any():
                bad = sorted(set(y[y >= logits.shape[-1]].tolist()))
                raise ValueError(
                    f"The eval set holds labels the model cannot predict: labels {bad[:10]} are outside its "
                    f"{logits.shape[-1]} classes (0-{logits.shape[-1] - 1}). Evaluate on a set labelled with the "
                    "model's own classes."
                )
            seen += y.numel()
            for name, module in modules.items():
                preds = top if name == "top_k_accuracy" else top[:, 0]
                module.add_batch(predictions=preds.cpu().tolist(), references=y.cpu().tolist())
    model.train(was_training)
    if seen == 0:
        raise ValueError("The eval set is empty.")
    out: dict[str, float] = {}
    for name, module in modules.items():
        values = module.compute(k=k) if name == "top_k_accuracy" else module.compute()
        if name == "top_k_accuracy":
            out[f"top{values['k']}_accuracy"] = values["top_k_accuracy"]
            continue
        for key, value in (values or {}).items():
            if isinstance(value, (int, float)):
                out[key if key != name else name] = float(value)
    return out


def evaluate_top1(
    model: nn.Module, dataset: Dataset, *, accelerator=None, batch_size: int = 256, desc: str = "eval"
) -> float:
    """Top-1 accuracy of `model` on a Dataset of (image tensor, label) pairs, through the shipped `accuracy`
    metric module, gathered across processes."""
    return evaluate_metrics(
        model, dataset, metrics=("accuracy",), accelerator=accelerator, batch_size=batch_size, desc=desc
    )["accuracy"]
