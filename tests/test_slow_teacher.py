"""Real-teacher checks (slow): the shared resnet34 Fashion-MNIST teacher, compressed and reloaded.

Needs `../shared/teachers/resnet34-fmnist` and Debian's `dataset-fashion-mnist`; skipped without them.
Run with `pytest -m slow`.
"""

from __future__ import annotations

import sys

import pytest
import torch

from hf_practise import CompressionConfig, FinetuneConfig, LatencyConfig, PractiseCompressor, ScanConfig

from .conftest import REPO, SHARED
from .test_backbones import reload_in_plain_timm

TEACHER = SHARED / "teachers" / "resnet34-fmnist"
sys.path.insert(0, str(REPO / "benchmarks"))
import fmnist  # noqa: E402

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (TEACHER / "model.safetensors").exists(), reason=f"needs the shared teacher at {TEACHER}"),
    pytest.mark.skipif(not fmnist.available(), reason="needs Debian's dataset-fashion-mnist"),
]


def test_teacher_compresses_and_reloads(tmp_path):
    tiny = fmnist.load("train", num_samples=200, seed=0)
    test = fmnist.load("test", num_samples=2000, seed=0)
    config = CompressionConfig(
        num_blocks=4,
        scan=ScanConfig(iterations=20),
        finetune=FinetuneConfig(iterations=100),
        latency=LatencyConfig(repeats=10),
    )
    result = PractiseCompressor.from_pretrained(f"local-dir:{TEACHER}", config).compress(tiny, test)
    assert result.top1_before > 0.9
    assert result.top1_after > result.top1_before - 0.03
    assert result.macs_after < 0.85 * result.macs_before
    out = result.save_pretrained(tmp_path / "out")
    x = test.tensors[0][:8]
    logits = reload_in_plain_timm(out, x, tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(logits, result.model(x), rtol=0, atol=0)
