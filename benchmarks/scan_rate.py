"""The scan's adaptor rate against adaptor width (issue #25, item 4): one rate for every width (`lr_width=0`) and
the default rule (AdamW rate scaled by `lr_width / width` above `lr_width` channels), on a Bottleneck ResNet-50
(adaptors 128-1024 wide) and the resnet34 teacher (64-512). Per candidate: the adaptors' width, the starting and
kept rate, the retries, and the remaining feature error (recoverability).

    python benchmarks/scan_rate.py                          # both teachers, 500 images (~10 min on 2 cores)
    python benchmarks/scan_rate.py --teachers timm-resnet50 --samples 100
"""

from __future__ import annotations

import dataclasses
import sys
import time

import harness as h
import torch

from hf_practise import ScanConfig, get_family
from hf_practise.recoverability import scan_blocks, teacher_features

RULES = {"one rate": 0, "width-scaled (default)": ScanConfig.lr_width}


def width(model: torch.nn.Module, family, block) -> int:
    """Channels of the stream around `block`: what its adaptors mix."""
    return family.stages(model)[block.stage][block.index].conv1.in_channels


def run(p, args) -> dict:
    record = {"teachers": {}, "samples": args.samples}
    images = h.tiny_images(args.samples, seed=0)
    for name in args.teachers:
        found = h.find_teacher(name, train_steps=None)
        if found is None:
            print(f"skipped {name}: no committed teacher")
            continue
        model = h.load_native(found[0]).eval()
        family = get_family(model)
        targets = teacher_features(model, family, images, batch_size=64).cpu()
        blocks = family.candidates(model)
        out = {"model": found[1].get("model") or f"timm {found[1].get('arch', name)}", "rules": {}}
        for rule, lr_width in RULES.items():
            config = dataclasses.replace(ScanConfig(), lr_width=lr_width).resolved(family)
            start = time.perf_counter()
            rows = scan_blocks(model, family, blocks, images, targets, config=config, seed=0)
            out["rules"][rule] = {
                "lr_width": lr_width,
                "seconds": round(time.perf_counter() - start, 1),
                "retried": sum(r.retried > 0 for r in rows),
                "rows": [
                    {
                        "block": r.block,
                        "width": width(model, family, b),
                        "start_lr": config.adaptor_lr(width(model, family, b)),
                    }
                    | {"lr": r.lr, "retried": r.retried, "recoverability": r.recoverability}
                    for r, b in zip(rows, blocks)
                ],
            }
            print(
                f"{name} {rule}: {out['rules'][rule]['retried']} of {len(rows)} retried, {out['rules'][rule]['seconds']} s"
            )
        record["teachers"][name] = out
    return record


def render(record: dict) -> list[str]:
    lines = ["# The scan's adaptor rate and adaptor width", ""]
    lines += [
        f"{record['samples']} Fashion-MNIST images, seed 0, the family's scan steps, AdamW peak rate "
        f"{ScanConfig.lr:g}. *one rate*: every width at that rate; *width-scaled*: `lr * {ScanConfig.lr_width} / width` "
        f"above {ScanConfig.lr_width} channels. A retry starts again from identity at a tenth of the rate when "
        "training raised the feature error. Seconds include the retries (timed beside other jobs: compare within a row).",
        "",
    ]
    for name, t in record["teachers"].items():
        rules = list(t["rules"])
        lines += [f"## {name}: {t['model']}", ""]
        lines += h.table(
            "rule | >retried | >scan seconds | >mean recoverability",
            (
                [rule, f"{r['retried']} of {len(r['rows'])}", r["seconds"]]
                + [f"{sum(x['recoverability'] for x in r['rows']) / len(r['rows']):.3g}"]
                for rule, r in t["rules"].items()
            ),
        )
        lines += [""]
        head = "block | >width | " + " | ".join(f">{rule}: rate, retries, error" for rule in rules)
        per_block = zip(*(t["rules"][rule]["rows"] for rule in rules))
        lines += h.table(
            head,
            (
                [rows[0]["block"], rows[0]["width"]]
                + [f"{x['start_lr']:.2g}, {x['retried']}, {x['recoverability']:.3g}" for x in rows]
                for rows in per_block
            ),
        )
        lines += [""]
    return lines + [f"Command: `{record['command']}`", "", f"Machine: {record['machine']}"]


def main() -> int:
    p = h.parser(__doc__)
    p.add_argument("--teachers", nargs="+", default=["timm-resnet50", "resnet34"])
    p.add_argument("--samples", type=int, default=500)
    h.folders(p)
    return h.study(p, stem="scan_rate", run=lambda p, args: None if h.skipped() else run(p, args), render=render)


if __name__ == "__main__":
    sys.exit(main())
