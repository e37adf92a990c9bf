"""Depth and int8 together (compound.py, `CompressionConfig(quantize="int8")`): the run quantizes the teacher and the
compressed model from the tiny set, times the four side by side, saves the int8 file and tells the card."""

from __future__ import annotations

import json
from types import SimpleNamespace

import onnx
import pytest
import torch

from hf_practise import CompressionConfig, LatencyConfig, PractiseCompressor
from hf_practise.compound import ROWS
from hf_practise.latency import time_alternating
from hf_practise.quantize import ONNX_INT8_FILE

from .conftest import tiny_resnet
from .test_compressor import fast_config, image_dataset


def test_depth_and_int8_side_by_side_saved_and_carded(tmp_path):
    cfg = fast_config(
        num_blocks=2,
        quantize="int8",
        latency=LatencyConfig(batch_size=4, repeats=4, warmup=1, input_size=(3, 32, 32), backend="onnxruntime"),
    )
    result = PractiseCompressor(tiny_resnet("resnet18"), cfg).compress(image_dataset(24), eval_set=image_dataset(12))
    comp = result.int8
    assert comp is not None and comp.backend == "onnxruntime" and set(comp.latency) == set(ROWS)
    assert comp.speedup["teacher fp32"] == pytest.approx(1.0)
    assert all(comp.latency[r].repeats == 4 for r in ROWS) and comp.latency["compressed int8"].dtype == "int8"
    # top-1 of all four on the eval set; the fp32 rows are the run's own numbers
    assert comp.top1["teacher fp32"] == result.top1_before and comp.top1["compressed fp32"] == result.top1_after
    assert set(comp.top1) == set(ROWS) and all(0.0 <= v <= 1.0 for v in comp.top1.values())
    assert comp.compressed.calibration in ("minmax", "entropy", "percentile")
    out = result.save_pretrained(tmp_path / "out")
    int8 = onnx.load_from_string((out / ONNX_INT8_FILE).read_bytes())
    assert any(n.op_type == "QuantizeLinear" for n in int8.graph.node)
    report = json.loads((out / "practise_report.json").read_text())
    assert ONNX_INT8_FILE in report["files"] and set(report["int8"]["speedup"]) == set(ROWS)
    assert report["int8"]["depth_speedup_int8"] == pytest.approx(
        comp.speedup["compressed int8"] / comp.speedup["teacher int8"]
    )
    card = (out / "README.md").read_text()
    assert "### int8" in card and "| compressed int8 |" in card and ONNX_INT8_FILE in card
    # the model-index carries the int8 artifact's figures beside the fp32 ones (the Hub parses it back)
    from huggingface_hub import ModelCard

    evals = ModelCard.load(out / "README.md").data.eval_results
    int8 = {e.metric_name: e.metric_value for e in evals if (e.metric_args or {}).get("artifact") == "int8"}
    assert int8 == {
        "int8 latency (ms per batch)": round(comp.latency["compressed int8"].median_ms, 3),
        "int8 top-1": round(comp.top1["compressed int8"], 5),
    }
    # benchmarks/families.py --quantize int8 tables the comparison as the report carries it
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import families

    record = {"family": "timm-resnet + int8 (onnxruntime)", "latency_target": 0.22, "int8": report["int8"]}
    page = "\n".join(families.int8_section([record]))
    assert f"**{100 * comp.top1['compressed int8']:.2f}% ({comp.speedup['compressed int8']:.2f}x)**" in page
    cost = 100 * (comp.top1["compressed fp32"] - comp.top1["compressed int8"])
    assert f" / {cost:+.2f} | {comp.depth_speedup_int8:.2f}x |" in page


def test_int8_needs_an_int8_runtime_and_a_method_it_has():
    with pytest.raises(ValueError, match="--latency-backend onnxruntime"):
        CompressionConfig(quantize="int8")  # the torch backend has no int8 path here
    with pytest.raises(ValueError, match="performance"):
        CompressionConfig(quantize="int8", int8_calibration="entropy", latency=LatencyConfig(backend="openvino"))
    with pytest.raises(ValueError, match="`quantize`"):
        CompressionConfig(quantize="int4")


