"""Eval metrics through `evaluate`, offline: the shipped modules, any local metric module, and the results."""

from __future__ import annotations

import textwrap

import pytest
import torch
from torch.utils.data import TensorDataset

from hf_practise import CompressionConfig, PractiseCompressor
from hf_practise.metrics import SHIPPED, load_metric
from hf_practise.mimic import evaluate_metrics, evaluate_top1

from .conftest import tiny_resnet
from .test_compressor import fast_config


def test_the_shipped_modules_load_offline_and_compute(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert {"accuracy", "top_k_accuracy"} <= set(SHIPPED)
    acc = load_metric("accuracy")
    acc.add_batch(predictions=[0, 1, 2, 3], references=[0, 1, 0, 0])
    assert acc.compute() == {"accuracy": 0.5}
    topk = load_metric("top_k_accuracy")
    topk.add_batch(predictions=[[3, 0], [1, 2], [2, 1]], references=[0, 2, 0])
    assert topk.compute(k=1) == {"top_k_accuracy": 0.0, "k": 1}
    topk.add_batch(predictions=[[3, 0], [1, 2], [2, 1]], references=[0, 2, 0])
    assert topk.compute(k=2)["top_k_accuracy"] == pytest.approx(2 / 3)


def test_an_unknown_metric_says_what_works():
    with pytest.raises(ValueError, match="shipped one"):
        load_metric("/nonexistent/metric/folder", trust_remote_code=True)


def _metric_module(folder, name: str = "f1") -> None:
    """An `evaluate` metric module `folder/NAME.py` that leaves a mark beside it when its code runs."""
    folder.mkdir()
    (folder / f"{name}.py").write_text(
        textwrap.dedent(
            f"""
            import pathlib

            pathlib.Path(__file__).with_name("ran").write_text("x")
            pathlib.Path({str(folder / "ran")!r}).write_text("x")
            """
        )
    )


def test_metric_code_from_the_current_directory_runs_only_when_trusted(tmp_path, monkeypatch):
    """`evaluate.load("f1")` imports ./f1/f1.py; without trust_remote_code it is refused before any import."""
    _metric_module(tmp_path / "f1")
    monkeypatch.chdir(tmp_path)
    for refuse in (
        lambda: CompressionConfig(eval_metrics=["f1"]),
        lambda: load_metric("f1"),
        lambda: evaluate_metrics(tiny_resnet("resnet18"), TensorDataset(torch.randn(2, 3, 32, 32)), metrics=["f1"]),
    ):
        with pytest.raises(ValueError, match=r"'f1' is not shipped.*accuracy, top_k_accuracy.*--trust-remote-code"):
            refuse()
    assert not (tmp_path / "f1" / "ran").exists()
    with pytest.raises(ValueError, match="Could not load the eval metric 'f1'"):  # not a metric, but it ran
        load_metric("f1", trust_remote_code=True)
    assert (tmp_path / "f1" / "ran").exists()
    assert CompressionConfig(eval_metrics=["f1"], trust_remote_code=True).eval_metrics == ["accuracy", "f1"]


def test_a_hub_metric_id_needs_trust_remote_code_too(monkeypatch):
    import evaluate

    monkeypatch.setattr(evaluate, "load", lambda *a, **k: pytest.fail("evaluate.load was called"))
    with pytest.raises(ValueError, match=r"'someone/metric' is not shipped"):
        load_metric("someone/metric")
    CompressionConfig(eval_metrics=["accuracy", "top_k_accuracy"])  # the shipped ones need no trust


def test_metrics_match_a_direct_count():
    model = tiny_resnet("resnet18").eval()
    x = torch.randn(37, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = model(x)
    y = logits.topk(3, dim=-1).indices[:, 2]  # labels that are each image's third guess
    y[:10] = logits.argmax(-1)[:10]  # and the first guess for ten of them
    ds = TensorDataset(x, y)
    out = evaluate_metrics(model, ds, batch_size=8)
    assert out["accuracy"] == pytest.approx((logits.argmax(-1) == y).float().mean().item())
    assert out["top5_accuracy"] == pytest.approx(1.0)
    assert evaluate_top1(model, ds, batch_size=16) == out["accuracy"]


def test_a_local_metric_module_is_reported_in_the_result_and_card(tmp_path):
    folder = tmp_path / "error_rate"
    folder.mkdir()
    (folder / "error_rate.py").write_text(
        textwrap.dedent(
            """
            import datasets
            import evaluate


            class ErrorRate(evaluate.Metric):
                def _info(self):
                    return evaluate.MetricInfo(
                        description="1 - accuracy",
                        citation="",
                        features=datasets.Features(
                            {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
                        ),
                    )

                def _compute(self, predictions, references):
                    wrong = sum(int(p != r) for p, r in zip(predictions, references))
                    return {"error_rate": wrong / len(references)}
            """
        )
    )
    x = torch.randn(24, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    eval_set = TensorDataset(x[:12], torch.arange(12) % 5)
    cfg = fast_config(num_blocks=1, eval_metrics=["top_k_accuracy", str(folder)], trust_remote_code=True)
    assert cfg.eval_metrics[0] == "accuracy"  # top-1 is always there
    result = PractiseCompressor(tiny_resnet("resnet18"), cfg).compress(x, eval_set)
    assert result.metrics_after["error_rate"] == pytest.approx(1 - result.top1_after)
    assert {"accuracy", "top5_accuracy", "error_rate"} == set(result.metrics_before)
    assert "| error_rate |" in result.summary() and "| top5_accuracy |" in result.summary()
    card = result.model_card().content
    assert "| error_rate |" in card and "type: error_rate" in card
    assert result.to_dict()["config"]["eval_metrics"] == ["accuracy", "top_k_accuracy", "error_rate"]  # no path


def test_bad_metric_lists_are_refused():
    with pytest.raises(ValueError, match="--metric"):
        CompressionConfig(eval_metrics="accuracy")
