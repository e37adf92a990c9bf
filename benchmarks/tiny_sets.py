"""The tiny sets of the comparison benchmark: in-domain Fashion-MNIST, out-of-domain digits, and data-free.

All come out as (N, 3, 32, 32) tensors normalised like the Fashion-MNIST teachers expect.
- `fmnist`: seeded draws from the Fashion-MNIST train split (labels kept, for the cross-entropy baseline).
- `digits-ood`: scikit-learn's handwritten digits, 8x8 upsampled to 28x28 (bilinear), padded to 32x32 as
  Fashion-MNIST is, grey to RGB. Different domain, same input statistics pipeline. Their labels are digits,
  not garments, so they are dropped.
- `data-free`: images synthesised from the teacher alone by matching its BatchNorm running statistics
  (mean and variance of every BN input) plus a cross-entropy term towards uniformly drawn classes, as in
  DeepInversion (Yin et al., CVPR 2020) without its extra regularisers. No real image is used.
"""

from __future__ import annotations

import logging

import fmnist
import numpy as np
import torch
from torch import nn

logger = logging.getLogger(__name__)


def fmnist_tiny(num_samples: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    ds = fmnist.load("train", num_samples=num_samples, seed=seed)
    return ds.tensors[0], ds.tensors[1]


def digits_ood(num_samples: int, seed: int) -> torch.Tensor:
    from sklearn.datasets import load_digits

    images = torch.from_numpy(load_digits().images).float() / 16.0  # (1797, 8, 8) in [0, 1]
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(images), generator=g)[:num_samples].sort().values
    x = torch.nn.functional.interpolate(images[idx].unsqueeze(1), size=(28, 28), mode="bilinear", align_corners=False)
    x = (x.clamp(0, 1) * 255).round().squeeze(1).to(torch.uint8).numpy()
    return fmnist.to_tensor(np.ascontiguousarray(x))


def data_free(
    teacher: nn.Module,
    num_samples: int,
    seed: int,
    *,
    steps: int = 200,
    batch_size: int = 100,
    lr: float = 0.1,
    bn_weight: float = 1.0,
) -> torch.Tensor:
    """Synthesise `num_samples` images from `teacher` by BatchNorm-statistics matching (see module docstring)."""
    teacher = teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    bns = [m for m in teacher.modules() if isinstance(m, nn.BatchNorm2d)]
    losses: list[torch.Tensor] = []

    def hook(module: nn.BatchNorm2d, inputs, _output) -> None:
        x = inputs[0]
        mean = x.mean(dim=(0, 2, 3))
        var = x.var(dim=(0, 2, 3), unbiased=False)
        losses.append(torch.norm(mean - module.running_mean, 2) + torch.norm(var - module.running_var, 2))

    handles = [m.register_forward_hook(hook) for m in bns]
    g = torch.Generator().manual_seed(seed)
    num_classes = teacher.num_classes
    out = []
    try:
        for start in range(0, num_samples, batch_size):
            n = min(batch_size, num_samples - start)
            x = torch.randn(n, 1, 32, 32, generator=g).requires_grad_(True)
            y = torch.randint(0, num_classes, (n,), generator=g)
            opt = torch.optim.Adam([x], lr=lr)
            for step in range(steps):
                losses.clear()
                logits = teacher(x.expand(-1, 3, -1, -1))
                loss = torch.nn.functional.cross_entropy(logits, y) + bn_weight * sum(losses)
                opt.zero_grad()
                loss.backward()
                opt.step()
            logger.info("data-free: %d/%d images, final loss %.3f", start + n, num_samples, loss.item())
            out.append(x.detach().expand(-1, 3, -1, -1).contiguous())
    finally:
        for h in handles:
            h.remove()
    return torch.cat(out)
