"""Every supported family on real data: a small teacher of each on Fashion-MNIST (committed under benchmarks/teachers,
or trained here and cached), compressed with PRACTISE from 500 train images, against the teacher, the same blocks
simply removed, and its own native reload.

    python benchmarks/families.py                          # all families, targets 22% and 50%
    python benchmarks/families.py --families timm-vit --targets 0.3
    python benchmarks/families.py --families timm-convnext --quantize int8 --backend openvino   # depth + int8 rows
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
from native import native_reload_gap

from hf_practise import (
    CompressionConfig,
    FinetuneConfig,
    LatencyConfig,
    LatencyTargetUnreachable,
    PractiseCompressor,
    get_family,
)
from hf_practise.config import DEFAULT_LR
from hf_practise.mimic import evaluate_top1
from hf_practise.objectives import AUGMENTATIONS, OBJECTIVES
from hf_practise.provenance import model_fingerprint
from hf_practise.recoverability import build_pruned

logger = logging.getLogger("families")
#: how far below the most a family can save the fallback target sits (timings move between measurements)
REACHABLE_MARGIN = 0.02
NUM_SAMPLES, SEED, TEACHER_STEPS = 500, 0, 1500  # the tiny set (seeded train images) and a quick teacher's steps


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


def compress(name: str, teacher, meta: dict, requested: float, args, tiny, test):
    """(the record's common fields, the result or None, when it started), at `requested` or, where the family cannot
    reach it, at the closest reachable target."""
    target = requested
    while True:
        # one work dir per teacher's weights: a committed teacher that replaces a trained one gets a fresh one
        work = Path(args.cache) / name / f"work_{NUM_SAMPLES}_{SEED}_{model_fingerprint(teacher)[:8]}"
        finetune = {k: getattr(args, k) for k in ("iterations", "objective", "optimizer", "lr", "augmentation")}
        config = CompressionConfig(
            latency_reduction=target,
            units=args.units,
            seed=SEED,
            work_dir=str(work),
            finetune=FinetuneConfig(checkpoint_every=0, **finetune),
            latency=LatencyConfig(batch_size=64, repeats=20, input_size=h.INPUT, backend=args.backend),
            quantize=args.quantize,
        )
        # what every record of this family and target says, run or not
        family = get_family(teacher).name + (" (attention/MLP units)" if args.units == "branches" else "")
        family += f" + int8 ({args.backend})" if args.quantize == "int8" else ""
        common = {"family": family, "model": meta["model"], "teacher_top1": meta["top1"]}
        keep = ("train_steps", "train_seconds", "recipe", "committed")
        common.update({f"teacher_{k}": meta[k] for k in keep if k in meta})
        common.update(latency_target=target, **({"requested_target": requested} if target != requested else {}))
        common.update(num_samples=NUM_SAMPLES, seed=SEED, command=args.command, machine=h.machine())
        start = time.perf_counter()
        try:
            return common, PractiseCompressor(teacher, config).compress(tiny, test), start
        except LatencyTargetUnreachable as e:
            closest = closest_target(e.reachable)
            if target != requested or closest is None:
                logger.warning("%s @%.0f%%: %s", name, 100 * target, e)
                return {**common, "error": str(e)}, None, start
            logger.warning("%s @%.0f%%: %s Running at %.0f%% instead.", name, 100 * target, e, 100 * closest)
            target = closest
        except ValueError as e:  # another reason this family cannot run: say so in the table, go on
            logger.warning("%s @%.0f%%: %s", name, 100 * target, e)
            return {**common, "error": str(e)}, None, start


def run_family(name: str, args, tiny, test) -> list[dict]:
    teacher_dir, meta = h.find_teacher(name, cache=args.cache, train_steps=TEACHER_STEPS, seed=SEED)
    teacher = h.load_native(teacher_dir).eval()  # the compressor only reads it
    records = []
    for requested in args.targets:
        common, result, start = compress(name, teacher, meta, requested, args, tiny, test)
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
        if args.units == "branches":
            branches = 2 * sum(result.depths_before)
            rec["blocks"] = f"{branches - len(result.dropped)} of {branches} branches, {rec['blocks']} blocks"
        rec.update(dropped=[r.block for r in result.dropped], removed_top1=removed_top1, top1=result.top1_after)
        rec.update(native_reload_max_abs_logit_gap=gap, onnx_max_abs_logit_gap=onnx_gap, onnx_export_check=onnx)
        rec.update(reloaded_with=reload_with)
        rec["finetune"] = {k: getattr(ft, k) for k in ("optimizer", "lr", "iterations", "objective", "augmentation")}
        rec.update(scan_iterations=result.config.scan.iterations, selection=[c.to_dict() for c in result.selection])
        rec.update(latency_tolerance=result.config.latency_tolerance, latency_runtime=lat.base.runtime())
        rec.update(wall_seconds=wall, phase_seconds=result.phase_seconds)
        if result.int8 is not None:  # the teacher's and this model's int8, timed with both fp32 models in one runtime
            rec["int8"] = result.int8.to_dict()
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
    ]
    rows = []
    for r in records:
        rows.append([r["family"], r["model"], target_text(r)])
        if "error" in r:
            rows[-1] += [
                f"not run: {r['error']}",
                None,
                None,
                None,
                None,
                f"{100 * r['teacher_top1']:.2f}%",
                None,
                None,
            ]
            continue
        loader = " (loader)" if r.get("reloaded_with") == "hf_practise" else ""
        rows[-1] += [f"-{100 * r['latency_reduction']:.1f}%", f"-{100 * (1 - r['macs_after'] / r['macs_before']):.1f}%"]
        rows[-1] += [r["blocks"], f"{100 * r['removed_top1']:.2f}%", f"**{100 * r['top1']:.2f}%**"]
        rows[-1] += [f"{100 * r['teacher_top1']:.2f}%", f"{r['native_reload_max_abs_logit_gap']:.1g}{loader}"]
        rows[-1].append(f"{r['wall_seconds'] / 60:.1f} min")
    head = "family | teacher | >target | >latency | >MACs | blocks kept | >removed | >PRACTISE | >teacher top-1"
    lines += h.table(f"{head} | >reload gap | >wall", rows)
    at = {id(r): f"- {r['family']} at {100 * r['latency_target']:.0f}%" for r in records}
    lines += ["", "Finetune (the library picks the optimizer by family unless told):", ""]
    for r in records:
        ft = r.get("finetune")
        lines.append(
            f"{at[id(r)]}: {ft['iterations']} steps, {ft['optimizer']} lr {ft['lr']:g}, {ft.get('objective', 'features')}, "
            f"augmentation {ft.get('augmentation', 'none')}"
            if ft
            else f"{at[id(r)]}: not run"
        )
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
    lines += h.section(
        "ONNX export (`result.export_onnx()`: `model.onnx` run by ONNX Runtime in a process without hf_practise, "
        "against PyTorch on 64 test images):",
        [
            f"{at[id(r)]}: max |logit difference| {r['onnx_max_abs_logit_gap']:.2g} "
            f"({r['onnx_export_check']['relative_diff']:.2g} of the largest logit on the tiny-set check)"
            for r in records
            if "onnx_max_abs_logit_gap" in r
        ],
    )
    scans = {r["family"]: {**r["scan_lowered"], "steps": scan_steps(r)} for r in records if "scan_lowered" in r}
    lines += h.section(
        "Scan (adaptor steps per candidate): candidates whose adaptor training lowered the feature error at the "
        "scan's rate / after the retries at smaller rates (the others keep identity adaptors, so their "
        "recoverability is the initial error):",
        [
            f"- {f} ({s['steps']} steps): {s['first_rate']} / {s['with_retries']} of {s['candidates']}"
            for f, s in scans.items()
        ],
    )
    lines += int8_section(records)
    lines += h.section(
        "Blocks dropped:", [f"{at[id(r)]}: {', '.join(r['dropped'])}" for r in records if "dropped" in r]
    )
    committed = " ({}; committed in `{}`, trained by `benchmarks/train_teacher.py`)"
    lines += h.section(
        "Teacher training (AdamW, batch 128, cosine, flips and 2-pixel shifts, seed 0; done by the first "
        "invocation and reused from `benchmarks/cache/families/` by later ones):",
        [
            f"- {f}: {r['teacher_train_steps']} steps, {r['teacher_train_seconds'] / 60:.1f} min"
            + (committed.format(r["teacher_recipe"], r["teacher_committed"]) if "teacher_committed" in r else "")
            for f, r in {r["family"]: r for r in records}.items()
        ],
    )
    lines += [
        "",
        "Latency: CPU, batch 64, input 3x32x32, median of alternating runs, on the machine of each command below.",
    ]
    # rows come from several runs, possibly on other machines: each command with the machine it ran on
    runs = {r["command"]: r["machine"] for r in records}
    return lines + h.section(
        "Commands:", [f"- `{c}` ({m['cpu']}, {m['threads']} threads, torch {m['torch']})" for c, m in runs.items()]
    )


def int8_section(records: list[dict]) -> list[str]:
    """The rows run with `--quantize int8`: teacher and compressed model, fp32 and int8, timed in the same rounds of
    the int8 runtime, with each one's top-1 and what int8 cost each."""
    runs = [r for r in records if "int8" in r]
    if not runs:
        return []
    lines = [
        "",
        "Depth and int8 (`--quantize int8`: the teacher and the compressed model quantized to int8 on the same tiny "
        "set, post-training static, the four timed in the same alternating rounds of the int8 runtime; speed-up "
        "over the fp32 teacher; the selection's latency checks were int8 against int8):",
        "",
    ]
    rows = []
    for r in runs:
        c = r["int8"]
        top1, speed = c["top1"], c["speedup"]
        cost = [100 * (top1[f"{who} fp32"] - top1[f"{who} int8"]) for who in ("teacher", "compressed")]
        floats = sorted(set(c["teacher"]["float_ops"]) | set(c["compressed"]["float_ops"]))
        rows.append(
            [r["family"], f"{100 * r['latency_target']:.0f}%"]
            + [f"{100 * top1[row]:.2f}% ({speed[row]:.2f}x)" for row in ("teacher int8", "compressed fp32")]
            + [f"**{100 * top1['compressed int8']:.2f}% ({speed['compressed int8']:.2f}x)**"]
            + [f"{cost[0]:+.2f} / {cost[1]:+.2f}", f"{c['depth_speedup_int8']:.2f}x", ", ".join(floats) or "none"]
        )
    head = "family | >target | >teacher int8 | >compressed fp32 | >compressed int8 | >int8 cost (teacher / compressed)"
    return lines + h.table(f"{head} | >depth on int8 | ops left in float", rows)


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
    rows = []
    for r in records:
        if "error" in r:
            most = re.search(r"saves (-?[\d.]+%)", r["error"])
            reason = f"not reachable: at most -{most.group(1)}" if most else "not run (see families.md)"
            rows.append([r["family"], f"{100 * r['latency_target']:.0f}%", reason, *[None] * 5])
            continue
        rows.append([r["family"], target_text(r), f"-{100 * r['latency_reduction']:.1f}%", r["blocks"]])
        rows[-1] += [
            f"{100 * r['removed_top1']:.2f}%",
            f"**{100 * r['top1']:.2f}%**",
            f"{100 * r['teacher_top1']:.2f}%",
        ]
        rows[-1].append(f"{finetune_text(r['finetune'])}{scan_text(r)}")
    head = "family | >target | >measured latency | blocks kept | >simply removed | >PRACTISE | >teacher | finetune"
    return h.table(head, rows)


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
    args.backend = args.backend or ("onnxruntime" if args.quantize == "int8" else LatencyConfig.backend)
    tiny, test = h.tiny_images(NUM_SAMPLES, SEED), fmnist.load("test")
    stem = Path(args.results) / "families"
    for name in args.families:
        records = run_family(name, args, tiny, test)
        # records of families not rerun now are kept (read again now: another run may have written some)
        path = stem.with_suffix(".json")
        kept = merge_records(h.read_json(path) if path.exists() else [], records)
        h.publish(stem, kept, render)
        readme(kept, args)
    return kept


def main() -> int:
    p = h.parser(__doc__)
    p.add_argument("--families", nargs="+", default=h.FAMILIES, choices=h.FAMILIES)
    p.add_argument("--targets", type=float, nargs="+", default=[0.22, 0.5])
    p.add_argument("--iterations", type=int, default=FinetuneConfig.iterations, help="mimic finetune steps")
    objectives = ("auto", *OBJECTIVES)
    p.add_argument("--objective", default=FinetuneConfig.objective, choices=objectives, help="finetune objective")
    p.add_argument("--optimizer", default="auto", choices=("auto", "sgd", "adamw"), help="finetune optimizer")
    p.add_argument("--lr", type=float, default=None, help="finetune peak lr (default: the family's optimizer's)")
    # those of the registry that work on the tiny set's preprocessed images (not `timm`'s training transform)
    augmentations = ("auto", *(n for n, a in AUGMENTATIONS.items() if not a.needs_original_images))
    p.add_argument("--augmentation", default=FinetuneConfig.augmentation, choices=augmentations)
    units = "what a candidate is (CompressionConfig.units): a rerun with branches adds rows of its own"
    p.add_argument("--units", default="blocks", choices=("blocks", "branches"), help=units)
    quantize = "int8: also quantize the teacher and the compressed model (CompressionConfig.quantize): rows of its own"
    p.add_argument("--quantize", default="none", choices=("none", "int8"), help=quantize)
    backends = ("torch", "onnxruntime", "openvino")
    p.add_argument(
        "--backend",
        default=None,
        choices=backends,
        help="latency runtime (default: torch; with --quantize int8: onnxruntime)",
    )
    h.folders(p, cache=h.CACHE / "families")
    return h.study(p, stem="families", run=run, render=render, after=readme)


if __name__ == "__main__":
    sys.exit(main())
