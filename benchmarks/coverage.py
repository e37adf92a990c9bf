"""How much of the model zoo compresses and reloads: timm's pretrained checkpoints and transformers' classifiers.

Per timm model class (of `timm.list_models(pretrained=True)`, built on the meta device) up to five architectures,
as random instances: the one with the most checkpoints, the smallest, the largest under the cost cap, one at
random and the one whose layer types differ most (fan-in initialised, BatchNorm statistics measured on random
images); per transformers image-classification type, its family's tiny model. Each gets a 1-block compression,
saved and reloaded in a fresh process (plain timm / transformers, or `load_compressed`); it passes when the logits
agree within 1e-5.
A class's checkpoints count only when every tried architecture passed.

    python benchmarks/coverage.py                 # all of it, ~30-40 min on 2 cores
    python benchmarks/coverage.py --quick         # three classes and the transformers types (CI smoke test)
    python benchmarks/coverage.py --only-classes timm.models.eva.Eva   # rerun one class (and transformers)
    python benchmarks/coverage.py --add-picks     # only the architectures pick() adds to the tried classes
    ... --resume                                  # after an interruption: reuse the tries that finished
"""

from __future__ import annotations

import collections
import json
import logging
import random
import sys
import tempfile
import time
import traceback
import zlib
from pathlib import Path
from typing import Any

import harness as h
import torch
from native import native_reload_gap

from hf_practise import CompressionConfig, FinetuneConfig, LatencyConfig, PractiseCompressor, ScanConfig
from hf_practise.backbones import registered_families
from hf_practise.backbones.registry import nothing_to_drop
from hf_practise.backbones.tiny import fan_in_init
from hf_practise.training import recalibrate_norm_stats

logger = logging.getLogger("coverage")
GAP_TOLERANCE = 1e-5  # largest |logit| difference that passes: float rounding, never another network
MAX_PARAMS = 120e6  # larger architectures are not run here (memory and time on 2 cores); the table says so
QUICK_CLASSES = ("timm.models.resnet.ResNet", "timm.models.efficientnet.EfficientNet", "timm.models.regnet.RegNet")
QUICK_MODULES = ("resnet", "efficientnet", "regnet")


def family_for(model: torch.nn.Module):
    return next((f.for_model(model) for f in registered_families() if f.matches(model)), None)


def timm_classes(cache: Path, modules: tuple[str, ...] | None = None) -> dict[str, Any]:
    """{class: [{arch, checkpoints, params, layer_types}]} for every pretrained timm architecture (cached), or
    only those of the timm `modules` named."""
    import timm

    path = cache / f"timm-{timm.__version__}{'-' + '-'.join(modules) if modules else ''}.json"
    if path.exists():
        return h.read_json(path)
    every = timm.list_models(pretrained=True)
    names = [n for m in modules for n in timm.list_models(pretrained=True, module=m)] if modules else every
    counts = collections.Counter(n.split(".")[0] for n in names)
    classes: dict[str, list] = collections.defaultdict(list)
    for arch, n in sorted(counts.items()):
        try:
            with torch.device("meta"):
                model = timm.create_model(arch, pretrained=False)
        except Exception as e:  # noqa: BLE001 - recorded, the count goes on
            classes["(cannot build)"].append({"arch": arch, "checkpoints": n, "error": str(e)[:200]})
            continue
        params, layers = sum(p.numel() for p in model.parameters()), sorted({type(m).__name__ for m in model.modules()})
        entry = {"arch": arch, "checkpoints": n, "params": params, "layer_types": layers}
        classes[f"{type(model).__module__}.{type(model).__name__}"].append(entry)
    h.write_json(path, {"total_checkpoints": len(every), "classes": classes})
    return h.read_json(path)


def try_size(cfg: dict) -> tuple[int, int, int]:
    """The input size a try runs at: the pretrained config's, at most 64x64 where the architecture allows."""
    size = tuple(cfg.get("input_size", (3, 224, 224)))
    if not cfg.get("fixed_input_size", False):
        size = (size[0], min(size[1], 64), min(size[2], 64))
    return size


