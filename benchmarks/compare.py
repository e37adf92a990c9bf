"""PRACTISE side by side with what a user would do instead (the methods: benchmarks/README.md), on identical tiny
sets and the identical eval set. Block-dropping methods take blocks in their order until the measured latency
reduction meets the target; every finetune has the same iterations, batch, optimiser and starting adaptors.

    python benchmarks/compare.py                         # the full run (resumes: finished runs are skipped)
    python benchmarks/compare.py --parts fmnist500       # one part of it
    python benchmarks/compare.py --quick                 # smoke test: one seed, few iterations, small eval

Each run writes one json to benchmarks/results/<teacher>/runs/; `--report` (also run at the end) writes the
per-teacher markdown table and PNG plot from whatever runs exist.
"""

from __future__ import annotations

import collections
import contextlib
import copy
import dataclasses
import functools
import itertools
import json
import logging
import statistics
import sys
import time
from pathlib import Path

import fmnist
import harness as h
import torch

from hf_practise import CompressionConfig, FinetuneConfig, LatencyConfig, PractiseCompressor, ScanConfig
from hf_practise.adaptors import fold_adaptors
from hf_practise.compound import ROWS as INT8_ROWS
from hf_practise.compound import Int8Module, compare_int8
from hf_practise.data import TinySet, _fingerprint
from hf_practise.files import atomic_write_text
from hf_practise.latency import compare_latency, count_macs, count_params
from hf_practise.mimic import evaluate_top1, mimic_finetune
from hf_practise.qat import quantize_aware
from hf_practise.quantize import METHODS as INT8_CALIBRATIONS
from hf_practise.recoverability import build_pruned, rank_blocks, teacher_features
from hf_practise.training import recalibrate_norm_stats

logger = logging.getLogger("compare")

BLOCK_METHODS = ["practise", "ce", "kd", "joint", "practise-bn", "stages", "mixup", "joint-mixup", "holdout"]
BLOCK_METHODS += ["initial", "random-0", "random-1", "random-2", "last", "rescore"]
#: methods that finetune exactly the blocks the practise run of the same setting dropped
#: int8 (issue #24) on practise's blocks, finetuned as its base method does, then int8 -> (the runtime it is quantized,
#: timed and evaluated in, whether its int8 comes from quantization-aware training instead of post-training
#: calibration, the base method: `practise` the paper's finetune, `joint-mixup` the library's default, which
#: `--quantize int8` runs)
COMPOUND = {
    "practise+int8": ("onnxruntime", False, "practise"),
    "practise+int8-ov": ("openvino", False, "practise"),
    "practise+int8-qat": ("openvino", True, "practise"),
    "default+int8": ("onnxruntime", False, "joint-mixup"),
    "default+int8-ov": ("openvino", False, "joint-mixup"),
    "quantize-int8": ("onnxruntime", False, "joint-mixup"),
}
#: compound methods that choose their own blocks as `--quantize int8` does: the scan's recoverability over each
#: block's cut timed int8 against int8 in the runtime, and the target checked int8 against int8 (not practise's blocks)
INT8_CHOSEN = ("quantize-int8",)
#: the teacher's post-training int8 row of a runtime (what a user would do instead) -> the compound method whose one
#: `compare_int8` call (the four models timed in the same rounds) it is read from
ANCHORS = {"int8": "practise+int8", "int8-ov": "practise+int8-ov"}
INT8_METHODS = ["int8", "practise+int8", "default+int8", "int8-ov", "practise+int8-ov", "default+int8-ov"]
INT8_METHODS += ["practise+int8-qat", "quantize-int8"]
SAME_BLOCKS = ("ce", "kd", "joint", "practise-bn", "stages", "mixup", "joint-mixup", "holdout")
SAME_BLOCKS += tuple(m for m in COMPOUND if m not in INT8_CHOSEN)
ALL_METHODS = BLOCK_METHODS + ["filter", "teacher"] + INT8_METHODS


def int8_names(method: str) -> dict[str, str]:
    """What the int8 comparison of compound `method` calls the models -> what the tables call them."""
    backend, _, base = COMPOUND[method]
    anchor = next((a for a, m in ANCHORS.items() if COMPOUND[m][0] == backend), "")
    who = "practise" if base == "practise" else "int8-chosen" if method in INT8_CHOSEN else "default"
    return {
        "teacher fp32": "teacher fp32",
        "teacher int8": f"teacher int8 (`{anchor}`)",
        "compressed fp32": f"{who} fp32",
        "compressed int8": f"{who} int8 (`{method}`)",
    }


RANDOM = ("random-0", "random-1", "random-2")
#: the method that finetunes as the library does by default (FinetuneConfig's objective and augmentation "auto")
DEFAULT_METHOD = "joint-mixup"
OBJECTIVES = {"ce": "ce", "kd": "kd", "joint": "features+kd", "joint-mixup": "features+kd", "stages": "features+stages"}
# (tiny set, images, seeds, latency targets)
PARTS = {
    "fmnist500": ("fmnist", 500, [0, 1, 2], [0.22, 0.5]),
    "fmnist100": ("fmnist", 100, [0, 1, 2], [0.5]),
    "fmnist50": ("fmnist", 50, [0, 1, 2], [0.5]),
    "digits": ("digits-ood", 500, [0], [0.5]),
    "datafree": ("data-free", 500, [0], [0.5]),
}
#: what --quick changes (a smoke test: seed 0, 100 images, a few steps) and the full run's settings (scan: the family's)
QUICK = dict(iterations=10, scan_iterations=3, latency_repeats=5, eval_samples=500, filter_steps=2, synth_steps=5)
QUICK.update(int8_calibration="minmax", qat_steps=3)  # one calibration, not the three "auto" compares
FULL = dict(scan_iterations=None, latency_repeats=15, eval_samples=None, filter_steps=8, synth_steps=200)
FULL.update(int8_calibration="auto")


def mean_std(vals: list[float], scale: float = 100.0) -> str:
    if len(vals) == 1:
        return f"{scale * vals[0]:.2f}"
    return f"{scale * statistics.mean(vals):.2f} ± {scale * statistics.stdev(vals):.2f}"


def latency_fields(base: dict, candidate: dict, reduction: float) -> dict:
    """A run record's latency fields, from the teacher's and the model's latency (`LatencyStats.to_dict()`)."""
    setup = {k: v for k, v in base.items() if k not in ("median_ms", "p25_ms", "p75_ms")}
    ms = {"teacher": base["median_ms"], "student": candidate["median_ms"]}
    return {"latency_reduction": reduction, "latency_ms": ms, "latency_setup": setup}


def int8_timing(comparison: dict, row: str) -> dict:
    """An int8 comparison's `row` (`compound.ROWS`) against the fp32 teacher timed in the same rounds of its runtime:
    the speed-up (median over rounds of the time ratio) and the latency reduction it means (1 - 1/speed-up)."""
    latency, speedup = comparison["latency"], comparison["speedup"][row]
    fields = latency_fields(latency[INT8_ROWS[0]], latency[row], 1 - 1 / speedup)
    return {**fields, "speedup": speedup, "backend": comparison["backend"]}


