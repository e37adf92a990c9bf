"""Latency and cost measurement: fields, alternation, exact MAC counts."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from hf_practise import LatencyConfig, compare_latency, count_macs, count_params, get_family, measure_latency
from hf_practise import latency as latency_mod
from hf_practise.latency import SHARE_ATTEMPTS, block_latency_table
from hf_practise.runtimes import export_onnx_bytes, make_runner, require_backend

from .conftest import tiny_resnet
from .tiny_models import tiny_model

FAST = LatencyConfig(batch_size=2, warmup=1, repeats=5, threads=1)


def test_measure_latency_reports_its_setup():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        stats = measure_latency(model, input_size=(3, 16, 16), config=FAST)  # times with 1 thread
        assert torch.get_num_threads() == 2  # and puts the caller's setting back
    finally:
        torch.set_num_threads(before)
    assert stats.median_ms > 0 and stats.p25_ms <= stats.median_ms <= stats.p75_ms
    assert (stats.batch_size, stats.threads, stats.repeats, stats.input_size) == (2, 1, 5, (3, 16, 16))
    assert stats.device == "cpu" and stats.dtype == "float32" and stats.torch_version == torch.__version__


def test_comparing_a_model_with_a_much_bigger_one():
    small = nn.Conv2d(3, 4, 1)
    big = nn.Sequential(*[nn.Conv2d(3, 3, 3, padding=1) for _ in range(30)])
    cmp = compare_latency(big, small, input_size=(3, 32, 32), config=FAST)
    assert cmp.reduction > 0.5 and cmp.base.repeats == cmp.candidate.repeats == 5


def test_macs_are_exact_for_a_conv():
    conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
    assert count_macs(conv, input_size=(3, 10, 10)) == 3 * 8 * 9 * 10 * 10
    assert count_params(conv) == 3 * 8 * 9


def test_block_shares_are_fractions_of_the_whole():
    model = tiny_resnet("resnet26")
    family = get_family(model)
    shares, whole = block_latency_table(model, family, family.candidates(model), input_size=(3, 32, 32), config=FAST)
    assert set(shares) == {c.path for c in family.candidates(model)}
    assert all(0 < v < 1 for v in shares.values()) and sum(shares.values()) < 1.5
    assert whole.median_ms > 0


# ---- backends -------------------------------------------------------------------------------------------------
RUNTIMES = ["onnxruntime", "openvino"]


@pytest.mark.parametrize("backend", RUNTIMES)
def test_a_runtime_runs_the_model_it_times(backend):
    model = tiny_resnet("resnet26").eval()
    x = torch.randn(2, 3, 32, 32)
    run = make_runner(model, (x,), backend=backend, threads=1)
    out = run()
    y = out[0] if backend == "onnxruntime" else next(iter(out.values()))
    assert torch.allclose(torch.from_numpy(y), model(x), atol=1e-4)
    assert run.info.backend == backend and run.info.version and run.info.provider


@pytest.mark.parametrize("backend", RUNTIMES)
def test_latency_in_a_runtime_says_which(backend):
    cfg = dataclasses.replace(FAST, backend=backend)
    model = tiny_resnet("resnet26")
    cmp = compare_latency(model, nn.Sequential(model.conv1), input_size=(3, 32, 32), config=cfg)
    assert cmp.base.backend == cmp.candidate.backend == backend and cmp.base.backend_version
    assert cmp.base.repeats == cmp.candidate.repeats == FAST.repeats and cmp.base.median_ms > 0
    assert backend.replace("onnxruntime", "ONNX Runtime").replace("openvino", "OpenVINO") in cmp.base.runtime()


@pytest.mark.parametrize("model_id", ["transformers-vit/vit", "timm-swin/swin"])
def test_blocks_with_keyword_arguments_are_timed_in_onnxruntime(model_id):
    # a transformers layer and a Swin unit are called with more than one tensor; each is exported as it is called
    model = tiny_model(model_id)
    family = get_family(model)
    cands = family.candidates(model)
    size = tuple(family.data_config(model)["input_size"])
    cfg = dataclasses.replace(FAST, backend="onnxruntime")
    shares, whole = block_latency_table(model, family, cands, input_size=size, config=cfg)
    assert set(shares) == {c.path for c in cands} and all(v > 0 for v in shares.values())
    assert whole.backend == "onnxruntime"


def test_shares_are_scaled_to_the_saving_measured_beside_them(monkeypatch):
    """A busy machine made every block look half as expensive as it is, however often they are measured; the
    model without the blocks, timed in the same rounds, puts them back at their real share."""
    from hf_practise.recoverability import build_pruned

    model = tiny_resnet("resnet26")
    family = get_family(model)
    cands = family.candidates(model)
    removed = family.feasible(model, cands)
    pruned = build_pruned(model, family, removed, adaptors=False)
    real = 0.05  # every block really takes 5% of the model
    # per round the table times: the whole model, each block (here at half its share), the model without blocks
    per_round = [100.0] + [100.0 * real / 2] * len(cands) + [100.0 * (1 - real * len(removed))]
    times = iter(per_round * FAST.repeats * SHARE_ATTEMPTS)  # every attempt disagrees the same way
    monkeypatch.setattr(latency_mod, "_timer", lambda fn, device: next(times))
    shares, stats = block_latency_table(
        model, family, cands, input_size=(3, 32, 32), config=FAST, without=(pruned, [r.path for r in removed])
    )
    assert stats.share_check["factor"] == pytest.approx(2.0) and stats.share_check["attempts"] == SHARE_ATTEMPTS
    assert all(v == pytest.approx(real) for v in shares.values())


def test_shares_that_disagree_are_measured_again(monkeypatch):
    from hf_practise.recoverability import build_pruned

    model = tiny_resnet("resnet26")
    family = get_family(model)
    cands = family.candidates(model)
    removed = family.feasible(model, cands)
    pruned = build_pruned(model, family, removed, adaptors=False)
    bad = [100.0] + [1.0] * len(cands) + [100.0 * (1 - 0.05 * len(removed))]  # blocks far too cheap
    good = [100.0] + [5.0] * len(cands) + [100.0 * (1 - 0.05 * len(removed))]
    times = iter(bad * FAST.repeats + good * FAST.repeats)
    monkeypatch.setattr(latency_mod, "_timer", lambda fn, device: next(times))
    shares, stats = block_latency_table(
        model, family, cands, input_size=(3, 32, 32), config=FAST, without=(pruned, [r.path for r in removed])
    )
    assert stats.share_check["attempts"] == 2 and stats.share_check["factor"] == pytest.approx(1.0)
    assert all(v == pytest.approx(0.05) for v in shares.values())


def test_a_missing_runtime_names_its_extra(monkeypatch):
    import importlib

    real_import = importlib.import_module

    def fake(name, *a, **k):
        if name == "onnxruntime":
            raise ImportError("No module named 'onnxruntime'")
        return real_import(name, *a, **k)

    monkeypatch.setattr(importlib, "import_module", fake)
    with pytest.raises(ImportError, match=r"hf-practise\[onnx\]"):
        require_backend("onnxruntime")


def test_precision_needs_the_torch_backend():
    with pytest.raises(ValueError, match="needs the torch backend"):
        LatencyConfig(backend="onnxruntime", precision="bf16")
    with pytest.raises(ValueError, match="latency.backend"):
        LatencyConfig(backend="tensorrt")


def test_bf16_latency_runs_under_autocast():
    stats = measure_latency(
        tiny_resnet("resnet26"), input_size=(3, 32, 32), config=dataclasses.replace(FAST, precision="bf16")
    )
    assert stats.precision == "bf16" and "autocast bf16" in stats.runtime()


def test_export_keeps_a_dynamic_batch():
    import onnxruntime as ort

    model = tiny_resnet("resnet26").eval()
    onnx = export_onnx_bytes(model, (torch.randn(2, 3, 32, 32),), dynamic_batch=True, input_names=["pixel_values"])
    session = ort.InferenceSession(onnx, providers=["CPUExecutionProvider"])
    x = torch.randn(5, 3, 32, 32)
    assert torch.allclose(torch.from_numpy(session.run(None, {"pixel_values": x.numpy()})[0]), model(x), atol=1e-4)


def test_blocks_that_do_the_same_work_share_one_share(monkeypatch):
    """Identical blocks called on identical shapes (here a stage's two residual blocks) pool their rounds: noise
    that hits one of them (the odd timings below) cannot rank them apart."""
    import timm

    model = timm.create_model("resnet34", pretrained=False, num_classes=5).eval()
    family = get_family(model)
    cands = family.candidates(model)
    noisy = iter([1.0 + (i % 7) * 0.3 for i in range(10_000)])
    monkeypatch.setattr(latency_mod, "_timer", lambda fn, device: next(noisy))
    shares, _ = block_latency_table(model, family, cands, input_size=(3, 32, 32), config=FAST)
    by_stage: dict = {}
    for c in cands:
        by_stage.setdefault(c.stage, set()).add(shares[c.path])
    assert all(len(values) == 1 for values in by_stage.values())