def run_cost(a: dict) -> float:
    """What trying `a` costs, as parameters at 224x224: its parameters times its try's pixels over 224x224's."""
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(a["arch"])
    _, height, width = try_size(cfg.to_dict() if cfg is not None else {})
    return a["params"] * max(1.0, height * width / 224**2)


def pick(cls: str, archs: list[dict]) -> list[dict]:
    """The architectures to try for one class: the one with the most checkpoints, the smallest, the largest under
    the cap (`run_cost`), one at random (seeded by the class name, so a rerun tries the same) and the one whose layer
    types differ most from the first; each once."""
    first = max(archs, key=lambda a: (a["checkpoints"], -a["params"]))
    chosen = [first]
    real = [a for a in archs if not a["arch"].startswith("test_")] or archs  # timm's test_* models are toys
    # the cap on what a try costs, not on parameters alone: a 120M net at a fixed 512x512 is 5x a 224x224 one
    under = [a for a in real if run_cost(a) <= MAX_PARAMS] or real
    base = set(first["layer_types"])
    other = max(real, key=lambda a: (len(base ^ set(a["layer_types"])), -a["params"]))
    rest = sorted((a for a in under if a is not first), key=lambda a: a["arch"])
    rng = random.Random(zlib.crc32(cls.encode()))
    for a in (
        min(real, key=lambda a: a["params"]),
        max(under, key=lambda a: a["params"]),
        rng.choice(rest) if rest else first,
        other if base ^ set(other["layer_types"]) else first,
    ):
        if a not in chosen:
            chosen.append(a)
    return chosen


def try_compress(model: torch.nn.Module, family, input_size: tuple, source: dict[str, Any]) -> dict[str, Any]:
    """A 1-block compression of `model`, saved and reloaded in a fresh process: what happened."""
    out: dict[str, Any] = {"family": family.name, "candidates": len(family.candidates(model))}
    # one adaptor step per candidate, no retry at smaller steps: a try checks that every candidate's adaptors train
    # and fold, not how well (a retry tripled the scan of random nets, whose first step often raises the error)
    scan = ScanConfig(iterations=1, batch_size=2, retries=0)
    finetune = FinetuneConfig(iterations=2, batch_size=2, lr=1e-5)
    latency = LatencyConfig(batch_size=1, repeats=1, warmup=0, input_size=input_size)
    cfg = CompressionConfig(num_blocks=1, scan=scan, finetune=finetune, latency=latency)
    x = torch.randn(4, *input_size, generator=torch.Generator().manual_seed(0))
    result = PractiseCompressor(model, cfg, family=family, source_config=source).compress(x)
    native = result.reloads_natively
    with tempfile.TemporaryDirectory(prefix="coverage-") as tmp:
        folder = result.save_pretrained(Path(tmp) / "saved")
        gap = native_reload_gap(folder, family.library_name if native else "hf_practise", result.model, x[:2])
    # identical up to float rounding: transformers keeps the loaded weights as (unaligned) views of the safetensors
    # file, and unaligned memory takes other SIMD paths, which can move a logit by an ulp (weights bit-identical)
    return {**out, "reload": "native" if native else "hf_practise loader", "gap": gap, "passed": gap <= GAP_TOLERANCE}


@torch.no_grad()
def trained_like_norms(model: torch.nn.Module, input_size: tuple, seed: int = 0) -> torch.nn.Module:
    """BatchNorm running statistics measured on random images of the try's size (`recalibrate_norm_stats`), as
    training leaves them matched to the activations: a deep random net whose statistics are timm's init (mean 0,
    variance 1) gives features of ~1e5 in eval mode (nextvit_base), and the mimic loss on them overflows at any rate,
    which no checkpoint does."""
    recalibrate_norm_stats(model.eval(), torch.randn(8, *input_size, generator=torch.Generator().manual_seed(seed)))
    return model


