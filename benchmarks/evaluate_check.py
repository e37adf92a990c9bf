"""Top-1 through the shipped `evaluate` modules against a direct count, on the resnet34 teacher and on it
compressed by PRACTISE at 22% (default settings, 500 seeded train images), on all 10,000 Fashion-MNIST test images.

    python benchmarks/evaluate_check.py

The direct count is what hf_practise computed before its metrics went through `evaluate` (argmax == label,
summed); `teacher_metrics.json` has the teacher's figure from its training run. Writes
`benchmarks/results/evaluate_check.{json,md}`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from torch.utils.data import DataLoader

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import fmnist  # noqa: E402
from compare import write_json  # noqa: E402
from families import load_native  # noqa: E402

from hf_practise.mimic import evaluate_metrics  # noqa: E402
from hf_practise.provenance import machine, recorded_command  # noqa: E402
from hf_practise.training import as_logits  # noqa: E402

RESULTS = HERE / "results"
TEACHER = HERE.parent.parent / "shared" / "teachers" / "resnet34-fmnist"


@torch.no_grad()
def direct_top1(model, dataset) -> float:
    correct = total = 0
    for x, y in DataLoader(dataset, batch_size=256):
        correct += (as_logits(model(x)).argmax(-1) == y).sum().item()
        total += y.numel()
    return correct / total


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", default=str(RESULTS))
    p.add_argument("--cache", default=str(HERE / "cache" / "evaluate_check"), help="the compression's work dir")
    args = p.parse_args()
    if not fmnist.available() or not TEACHER.exists():
        print("skipped: needs Fashion-MNIST and ../shared/teachers/resnet34-fmnist")
        return 0
    test = fmnist.load("test")
    teacher = load_native(TEACHER, "timm").eval()
    recorded = json.loads((TEACHER / "teacher_metrics.json").read_text())
    rows = [
        {
            "model": "resnet34-fmnist teacher",
            "recorded": recorded.get("test_top1", recorded.get("top1")),
            "direct": direct_top1(teacher, test),
            **evaluate_metrics(teacher, test, batch_size=256),
        }
    ]
    from hf_practise import CompressionConfig, LatencyConfig, PractiseCompressor

    config = CompressionConfig(
        latency_reduction=0.22, work_dir=args.cache, latency=LatencyConfig(input_size=(3, 32, 32))
    )
    tiny = fmnist.load("train", num_samples=500, seed=0).tensors[0]
    result = PractiseCompressor(teacher, config).compress(tiny, test)
    rows.append(
        {
            "model": f"resnet34-fmnist, PRACTISE 22% (-{100 * result.latency.reduction:.1f}%, "
            f"{len(result.dropped)} blocks)",
            "recorded": result.top1_after,  # what the compressor reported, through the same modules
            "direct": direct_top1(result.model.eval().cpu(), test),
            **evaluate_metrics(result.model, test, batch_size=256),
        }
    )
    doc = {
        "command": recorded_command("python benchmarks/evaluate_check.py", p, args, paths=("results", "cache")),
        "machine": machine(),
        "rows": rows,
    }
    out = Path(args.results)
    write_json(out / "evaluate_check.json", doc)
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
    for r in rows:
        rec = "-" if r["recorded"] is None else f"{100 * r['recorded']:.2f}%"
        lines.append(
            f"| {r['model']} | {rec} | {100 * r['direct']:.2f}% | {100 * r['accuracy']:.2f}% "
            f"| {100 * r['top5_accuracy']:.2f}% |"
        )
    m = doc["machine"]
    lines += ["", f"Command: `{doc['command']}` ({m['cpu']}, {m['cores']} cores, torch {m['torch']})"]
    (out / "evaluate_check.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if all(r["direct"] == r["accuracy"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
