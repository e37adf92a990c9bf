"""Every supported family on real data: train a small teacher of each on Fashion-MNIST, compress it with
PRACTISE from 500 train images, and check the result against the teacher, against the same blocks simply
removed, and against its own native reload.

    python benchmarks/families.py                          # all families, targets 22% and 50%
    python benchmarks/families.py --families timm-vit --targets 0.3
    python benchmarks/families.py --report                 # rewrite the markdown from the json

The shared teachers are ResNets only. A family's teacher committed under benchmarks/teachers/NAME (trained by
`benchmarks/train_teacher.py`, with its command and metrics) is used as it is; the others are trained by this
script (seeded; cached in benchmarks/cache/families/ and saved natively, so a rerun reuses them). Needs Debian's
`dataset-fashion-mnist`; says `skipped` without it. Writes results/families.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import fmnist  # noqa: E402
from compare import update_readme_section, write_json  # noqa: E402

from hf_practise import (  # noqa: E402
    CompressionConfig,
    FinetuneConfig,
    LatencyConfig,
    LatencyTargetUnreachable,
    PractiseCompressor,
    ScanConfig,
    get_family,
)
from hf_practise.backbones import registered_families  # noqa: E402
from hf_practise.config import DEFAULT_LR  # noqa: E402
from hf_practise.mimic import evaluate_top1  # noqa: E402
from hf_practise.native import native_reload_gap  # noqa: E402
from hf_practise.provenance import machine, model_fingerprint, recorded_command  # noqa: E402
from hf_practise.recoverability import build_pruned  # noqa: E402
from hf_practise.training import as_logits  # noqa: E402

logger = logging.getLogger("families")
RESULTS = HERE / "results"
TEACHERS = HERE / "teachers"  # committed teachers (benchmarks/train_teacher.py), used instead of training here
INPUT = (3, 32, 32)


#: every registered family's benchmark teachers (a family lists them beside its code: `teacher_recipes`)
RECIPES = {name: recipe for family in registered_families() for name, recipe in family.teacher_recipes.items()}
FAMILIES = sorted(RECIPES)


def build(name: str) -> tuple[nn.Module, str]:
    """A small randomly initialised classifier of the family for 32x32 inputs, and what it is (for the table)."""
    if name not in RECIPES:
        raise ValueError(f"unknown family `{name}`; choose from {FAMILIES}")
    description, builder = RECIPES[name]
    return builder(), description


def save_native(model: nn.Module, folder: Path, architecture: str | None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    if get_family(model).library_name == "timm":
        get_family(model).save_pretrained(model, folder, source_config={"architecture": architecture})
    else:
        model.save_pretrained(str(folder))


def load_native(folder: Path, library: str) -> nn.Module:
    if library == "timm":
        import timm

        return timm.create_model(f"local-dir:{folder}", pretrained=True)
    from transformers import AutoModelForImageClassification

    return AutoModelForImageClassification.from_pretrained(str(folder))


def train_teacher(name: str, train, test, *, steps: int, seed: int, folder: Path) -> dict:
    """Train (or reuse) the family's teacher; return its record (top-1, seconds, description)."""
    meta_path = folder / "teacher.json"
    if meta_path.exists():
        return json.loads(meta_path.read_text())
    torch.manual_seed(seed)
    model, description = build(name)
    family = get_family(model)
    lr = 1e-3 if "vit" in name else 2e-3
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    warmup = steps // 20
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda s: (s + 1) / warmup if s < warmup else 0.5 * (1 + math.cos(math.pi * (s - warmup) / (steps - warmup))),
    )
    g = torch.Generator().manual_seed(seed)
    loader = torch.utils.data.DataLoader(train, batch_size=128, shuffle=True, drop_last=True, generator=g)
    start, step = time.perf_counter(), 0
    model.train()
    while step < steps:
        for x, y in loader:
            # light augmentation: horizontal flips and 2-pixel shifts
            flip = torch.rand(len(x), generator=g) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
            dx, dy = torch.randint(-2, 3, (2,), generator=g).tolist()
            x = torch.roll(x, shifts=(dy, dx), dims=(-2, -1))
            loss = nn.functional.cross_entropy(as_logits(model(x)), y, label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            if step % 100 == 0:
                logger.info("%s teacher: step %d/%d loss %.3f", name, step, steps, loss.item())
            if step == steps:
                break
    model.eval()
    seconds = time.perf_counter() - start
    top1 = evaluate_top1(model, test, batch_size=256, desc=f"eval {name} teacher")
    architecture = model.pretrained_cfg.get("architecture") if family.library_name == "timm" else None
    save_native(model, folder / "teacher", architecture)
    meta = {"family": family.name, "model": description, "top1": top1, "train_steps": steps, "train_seconds": seconds}
    write_json(meta_path, meta)
    logger.info("%s teacher: top-1 %.2f%% after %d steps (%.0f s)", name, 100 * top1, steps, seconds)
    return meta


def committed_teacher(name: str) -> tuple[Path, dict] | None:
    """A teacher trained by `benchmarks/train_teacher.py` and committed under benchmarks/teachers/NAME, if any."""
    folder = TEACHERS / name
    if not (folder / "teacher_metrics.json").exists():
        return None
    m = json.loads((folder / "teacher_metrics.json").read_text())
    parent = m.get("init_from", {})  # a teacher continued from another (`train_teacher.py --init-from`): both runs
    meta = {
        "family": m["family"],
        "model": m["model"],
        "top1": m["test_top1"],
        "train_steps": m["train_steps"] + parent.get("train_steps", 0),
        "train_seconds": round(m["train_seconds"] + parent.get("train_seconds", 0.0), 1),
        "recipe": m["recipe_details"],
        "committed": f"benchmarks/teachers/{name}",
    }
    return folder, meta


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


def run_family(name: str, args, tiny, test, command: str) -> list[dict]:
    folder = Path(args.cache) / name
    library = "timm" if name.startswith("timm") else "transformers"
    committed = committed_teacher(name)
    if committed is not None:  # the committed teacher: nothing to train
        teacher_dir, meta = committed
    else:
        meta = train_teacher(name, args.train_set, test, steps=args.train_steps, seed=args.seed, folder=folder)
        teacher_dir = folder / "teacher"
    records = []
    teacher = load_native(teacher_dir, library).eval()  # the compressor only reads it
    for requested in args.targets:
        target = requested
        while True:
            config = CompressionConfig(
                latency_reduction=target,
                seed=args.seed,
                # one work dir per teacher's weights: a committed teacher that replaces a trained one gets a fresh one
                work_dir=str(folder / f"work_{args.num_samples}_{args.seed}_{model_fingerprint(teacher)[:8]}"),
                scan=ScanConfig(iterations=args.scan_iterations),
                finetune=FinetuneConfig(
                    iterations=args.iterations,
                    checkpoint_every=0,
                    objective=args.objective,
                    lr=args.lr,
                    augmentation=args.augmentation,
                ),
                latency=LatencyConfig(batch_size=64, repeats=20, input_size=INPUT),
            )
            # what every record of this family and target says, run or not
            common = {
                "family": get_family(teacher).name,
                "model": meta["model"],
                "teacher_top1": meta["top1"],
                "teacher_train_steps": meta["train_steps"],
                "teacher_train_seconds": meta["train_seconds"],
                **{f"teacher_{k}": meta[k] for k in ("recipe", "committed") if k in meta},
                "latency_target": target,
                **({"requested_target": requested} if target != requested else {}),
                "num_samples": args.num_samples,
                "seed": args.seed,
                "command": command,
                "machine": machine(),
            }
            start = time.perf_counter()
            try:
                result = PractiseCompressor(teacher, config).compress(tiny, test)
                break
            except LatencyTargetUnreachable as e:
                closest = closest_target(e.reachable)
                if not args.closest_reachable or target != requested or closest is None:
                    logger.warning("%s @%.0f%%: %s", name, 100 * target, e)
                    result = None
                    records.append({**common, "error": str(e)})
                    break
                logger.warning("%s @%.0f%%: %s Running at %.0f%% instead.", name, 100 * target, e, 100 * closest)
                target = closest
            except ValueError as e:  # another reason this family cannot run: say so in the table, go on
                logger.warning("%s @%.0f%%: %s", name, 100 * target, e)
                result = None
                records.append({**common, "error": str(e)})
                break
        if result is None:
            continue
        wall = time.perf_counter() - start
        family = result.family
        removed = build_pruned(teacher, family, [r.ref for r in result.dropped], adaptors=False).eval()
        removed_top1 = evaluate_top1(removed, test, batch_size=256, desc="eval removed")
        onnx = result.export_onnx()  # checked against PyTorch on the tiny-set images
        with tempfile.TemporaryDirectory() as tmp:
            out = result.save_pretrained(Path(tmp) / "out")
            # plain timm / transformers, or hf_practise's loader for families whose library cannot rebuild it
            reload_with = library if result.reloads_natively else "hf_practise"
            gap = native_reload_gap(out, reload_with, result.model, test.tensors[0][:64])
            # and model.onnx in ONNX Runtime, in a process without hf_practise, on 64 test images
            onnx_gap = native_reload_gap(out, "onnxruntime", result.model, test.tensors[0][:64])
        rec = {
            **common,
            "latency_reduction": result.latency.reduction,
            "teacher_ms": result.latency.base.median_ms,
            "compressed_ms": result.latency.candidate.median_ms,
            "macs_before": result.macs_before,
            "macs_after": result.macs_after,
            "blocks": f"{sum(result.depths_after)} of {sum(result.depths_before)}",
            "dropped": [r.block for r in result.dropped],
            "removed_top1": removed_top1,
            "top1": result.top1_after,
            "native_reload_max_abs_logit_gap": gap,
            "onnx_max_abs_logit_gap": onnx_gap,
            "onnx_export_check": onnx,
            "reloaded_with": reload_with,
            "finetune": {
                k: getattr(result.config.finetune, k)
                for k in ("optimizer", "lr", "iterations", "objective", "augmentation")
            },
            "scan_iterations": result.config.scan.iterations,
            "selection": result.selection,
            "latency_tolerance": result.config.latency_tolerance,
            "latency_runtime": result.latency.base.runtime(),
            "wall_seconds": wall,
            "phase_seconds": result.phase_seconds,
            # candidates whose adaptor training lowered the feature error at the scan's own rate, and at all
            # (with the retries at smaller rates): the first is what the scan did before it retried
            "scan_lowered": {
                "first_rate": sum(r.trained and not r.retried for r in result.scan),
                "with_retries": sum(r.trained for r in result.scan),
                "candidates": len(result.scan),
            },
        }
        logger.info(
            "%s @%.0f%%: top-1 %.2f%% (removed %.2f%%, teacher %.2f%%), latency -%.1f%%, reload gap %.2g",
            name,
            100 * target,
            100 * rec["top1"],
            100 * removed_top1,
            100 * meta["top1"],
            100 * rec["latency_reduction"],
            gap,
        )
        records.append(rec)
    return records


def write_markdown(path: Path, records: list[dict]) -> None:
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
    lines += ["", "Finetune (the library picks the optimizer by family unless told):", ""]
    lines += [
        f"- {r['family']} at {100 * r['latency_target']:.0f}%: {r['finetune']['iterations']} steps, "
        f"{r['finetune']['optimizer']} lr {r['finetune']['lr']:g}"
        + f", {r['finetune'].get('objective', 'features')}, augmentation {r['finetune'].get('augmentation', 'none')}"
        if "finetune" in r
        else f"- {r['family']} at {100 * r['latency_target']:.0f}%: not run"
        for r in records
    ]
    lines += [
        "",
        "Selection (each latency check on the way: the greedy pass takes blocks by score until the measured cut "
        "meets the target; a cut above target + tolerance comes back toward it):",
        "",
    ]
    for r in records:
        if not r.get("selection"):
            continue
        steps = "; ".join(
            f"{c.get('step', 'greedy')} {c['blocks']} blocks -{100 * c['measured']:.1f}%" for c in r["selection"]
        )
        tol = r.get("latency_tolerance", 0.06)
        inside = r["latency_target"] <= r["latency_reduction"] <= r["latency_target"] + tol
        verdict = "inside" if inside else "outside"
        lines.append(
            f"- {r['family']} at {100 * r['latency_target']:.0f}%: {steps}; final cut -{100 * r['latency_reduction']:.1f}% "
            f"{verdict} [{100 * r['latency_target']:.0f}%, {100 * (r['latency_target'] + tol):.0f}%]"
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
            f"- {r['family']} at {100 * r['latency_target']:.0f}%: max |logit difference| "
            f"{r['onnx_max_abs_logit_gap']:.2g} ({r['onnx_export_check']['relative_diff']:.2g} of the largest logit "
            "on the tiny-set check)"
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
    lines += ["", "Blocks dropped:", ""]
    lines += [
        f"- {r['family']} at {100 * r['latency_target']:.0f}%: {', '.join(r['dropped'])}"
        for r in records
        if "dropped" in r
    ]
    teachers = {r["family"]: r for r in records}
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
        for f, r in teachers.items()
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
    lines += [f"- `{c}` ({m['cpu']}, {m['threads']} threads, torch {m['torch']})" for c, m in runs.items()]
    path.write_text("\n".join(lines) + "\n")


def finetune_text(finetune: dict) -> str:
    """What the finetune of a row departed from: the library's defaults (its family's optimizer at its usual rate,
    features+kd on mixup images) are left out; a row from before those defaults names its objective."""
    usual_lr = DEFAULT_LR.get(finetune["optimizer"])
    extras = [f"lr {finetune['lr']:g}"] if finetune["lr"] != usual_lr else []
    objective, augmentation = finetune.get("objective", "features"), finetune.get("augmentation", "none")
    if objective != "features+kd":
        extras.append(objective)
    if augmentation != "mixup":
        extras.append(f"augmentation {augmentation}")
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


def report(out: Path, records: list[dict]) -> None:
    write_markdown(out.with_suffix(".md"), records)
    if out.parent.resolve() == RESULTS.resolve():  # the repo's own results: refresh the README's table too
        update_readme_section("families", headline(records))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--families", nargs="+", default=FAMILIES, choices=FAMILIES)
    p.add_argument("--targets", type=float, nargs="+", default=[0.22, 0.5])
    p.add_argument("--num-samples", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-steps", type=int, default=1500, help="teacher training steps (batch 128)")
    p.add_argument("--scan-iterations", type=int, default=ScanConfig.iterations)
    p.add_argument(
        "--iterations", type=int, default=FinetuneConfig.iterations, help="mimic finetune steps (the library default)"
    )
    p.add_argument(
        "--objective",
        default=FinetuneConfig.objective,
        choices=("auto", "features", "kd", "features+kd", "features+stages"),
        help="mimic finetune objective",
    )
    p.add_argument("--lr", type=float, default=None, help="finetune peak lr (default: the family's optimizer's)")
    p.add_argument(
        "--augmentation",
        default=FinetuneConfig.augmentation,
        choices=("auto", "none", "flip", "crop", "mixup"),
        help="finetune augmentation",
    )
    p.add_argument(
        "--no-closest-reachable",
        dest="closest_reachable",
        action="store_false",
        help="record a target the family cannot reach as not run (default: run at the closest reachable whole "
        f"percent, {100 * REACHABLE_MARGIN:.0f} points under the most dropping every droppable block saves)",
    )
    p.add_argument("--cache", default=str(HERE / "cache" / "families"))
    p.add_argument("--results", default=str(RESULTS))
    p.add_argument("--report", action="store_true", help="only rewrite the markdown from the json")
    args = p.parse_args()
    out = Path(args.results) / "families.json"
    if args.report:
        report(out, json.loads(out.read_text()))
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if not fmnist.available():
        print(f"skipped: needs Fashion-MNIST under {fmnist.FMNIST_DIR} (apt-get install dataset-fashion-mnist)")
        return 0
    command = recorded_command("python benchmarks/families.py", p, args, paths=("results", "cache"))
    args.train_set = fmnist.load("train")
    tiny = fmnist.load("train", num_samples=args.num_samples, seed=args.seed).tensors[0]
    test = fmnist.load("test")
    for name in args.families:
        records = run_family(name, args, tiny, test, command)
        # records of families not rerun now are kept (read again now: another run may have written some)
        kept = json.loads(out.read_text()) if out.exists() else []
        kept = merge_records(kept, records)
        write_json(out, kept)
        report(out, kept)
    print(out.with_suffix(".md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
