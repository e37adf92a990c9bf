"""Shared fixtures: tiny, randomly initialised timm ResNets of every block type, with live residual branches."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from hf_practise.backbones.tiny import randomise_norms

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # `pytest -n N`: N workers share the cores; one thread each (and in the processes they start), or torch's
    # threads of one worker wait on the other's
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"

# (architecture, kwargs): BasicBlock and Bottleneck, plain and -d (deep stem, avg-pool downsample)
TINY_RESNETS = {
    "resnet18": dict(channels=(8, 16, 16, 32)),
    "resnet18d": dict(channels=(8, 16, 16, 32), stem_width=8),
    "resnet26": dict(channels=(4, 8, 8, 16)),
    "resnet26d": dict(channels=(4, 8, 8, 16), stem_width=8),
}


def tiny_resnet(arch: str, num_classes: int = 5, seed: int = 0) -> nn.Module:
    import timm

    torch.manual_seed(seed)
    model = timm.create_model(arch, pretrained=False, num_classes=num_classes, **TINY_RESNETS[arch])
    return randomise_norms(model, seed)


# CLI flags that make examples/compress.py finish in seconds on a tiny model
CLI_FAST = "--scan-iterations 2 --iterations 2 --batch-size 8 --scan-batch-size 8 --lr 1e-4".split() + (
    "--latency-batch-size 2 --latency-repeats 3".split()
)


def save_tiny_teacher(folder: Path) -> nn.Module:
    """A tiny resnet18 saved as a timm checkpoint whose config expects 32x32 inputs."""
    import json

    from hf_practise import get_family

    model = tiny_resnet("resnet18")
    get_family(model).save_pretrained(model, folder, source_config={})
    config = json.loads((folder / "config.json").read_text())
    config["pretrained_cfg"].update(input_size=[3, 32, 32], crop_pct=1.0, mean=[0.5] * 3, std=[0.5] * 3, license="mit")
    (folder / "config.json").write_text(json.dumps(config))
    return model


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    """A tiny timm teacher folder (see `save_tiny_teacher`)."""
    root = tmp_path_factory.mktemp("teacher")
    save_tiny_teacher(root)
    return root


@pytest.fixture(scope="module")
def imagefolder(tmp_path_factory):
    """An imagefolder of 3 classes x 6 random 32x32 RGB images."""
    import numpy as np
    from PIL import Image

    root = tmp_path_factory.mktemp("imagefolder")
    rng = np.random.default_rng(0)
    for c in range(3):
        (root / f"class{c}").mkdir()
        for i in range(6):
            Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(root / f"class{c}" / f"{i}.png")
    return root


@pytest.fixture(params=sorted(TINY_RESNETS))
def arch(request) -> str:
    return request.param


@pytest.fixture
def model(arch) -> nn.Module:
    return tiny_resnet(arch)


@pytest.fixture
def images() -> torch.Tensor:
    return torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def pytest_configure(config) -> None:
    sys.path.insert(0, str(REPO))


def reload_natively(library: str, folder: Path, x: torch.Tensor, tmp_path: Path | None = None) -> torch.Tensor:
    """Logits of `x` from `folder` reloaded by plain timm or transformers (no hf_practise import)."""
    from benchmarks.native import reload_logits

    return reload_logits(folder, library, x)