def try_timm(a: dict) -> dict[str, Any]:
    """One timm architecture, randomly initialised, compressed and reloaded (or why not)."""
    import timm

    attempt: dict[str, Any] = {"arch": a["arch"], "params": a["params"]}
    if a["params"] > MAX_PARAMS:
        return {**attempt, "passed": None, "note": f"not run: {a['params'] / 1e6:.0f}M parameters"}
    start = time.perf_counter()
    try:
        torch.manual_seed(0)
        # fan-in init: some random inits (zeroed or huge layer scales) give an identity or overflowing net
        model = fan_in_init(timm.create_model(a["arch"], pretrained=False, num_classes=5), seed=0)
        family = family_for(model)
        if family is None:
            attempt.update(passed=False, note="no family matches this architecture")
        else:
            cfg = model.pretrained_cfg
            size = try_size(cfg)
            model = trained_like_norms(model, size)
            attempt.update(try_compress(model, family, size, {"architecture": a["arch"], "pretrained_cfg": dict(cfg)}))
    except Exception as e:  # noqa: BLE001 - a failure is a result here
        if "There is nothing to drop" in str(e) and a["arch"].startswith("test_"):
            # timm's toy test models have one block per stage: PRACTISE does not apply, no failure
            attempt.update(passed=None, note="nothing to drop (a test model with one block per stage)")
        else:
            attempt.update(passed=False, error=f"{type(e).__name__}: {str(e)[:300]}")
            logger.debug("%s failed:\n%s", a["arch"], traceback.format_exc())
    return {**attempt, "seconds": round(time.perf_counter() - start, 1)}


def run_timm(args) -> tuple[list[dict], int]:
    import timm

    data = timm_classes(Path(args.cache), QUICK_MODULES if args.quick else None)
    rows = []
    previous = {r["class"]: r for r in (args.previous or {}).get("timm", {}).get("rows", [])}
    tries = TryLog(Path(args.cache) / "tries.jsonl", resume=args.resume)
    for cls, archs in sorted(data["classes"].items(), key=lambda kv: -sum(a["checkpoints"] for a in kv[1])):
        if args.quick and cls not in QUICK_CLASSES:
            continue
        old = previous.get(cls)
        if old and (args.only_classes and cls not in args.only_classes or args.add_picks and not old["tried"]):
            rows.append(old)  # not rerun: the row of the results file
            continue
        checkpoints = sum(a["checkpoints"] for a in archs)
        row: dict[str, Any] = {"class": cls, "checkpoints": checkpoints, "architectures": len(archs), "tried": []}
        rows.append(row)
        if cls == "(cannot build)":
            row["status"] = "cannot build on the meta device"
            continue
        picked = pick(cls, archs)
        picked = picked[1:2] or picked[:1] if args.quick else picked  # --quick: the smallest architecture only
        with torch.device("meta"):
            models = [timm.create_model(a["arch"], pretrained=False) for a in picked]
        if all(family_for(m) is None for m in models):
            reason = nothing_to_drop(models[0])
            row["status"] = f"nothing to drop: {reason}" if reason else "no family"
            continue
        kept = {t["arch"]: t for t in old["tried"]} if args.add_picks and old else {}
        for a in picked:
            row["tried"].append(kept.get(a["arch"]) or tries.get(a["arch"]) or tries.add(try_timm(a)))
            logger.info("%s %s: %s", cls, a["arch"], row["tried"][-1])
        ran = [t for t in row["tried"] if t.get("passed") is not None]
        row["status"] = "passed" if ran and all(t["passed"] for t in ran) else "failed"
    return rows, data["total_checkpoints"]


class TryLog:
    """Every finished try, appended to a jsonl file as it ends; `resume` reuses the tries of an interrupted run of the
    same command (one line per architecture: the last one counts)."""

    def __init__(self, path: Path, *, resume: bool) -> None:
        self.path, self.done = path, {}
        if resume and path.exists():
            self.done = {t["arch"]: t for t in map(json.loads, path.read_text().splitlines()) if t.get("arch")}
        elif path.exists():
            path.unlink()

    def get(self, arch: str) -> dict[str, Any] | None:
        return self.done.get(arch)

    def add(self, attempt: dict[str, Any]) -> dict[str, Any]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            f.write(json.dumps(attempt) + "\n")
        return attempt


def meta_classifier(model_type: str, class_name: str) -> torch.nn.Module:
    """The `class_name` classifier of `model_type`, with its default config, on the meta device (no weights).

    Built from the class itself: `AutoModelForImageClassification.from_config` fails on the types that map to
    several classes (LeViT, Perceiver) with "'NoneType' object is not iterable" (it iterates over the config's
    `architectures`, None in a fresh config)."""
    import transformers
    from transformers import AutoConfig

    with torch.device("meta"):
        return getattr(transformers, class_name)(AutoConfig.for_model(model_type))