def test_quantization_aware_int8_trains_through_the_quantizers_and_ships_openvino_ir(tmp_path):
    """`quantize_aware`: the compressed model's int8 comes from NNCF's fake quantizers trained on the tiny set and
    OpenVINO's converter; the teacher's stays post-training (what a user would do instead), timed in the same rounds."""
    pytest.importorskip("nncf")
    from hf_practise.quantize import OPENVINO_XML

    cfg = fast_config(
        num_blocks=2,
        quantize="int8",
        quantize_aware=4,
        latency=LatencyConfig(batch_size=4, repeats=2, warmup=1, input_size=(3, 32, 32), backend="openvino"),
    )
    result = PractiseCompressor(tiny_resnet("resnet18"), cfg).compress(image_dataset(24), eval_set=image_dataset(12))
    comp = result.int8
    assert comp.compressed.calibration == "quantization-aware (4 steps)"
    assert comp.teacher.calibration in ("performance", "mixed")
    assert comp.compressed.agreement >= 0.5 and set(comp.top1) == set(ROWS)
    assert not comp.compressed.float_ops  # every conv runs int8
    out = result.save_pretrained(tmp_path / "out")
    assert (out / OPENVINO_XML).exists() and "FakeQuantize" in (out / OPENVINO_XML).read_text()
    assert "NNCF quantization-aware training" in (out / "README.md").read_text()


def test_quantization_aware_needs_int8_in_openvino():
    with pytest.raises(ValueError, match="--quantize int8"):
        CompressionConfig(quantize_aware=10)
    with pytest.raises(ValueError, match="--latency-backend openvino"):
        CompressionConfig(quantize="int8", quantize_aware=10, latency=LatencyConfig(backend="onnxruntime"))


def test_alternating_rounds_rotate_which_runner_goes_first():
    order: list[str] = []
    runners = {name: (lambda name=name: order.append(name)) for name in "abc"}
    times = time_alternating(runners, config=LatencyConfig(repeats=3, warmup=0))
    assert order == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]
    assert {k: len(v) for k, v in times.items()} == {"a": 3, "b": 3, "c": 3}
    assert all(t >= 0 for v in times.values() for t in v) and torch.get_num_threads() >= 1


def test_with_int8_the_blocks_are_chosen_by_their_int8_cost(monkeypatch):
    # int8 kernels do not cost what fp32 ones do: the shares and the selection's checks time int8 against int8. Here
    # the int8 timing says only layer4.1 matters, which no fp32 timing of this model would say
    from hf_practise import compressor as c

    fake = {"layer1.1": 0.01, "layer2.1": 0.01, "layer3.1": 0.01, "layer4.1": 0.3}
    calls = []

    def int8_cut(base, base_model, pruned, images, *, config):
        calls.append(len(images))
        kept = dict(pruned.named_modules())
        cut = sum(share for block, share in fake.items() if block not in kept)
        return SimpleNamespace(reduction=cut, base=SimpleNamespace(device="cpu"))

    monkeypatch.setattr(c, "int8_latency_comparison", int8_cut)
    cfg = fast_config(
        num_blocks=None,
        latency_reduction=0.25,
        quantize="int8",
        latency=LatencyConfig(batch_size=4, repeats=2, warmup=0, input_size=(3, 32, 32), backend="onnxruntime"),
    )
    result = PractiseCompressor(tiny_resnet("resnet18"), cfg).compress(torch.randn(24, 3, 32, 32))
    assert [r.block for r in result.dropped] == ["layer4.1"]
    assert calls and all(n == 24 for n in calls)  # calibrated on the tiny set (its first INT8_TIMING_IMAGES)
    assert [r.latency_saving for r in result.scan] == [0.01, 0.01, 0.01, 0.3]


def test_an_int8_model_evaluates_without_an_accelerator():
    # Int8Module has no parameters (the runtime holds the weights): the eval loop runs it on the CPU
    from hf_practise import evaluate_metrics
    from hf_practise.compound import Int8Module
    from hf_practise.quantize import quantize_int8

    model = tiny_resnet("resnet18").eval()
    images = torch.randn(16, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    int8 = quantize_int8(model, images, backend="onnxruntime", calibration="minmax", holdout=0)
    labels = model(images).argmax(-1)
    data = torch.utils.data.TensorDataset(images, labels)
    accuracy = evaluate_metrics(Int8Module(int8), data, metrics=["accuracy"])["accuracy"]
    assert accuracy == pytest.approx(float((int8.logits(images).argmax(-1) == labels).float().mean()))
