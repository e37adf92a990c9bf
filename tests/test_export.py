"""ONNX export of a compressed model: parity with PyTorch, dynamic batch, written beside the checkpoint, and runnable
in a process that never imports hf_practise."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch

from hf_practise import PractiseCompressor
from hf_practise.result import ONNX_FILE

from .conftest import tiny_resnet
from .test_compressor import fast_config
from .tiny_models import tiny_model

ONNX_ONLY = textwrap.dedent(
    """
    import sys
    import numpy as np
    import onnxruntime as ort

    x = np.load(sys.argv[2])
    session = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
    np.save(sys.argv[3], session.run(["logits"], {"pixel_values": x})[0])
    assert not any(m.startswith("hf_practise") for m in sys.modules), "hf_practise was imported"
    """
)


def run_onnx_elsewhere(path, x: torch.Tensor, tmp_path) -> torch.Tensor:
    import numpy as np

    np.save(tmp_path / "x.npy", x.numpy())
    subprocess.run(
        [sys.executable, "-c", ONNX_ONLY, str(path), str(tmp_path / "x.npy"), str(tmp_path / "y.npy")],
        check=True,
        cwd=tmp_path,
    )
    return torch.from_numpy(np.load(tmp_path / "y.npy"))


@pytest.fixture
def tensors():
    return torch.randn(24, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def test_export_is_checked_saved_and_runs_without_hf_practise(tensors, tmp_path):
    result = PractiseCompressor(tiny_resnet("resnet18"), fast_config(num_blocks=1)).compress(tensors)
    record = result.export_onnx()
    assert record.images_from == "tiny set" and record.images == 16
    assert record.relative_diff < 1e-4
    out = result.save_pretrained(tmp_path / "out")
    assert (out / ONNX_FILE).stat().st_size == record.bytes
    assert json.loads((out / "practise_report.json").read_text())["onnx"]["max_abs_logit_diff"] == pytest.approx(
        record.max_abs_logit_diff
    )
    card = (out / "README.md").read_text()
    assert "### ONNX" in card and "ort.InferenceSession" in card
    x = torch.randn(7, 3, 32, 32)  # a batch size the export never saw
    with torch.no_grad():
        expected = result.model(x)
    got = run_onnx_elsewhere(out / ONNX_FILE, x, tmp_path)
    assert (got - expected).abs().max() <= 1e-4 * expected.abs().max()


def test_a_model_without_export_has_no_onnx_file(tensors, tmp_path):
    result = PractiseCompressor(tiny_resnet("resnet18"), fast_config(num_blocks=1)).compress(tensors)
    out = result.save_pretrained(tmp_path / "out")
    assert not (out / ONNX_FILE).exists() and "### ONNX" not in (out / "README.md").read_text()


@pytest.mark.parametrize("model_id", ["transformers-vit/vit", "timm-efficientnet/mobilenetv2"])
def test_export_of_other_families(model_id, tmp_path):
    model = tiny_model(model_id)
    size = (3, 32, 32)
    x = torch.randn(24, *size, generator=torch.Generator().manual_seed(0))
    result = PractiseCompressor(model, fast_config(num_blocks=1)).compress(x)
    record = result.export_onnx(tmp_path / "m.onnx")
    assert record.relative_diff < 1e-4 and (tmp_path / "m.onnx").exists()
    card = result.model_card().content
    if not result.reloads_natively:  # the loader families: ONNX is what runs without hf_practise
        assert "runtime-native artifact" in card


def test_the_reload_helper_runs_the_onnx_file_without_hf_practise(tensors, tmp_path):
    from benchmarks.native import native_reload_gap

    result = PractiseCompressor(tiny_resnet("resnet18"), fast_config(num_blocks=1)).compress(tensors)
    result.export_onnx()
    out = result.save_pretrained(tmp_path / "out")
    assert native_reload_gap(out, "onnxruntime", result.model, tensors[:5]) < 1e-4
