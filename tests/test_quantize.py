"""int8 post-training quantization (quantize.py): ONNX Runtime QDQ and OpenVINO/NNCF models calibrated on a tiny set
run in their runtimes, agree with the fp32 model, are the files they claim to be, and fail early and clearly."""

from __future__ import annotations

import functools
import sys

import pytest
import torch
from torch import nn

from hf_practise.quantize import METHODS, ONNX_INT8_FILE, OPENVINO_BIN, OPENVINO_XML, Int8Model, quantize_int8

from .conftest import tiny_resnet
from .tiny_models import logits, tiny_model

MODELS = {
    "resnet": lambda: tiny_resnet("resnet18"),
    "vit": lambda: tiny_model("timm-vit/vit"),
    "hf-vit": lambda: tiny_model("transformers-vit/vit"),  # its class token joins the stream by a Concat
}
#: the calibration each case runs: "auto" on the ResNets (each method once), one method on the ViTs
CASES = {
    ("onnxruntime", "resnet"): "auto",
    ("onnxruntime", "vit"): "minmax",
    ("onnxruntime", "hf-vit"): "minmax",
    ("openvino", "resnet"): "auto",
    ("openvino", "vit"): "mixed",
}
#: Top-1 agreement with fp32 on the 48 images that a working int8 model reaches. Random tiny models have small top-2
#: margins (median 0.25-0.5 against int8 logit noise of 0.03-0.09 RMS), so a few images flip: the five cases, each
#: with models and images of seeds 0-4, measured 93.8-100%. 85% leaves room for 4 more flips than the worst of those
#: and still fails a broken quantization (a ViT whose residual stream is quantized: 75-79%; chance: 20%).
MIN_AGREEMENT = 0.85
#: mean squared logit error relative to the mean squared fp32 logit: 0.04-0.6% measured (same 25 runs); a ViT with
#: its residual stream quantized 11-12% (ONNX Runtime) and 40% (NNCF without `ModelType.TRANSFORMER`).
MAX_RELATIVE_MSE = 0.02


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(48, 3, 32, 32, generator=torch.Generator().manual_seed(0))


