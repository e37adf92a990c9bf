"""Feature-mimicking finetune, through Accelerate, and top-1 evaluation.

The pruned network (adaptors included) is trained end to end so its pre-pooling features match the teacher's
(MSE); the classifier is frozen, so the teacher's head keeps working on the student's features. The same loop
runs on one CPU or many GPUs: the model and optimiser go through `accelerator.prepare`, the loss through
`accelerator.backward`, and each of N processes trains on its share of the same global batch, so N processes
compute what one does (up to float rounding). With a work directory, the run checkpoints (safetensors + JSON,
never pickles) and resumes exactly: the data order is a function of (seed, epoch) and the RNG states are
restored, so a resumed finetune ends with the weights an uninterrupted one would have.
"""

from __future__ import annotations

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


def _loss(objective: str, output: torch.Tensor, target: torch.Tensor, temperature: float) -> torch.Tensor:
    if objective == "features":
        return torch.nn.functional.mse_loss(output, target)
    if objective == "kd":
        t = temperature
        return torch.nn.functional.kl_div(
            torch.log_softmax(output / t, dim=-1),
            torch.log_softmax(target / t, dim=-1),
            log_target=True,
            reduction="batchmean",
        ) * (t * t)
    if (target < 0).any():
        raise ValueError("The `ce` objective needs a label for every tiny-set image.")
    return torch.nn.functional.cross_entropy(output, target)


class StageTaps:
    """Each stage's output during a forward of `model` (a hook on the stage's last block), by stage index."""

    def __init__(self, model: nn.Module, family: BackboneFamily) -> None:
        self.outputs: dict[int, torch.Tensor] = {}
        self.handles = []
        for s, stage in enumerate(family.stages(model)):
            if len(stage) > 0:
                self.handles.append(stage[len(stage) - 1].register_forward_hook(self._hook(s)))

    def _hook(self, s: int):
        def hook(module: nn.Module, args, out) -> None:
            self.outputs[s] = out[0] if isinstance(out, (tuple, list)) else out

        return hook

    def take(self) -> dict[int, torch.Tensor]:
        out, self.outputs = self.outputs, {}
        return out

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


#: checkpoint keys of the weights a held-out slice says to keep (beside the current weights)
BEST = "holdout_best/"