def runtime(rs: list[dict]) -> str:
    """The runtime runs were timed in when it is not the other rows' torch eager (the int8 rows'), else ''."""
    return ", ".join(sorted({r["backend"] for r in rs if r.get("backend")}))


class Bench:
    def __init__(self, args) -> None:
        self.args = args
        self.teacher_path = Path(args.teacher)
        self.name = self.teacher_path.name
        self.out = Path(args.results) / self.name
        self.runs = self.out / "runs"
        self.cache = Path(args.cache) / self.name
        self.command = args.command

    @functools.cached_property
    def test(self):
        return fmnist.load("test", num_samples=self.args.eval_samples, seed=0)

    @functools.cached_property
    def compressor(self) -> PractiseCompressor:
        return PractiseCompressor.from_pretrained(f"local-dir:{self.teacher_path}", self.config(0.5, 0))

    teacher = property(lambda self: self.compressor.model)
    family = property(lambda self: self.compressor.family)

    def config(self, target: float, seed: int, blocks: list[str] | None = None, **finetune) -> CompressionConfig:
        a = self.args
        finetune = FinetuneConfig(**{"iterations": a.iterations, "batch_size": 64, "checkpoint_every": 0, **finetune})
        scan, latency = ScanConfig(iterations=a.scan_iterations), self.latency(a.latency_repeats)
        return CompressionConfig(
            latency_reduction=target, blocks=blocks, seed=seed, scan=scan, finetune=finetune, latency=latency
        )

    def latency(self, repeats: int, backend: str = "torch") -> LatencyConfig:
        return LatencyConfig(batch_size=64, repeats=repeats, backend=backend)

    def compressor_for(self, config: CompressionConfig) -> PractiseCompressor:
        return PractiseCompressor(self.teacher, config, family=self.family, source_config=self.compressor.source)

    def timed(self, student, config: LatencyConfig):
        return compare_latency(self.teacher, student, input_size=self.compressor.input_size, config=config)

    # ---- cached pieces -------------------------------------------------------------------------------
    def teacher_top1(self) -> float:
        path = self.cache / f"teacher_top1_{len(self.test)}.json"
        return h.cached_json(path, lambda: {"top1": evaluate_top1(self.teacher, self.test, batch_size=256)})["top1"]

    def fractions(self) -> dict[str, float]:
        return h.cached_json(self.cache / "latency_table.json", lambda: self.compressor.latency_table().shares)

    def tiny(self, kind: str, n: int, seed: int) -> TinySet:
        path = self.cache / f"tiny_{kind}_{n}_s{seed}.pt"
        if not path.exists():
            images, labels = h.tiny_set(kind, n, seed, self.teacher, synth_steps=self.args.synth_steps)
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.save({"images": images, **({"labels": labels} if labels is not None else {})}, path)
        d = torch.load(path, weights_only=True)
        images = d["images"]
        return TinySet(images, d.get("labels"), list(range(n)), source=kind, fingerprint=_fingerprint(images))

    # ---- runs ----------------------------------------------------------------------------------------
    def run_path(self, method: str, kind: str, n: int, seed: int, target: float) -> Path:
        return self.runs / f"{method}__{kind}-{n}__s{seed}__t{int(round(100 * target))}.json"

    def order(self, method: str, rows, seed: int):
        if method == "practise" or method in SAME_BLOCKS:
            return rank_blocks(rows, criterion="score")
        if method == "initial":
            return rank_blocks(rows, criterion="initial_error")
        if method.startswith("random-"):
            g = torch.Generator().manual_seed(1000 * seed + int(method.split("-")[1]))
            return [rows[i] for i in torch.randperm(len(rows), generator=g).tolist()]
        if method != "last":
            raise ValueError(method)
        stages = sorted({r.stage for r in rows})
        stacks = [sorted((r for r in rows if r.stage == s), key=lambda r: -r.index) for s in stages]
        out = []
        while any(stacks):
            out += [s.pop(0) for s in stacks if s]
        return out

    def group(self, kind: str, n: int, seed: int, targets: list[float], methods: list[str]) -> None:
        todo = [(m, t) for t in targets for m in methods if not self.run_path(m, kind, n, seed, t).exists()]
        # an int8 anchor is read from its compound run's comparison: that runs first where it is missing
        compound = {(ANCHORS[m], t) for m, t in todo if m in ANCHORS}
        todo += [(m, t) for m, t in sorted(compound - set(todo)) if not self.run_path(m, kind, n, seed, t).exists()]
        if not todo:
            return
        logger.info("== %s-%d seed %d: %d runs to do", kind, n, seed, len(todo))
        tiny = self.tiny(kind, n, seed)
        rows, scan_seconds = None, 0.0
        if any(m != "teacher" and m not in ANCHORS for m, _ in todo):
            comp = self.compressor_for(self.config(0.5, seed))
            comp.config.work_dir = str(self.cache / f"scan_{kind}_{n}_s{seed}")
            start = time.perf_counter()
            rows = comp.scan(tiny, latency_saving=self.fractions())
            scan_seconds = time.perf_counter() - start
        practise_reduction: dict[float, float] = {}
        for method, target in sorted(todo, key=lambda mt: (mt[1], mt[0] in ANCHORS, ALL_METHODS.index(mt[0]))):
            start = time.perf_counter()
            rec = self.one(method, kind, n, seed, target, tiny, rows, practise_reduction)
            rec.setdefault("wall_seconds", time.perf_counter() - start)  # the int8 anchor's: its comparison's
            rec["scan_seconds_shared"] = scan_seconds
            path = self.run_path(method, kind, n, seed, target)
            h.write_json(path, rec)
            numbers = (100 * rec["top1"], 100 * rec["latency_reduction"], rec["wall_seconds"])
            logger.info("%s: top1 %.2f%% latency -%.1f%% (%.0fs)", path.stem, *numbers)

    def one(self, method, kind, n, seed, target, tiny, rows, practise_reduction) -> dict:
        if method in ANCHORS:
            return self.int8_anchor(kind, n, seed, target, method)
        base = COMPOUND[method][2] if method in COMPOUND else method  # a compound run finetunes as its base
        objective = OBJECTIVES.get(base, "features")
        same = method in SAME_BLOCKS or (method == "practise" and self.args.blocks_from)
        cfg = self.config(
            target,
            seed,
            blocks=self.practise_blocks(kind, n, seed, target) if same else None,
            objective=objective,
            recalibrate_norms=method == "practise-bn",
            augmentation="mixup" if base in ("mixup", "joint-mixup") else "none",
            holdout=max(5, n // 10) if method == "holdout" else 0,
        )
        comp = self.compressor_for(cfg)
        dropped: list[str] = []
        ratio = top1_before_finetune = None
        if method == "teacher":
            student = self.teacher
        elif method == "filter":
            student, ratio = self.filter_pruned(tiny, target, seed, practise_reduction)
        else:
            if objective == "ce" and tiny.labels is None:
                raise ValueError(f"{method} needs labels; {kind} has none")
            if cfg.blocks:  # the practise run's blocks (the package checks that the model can drop them)
                by_block = {r.block: r for r in rows}
                chosen = [by_block[c.path] for c in comp.fixed_blocks()]
            elif method in INT8_CHOSEN:
                chosen = self.int8_chosen(comp, rows, tiny, kind, n, seed, COMPOUND[method][0])
            elif method == "rescore":  # re-scored as blocks go (CompressionConfig.rescore=1), then the same finetune
                comp.config = dataclasses.replace(comp.config, rescore=1)
                targets = teacher_features(
                    self.teacher, self.family, tiny.images, batch_size=comp.config.scan.batch_size
                )
                comp.config.work_dir = str(self.cache / f"scan_{kind}_{n}_s{seed}")  # the scan's rows and rescans
                chosen, _ = comp.select_in_order(comp.rescored_order(rows, tiny, targets, self.fractions()))
            else:
                chosen, _ = comp.select_in_order(self.order(method, rows, seed))
            dropped = [r.block for r in chosen]
            student = comp.build_student(chosen)
        if method == "practise":
            # the pruned network with the scan's adaptors, before any finetune: what the finetune recovers from
            top1_before_finetune = evaluate_top1(student, self.test, batch_size=256)
        if method != "teacher":
            run = {"config": cfg.finetune, "accelerator": comp.accelerator, "labels": tiny.labels, "seed": seed}
            mimic_finetune(student, self.teacher, self.family, tiny.images, **run)
            if cfg.finetune.recalibrate_norms:
                recalibrate_norm_stats(student, tiny.images)
            fold_adaptors(student)
            student.eval()
        top1 = self.teacher_top1() if method == "teacher" else evaluate_top1(student, self.test, batch_size=256)
        int8 = None
        if method in COMPOUND:  # timed beside its int8 twin and the teacher's in the int8 runtime only
            int8 = self.int8_comparison(student, top1, tiny, comp, *COMPOUND[method][:2])
            timing = int8_timing(int8, "compressed int8")
        else:
            lat = self.timed(student, cfg.latency)
            timing = latency_fields(lat.base.to_dict(), lat.candidate.to_dict(), lat.reduction)
            if method == "practise":
                practise_reduction[target] = lat.reduction
        macs = [count_macs(m, input_size=comp.input_size) for m in (self.teacher, student)]
        rec = {"teacher": self.name, "method": method, "tiny_set": kind, "num_samples": n, "seed": seed}
        rec.update(latency_target=target, top1=top1, top1_before_finetune=top1_before_finetune)
        rec.update(teacher_top1=self.teacher_top1(), **timing)
        rec.update(macs_reduction=1 - macs[1] / macs[0], params=count_params(student), dropped_blocks=dropped)
        rec.update(filter_ratio=ratio, finetune_iterations=cfg.finetune.iterations, eval_images=len(self.test))
        if int8 is not None:  # the row is the int8 model; its fp32 model's top-1 beside it
            rec.update(top1=int8["top1"]["compressed int8"], top1_fp32=top1, int8=int8)
        return {**rec, "command": self.command, "machine": h.machine()}

    def int8_chosen(self, comp, rows, tiny: TinySet, kind: str, n: int, seed: int, backend: str) -> list:
        """The blocks `--quantize int8` drops: `comp` set up as the product sets itself up for it (the int8 models
        calibrated and timed on the tiny set's first images), every block's cut timed int8 against int8 in `backend`
        (kept in its work dir), the scan's recoverability over that cut, and blocks taken in that order until the
        int8 cut meets the target."""
        latency = self.latency(self.args.latency_repeats, backend=backend)
        comp.config = dataclasses.replace(comp.config, quantize="int8", latency=latency)
        comp.config.work_dir = str(self.cache / f"int8_{backend}_{kind}_{n}_s{seed}")
        comp.time_int8_on(tiny.images)  # what `compress` times the int8 models on
        shares = comp.latency_table().shares
        comp.check_reachable(shares)
        ranked = rank_blocks([dataclasses.replace(r, latency_saving=shares[r.block]) for r in rows], criterion="score")
        chosen, _ = comp.select_in_order(ranked)
        return chosen

    def int8_comparison(
        self,
        student: torch.nn.Module,
        top1: float,
        tiny: TinySet,
        comp: PractiseCompressor,
        backend: str = "onnxruntime",
        aware: bool = False,
    ) -> dict:
        """The teacher and `student` quantized to int8 on the tiny set and the four timed in the same rounds of
        `backend` (`compare_int8`), with each one's top-1 on the test split (`top1`: the student's fp32 one); with
        `aware`, the student's int8 comes from `--qat-steps` of quantization-aware training (`qat.quantize_aware`)."""
        start = time.perf_counter()
        aware_int8 = None
        if aware:
            steps, lr, batch = self.args.qat_steps, self.args.qat_lr, comp.config.finetune.batch_size
            run = {"steps": steps, "lr": lr, "batch_size": batch, "seed": comp.config.seed}
            aware_int8 = quantize_aware(student, self.teacher, self.family, tiny.images, **run)
        calibration = self.args.int8_calibration  # (--quick's names an ONNX Runtime method: OpenVINO's first then)
        calibration = (
            calibration if calibration in ("auto", *INT8_CALIBRATIONS[backend]) else INT8_CALIBRATIONS[backend][0]
        )
        result = compare_int8(
            self.teacher,
            student,
            tiny.images,
            input_size=tuple(tiny.images.shape[1:]),  # the resolution the int8 models are calibrated at
            config=self.latency(self.args.latency_repeats, backend=backend),
            calibration=calibration,
            seed=comp.config.seed,
            compressed_int8=aware_int8,
        )
        result.top1.update({"teacher fp32": self.teacher_top1(), "compressed fp32": top1})
        for row, model in (("teacher int8", result.teacher), ("compressed int8", result.compressed)):
            # an int8 model has no parameters to place the batches by: the run's accelerator does
            module = Int8Module(model, threads=torch.get_num_threads())
            result.top1[row] = evaluate_top1(module, self.test, accelerator=comp.accelerator, batch_size=256, desc=row)
        return {**result.to_dict(), "seconds": time.perf_counter() - start}

    def int8_anchor(self, kind: str, n: int, seed: int, target: float, method: str = "int8") -> dict:
        """The teacher's int8 row `method`, from the comparison of its compound run of this setting (the teacher's
        fp32 and int8 models timed in the same rounds as practise's): nothing is quantized or timed again."""
        source = h.read_json(self.run_path(ANCHORS[method], kind, n, seed, target))
        int8 = source["int8"]
        rec = {"teacher": self.name, "method": method, "tiny_set": kind, "num_samples": n, "seed": seed}
        rec.update(latency_target=target, top1=int8["top1"]["teacher int8"], top1_before_finetune=None)
        rec.update(teacher_top1=source["teacher_top1"], **int8_timing(int8, "teacher int8"))
        rec.update(macs_reduction=0.0, params=count_params(self.teacher), dropped_blocks=[], filter_ratio=None)
        rec.update(finetune_iterations=0, eval_images=source["eval_images"], int8=int8, wall_seconds=int8["seconds"])
        return {**rec, "command": source["command"], "machine": source["machine"]}

    def practise_blocks(self, kind: str, n: int, seed: int, target: float) -> list[str] | None:
        """The blocks the practise run of this setting dropped: the same-blocks methods finetune exactly those
        (with --blocks-from, the practise run of that results folder: then practise itself takes them too)."""
        path = self.run_path("practise", kind, n, seed, target)
        if self.args.blocks_from:
            path = Path(self.args.blocks_from) / self.name / "runs" / path.name
            if not path.exists():
                raise SystemExit(
                    f"--blocks-from {self.args.blocks_from} has no practise run of {kind}-{n} seed {seed} at "
                    f"{100 * target:.0f}%: run that setting there first"
                )
        return h.read_json(path)["dropped_blocks"] if path.exists() else None

    def filter_pruned(self, tiny: TinySet, target: float, seed: int, practise_reduction: dict):
        """L1 filter pruning at the one uniform ratio whose measured latency reduction matches PRACTISE's."""
        goal = practise_reduction.get(target)
        if goal is None:
            path = self.run_path("practise", tiny.source, len(tiny), seed, target)
            goal = h.read_json(path)["latency_reduction"] if path.exists() else target
        prune = self.filter_pruner()
        # latency is not monotonic in the ratio on CPUs (some channel counts hit slower kernels), so bisect,
        # but keep the tried ratio whose measured reduction is closest to the goal
        lo, hi = 0.0, 0.9
        tried: list[tuple[float, float, torch.nn.Module]] = []
        for _ in range(self.args.filter_steps):
            mid = (lo + hi) / 2
            m = prune(mid)
            red = self.timed(m, self.latency(self.args.latency_repeats)).reduction
            logger.info("filter: ratio %.3f -> latency -%.1f%% (goal -%.1f%%)", mid, 100 * red, 100 * goal)
            tried.append((abs(red - goal), mid, m))
            lo, hi = (mid, hi) if red < goal else (lo, mid)
        _, ratio, model = min(tried, key=lambda t: t[0])
        return model, ratio

    def filter_pruner(self):
        """ratio -> the teacher with that uniform share of L1-smallest filters pruned (deterministic), the channels
        of the final feature map kept, so the features can be mimicked."""
        try:
            import torch_pruning as tp
        except ImportError as e:
            raise SystemExit("the filter baseline needs Torch-Pruning: pip install torch-pruning") from e
        x, importance = torch.zeros(2, *self.compressor.input_size), tp.importance.MagnitudeImportance(p=1)

        def prune(ratio: float) -> torch.nn.Module:
            m = copy.deepcopy(self.teacher).requires_grad_(True)
            last = [layer for block in self.family.stages(m)[-1] for layer in self.family.branch_outputs(block)]
            ignored = [self.family.classifier(m), *last]
            tp.pruner.MagnitudePruner(m, x, importance=importance, pruning_ratio=ratio, ignored_layers=ignored).step()
            return m.eval()

        return prune

    def blocks_removed(self, dropped: list[str]) -> torch.nn.Module:
        """The teacher with these blocks simply removed (no adaptors): the structure a block-dropping run has."""
        cands = {c.path: c for c in self.family.candidates(self.teacher)}
        return build_pruned(self.teacher, self.family, [cands[b] for b in dropped], adaptors=False)

    def remeasure(self, repeats: int) -> None:
        """Time the finished runs' architectures against the teacher again, in one quiet pass.

        Latency depends only on structure (dropped blocks, or the filter ratio), not on the finetuned weights,
        so the numbers of runs made while the machine was busy can be replaced by clean ones. A run already
        re-timed is left as it is, and lends its figure to every run of the same architecture (a method
        finetuning practise's blocks takes practise's re-timed latency without timing anything).
        """
        prune = None  # Torch-Pruning is imported only when a filter run needs timing
        recs = {path: h.read_json(path) for path in sorted(self.runs.glob("*.json"))}

        def key(rec: dict) -> tuple:
            return (rec["method"] == "filter", rec.get("filter_ratio"), *sorted(rec["dropped_blocks"]))

        # many runs share an architecture (ce/kd reuse practise's blocks; criteria often agree): time each once
        fields = ("latency_reduction", "latency_ms", "latency_remeasured")
        timed = {key(r): {k: r[k] for k in fields} for r in reversed(recs.values()) if r.get("latency_remeasured")}
        for path, rec in recs.items():
            if rec.get("latency_remeasured"):
                continue
            if rec.get("backend"):  # an int8 row, timed beside its fp32 model in its runtime: rerun it to re-time
                logger.info("%s: timed in %s with its int8 model; rerun it to re-time it", path.name, rec["backend"])
                continue
            if rec["method"] == "filter" and rec.get("filter_ratio") is None:
                logger.warning("%s has no filter_ratio; rerun it to remeasure", path.name)
                continue
            if key(rec) not in timed:
                if rec["method"] == "filter":
                    prune = prune or self.filter_pruner()
                    lat = self.timed(prune(rec["filter_ratio"]), self.latency(repeats))
                else:  # the teacher has no dropped blocks
                    lat = self.timed(self.blocks_removed(rec["dropped_blocks"]), self.latency(repeats))
                ms = {"teacher": lat.base.median_ms, "student": lat.candidate.median_ms}
                at = {"repeats": repeats, "at": time.strftime("%Y-%m-%d %H:%M:%S")}
                timed[key(rec)] = {"latency_reduction": lat.reduction, "latency_ms": ms, "latency_remeasured": at}
            new = timed[key(rec)]
            logger.info("%s: %.1f%% -> %.1f%%", path.name, *(100 * r["latency_reduction"] for r in (rec, new)))
            rec["latency_reduction_during_run"] = rec.get("latency_reduction_during_run", rec["latency_reduction"])
            h.write_json(path, {**rec, **new})

    # ---- report --------------------------------------------------------------------------------------
    def fill_no_recovery(self) -> None:
        """Top-1 of each practise run's blocks simply removed (no adaptors, no finetune): what recovery starts from.

        It depends only on the teacher and the blocks, so it is computed once per set of blocks and cached.
        """
        todo = [p for p in sorted(self.runs.glob("practise__*.json")) if h.read_json(p).get("top1_no_recovery") is None]
        if not todo or h.skipped(self.teacher_path):
            return  # the pages render from the runs as they are
        cache_path = self.cache / f"no_recovery_top1_{len(self.test)}.json"
        cache = h.read_json(cache_path) if cache_path.exists() else {}
        for path in todo:
            rec = h.read_json(path)
            key = ",".join(sorted(rec["dropped_blocks"]))
            if key not in cache:
                cache[key] = evaluate_top1(self.blocks_removed(rec["dropped_blocks"]), self.test, batch_size=256)
                h.write_json(cache_path, cache)
            h.write_json(path, {**rec, "top1_no_recovery": cache[key]})

    def grouped_runs(self) -> tuple[list[dict], dict[tuple, list[dict]], list[tuple]]:
        """The run records, grouped by (tiny set, images, target, method), and the settings in table order."""
        recs = [h.read_json(p) for p in sorted(self.runs.glob("*.json"))]
        groups: dict[tuple, list[dict]] = {}
        for r in recs:
            groups.setdefault((r["tiny_set"], r["num_samples"], r["latency_target"], r["method"]), []).append(r)
        settings = sorted({k[:3] for k in groups}, key=lambda s: (s[0] != "fmnist", -s[1], s[2], s[0]))
        return recs, groups, settings

    def report(self) -> None:
        self.fill_no_recovery()
        recs, groups, settings = self.grouped_runs()
        if not recs:
            return
        lines = [
            f"# Comparison on {self.name}",
            "",
            f"Eval: {recs[0]['eval_images']} Fashion-MNIST test images. Machines the runs were made on (each run's "
            f"own is in its json): {'; '.join(sorted({json.dumps(r['machine']) for r in recs}))}.",
            "",
            "Mean ± std over seeds (n = number of seeds). Latency reduction is measured against the teacher, "
            "alternating A/B in one process, batch 64.",
            "",
        ]
        head = "method | >n | >top-1 (%) | >Δ vs teacher (pts) | >latency reduction (%) | >MACs reduction (%) | >wall s"
        for kind, n, target in settings:
            found = [(m, rs) for m in ALL_METHODS if (rs := groups.get((kind, n, target, m)))]
            lines += [f"## {kind}, {n} images, latency target {100 * target:.0f}%", ""]
            lines += h.table(
                head,
                (
                    [m, len(rs), mean_std([r["top1"] for r in rs])]
                    + [mean_std([r["top1"] - r["teacher_top1"] for r in rs])]
                    + [mean_std([r["latency_reduction"] for r in rs]) + (f" ({runtime(rs)})" if runtime(rs) else "")]
                    + [mean_std([r["macs_reduction"] for r in rs])]
                    + [f"{statistics.mean(r['wall_seconds'] for r in rs):.0f}"]
                    for m, rs in found
                ),
            )
            lines.append("")
        lines += self.int8_section(groups) + self.default_finetune(groups) + self.claims(groups) + self.wall_time()
        discussion = h.HERE / "discussion" / f"{self.name}.md"
        if discussion.exists():
            lines += [discussion.read_text().rstrip(), ""]
        lines += ["Commands that produced these runs:", ""] + [f"- `{c}`" for c in sorted({r["command"] for r in recs})]
        atomic_write_text(self.out / "results.md", "\n".join(lines) + "\n")
        self.plot(recs)
        with contextlib.suppress(ImportError):
            self.int8_plot(recs)
        self.update_readme(groups, settings)
        print("\n".join(lines))

    def headline(self, groups: dict[tuple, list[dict]], settings: list[tuple]) -> list[str]:
        """One table, methods x settings: mean top-1 (± std over seeds) and mean measured latency reduction."""
        head = [f"{kind}, {n} img, target {100 * t:.0f}%" for kind, n, t in settings]
        seeds = {s: sorted({r["seed"] for k, rs in groups.items() if k[:3] == s for r in rs}) for s in settings}

        def cell(rs: list[dict], setting: tuple) -> str:
            if not rs:
                return ""
            top1 = [100 * r["top1"] for r in rs]
            change = f"{-statistics.mean(100 * r['latency_reduction'] for r in rs):+.1f}%"
            if runtime(rs):  # an int8 row: its speed-up over the fp32 teacher in the int8 runtime
                change = f"{statistics.mean(r['speedup'] for r in rs):.2f}x {runtime(rs)}"
            spread = f" ± {statistics.stdev(top1):.2f}" if len(top1) > 1 else ""
            fewer = sorted(r["seed"] for r in rs) if len(rs) < len(seeds[setting]) else None
            only = f" [seed {', '.join(map(str, fewer))} only]" if fewer else ""
            return f"{statistics.mean(top1):.2f}{spread} ({change}){only}"

        # a method with no run in these settings has no row
        ran = [m for m in ALL_METHODS if any(k[3] == m and k[:3] in settings for k in groups)]
        rows = [[m, *(cell(groups.get((*s, m), []), s) for s in settings)] for m in ran]
        int8 = [m for m in INT8_METHODS if m in ran]
        return h.table(" | ".join(["method", *(f">{c}" for c in head)]), rows) + [
            "",
            "Cells: top-1 % on the teacher's test split (mean ± std over seeds) and, in brackets, the measured "
            "latency change against the teacher (CPU, batch 64)"
            + (
                f"; rows {', '.join(int8)}: int8 made from the tiny set (post-training calibration; "
                "`practise+int8-qat`: quantization-aware training), and in brackets the speed-up against the fp32 "
                "teacher in the runtime named, timed in the same rounds as practise's fp32 model"
                if int8
                else ""
            )
            + ". Seeds per column: "
            + "; ".join(f"{col}: {', '.join(map(str, seeds[s]))}" for col, s in zip(head, settings))
            + ".",
        ]

    def int8_section(self, groups: dict[tuple, list[dict]]) -> list[str]:
        """Depth and int8 together: for each compound run, the four models its one comparison timed in the same
        rounds of the int8 runtime (teacher and practise's model, fp32 and int8), with their top-1."""
        runs = sorted(
            (r for k, rs in groups.items() if k[3] in COMPOUND for r in rs),
            key=lambda r: (r["tiny_set"] != "fmnist", -r["num_samples"], r["latency_target"], r["seed"], r["method"]),
        )
        out = [
            "## Depth and int8 together",
            "",
            "Post-training static int8 (`hf_practise.quantize`), calibrated on the tiny set, of the teacher alone "
            "(`int8`: ONNX Runtime, `int8-ov`: OpenVINO with NNCF) and of practise's model (`practise+int8`, "
            "`practise+int8-ov`: practise's blocks and the paper's finetune, then int8; `default+int8`, "
            "`default+int8-ov`: the same blocks and the library's default finetune; `quantize-int8`: what "
            "`--quantize int8` does end to end, its own blocks chosen by each block's cut timed int8 against int8 and "
            "the target met int8 against int8, then the default finetune; `practise+int8-qat`: then "
            "quantization-aware training on the tiny set through NNCF's quantizers, `hf_practise.qat`). The four "
            "models are timed in the same alternating rounds of the int8 runtime (`compound.compare_int8`); the "
            "speed-up is the median over rounds of the fp32 teacher's time over the model's.",
        ]
        for r in runs:
            c, setting = r["int8"], (r["tiny_set"], r["num_samples"], r["latency_target"])
            agree = {row: 100 * c[row.split()[0]]["agreement"] for row in INT8_ROWS if row.endswith("int8")}
            rows = [
                [int8_names(r["method"])[row], f"{c['latency'][row]['median_ms']:.2f}", f"{c['speedup'][row]:.2f}x"]
                + [f"{100 * c['top1'][row]:.2f}", f"{agree[row]:.1f}" if row in agree else None]
                for row in INT8_ROWS
            ]
            setup = c["latency"][INT8_ROWS[0]]
            practise = [p for p in groups.get((*setting, "practise"), []) if p["seed"] == r["seed"]]
            same = practise and practise[0]["dropped_blocks"] == r["dropped_blocks"]
            teacher, model = c["teacher"], c["compressed"]
            out += [
                "",
                f"### {r['tiny_set']}, {r['num_samples']} images, target {100 * r['latency_target']:.0f}%, "
                f"seed {r['seed']}: `{r['method']}`",
                "",
                *h.table(
                    "model | >latency (ms) | >speed-up vs fp32 teacher | >top-1 (%) | "
                    ">top-1 agreement with its fp32 model (%)",
                    rows,
                ),
                "",
                f"- Dropped: {', '.join(r['dropped_blocks'])}"
                + (
                    f" (the practise run's blocks; that run, finetuned alike in torch on {practise[0]['machine']['cpu']}: "
                    f"top-1 {100 * practise[0]['top1']:.2f}%)"
                    if same
                    else ""
                )
                + f". What depth adds once both are int8: {c['depth_speedup_int8']:.2f}x.",
                f"- Calibration ({', '.join(f'{k} {v}' for k, v in model['versions'].items())}): teacher "
                f"{teacher['calibration']}, practise {model['calibration']}, on {model['calibration_images']} images; "
                f"agreement on {model['check_images']} {model['checked_on']} tiny-set images. Ops left in float: "
                f"teacher {', '.join(teacher['float_ops']) or 'none'}, practise {', '.join(model['float_ops']) or 'none'}.",
                f"- Timed: {setup['backend']} {setup.get('backend_version', '')} on {setup['device_name']}, batch "
                f"{setup['batch_size']}, {setup['threads']} threads, {setup['repeats']} rounds; quantizing, timing and "
                f"evaluating the four took {c['seconds']:.0f} s.",
            ]
        return out + [""] if runs else []

    @staticmethod
    def page_settings(settings: list[tuple]) -> list[tuple]:
        """The settings the pages' headline tables show: the parts' own (a deeper `--targets` run is tabled on the
        per-teacher results page only)."""
        standard = {(kind, n, t) for kind, n, _, targets in PARTS.values() for t in targets}
        return [s for s in settings if s in standard]

    def update_readme(self, groups: dict[tuple, list[dict]], settings: list[tuple]) -> None:
        """Rewrite the README's tables between their markers: for the repo's own results folder the headline and
        the default finetune's table; for a folder under it (`results/steps1000/`, a rerun at other finetune
        settings) the default finetune's table between `bench:<teacher>-default-<folder>` markers."""
        results = h.RESULTS.resolve()
        if self.out.parent.resolve() == results:
            h.update_readme_section(self.name, self.headline(groups, self.page_settings(settings)))
            h.update_readme_section(f"{self.name}-default", self.default_finetune_table(groups))
        elif self.out.parent.parent.resolve() == results:
            name = f"{self.name}-default-{self.out.parent.name}"
            h.update_readme_section(name, self.default_finetune_table(groups))

    def wall_time(self) -> list[str]:
        """Where the time went: one row per finished invocation of a part (from timings.jsonl)."""
        log = self.out / "timings.jsonl"
        if not log.exists():
            return []
        rows = []
        for e in (json.loads(line) for line in log.read_text().splitlines() if line.strip()):
            # entries written before a field existed (a results folder kept from an older version) show "?"
            m = e.get("machine")
            where = f"{m.get('gpu') or m.get('cpu')}, {m.get('threads')} threads" if m else "?"
            seeds = ", ".join(map(str, e["seeds"])) if "seeds" in e else "?"
            rows.append([e.get("part", "?"), seeds, f"{e['seconds'] / 60:.1f}", e.get("finished", "?"), where])
            rows[-1].append(f"`{e.get('command', '?')}`")
        return [
            "## Wall time",
            "",
            "Each row is one invocation of a part (scan, every method's finetune, evaluation and latency timing; "
            "runs already on disk are skipped, so a resumed part shows only what it did).",
            "",
            *h.table("part | seeds | >minutes | finished | where | command", rows),
            "",
        ]

    def default_finetune(self, groups: dict[tuple, list[dict]]) -> list[str]:
        """The results page's section on the library's default finetune (see `default_finetune_table`)."""
        table = self.default_finetune_table(groups)
        return table and [
            f"## The default finetune ({DEFAULT_METHOD}) against the paper's mimicking and logit KD",
            "",
            "The same blocks for every method (the practise run's); top-1 loss against the teacher in points, mean over "
            "seeds; *wins*: seeds where the default is higher.",
            "",
            *table,
            "",
        ]

    def default_finetune_table(self, groups: dict[tuple, list[dict]]) -> list[str]:
        """The library's default finetune (DEFAULT_METHOD) against the paper's feature mimicking and logit KD on
        the same blocks: mean loss against the teacher and, per seed, whether the default came out higher."""
        settings = sorted(
            {k[:3] for k in groups if k[3] == DEFAULT_METHOD and k[0] == "fmnist"}, key=lambda s: (-s[1], s[2])
        )
        if not settings:
            return []
        rivals = tuple(m for m in ("practise", "kd") if any(k[3] == m for k in groups))  # those that ran
        rows = []
        for kind, n, t in settings:
            by_seed = {
                m: {r["seed"]: 100 * (r["top1"] - r["teacher_top1"]) for r in groups.get((kind, n, t, m), [])}
                for m in (DEFAULT_METHOD, *rivals)
            }
            mine = by_seed[DEFAULT_METHOD]
            losses = [f"{statistics.mean(v.values()):+.2f}" if v else "n/a" for v in by_seed.values()]
            common = [sorted(set(mine) & set(by_seed[r])) for r in rivals]
            wins = [f"{sum(mine[s] > by_seed[r][s] for s in c)}/{len(c)}" for r, c in zip(rivals, common)]
            rows.append([f"{n} images, {100 * t:.0f}%", ", ".join(map(str, sorted(mine))), *losses, *wins])
        head = ["setting", "seeds", ">default", *(f">{r}" for r in rivals), *(f">wins vs {r}" for r in rivals)]
        return h.table(" | ".join(head), rows)

    def claims(self, groups: dict[tuple, list[dict]]) -> list[str]:
        """The paper's four claims, checked on the runs there are (means over seeds; says which are missing)."""

        def mean(setting, method, key="top1"):
            vals = [r[key] for r in groups.get((*setting, method), []) if r.get(key) is not None]
            return (statistics.mean(vals), len(vals)) if vals else (None, 0)

        def pct(v):
            return "n/a" if v is None else f"{100 * v:.2f}%"

        def by_seed(setting, methods) -> dict[int, float]:
            """seed -> top-1 (mean over `methods`, e.g. the random draws of that seed)."""
            vals: dict[int, list[float]] = {}
            for r in (r for m in methods for r in groups.get((*setting, m), [])):
                vals.setdefault(r["seed"], []).append(r["top1"])
            return {s: statistics.mean(v) for s, v in vals.items()}

        def wins(setting, other: tuple[str, ...]) -> str:
            """'PRACTISE higher in w/k seeds' over the seeds both have."""
            a, b = by_seed(setting, ("practise",)), by_seed(setting, other)
            common = sorted(set(a) & set(b))
            return f"{sum(a[s] > b[s] for s in common)}/{len(common)}"

        def lat(setting, methods) -> str:
            vals = [r["latency_reduction"] for m in methods for r in groups.get((*setting, m), [])]
            return f"-{100 * statistics.mean(vals):.1f}%" if vals else "n/a"

        def holds(ok: bool) -> str:
            return "holds" if ok else "does not hold"

        settings = sorted({k[:3] for k in groups if k[0] == "fmnist"}, key=lambda s: (-s[1], s[2]))
        out = [
            "## The paper's claims, checked here",
            "",
            "Computed by `benchmarks/compare.py --report` from the runs above (means over the seeds present).",
            "",
            "**(a) Block dropping beats filter pruning at equal measured latency.**",
        ]
        for s in settings:
            (p, k), (f, kf) = mean(s, "practise"), mean(s, "filter")
            if p is not None and f is not None:
                lp, lf = (mean(s, m, "latency_reduction")[0] for m in ("practise", "filter"))
                out.append(
                    f"- {s[1]} images, target {100 * s[2]:.0f}%: PRACTISE {pct(p)} at -{100 * lp:.1f}% latency vs "
                    f"filter pruning {pct(f)} at -{100 * lf:.1f}% ({k} vs {kf} seeds; PRACTISE higher in "
                    f"{wins(s, ('filter',))} seeds): {holds(p > f)}."
                )
        out += ["", "**(b) Mimic finetuning beats cross-entropy finetuning on tiny sets** (same blocks, same start)."]
        for s in settings:
            p, c, kd = (mean(s, m)[0] for m in ("practise", "ce", "kd"))
            if p is not None and c is not None:
                out.append(
                    f"- {s[1]} images, target {100 * s[2]:.0f}%: mimic {pct(p)}, cross-entropy {pct(c)}, logit KD "
                    f"{pct(kd)} (mimic above cross-entropy in {wins(s, ('ce',))} seeds, above KD in "
                    f"{wins(s, ('kd',))}): {holds(p > c)}."
                )
        out += [
            "",
            "**(c) Recoverability picks better blocks** than the initial-loss, random and last-block choices "
            "(all then mimic-finetuned alike).",
        ]
        for s in settings:
            p, _ = mean(s, "practise")
            rand = [r["top1"] for m in RANDOM for r in groups.get((*s, m), [])]
            others = {
                "initial loss": (mean(s, "initial")[0], ("initial",)),
                "last block": (mean(s, "last")[0], ("last",)),
                "random (mean of draws)": (statistics.mean(rand) if rand else None, RANDOM),
            }
            present = {name: v for name, v in others.items() if v[0] is not None}
            if p is None or not present:
                continue
            beaten = [name for name, (v, _) in present.items() if p > v]
            verdict = "holds against " + ", ".join(beaten) if beaten else "does not hold"
            out.append(
                f"- {s[1]} images, target {100 * s[2]:.0f}%: PRACTISE {pct(p)} at {lat(s, ('practise',))}; "
                + ", ".join(
                    f"{name} {pct(v)} at {lat(s, ms)} (PRACTISE higher in {wins(s, ms)} seeds)"
                    for name, (v, ms) in present.items()
                )
                + f": {'holds' if len(beaten) == len(present) else verdict}."
            )
        out += [
            "",
            "**(d) Out-of-domain and data-free tiny sets still recover most of the accuracy.** Recovered share = "
            "(top-1 after PRACTISE - top-1 with the same blocks simply removed) / (teacher - simply removed). "
            "'Adaptors only' is the pruned network with the scan's adaptors, before the end-to-end finetune.",
        ]
        for kind in ("digits-ood", "data-free", "fmnist"):
            for s in sorted({k[:3] for k in groups if k[0] == kind and k[2] == 0.5}):
                p, b, z = (mean(s, "practise", key)[0] for key in ("top1", "top1_before_finetune", "top1_no_recovery"))
                if p is None or z is None:
                    continue
                teacher = groups[(*s, "practise")][0]["teacher_top1"]
                share = (p - z) / (teacher - z) if teacher > z else float("nan")
                out.append(
                    f"- {kind}, {s[1]} images, target 50%: blocks simply removed {pct(z)}, adaptors only {pct(b)}, "
                    f"after finetune {pct(p)}, teacher {pct(teacher)}: recovered {100 * share:.0f}% of the gap"
                    + ("" if kind == "fmnist" else f": {holds(share > 0.5)}")
                    + "."
                )
        return out + [""]

    def plot(self, recs: list[dict]) -> None:
        plt = h.pyplot()
        if plt is None:
            return
        fig, ax = plt.subplots(figsize=(7, 4.5))
        n = max(x["num_samples"] for x in recs)
        sel = [r for r in recs if r["tiny_set"] == "fmnist" and r["num_samples"] == n]
        markers = dict(zip(ALL_METHODS, itertools.cycle("o^v<>sDx+P*h")))
        # the random draws share one marker; the int8 rows are timed in another runtime than this axis
        for method in (m for m in ALL_METHODS if m not in RANDOM[1:] and m not in INT8_METHODS):
            rs = [r for r in sel if r["method"] == method or (method == "random-0" and r["method"] in RANDOM)]
            if rs:
                x, y = [100 * r["latency_reduction"] for r in rs], [100 * r["top1"] for r in rs]
                label = "random" if method == "random-0" else method
                ax.scatter(x, y, label=label, marker=markers[method], s=40, alpha=0.8)
        ax.set_xlabel("measured latency reduction (%)")
        ax.set_ylabel("top-1 on the full test split (%)")
        ax.set_title(f"{self.name}: {n} Fashion-MNIST images, every seed and target")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, ncol=2)
        fig.tight_layout()
        fig.savefig(self.out / "top1_vs_latency.png", dpi=120)
        plt.close(fig)

    def int8_plot(self, recs: list[dict]) -> None:
        """Top-1 against speed-up over the fp32 teacher, per runtime, for the largest fmnist tiny set: the four models
        each post-training compound run times (teacher and practise's, fp32 and int8), means over seeds."""
        n = max((r["num_samples"] for r in recs if r["method"] in COMPOUND), default=None)
        sel = [r for r in recs if r["method"] in COMPOUND and not COMPOUND[r["method"]][1] and r["num_samples"] == n]
        sel = [r for r in sel if r["tiny_set"] == "fmnist"]
        # the library's default finetune is what `--quantize int8` runs: its rows alone (on practise's blocks and on
        # the int8-chosen ones) where there are any
        default = [r for r in sel if COMPOUND[r["method"]][2] == DEFAULT_METHOD]
        sel = default or sel
        if not sel:
            return
        import matplotlib.pyplot as plt  # (after `plot`, which set the backend or said it is missing)

        points: dict[tuple, list[tuple[float, float]]] = collections.defaultdict(list)
        for r in sel:
            for row in INT8_ROWS:
                base = "default " if COMPOUND[r["method"]][2] != "practise" else ""
                base = "int8-chosen " if r["method"] in INT8_CHOSEN else base
                who = "teacher" if row.startswith("teacher") else f"{base}{100 * r['latency_target']:.0f}%"
                key = (COMPOUND[r["method"]][0], who, row.split()[1])
                points[key].append((r["int8"]["speedup"][row], 100 * r["int8"]["top1"][row]))
        means = {k: tuple(map(statistics.mean, zip(*xy))) for k, xy in points.items()}  # (speed-up, top-1)
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for backend, color in (("onnxruntime", "tab:blue"), ("openvino", "tab:orange")):
            for (b, who, dtype), (x, y) in sorted(means.items()):
                if b != backend:
                    continue
                ax.scatter([x], [y], color=color, marker="s" if dtype == "int8" else "o", s=40)
                if dtype == "int8" or backend == "onnxruntime":  # (the fp32 models sit alike in both runtimes)
                    ax.annotate(f"{who} {dtype}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
                if dtype == "int8" and (b, who, "fp32") in means:  # each model's fp32 -> int8 step
                    x0, y0 = means[(b, who, "fp32")]
                    ax.plot([x0, x], [y0, y], color=color, alpha=0.3, linewidth=1)
            ax.scatter([], [], color=color, label=backend)
        ax.set_xscale("log")
        ticks = [1, 1.5, 2, 3, 4, 5, 6, 8, 10]
        ax.set_xticks(ticks, labels=[f"{t:g}" for t in ticks])
        ax.set_xlabel("speed-up over the fp32 teacher in the same runtime (x, log scale)")
        ax.set_ylabel("top-1 (%)")
        finetune = "the default finetune" if default else "the paper's finetune"
        ax.set_title(f"Depth and int8, resnet34 on Fashion-MNIST, {n} images, {finetune} (squares: int8)", fontsize=10)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(self.out / "int8_speedup.png", dpi=120)
        plt.close(fig)


def main() -> int:
    p = h.parser(__doc__)
    p.add_argument("--teacher", default=str(h.RESNET34), help="path of a timm local-dir teacher")
    p.add_argument("--parts", nargs="+", default=list(PARTS), choices=list(PARTS))
    p.add_argument("--methods", nargs="+", default=ALL_METHODS, choices=ALL_METHODS)
    p.add_argument("--seeds", nargs="+", type=int, default=None, help="override the seeds of every part")
    deeper = "override the latency targets of every part (fractions, e.g. 0.6 for a deeper cut than the parts')"
    p.add_argument("--targets", nargs="+", type=float, default=None, help=deeper)
    steps = (
        "finetune steps of every method (the library's 1000 halved: the full run fits in about four hours on 2 cores)"
    )
    p.add_argument("--iterations", type=int, default=500, help=steps)
    qat = "quantization-aware steps of practise+int8-qat (AdamW, cosine, the finetune's batch)"
    p.add_argument("--qat-steps", type=int, default=200, help=qat)
    p.add_argument("--qat-lr", type=float, default=1e-5, help="peak rate of those steps")
    h.folders(p, cache=h.CACHE)
    same = (
        "an earlier results folder: practise and the same-blocks methods drop exactly the blocks its practise runs did"
    )
    p.add_argument("--blocks-from", default=None, help=same)
    p.add_argument("--quick", action="store_true", help="smoke test: seed 0, 100 images, 50%% target, few iterations")
    p.add_argument("--report", action="store_true", help="only rewrite the tables and plot from existing runs")
    again = "re-time the finished runs not yet re-timed (REPEATS A/B pairs) on a quiet machine, then report"
    p.add_argument("--remeasure", type=int, default=0, metavar="REPEATS", help=again)
    args = p.parse_args()
    args.command = h.command("compare.py", p, args, paths=("teacher", "results", "cache", "blocks_from"))
    if args.blocks_from and Path(args.blocks_from).resolve() == Path(args.results).resolve():
        p.error("--blocks-from must be another folder than --results")
    if args.targets and not all(0 < t < 1 for t in args.targets):
        p.error(f"--targets are fractions of the teacher's latency in (0, 1), e.g. 0.6; got {args.targets}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    vars(args).update(QUICK if args.quick else FULL)
    if args.quick:
        args.parts, args.seeds = ["fmnist100"], [0]
        args.results = str(h.CACHE / "quick-results") if args.results == str(h.RESULTS) else args.results
    bench = Bench(args)
    if not args.report and h.skipped(bench.teacher_path):
        return 0
    if args.remeasure:
        bench.remeasure(args.remeasure)
    elif not args.report:
        for part in args.parts:
            kind, n, seeds, targets = PARTS[part]
            seeds, targets = args.seeds or seeds, args.targets or targets
            methods = [m for m in args.methods if not (m == "ce" and kind != "fmnist")]
            start = time.perf_counter()
            for seed in seeds:
                bench.group(kind, n, seed, targets, methods)
            bench.out.mkdir(parents=True, exist_ok=True)
            entry = {
                "part": part,
                "seeds": list(seeds),
                "targets": list(targets),
                "seconds": time.perf_counter() - start,
            }
            entry.update(machine=h.machine(), command=bench.command, finished=time.strftime("%Y-%m-%d %H:%M:%S"))
            with (bench.out / "timings.jsonl").open("a") as f:
                f.write(json.dumps(entry) + "\n")
            logger.info("part %s took %.0f s", part, entry["seconds"])
    bench.report()
    return 0


if __name__ == "__main__":
    sys.exit(main())