@functools.cache
def quantized(backend: str, name: str) -> tuple[nn.Module, Int8Model]:
    model = MODELS[name]()
    x = torch.randn(48, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    return model, quantize_int8(model, x, backend=backend, calibration=CASES[backend, name], threads=1)


@pytest.mark.parametrize("backend,name", sorted(CASES))
def test_int8_runs_in_its_runtime_and_agrees_with_fp32(backend, name, images):
    model, result = quantized(backend, name)
    with torch.no_grad():
        reference = logits(model, images)
    got = result.logits(images)
    assert got.shape == reference.shape and (got - reference).abs().max() > 0  # int8 is not fp32
    assert (got.argmax(1) == reference.argmax(1)).float().mean() >= MIN_AGREEMENT
    assert ((got - reference) ** 2).mean() <= MAX_RELATIVE_MSE * (reference**2).mean()
    assert 0 <= result.agreement <= 1 and result.max_logit_error > 0
    assert (result.checked_on, result.calibration_images, result.check_images) == ("held-out", 36, 12)
    runner = result.runner(images[:3], threads=1)
    assert runner.info.backend == backend
    assert torch.allclose(torch.as_tensor(runner()[0]), got[:3], atol=1e-5)


@pytest.mark.parametrize("backend,name", sorted(CASES))
def test_the_files_are_what_they_claim(backend, name):
    _, result = quantized(backend, name)
    if backend == "onnxruntime":
        import onnx

        assert set(result.files) == {ONNX_INT8_FILE}
        proto = onnx.load_from_string(result.files[ONNX_INT8_FILE])
        onnx.checker.check_model(proto)
        ops = {node.op_type for node in proto.graph.node}
        assert {"QuantizeLinear", "DequantizeLinear"} <= ops
        assert any(t.data_type == onnx.TensorProto.INT8 for t in proto.graph.initializer)  # int8 weights
    else:
        import openvino as ov

        assert set(result.files) == {OPENVINO_XML, OPENVINO_BIN}
        model = ov.Core().read_model(result.files[OPENVINO_XML], result.files[OPENVINO_BIN])
        ops = model.get_ordered_ops()
        assert "FakeQuantize" in {op.get_type_name() for op in ops}
        assert any(op.get_type_name() == "Constant" and op.get_element_type() == ov.Type.i8 for op in ops)


def test_a_vits_residual_stream_stays_float_and_a_resnets_convs_do_not():
    for backend, name in CASES:
        assert quantized(backend, name)[1].float_stream == name.endswith("vit")
    assert {"Add", "LayerNormalization"} <= set(quantized("onnxruntime", "vit")[1].float_ops)  # the residual stream
    assert "MVN" in quantized("openvino", "vit")[1].float_ops  # OpenVINO's LayerNorm
    assert "Conv" not in quantized("onnxruntime", "resnet")[1].float_ops
    assert "Convolution" not in quantized("openvino", "resnet")[1].float_ops


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_auto_keeps_the_method_with_the_lowest_held_out_error(backend):
    _, result = quantized(backend, "resnet")
    errors = result.calibration_errors
    assert set(errors) == set(METHODS[backend]) and len(set(errors.values())) > 1  # the methods really differ
    assert result.calibration == min(errors, key=errors.get)


def test_a_named_method_reproduces_what_auto_measured(images):
    model, auto = quantized("onnxruntime", "resnet")
    again = quantize_int8(model, images, backend="onnxruntime", calibration=auto.calibration, threads=1)
    assert again.files == auto.files  # deterministic, and auto kept the model of the method it names
    other = next(m for m in METHODS["onnxruntime"] if m != auto.calibration)
    fixed = quantize_int8(model, images, backend="onnxruntime", calibration=other, threads=1)
    assert fixed.calibration == other
    assert fixed.calibration_errors == pytest.approx({other: auto.calibration_errors[other]})
    everything = quantize_int8(model, images, backend="onnxruntime", calibration=other, holdout=0, threads=1)
    assert (everything.checked_on, everything.calibration_images, everything.check_images) == ("calibration", 48, 48)


class Untouchable(nn.Module):
    """A model that fails the test if any work (export, forward) reaches it."""

    def forward(self, x):
        raise AssertionError("quantize_int8 worked on the model before checking its arguments")


def test_torch_is_refused_with_the_backends_to_use(images):
    with pytest.raises(ValueError, match="--latency-backend onnxruntime.*--latency-backend openvino"):
        quantize_int8(Untouchable(), images, backend="torch")


@pytest.mark.parametrize(
    "backend,module,extra",
    [("onnxruntime", "onnxruntime", "onnx"), ("openvino", "openvino", "openvino"), ("openvino", "nncf", "openvino")],
)
def test_a_missing_runtime_names_its_install_command_before_any_work(backend, module, extra, images, monkeypatch):
    monkeypatch.setitem(sys.modules, module, None)  # `import module` now raises ImportError
    with pytest.raises(ImportError, match=rf"`{module}`.*pip install \"hf-practise\[{extra}\]\""):
        quantize_int8(Untouchable(), images, backend=backend)


@pytest.mark.parametrize(
    "backend,calibration,holdout,message",
    [
        ("onnxruntime", "performance", 0.25, "choose 'auto' or one of minmax, entropy, percentile"),
        ("openvino", "entropy", 0.25, "choose 'auto' or one of performance, mixed"),
        ("onnxruntime", "auto", 0, "holds none"),
        ("onnxruntime", "minmax", 48, "leaves no image to calibrate on"),
        ("onnxruntime", "minmax", 1.0, "leaves no image to calibrate on"),
    ],
)
def test_bad_arguments_are_refused_before_any_work(backend, calibration, holdout, message, images):
    with pytest.raises(ValueError, match=message):
        quantize_int8(Untouchable(), images, backend=backend, calibration=calibration, holdout=holdout)


class Eigenvalues(nn.Module):
    """A model no ONNX exporter handles (complex eigenvalues)."""

    def forward(self, x):
        return torch.linalg.eigvals(x[:, 0, :4, :4]).abs()


def test_an_export_failure_says_so_in_one_line(images):
    with pytest.raises(RuntimeError) as info:
        quantize_int8(Eigenvalues(), images, backend="onnxruntime", calibration="minmax")
    message = str(info.value)
    assert message.startswith("Could not export Eigenvalues to ONNX") and "eigvals" in message
    assert "\n" not in message
