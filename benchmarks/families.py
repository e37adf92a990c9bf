"""Every supported family on real data: a small teacher of each on Fashion-MNIST (committed under benchmarks/teachers,
or trained here and cached), compressed with PRACTISE from 500 train images, against the teacher, the same blocks
simply removed, and its own native reload.

    python benchmarks/families.py                          # all families, targets 22% and 50%
    python benchmarks/families.py --families timm-vit --targets 0.3
    python benchmarks/families.py --report                 # rewrite the markdown from the json
"""

from __future__ import annotations

import logging
import math
import re
import sys
import tempfile
import time
from pathlib import Path

import fmnist
import harness as h

from hf_practise import (
    CompressionConfig,
    FinetuneConfig,
    LatencyConfig,
    LatencyTargetUnreachable,
    PractiseCompressor,
    ScanConfig,
    get_family,
)
from hf_practise.config import DEFAULT_LR
from hf_practise.mimic import evaluate_top1
from hf_practise.native import native_reload_gap
from hf_practise.provenance import machine, model_fingerprint
from hf_practise.recoverability import build_pruned

logger = logging.getLogger("families")
#: how far below the most a family can save the fallback target sits (timings move between measurements)
REACHABLE_MARGIN = 0.02


def merge_records(kept: list[dict], new: list[dict]) -> list[dict]:
    """`kept` with each (family, asked target) of `new` replaced where it stood, the others appended."""
    fresh = {(r["family"], requested_target(r)): r for r in new}
    merged = [fresh.pop((r["family"], requested_target(r)), r) for r in kept]
    return merged + [r for r in new if (r["family"], requested_target(r)) in fresh]


def requested_target(record: dict) -> float:
    return record.get("requested_target", record["latency_target"])


def target_text(record: dict) -> str:
    """The target column: the one run, and the one asked for when the family could not reach it."""
    run = f"{100 * record['latency_target']:.0f}%"
    if "requested_target" not in record:
        return run
    return f"{run} (asked {100 * record['requested_target']:.0f}%: unreachable)"


def closest_target(reachable: float) -> float | None:
    """The target run instead of an unreachable one: whole percent, `REACHABLE_MARGIN` under the most saved."""
    target = math.floor(100 * (reachable - REACHABLE_MARGIN) + 1e-9) / 100
    return target if target >= 0.05 else None


def compress(name: str, teacher, meta: dict, target: float, requested: float, args, tiny, test):
    """(the record's common fields, the result or None, when it started), at `target` or the closest reachable one."""
    while True:
        config = CompressionConfig(
            latency_reduction=target,
            seed=args.seed,
            # one work dir per teacher's weights: a committed teacher that replaces a trained one gets a fresh one
            work_dir=str(
                Path(args.cache) / name / f"work_{args.num_samples}_{args.seed}_{model_fingerprint(teacher)[:8]}"
            ),
            scan=ScanConfig(iterations=args.scan_iterations),
            finetune=FinetuneConfig(
                iterations=args.iterations,
                checkpoint_every=0,
                objective=args.objective,
                lr=args.lr,
                augmentation=args.augmentation,
            ),
            latency=LatencyConfig(batch_size=64, repeats=20, input_size=h.INPUT),
        )
        # what every record of this family and target says, run or not
        common = {"family": get_family(teacher).name, "model": meta["model"], "teacher_top1": meta["top1"]}
        common.update(
            {f"teacher_{k}": meta[k] for k in ("train_steps", "train_seconds", "recipe", "committed") if k in meta}
        )
        common.update(latency_target=target, **({"requested_target": requested} if target != requested else {}))
        common.update(num_samples=args.num_samples, seed=args.seed, command=args.command, machine=machine())
        start = time.perf_counter()
        try:
            return common, PractiseCompressor(teacher, config).compress(tiny, test), start
        except LatencyTargetUnreachable as e:
            closest = closest_target(e.reachable)
            if not args.closest_reachable or target != requested or closest is None:
                logger.warning("%s @%.0f%%: %s", name, 100 * target, e)
                return {**common, "error": str(e)}, None, start
            logger.warning("%s @%.0f%%: %s Running at %.0f%% instead.", name, 100 * target, e, 100 * closest)
            target = closest
        except ValueError as e:  # another reason this family cannot run: say so in the table, go on
            logger.warning("%s @%.0f%%: %s", name, 100 * target, e)
            return {**common, "error": str(e)}, None, start


