"""Fashion-MNIST as the shared teachers expect it: 28x28 grey padded by 2 px to 32x32, grey to RGB, normalised.

Reads the IDX files of Debian's `dataset-fashion-mnist` package (`apt-get install dataset-fashion-mnist`).
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import torch

FMNIST_DIR = Path(os.environ.get("FMNIST_DIR", "/usr/share/datasets/fashion-mnist"))
MEAN, STD = 0.2860, 0.3530


def available() -> bool:
    return (FMNIST_DIR / "t10k-images-idx3-ubyte.gz").exists()


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load_raw(split: str) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images (N, 28, 28) and labels (N,) of `train` or `test`."""
    if not available():
        raise FileNotFoundError(
            f"Fashion-MNIST not found under {FMNIST_DIR}; install it with `apt-get install dataset-fashion-mnist` "
            "or set FMNIST_DIR."
        )
    prefix = "train" if split == "train" else "t10k"
    return _read_idx(FMNIST_DIR / f"{prefix}-images-idx3-ubyte.gz"), _read_idx(
        FMNIST_DIR / f"{prefix}-labels-idx1-ubyte.gz"
    )


def draw(total: int, num_samples: int, seed: int) -> np.ndarray:
    """The sorted indices of `num_samples` seeded draws out of `total` images (what `load` keeps)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(total, generator=g)[:num_samples].sort().values.numpy()


def save_raw(folder: Path, split: str, images: np.ndarray, labels: np.ndarray) -> None:
    """Write images (N, 28, 28) and labels (N,) as the IDX files `load_raw` reads, e.g. a few images to carry.

    `load(split, num_samples=n, seed=s)` on a folder holding the `draw(total, n, s)` subset of a split gives the
    same images as on the whole split (the subset's own draw keeps all of it, in order).
    """
    prefix = "train" if split == "train" else "t10k"
    folder.mkdir(parents=True, exist_ok=True)
    for name, array, code in (("images-idx3", images, 3), ("labels-idx1", labels, 1)):
        header = bytes([0, 0, 8, code]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
        with gzip.open(folder / f"{prefix}-{name}-ubyte.gz", "wb") as f:
            f.write(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def to_tensor(images: np.ndarray, mean: float = MEAN, std: float = STD) -> torch.Tensor:
    """(N, 28, 28) uint8 -> (N, 3, 32, 32) float, padded with black (0) before normalising."""
    x = torch.from_numpy(np.ascontiguousarray(images)).float().div_(255.0)
    x = torch.nn.functional.pad(x, (2, 2, 2, 2))
    return ((x - mean) / std).unsqueeze(1).expand(-1, 3, -1, -1).contiguous()


def load(split: str, *, num_samples: int | None = None, seed: int = 0) -> torch.utils.data.TensorDataset:
    """A TensorDataset of (image, label); `num_samples` seeded draws when given."""
    images, labels = load_raw(split)
    if num_samples is not None:
        idx = draw(len(images), num_samples, seed)
        images, labels = images[idx], labels[idx]
    return torch.utils.data.TensorDataset(to_tensor(images), torch.from_numpy(labels.astype(np.int64)))
