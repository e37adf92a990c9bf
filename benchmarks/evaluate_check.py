"""Top-1 through the shipped `evaluate` modules against a direct argmax count (what hf_practise computed before), on
the resnet34 teacher and on it compressed at 22% (default settings, 500 train images), on the 10,000 test images.

    python benchmarks/evaluate_check.py
"""

from __future__ import annotations

import fmnist
import harness as h
import torch
from torch.utils.data import DataLoader

from hf_practise import CompressionConfig, LatencyConfig, PractiseCompressor
from hf_practise.mimic import evaluate_metrics
from hf_practise.training import as_logits


@torch.no_grad()
def direct_top1(model, dataset) -> float:
    counts = [((as_logits(model(x)).argmax(-1) == y).sum().item(), y.numel()) for x, y in DataLoader(dataset, 256)]
    return sum(c for c, _ in counts) / sum(n for _, n in counts)


def row(model_name: str, recorded: float | None, model, test) -> dict:
    direct = direct_top1(model.eval().cpu(), test)
    return {
        "model": model_name,
        "recorded": recorded,
        "direct": direct,
        **evaluate_metrics(model, test, batch_size=256),
    }


def run(p, args) -> dict | None:
    if h.skipped(h.RESNET34):
        return None
    test = fmnist.load("test")
    teacher = h.load_native(h.RESNET34).eval()
    recorded = h.read_json(h.RESNET34 / "teacher_metrics.json")
    rows = [row("resnet34-fmnist teacher", recorded.get("test_top1", recorded.get("top1")), teacher, test)]
    config = CompressionConfig(latency_reduction=0.22, work_dir=args.cache, latency=LatencyConfig(input_size=h.INPUT))
    result = PractiseCompressor(teacher, config).compress(h.tiny_images(500), test)
    name = f"resnet34-fmnist, PRACTISE 22% (-{100 * result.latency.reduction:.1f}%, {len(result.dropped)} blocks)"
    # recorded: what the compressor reported, through the same modules
    return {"rows": rows + [row(name, result.top1_after, result.model, test)]}


def render(doc: dict) -> list[str]:
    lines = [
        "# Top-1 through `evaluate`",
        "",
        "All 10,000 Fashion-MNIST test images; *evaluate* is the shipped `accuracy` / `top_k_accuracy` modules fed "
        "by `hf_practise.mimic.evaluate_metrics`, *direct* the argmax count hf_practise used before.",
        "",
        "*Recorded*: the teacher's training run, and the compressor's own report for the compressed model.",
        "",
    ]
    lines += h.table(
        "model | >recorded | >direct count | >evaluate accuracy | >evaluate top-5",
        (
            [r["model"], "-" if r["recorded"] is None else f"{100 * r['recorded']:.2f}%", f"{100 * r['direct']:.2f}%"]
            + [f"{100 * r['accuracy']:.2f}%", f"{100 * r['top5_accuracy']:.2f}%"]
            for r in doc["rows"]
        ),
    )
    return lines + ["", f"Command: `{doc['command']}` ({h.machine_text(doc['machine'])})"]


def check(doc: dict) -> str | None:
    differ = [r["model"] for r in doc["rows"] if r["direct"] != r["accuracy"]]
    return f"the direct count and `evaluate` disagree on {', '.join(differ)}" if differ else None


def main() -> int:
    p = h.parser(__doc__)
    h.folders(p, cache=h.CACHE / "evaluate_check")  # the cache is the compression's work dir
    return h.study(p, stem="evaluate_check", run=run, render=render, check=check)


if __name__ == "__main__":
    raise SystemExit(main())