def run_family(name: str, args, tiny, test) -> list[dict]:
    teacher_dir, meta = h.find_teacher(name, cache=args.cache, train_steps=args.train_steps, seed=args.seed)
    teacher = h.load_native(teacher_dir).eval()  # the compressor only reads it
    records = []
    for requested in args.targets:
        common, result, start = compress(name, teacher, meta, requested, requested, args, tiny, test)
        if result is None:
            records.append(common)
            continue
        wall = time.perf_counter() - start
        removed = build_pruned(teacher, result.family, [r.ref for r in result.dropped], adaptors=False).eval()
        removed_top1 = evaluate_top1(removed, test, batch_size=256, desc="eval removed")
        onnx = result.export_onnx()  # checked against PyTorch on the tiny-set images
        with tempfile.TemporaryDirectory() as tmp:
            out = result.save_pretrained(Path(tmp) / "out")
            # plain timm / transformers, or hf_practise's loader for families whose library cannot rebuild it
            reload_with = result.family.library_name if result.reloads_natively else "hf_practise"
            gap = native_reload_gap(out, reload_with, result.model, test.tensors[0][:64])
            # and model.onnx in ONNX Runtime, in a process without hf_practise, on 64 test images
            onnx_gap = native_reload_gap(out, "onnxruntime", result.model, test.tensors[0][:64])
        ft, lat = result.config.finetune, result.latency
        rec = {**common, "latency_reduction": lat.reduction, "teacher_ms": lat.base.median_ms}
        rec.update(compressed_ms=lat.candidate.median_ms, macs_before=result.macs_before, macs_after=result.macs_after)
        rec.update(blocks=f"{sum(result.depths_after)} of {sum(result.depths_before)}")
        rec.update(dropped=[r.block for r in result.dropped], removed_top1=removed_top1, top1=result.top1_after)
        rec.update(native_reload_max_abs_logit_gap=gap, onnx_max_abs_logit_gap=onnx_gap, onnx_export_check=onnx)
        rec.update(reloaded_with=reload_with)
        rec["finetune"] = {k: getattr(ft, k) for k in ("optimizer", "lr", "iterations", "objective", "augmentation")}
        rec.update(scan_iterations=result.config.scan.iterations, selection=[c.to_dict() for c in result.selection])
        rec.update(latency_tolerance=result.config.latency_tolerance, latency_runtime=lat.base.runtime())
        rec.update(wall_seconds=wall, phase_seconds=result.phase_seconds)
        # candidates whose adaptor training lowered the feature error at the scan's own rate, and at all (with the
        # retries at smaller rates): the first is what the scan did before it retried
        lowered = sum(r.trained and not r.retried for r in result.scan), sum(r.trained for r in result.scan)
        rec["scan_lowered"] = dict(zip(("first_rate", "with_retries"), lowered), candidates=len(result.scan))
        logger.info(
            "%s @%.0f%%: top-1 %.2f%% (removed %.2f%%, teacher %.2f%%), latency -%.1f%%, reload gap %.2g",
            *(name, 100 * rec["latency_target"], 100 * rec["top1"], 100 * removed_top1, 100 * meta["top1"]),
            *(100 * rec["latency_reduction"], gap),
        )
        records.append(rec)
    return records


