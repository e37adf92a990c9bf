"""Top-1 through the shipped `evaluate` modules against a direct argmax count (what hf_practise computed before), on
the resnet34 teacher and on it compressed at 22% (default settings, 500 train images), on the 10,000 test images.

    python benchmarks/evaluate_check.py
"""

from __future__ import annotations

from pathlib import Path

import fmnist
import harness as h
import torch
from torch.utils.data import DataLoader

from hf_practise import CompressionConfig, LatencyConfig, PractiseCompressor
from hf_practise.mimic import evaluate_metrics
from hf_practise.provenance import machine
from hf_practise.training import as_logits


@torch.no_grad()
def direct_top1(model, dataset) -> float:
    correct = total = 0
    for x, y in DataLoader(dataset, batch_size=256):
        correct += (as_logits(model(x)).argmax(-1) == y).sum().item()
        total += y.numel()
    return correct / total


def run(p, args) -> dict | None:
    if h.skipped(h.RESNET34):
        return None
    test = fmnist.load("test")
    teacher = h.load_native(h.RESNET34).eval()
    recorded = h.read_json(h.RESNET34 / "teacher_metrics.json")
    rows = [
        {
            "model": "resnet34-fmnist teacher",
            "recorded": recorded.get("test_top1", recorded.get("top1")),
            "direct": direct_top1(teacher, test),
            **evaluate_metrics(teacher, test, batch_size=256),
        }
    ]
    config = CompressionConfig(latency_reduction=0.22, work_dir=args.cache, latency=LatencyConfig(input_size=h.INPUT))
    result = PractiseCompressor(teacher, config).compress(h.tiny_images(500), test)
    rows.append(
        {
            "model": f"resnet34-fmnist, PRACTISE 22% (-{100 * result.latency.reduction:.1f}%, "
            f"{len(result.dropped)} blocks)",
            "recorded": result.top1_after,  # what the compressor reported, through the same modules
            "direct": direct_top1(result.model.eval().cpu(), test),
            **evaluate_metrics(result.model, test, batch_size=256),
        }
    )
    return {"command": args.command, "machine": machine(), "rows": rows}


def render(doc: dict) -> list[str]:
    lines = [
        "# Top-1 through `evaluate`",
        "",
        "All 10,000 Fashion-MNIST test images; *evaluate* is the shipped `accuracy` / `top_k_accuracy` modules fed "
        "by `hf_practise.mimic.evaluate_metrics`, *direct* the argmax count hf_practise used before.",
        "",
        "*Recorded*: the teacher's training run, and the compressor's own report for the compressed model.",
        "",
        "| model | recorded | direct count | evaluate accuracy | evaluate top-5 |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for r in doc["rows"]:
        rec = "-" if r["recorded"] is None else f"{100 * r['recorded']:.2f}%"
        lines.append(
            f"| {r['model']} | {rec} | {100 * r['direct']:.2f}% | {100 * r['accuracy']:.2f}% "
            f"| {100 * r['top5_accuracy']:.2f}% |"
        )
    return lines + ["", f"Command: `{doc['command']}` ({h.machine_text(doc['machine'])})"]


def check(doc: dict) -> str | None:
    differ = [r["model"] for r in doc["rows"] if r["direct"] != r["accuracy"]]
    return f"the direct count and `evaluate` disagree on {', '.join(differ)}" if differ else None


def main() -> int:
    p = h.parser(__doc__)
    p.add_argument("--results", default=str(h.RESULTS))
    p.add_argument("--cache", default=str(h.CACHE / "evaluate_check"), help="the compression's work dir")
    return h.study(p, stem=lambda a: Path(a.results) / "evaluate_check", run=run, render=render, check=check)


if __name__ == "__main__":
    raise SystemExit(main())
