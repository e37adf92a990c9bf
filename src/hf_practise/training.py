"""The pieces both training phases share: the features-only model, the optimiser, the schedule, the loss check."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import nn

from .backbones.base import BackboneFamily

__all__ = ["FeatureModel", "as_logits", "cosine_schedule", "check_finite", "cycle", "freeze_norm_stats"]


def as_logits(output) -> torch.Tensor:
    """A classifier's logits, whether it returns them (timm) or an output object holding them (transformers)."""
    return output if isinstance(output, torch.Tensor) else output.logits


class FeatureModel(nn.Module):
    """`model` whose forward returns pre-pooling features, so DDP wraps the path that is trained."""

    def __init__(self, model: nn.Module, family: BackboneFamily) -> None:
        super().__init__()
        self.model = model
        self.family = family

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.family.forward_features(self.model, pixel_values)


def cosine_schedule(optimizer: torch.optim.Optimizer, *, iterations: int, warmup: int = 0, kind: str = "cosine"):
    """Linear warm-up, then cosine decay to zero (or constant)."""

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if kind == "constant":
            return 1.0
        progress = (step - warmup) / max(1, iterations - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def check_finite(
    loss: torch.Tensor, *, phase: str, step: int, block: str | None = None, accelerator: Any | None = None
) -> torch.Tensor:
    """Stop at once, naming the phase (and block), when the loss is NaN or infinite; return the loss averaged over
    the processes (the loss itself with one), the value a log shows.

    With an `accelerator` of several processes the check is collective: the average is NaN or infinite on every
    rank when any rank's loss is, so every rank stops (a rank that stopped alone would leave the others waiting in
    the gradients' all-reduce), and the one all-reduce is all the check costs."""
    mean = loss.detach()
    if accelerator is not None and accelerator.num_processes > 1:
        mean = accelerator.reduce(mean, reduction="mean")
    if not torch.isfinite(mean).all():
        where = f" for block {block}" if block else ""
        value = loss.item() if not torch.isfinite(loss.detach()).all() else "finite here, not on another process"
        raise FloatingPointError(
            f"Non-finite loss ({value}) in the {phase} phase{where} at step {step}. Lower the learning rate "
            f"(`{phase}.lr`), or check the tiny set for broken images."
        )
    return mean


def cycle(loader: Iterable, *, start_epoch: int = 0) -> Iterator:
    """Loop over a DataLoader forever, telling it (or its sampler) the epoch before each pass."""
    epoch = start_epoch
    while True:
        target = loader if hasattr(loader, "set_epoch") else getattr(loader, "sampler", None)
        if hasattr(target, "set_epoch"):
            target.set_epoch(epoch)
        yielded = False
        for batch in loader:
            yielded = True
            yield batch
        if not yielded:
            raise ValueError("The training DataLoader is empty; the tiny set needs at least one full batch.")
        epoch += 1


@torch.no_grad()
def recalibrate_norm_stats(model: nn.Module, images: torch.Tensor, *, batch_size: int = 64) -> int:
    """Re-estimate every BatchNorm's running mean and variance on `images` (a cumulative average over the
    batches, weights untouched); returns how many BatchNorm layers were re-estimated."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not norms:
        return 0
    was_training = model.training
    saved = [(m, m.momentum, m.training) for m in norms]
    model.eval()
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: every batch counts alike
        m.train()
    device = next(model.parameters()).device
    try:
        for chunk in images.split(batch_size):
            model(chunk.to(device))
    finally:
        for m, momentum, training in saved:
            m.momentum = momentum
            m.train(training)
        model.train(was_training)
    return len(norms)


def freeze_norm_stats(model: nn.Module) -> None:
    """Put normalisation layers in eval mode so their running statistics stay the teacher's."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