def run_transformers() -> list[dict]:
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES

    tiny = {}  # model class name -> (family, model): the first tiny model of each registered transformers family
    for family in (f for f in registered_families() if f.library_name == "transformers"):
        for builder in family.tiny_models.values():
            model = builder(0)
            tiny.setdefault(type(model).__name__, (family.for_model(model), model))
    rows = []
    for model_type, class_name in sorted(MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES.items()):
        names = class_name if isinstance(class_name, (list, tuple)) else [class_name]
        row: dict[str, Any] = {"model_type": model_type, "class": names[0]}
        start = time.perf_counter()
        try:
            if names[0] in tiny:
                family, model = tiny[names[0]]
                row.update(try_compress(model, family, (3, 32, 32), {}))
            else:
                model = meta_classifier(model_type, names[0])
                reason = nothing_to_drop(model)
                note = f"nothing to drop: {reason}" if reason else "no family"
                row.update(passed=False, note=note if family_for(model) is None else "no tiny model")
        except Exception as e:  # noqa: BLE001 - a failure is a result here
            row.update(passed=False, error=f"{type(e).__name__}: {str(e)[:300]}")
        row["seconds"] = round(time.perf_counter() - start, 1)
        logger.info("transformers %s: %s", model_type, row)
        rows.append(row)
    return rows


def timm_counts(rows: list[dict]) -> dict[str, int]:
    """Checkpoints and architecture names of the passed classes, of all classes, and of the passed classes whose
    tried architectures all reloaded with plain timm (the others need `hf_practise.load_compressed`)."""
    passed = [r for r in rows if r["status"] == "passed"]
    native = [r for r in passed if all(t.get("reload") == "native" for t in r["tried"] if t.get("passed"))]
    return {
        "names": sum(r["architectures"] for r in rows),
        "passed_names": sum(r["architectures"] for r in passed),
        "native_checkpoints": sum(r["checkpoints"] for r in native),
        "nothing_to_drop": sum(r["checkpoints"] for r in rows if r["status"].startswith("nothing to drop")),
    }


def headline(record: dict) -> str:
    t, hf = record["timm"], record["transformers"]
    n = timm_counts(t["rows"])
    return (
        f"{t['passed_checkpoints']:,} of {t['total_checkpoints']:,} timm pretrained checkpoints "
        f"({100 * t['passed_checkpoints'] / t['total_checkpoints']:.0f}%; {n['passed_names']:,} of {n['names']:,} "
        f"architecture names, {100 * n['passed_names'] / n['names']:.0f}%) and {hf['passed']} of {hf['total']} "
        "transformers image-classification types compress and reload"
    )


def native_text(record: dict) -> str:
    """How the passed timm checkpoints reload: plain timm, or `hf_practise.load_compressed`."""
    t = record["timm"]
    native, passed = timm_counts(t["rows"])["native_checkpoints"], t["passed_checkpoints"]
    return (
        f"Of the {passed:,} passed timm checkpoints, {native:,} ({100 * native / passed:.0f}%) reload with plain "
        f"timm and {passed - native:,} with `hf_practise.load_compressed` (their library cannot rebuild the "
        "shallower model from its config; each family's file says why). "
        f"{timm_counts(t['rows'])['nothing_to_drop']:,} checkpoints are of architectures with no residual block to "
        "drop (*nothing to drop*, with the reason; `hf_practise` says so before reading any data)."
    )