def render(records: list[dict]) -> list[str]:
    first = records[0]
    lines = [
        "# Every family on Fashion-MNIST",
        "",
        "Teachers trained here on the 60,000 Fashion-MNIST train images (`benchmarks/families.py`), compressed "
        f"with PRACTISE from {first['num_samples']} seeded train images (seed {first['seed']}), top-1 on all 10,000 "
        "test images. *Removed* is the teacher with the same blocks dropped and no recovery at all. "
        "*Reload gap*: largest |logit| difference between the compressed model and its reload by plain "
        "timm / transformers in a process that never imports hf_practise (64 test images); for the families "
        "whose library cannot rebuild a shallower model (marked *loader*), by `hf_practise.load_compressed`.",
        "",
        "| family | teacher | target | latency | MACs | blocks kept | removed | PRACTISE | teacher top-1 | reload gap | wall |",
        "| --- | --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in records:
        if "error" in r:
            lines.append(
                f"| {r['family']} | {r['model']} | {target_text(r)} | not run: {r['error']} "
                f"| | | | | {100 * r['teacher_top1']:.2f}% | | |"
            )
            continue
        lines.append(
            f"| {r['family']} | {r['model']} | {target_text(r)} | -{100 * r['latency_reduction']:.1f}% "
            f"| -{100 * (1 - r['macs_after'] / r['macs_before']):.1f}% | {r['blocks']} | {100 * r['removed_top1']:.2f}% "
            f"| **{100 * r['top1']:.2f}%** | {100 * r['teacher_top1']:.2f}% | {r['native_reload_max_abs_logit_gap']:.1g}"
            f"{' (loader)' if r.get('reloaded_with') == 'hf_practise' else ''} "
            f"| {r['wall_seconds'] / 60:.1f} min |"
        )
    at = {id(r): f"- {r['family']} at {100 * r['latency_target']:.0f}%" for r in records}
    lines += ["", "Finetune (the library picks the optimizer by family unless told):", ""]
    lines += [
        f"{at[id(r)]}: {r['finetune']['iterations']} steps, {r['finetune']['optimizer']} lr {r['finetune']['lr']:g}"
        + f", {r['finetune'].get('objective', 'features')}, augmentation {r['finetune'].get('augmentation', 'none')}"
        if "finetune" in r
        else f"{at[id(r)]}: not run"
        for r in records
    ]
    lines += [
        "",
        "Selection (each latency check on the way: the greedy pass takes blocks by score until the measured cut "
        "meets the target; a cut above target + tolerance comes back toward it):",
        "",
    ]
    for r in (r for r in records if r.get("selection")):
        steps = "; ".join(
            f"{c.get('step', 'greedy')} {c['blocks']} blocks -{100 * c['measured']:.1f}%" for c in r["selection"]
        )
        t, tol = r["latency_target"], r.get("latency_tolerance", 0.06)
        verdict = "inside" if t <= r["latency_reduction"] <= t + tol else "outside"
        lines.append(
            f"{at[id(r)]}: {steps}; final cut -{100 * r['latency_reduction']:.1f}% "
            f"{verdict} [{100 * t:.0f}%, {100 * (t + tol):.0f}%]"
            + "".join(f" ({c['note']})" for c in r["selection"] if c.get("note"))
        )
    onnx_rows = [r for r in records if "onnx_max_abs_logit_gap" in r]
    if onnx_rows:
        lines += [
            "",
            "ONNX export (`result.export_onnx()`: `model.onnx` run by ONNX Runtime in a process without hf_practise, "
            "against PyTorch on 64 test images):",
            "",
        ]
        lines += [
            f"{at[id(r)]}: max |logit difference| {r['onnx_max_abs_logit_gap']:.2g} "
            f"({r['onnx_export_check']['relative_diff']:.2g} of the largest logit on the tiny-set check)"
            for r in onnx_rows
        ]
    scans = {r["family"]: {**r["scan_lowered"], "steps": scan_steps(r)} for r in records if "scan_lowered" in r}
    if scans:
        lines += [
            "",
            "Scan (adaptor steps per candidate): candidates whose adaptor training lowered the feature error at the "
            "scan's rate / after the retries at smaller rates (the others keep identity adaptors, so their "
            "recoverability is the initial error):",
            "",
        ]
        lines += [
            f"- {f} ({s['steps']} steps): {s['first_rate']} / {s['with_retries']} of {s['candidates']}"
            for f, s in scans.items()
        ]
    lines += ["", "Blocks dropped:", ""] + [
        f"{at[id(r)]}: {', '.join(r['dropped'])}" for r in records if "dropped" in r
    ]
    lines += [
        "",
        "Teacher training (AdamW, batch 128, cosine, flips and 2-pixel shifts, seed 0; done by the first "
        "invocation and reused from `benchmarks/cache/families/` by later ones):",
        "",
    ]
    lines += [
        f"- {f}: {r['teacher_train_steps']} steps, {r['teacher_train_seconds'] / 60:.1f} min"
        + (
            f" ({r['teacher_recipe']}; committed in `{r['teacher_committed']}`, trained by "
            "`benchmarks/train_teacher.py`)"
            if "teacher_committed" in r
            else ""
        )
        for f, r in {r["family"]: r for r in records}.items()
    ]
    lines += [
        "",
        "Latency: CPU, batch 64, input 3x32x32, median of alternating runs, on the machine of each command below.",
        "",
        "Commands:",
        "",
    ]
    # rows come from several runs, possibly on other machines: each command with the machine it ran on
    runs = {r["command"]: r["machine"] for r in records}
    return lines + [f"- `{c}` ({m['cpu']}, {m['threads']} threads, torch {m['torch']})" for c, m in runs.items()]


def finetune_text(finetune: dict) -> str:
    """What the finetune of a row departed from: the library's defaults (its family's optimizer at its usual rate,
    features+kd on mixup images) are left out; a row from before those defaults names its objective."""
    extras = [f"lr {finetune['lr']:g}"] if finetune["lr"] != DEFAULT_LR.get(finetune["optimizer"]) else []
    objective, augmentation = finetune.get("objective", "features"), finetune.get("augmentation", "none")
    extras += [objective] if objective != "features+kd" else []
    extras += [f"augmentation {augmentation}"] if augmentation != "mixup" else []
    return ", ".join([f"{finetune['iterations']} steps", *extras])


def headline(records: list[dict]) -> list[str]:
    """The README's short table: one row per family and target."""
    out = [
        "| family | target | measured latency | blocks kept | simply removed | PRACTISE | teacher | finetune |",
        "| --- | ---: | ---: | --- | ---: | ---: | ---: | --- |",
    ]
    for r in records:
        if "error" in r:
            most = re.search(r"saves (-?[\d.]+%)", r["error"])
            reason = f"not reachable: at most -{most.group(1)}" if most else "not run (see families.md)"
            out.append(f"| {r['family']} | {100 * r['latency_target']:.0f}% | {reason} | | | | | |")
            continue
        out.append(
            f"| {r['family']} | {target_text(r)} | -{100 * r['latency_reduction']:.1f}% | {r['blocks']} "
            f"| {100 * r['removed_top1']:.2f}% | **{100 * r['top1']:.2f}%** | {100 * r['teacher_top1']:.2f}% "
            f"| {finetune_text(r['finetune'])}{scan_text(r)} |"
        )
    return out


def scan_steps(record: dict) -> int:
    """The scan's adaptor steps of a row (rows from before they were recorded ran the 100 every family had then)."""
    return record.get("scan_iterations", 100)


def scan_text(record: dict) -> str:
    """The scan's adaptor steps of a row where they were not 100."""
    return f"; scan {scan_steps(record)} steps" if scan_steps(record) != 100 else ""


def readme(records: list[dict], args) -> None:
    if Path(args.results).resolve() == h.RESULTS.resolve():  # the repo's own results: refresh the README's table too
        h.update_readme_section("families", headline(records))


def run(p, args) -> list[dict] | None:
    if h.skipped():
        return None
    tiny = h.tiny_images(args.num_samples, args.seed)
    test = fmnist.load("test")
    stem = Path(args.results) / "families"
    for name in args.families:
        records = run_family(name, args, tiny, test)
        # records of families not rerun now are kept (read again now: another run may have written some)
        kept = merge_records(
            h.read_json(stem.with_suffix(".json")) if stem.with_suffix(".json").exists() else [], records
        )
        h.publish(stem, kept, render)
        readme(kept, args)
    return kept


def main() -> int:
    p = h.parser(__doc__)
    p.add_argument("--families", nargs="+", default=h.FAMILIES, choices=h.FAMILIES)
    p.add_argument("--targets", type=float, nargs="+", default=[0.22, 0.5])
    p.add_argument("--num-samples", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-steps", type=int, default=1500, help="teacher training steps (batch 128)")
    p.add_argument("--scan-iterations", type=int, default=ScanConfig.iterations)
    p.add_argument("--iterations", type=int, default=FinetuneConfig.iterations, help="mimic finetune steps")
    objectives = ("auto", "features", "kd", "features+kd", "features+stages")
    p.add_argument("--objective", default=FinetuneConfig.objective, choices=objectives, help="finetune objective")
    p.add_argument("--lr", type=float, default=None, help="finetune peak lr (default: the family's optimizer's)")
    augmentations = ("auto", "none", "flip", "crop", "mixup")
    p.add_argument("--augmentation", default=FinetuneConfig.augmentation, choices=augmentations)
    p.add_argument(
        "--no-closest-reachable",
        dest="closest_reachable",
        action="store_false",
        help="record a target the family cannot reach as not run (default: run at the closest reachable whole "
        f"percent, {100 * REACHABLE_MARGIN:.0f} points under the most dropping every droppable block saves)",
    )
    p.add_argument("--cache", default=str(h.CACHE / "families"))
    p.add_argument("--results", default=str(h.RESULTS))
    return h.study(p, stem=lambda a: Path(a.results) / "families", run=run, render=render, after=readme)


if __name__ == "__main__":
    sys.exit(main())