def augment_batch(x: torch.Tensor, kind: str, g: torch.Generator) -> torch.Tensor:
    """Label-free augmentation of a preprocessed batch: a horizontal flip of half the images ("flip"), then for
    "crop" a random shift of each image by up to an eighth of its side (reflect-padded, cropped back to its
    size), for "mixup" a blend of each image with another image of the batch, weight ~ Beta(1, 1) per image."""
    flip = torch.rand(len(x), generator=g) < 0.5
    x = torch.where(flip.to(x.device)[:, None, None, None], x.flip(-1), x)
    if kind == "crop":
        h, w = x.shape[-2:]
        ph, pw = max(1, h // 8), max(1, w // 8)
        padded = torch.nn.functional.pad(x, (pw, pw, ph, ph), mode="reflect")
        dy = torch.randint(0, 2 * ph + 1, (len(x),), generator=g).tolist()
        dx = torch.randint(0, 2 * pw + 1, (len(x),), generator=g).tolist()
        x = torch.stack([padded[i, :, a : a + h, b : b + w] for i, (a, b) in enumerate(zip(dy, dx))])
    if kind == "mixup" and len(x) > 1:
        lam = torch.rand(len(x), generator=g).to(x.device, x.dtype)[:, None, None, None]
        other = torch.randperm(len(x), generator=g).to(x.device)
        x = lam * x + (1 - lam) * x[other]
    return x


def _relative_mse(output: torch.Tensor, target: torch.Tensor, accelerator=None) -> torch.Tensor:
    """MSE relative to the target's mean square: terms of different layers and scales are comparable. With several
    processes the mean square is the global batch's (summed over the processes' shares, equal or not), so N
    processes take the steps one would."""
    t = target.detach().float()
    power = torch.stack([t.pow(2).sum(), torch.tensor(float(t.numel()), device=t.device)])
    if accelerator is not None and accelerator.num_processes > 1:
        power = accelerator.reduce(power, reduction="sum")
    return torch.nn.functional.mse_loss(output, target) / (power[0] / power[1]).clamp_min(1e-12)


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
        student: the pruned network, adaptors included; its classifier is frozen here.
        teacher: the original network (only used when `targets` is None or with augmentation).
        family: the backbone family of both.
        images: the preprocessed tiny set (N, C, H, W); ignored when `augmented` is given.
        config: iterations, batch size, optimiser, schedule.
        accelerator: an `accelerate.Accelerator`.
        targets: the teacher's features of `images` (logits for the `kd` objective), if already computed.
        labels: class labels of `images`, for the `ce` objective.
        augmented: a Dataset of (augmented image, label) pairs to train on instead of `images`.
        seed: seeds shuffling.
        work_dir: where to checkpoint every `config.checkpoint_every` steps and resume from.
        log_every: steps per logged loss.
    """
    start = time.perf_counter()
    config = config.resolved(family, student)
    objective = config.objective
    for p in student.parameters():
        p.requires_grad_(True)
    if objective in ("features", "features+kd", "features+stages"):
        for p in family.classifier(student).parameters():
            p.requires_grad_(False)
        model: nn.Module = FeatureModel(student, family)
    elif objective in ("kd", "ce"):
        model = student
    else:
        raise ValueError(
            f"Unknown finetune objective `{objective}`; choose `features`, `kd`, `ce`, `features+kd` or "
            "`features+stages`."
        )
    taps = (StageTaps(student, family), StageTaps(teacher, family)) if objective == "features+stages" else None
    if objective == "ce" and augmented is None and labels is None:
        raise ValueError(
            "The `ce` objective needs labels: give a labelled tiny set, or use `features` (no labels needed)."
        )
    teacher.eval()
    held = None
    if config.holdout:
        # a seeded slice of the tiny set, never trained on: the student's feature error on it, against the
        # teacher's features, says (without labels) which step's weights to keep
        if images is None or config.holdout >= len(images):
            raise ValueError(
                f"finetune.holdout={config.holdout} must leave images to train on (the tiny set has "
                f"{0 if images is None else len(images)}); lower --holdout."
            )
        perm = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed * 1_000_003 + 17))
        out, keep = perm[: config.holdout].sort().values, perm[config.holdout :].sort().values
        held = (images[out], teacher_features(teacher, family, images[out], batch_size=config.batch_size).cpu())
        if targets is not None and len(targets) == len(images):
            targets = targets[keep]
        if labels is not None:
            labels = labels[keep]
        if augmented is not None:
            augmented = torch.utils.data.Subset(augmented, keep.tolist())
        images = images[keep]
    if augmented is not None:
        dataset: Dataset = augmented
    else:
        if objective == "ce":
            targets = labels
        elif targets is None:
            targets = teacher_features(teacher, family, images, batch_size=config.batch_size)
            if objective == "kd":
                with torch.no_grad():
                    targets = torch.cat([family.forward_head(teacher, t) for t in targets.split(config.batch_size)])
        dataset = torch.utils.data.TensorDataset(images, targets.cpu())
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
    loader = DataLoader(
        dataset,
        batch_size=config.batch_size,
        sampler=EpochSampler(len(dataset), seed),
        drop_last=len(dataset) >= config.batch_size,
    )
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
    # the schedule is stepped here once per optimiser step: prepared, Accelerate would step it once per process
    model, optimizer = accelerator.prepare(model, optimizer)

    ckpt_dir = Path(work_dir) if work_dir else None
    step, losses, window = 0, [], []
    curve: list[tuple[int, float]] = []
    best: dict = {"step": None, "error": float("inf"), "state": None}
    saved = load_checkpoint(ckpt_dir) if ckpt_dir is not None else None
    if saved is not None:
        kept = {k[len(BEST) :]: v for k, v in saved["model"].items() if k.startswith(BEST)}
        saved["model"] = {k: v for k, v in saved["model"].items() if not k.startswith(BEST)}
        curve = [tuple(c) for c in saved.get("holdout_curve", [])]
        best = {"step": saved.get("holdout_best_step"), "error": saved.get("holdout_best_error", float("inf"))}
        best["state"] = kept or None
        accelerator.unwrap_model(model).load_state_dict(saved["model"], strict=True)
        optimizer.load_state_dict(saved["optimizer"])
        schedule.load_state_dict(saved["schedule"])
        step, losses, window = saved["step"], saved["losses"], saved["window"]
        logger.info(
            "finetune: resumed from %s at step %d%s", ckpt_dir, step, " (finished)" if saved["finished"] else ""
        )
    resumed_from = step

    model.train()
    if not config.train_norm_stats:
        freeze_norm_stats(model)
    per_epoch = len(loader)
    batches = cycle(loader, start_epoch=step // per_epoch if per_epoch else 0)
    if step < config.iterations:  # skip the batches this epoch already used (nothing to skip for a finished run)
        for _ in range(step % per_epoch if per_epoch else 0):
            next(batches)
    if saved is not None:  # after the skipped batches drew from it, the RNG is put back to where the run stopped
        set_rng_state(*saved["rng"])

    def checkpoint(finished: bool = False) -> None:
        if accelerator.is_main_process:
            state = dict(accelerator.unwrap_model(model).state_dict())
            if best["state"] is not None:
                state.update({BEST + k: v for k, v in best["state"].items()})
            save_checkpoint(
                ckpt_dir,
                step=step,
                model_state=state,
                optimizer_state=optimizer.state_dict(),
                extra={
                    "schedule": schedule.state_dict(),
                    "losses": losses,
                    "window": window,
                    "holdout_curve": curve,
                    "holdout_best_step": best["step"],
                    "holdout_best_error": best["error"],
                },
                finished=finished,
            )
        accelerator.wait_for_everyone()

    def check_holdout() -> None:
        """The held-out feature error now; the weights are remembered when it is the lowest so far."""
        if held is None or (curve and curve[-1][0] == step):
            return
        net = accelerator.unwrap_model(model)
        net.eval()
        error = feature_error(student, family, *held, batch_size=config.batch_size)
        net.train()
        if not config.train_norm_stats:
            freeze_norm_stats(net)
        curve.append((step, error))
        if error < best["error"]:
            best.update(
                step=step, error=error, state={k: v.detach().cpu().clone() for k, v in student.state_dict().items()}
            )

    from tqdm.auto import tqdm

    bar = tqdm(
        total=config.iterations, initial=step, desc="mimic finetune", disable=not accelerator.is_local_main_process
    )
    on_batch = config.augmentation in ("flip", "crop", "mixup") and augmented is None
    if step == 0:
        check_holdout()  # the starting point (the scan's adaptors) may be the best there is
    while step < config.iterations:
        x, t = (v.to(accelerator.device) for v in next(batches)[:2])
        if on_batch:  # a function of (seed, step): a resumed run augments as the uninterrupted one did
            x = augment_batch(x, config.augmentation, torch.Generator().manual_seed(seed * 1_000_003 + step))
        mine = rank_share(len(x), accelerator.num_processes, accelerator.process_index)
        # this rank's mean loss counts for its share of the global batch (DDP divides the gradients' sum by N)
        weight = (mine.stop - mine.start) * accelerator.num_processes / len(x)
        x, t = x[mine], t[mine]
        if (augmented is not None and objective != "ce") or taps is not None or (on_batch and objective != "ce"):
            with torch.no_grad():
                t = family.forward_features(teacher, x)  # features+kd: its logits are taken from these below
                if objective == "kd":
                    t = family.forward_head(teacher, t)
        if taps is not None:
            # every stage's output as well as the pre-pooling features, each relative to the teacher's mean
            # square, averaged (a stage the student has no block left in has no term)
            teacher_stages = taps[1].take()
            feats = model(x)
            student_stages = taps[0].take()
            terms = [_relative_mse(feats, t, accelerator)]
            terms += [
                _relative_mse(student_stages[s], teacher_stages[s], accelerator)
                for s in student_stages
                if s in teacher_stages
            ]
            loss = torch.stack(terms).mean()
        elif objective == "features+kd":
            # the feature error relative to the teacher features' mean square (scale-free, like the KL term),
            # plus the KL to the teacher's logits: two terms of comparable size whatever the model
            feats = model(x)
            with torch.no_grad():
                teacher_logits = family.forward_head(teacher, t)
            logits = family.forward_head(accelerator.unwrap_model(model).model, feats)
            loss = _relative_mse(feats, t, accelerator) + _loss("kd", logits, teacher_logits, config.kd_temperature)
        else:
            loss = _loss(objective, as_logits(model(x)), t, config.kd_temperature)
        if weight != 1:
            loss = loss * weight
        mean_loss = check_finite(loss, phase="finetune", step=step, accelerator=accelerator)
        optimizer.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        optimizer.step()
        schedule.step()
        step += 1
        window.append(mean_loss.item())
        bar.update(1)
        if step % log_every == 0 or step == config.iterations:
            losses.append(sum(window) / len(window))
            bar.set_postfix(loss=f"{losses[-1]:.4g}")
            logger.info("finetune: step %d/%d loss %.5g", step, config.iterations, losses[-1])
            accelerator.log({"finetune/loss": losses[-1], "finetune/lr": schedule.get_last_lr()[0]}, step=step)
            window = []
        if step % config.holdout_every == 0 or step == config.iterations:
            check_holdout()
        every = config.checkpoint_every
        if ckpt_dir is not None and every and step % every == 0 and step < config.iterations:
            checkpoint()
    bar.close()
    if held is not None and best["state"] is not None and best["step"] != step:
        logger.info(
            "finetune: held-out feature error lowest at step %d (%.4g), last %.4g: keeping step %d's weights",
            best["step"],
            best["error"],
            curve[-1][1] if curve else float("nan"),
            best["step"],
        )
    if taps is not None:
        for tap in taps:
            tap.remove()
    if not all(torch.isfinite(p).all() for p in student.parameters()):
        raise FloatingPointError(
            f"The finetune phase diverged: the weights hold NaN/inf after {step} steps. Lower `finetune.lr` (now {config.lr})."
        )
    if ckpt_dir is not None and not (saved is not None and saved["finished"]):
        checkpoint(finished=True)  # a rerun of the same command loads this and trains no step
    if held is not None and best["state"] is not None and best["step"] != step:
        student.load_state_dict(best["state"], strict=True)
    model.eval()
    return FinetuneResult(
        steps=step,
        seconds=time.perf_counter() - start,
        losses=losses,
        resumed_from=resumed_from,
        reused_finished=bool(saved is not None and saved["finished"]),
        holdout_curve=curve,
        best_step=best["step"] if held is not None else None,
    )


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
        device = next(model.parameters()).device
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