def render(record: dict) -> list[str]:
    lines = [
        "# Model-zoo coverage",
        "",
        f"**{headline(record)}.**",
        "",
        f"timm {record['versions']['timm']}, transformers {record['versions']['transformers']}. Families: "
        f"{', '.join(record['families'])}.",
        "",
        native_text(record),
        "",
        f"A try passes when the reload's logits are within {GAP_TOLERANCE:g} of the compressed model's (the *gap* "
        "below; 0 is bit-identical). transformers keeps loaded weights as unaligned views of the safetensors file, "
        "and unaligned memory takes other SIMD paths: that moves a logit by an ulp, with identical weights.",
        "",
        "## timm, by model class (most checkpoints first)",
        "",
    ]

    def what(t: dict) -> str:
        return (
            t.get("note")
            or t.get("error")
            or f"{t['family']}, {t['candidates']} candidates, {t['reload']}, gap {t['gap']:.1g}"
        )

    lines += h.table(
        "class | >checkpoints | status | tried (family, candidates, reload, gap or error)",
        (
            [f"`{row['class'].replace('timm.models.', '')}`", row["checkpoints"], row["status"]]
            + ["; ".join(f"`{t['arch']}`: {what(t)}" for t in row["tried"])]
            for row in record["timm"]["rows"]
        ),
    )
    lines += ["", "## transformers image-classification types", ""]
    lines += h.table(
        "model type | class | ^passed | family, candidates, reload, gap or why not",
        (
            [r["model_type"], f"`{r['class']}`", "yes" if r.get("passed") else "no", what(r)]
            for r in record["transformers"]["rows"]
        ),
    )
    lines += ["", f"Command: `{record['command']}` ({record['seconds'] / 60:.0f} min)"]
    lines += [
        f"Rerun of {', '.join(r['classes'])}: `{r['command']}` ({r['seconds'] / 60:.0f} min)"
        for r in record.get("reruns", [])
    ]
    return lines + ["", f"Machine: {json.dumps(record['machine'])}"]


def run(p, args) -> dict:
    for name in ("hf_practise", "accelerate"):
        logging.getLogger(name).setLevel(logging.ERROR)
    import timm
    import transformers

    start = time.perf_counter()
    args.previous = None
    if args.only_classes or args.add_picks:
        path = Path(args.results) / "coverage.json"
        if not path.exists():
            p.error(f"--only-classes and --add-picks rerun part of an existing {path}; run without them first")
        args.previous = h.read_json(path)
        unknown = set(args.only_classes or ()) - {r["class"] for r in args.previous["timm"]["rows"]}
        if unknown:
            p.error(f"--only-classes: not a class of {path}: {sorted(unknown)} (e.g. timm.models.eva.Eva)")
    timm_rows, total = run_timm(args)
    hf_rows = run_transformers()  # a few minutes: always rerun
    passed = sum(r["checkpoints"] for r in timm_rows if r["status"] == "passed")
    record = {
        "timm": {"total_checkpoints": total, "passed_checkpoints": passed, "rows": timm_rows},
        "transformers": {"total": len(hf_rows), "passed": sum(bool(r.get("passed")) for r in hf_rows), "rows": hf_rows},
        "families": sorted(f.name for f in registered_families()),
        "versions": {"timm": timm.__version__, "transformers": transformers.__version__, "torch": torch.__version__},
        "quick": args.quick,
        "seconds": round(time.perf_counter() - start),
    }
    if args.previous:  # a partial rerun: the full run's command and time stay, the rerun is listed after them
        classes = args.only_classes or ["the architectures added to every tried class"]
        rerun = {"command": args.command, "classes": classes, "seconds": record["seconds"]}
        previous = args.previous
        record.update(
            command=previous["command"], seconds=previous["seconds"], reruns=[*previous.get("reruns", []), rerun]
        )
    print(headline(record) + f" ({record['seconds']} s)")
    return record


def main() -> int:
    p = h.parser(__doc__)
    p.add_argument("--quick", action="store_true", help=f"only {', '.join(QUICK_CLASSES)} and transformers")
    h.folders(p, cache=h.CACHE / "coverage")
    rerun = "rerun only these timm classes (e.g. timm.models.eva.Eva) and the transformers types; every other timm row "
    p.add_argument("--only-classes", nargs="+", default=None, help=rerun + "comes from coverage.json")
    p.add_argument(
        "--add-picks",
        action="store_true",
        help="keep coverage.json's tries and run only the architectures that pick() adds to each tried class",
    )
    p.add_argument("--resume", action="store_true", help="reuse the tries of an interrupted run (cache/tries.jsonl)")
    return h.study(p, stem="coverage", run=run, render=render)


if __name__ == "__main__":
    sys.exit(main())
