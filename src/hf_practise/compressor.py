"""`PractiseCompressor`: the one call that strings the PRACTISE steps together.

load model -> measure per-block latency -> recoverability scan -> choose blocks (checked by measuring the
pruned model) -> mimic finetune with adaptors -> fold adaptors -> measure and evaluate -> save natively.
Each step is also a public function (`scan_blocks`, `mimic_finetune`, `fold_adaptors`, `compare_latency`,
`select_in_order`, ...) for researchers who want to run them alone; the result and its saving live in
`result.py`, the choice of blocks in `selection.py`.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import errno
import functools
import hashlib
import json
import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .adaptors import fold_adaptors, load_adaptor_state
from .backbones import BackboneFamily, get_family
from .checkpoint import claim_work_dir, read_json
from .compound import TIMING_CALIBRATION, Int8Comparison, Int8Module, compare_int8, int8_latency_comparison
from .config import CompressionConfig
from .data import (
    TinySet,
    as_torch_dataset,
    describe_source,
    known_labels,
    load_tiny_set,
    model_transform,
)
from .files import atomic_write_text
from .latency import LatencyComparison, LatencyTable, block_latency_table, compare_latency, count_macs, count_params
from .mimic import evaluate_metrics, mimic_finetune
from .provenance import model_fingerprint, weights_dtype
from .qat import quantize_aware
from .quantize import quantize_int8, require_int8_backend
from .recoverability import ScanRow, build_pruned, rank_blocks, scan_blocks, set_recoverability, teacher_features
from .result import CompressionResult
from .runtimes import require_backend
from .selection import Selection, SelectionCheck, check_reachable, select_in_order
from .training import as_logits, recalibrate_norm_stats

logger = logging.getLogger(__name__)

__all__ = ["PractiseCompressor"]

#: the per-block latency shares a run measured, kept in its work dir so that a resumed run chooses the same blocks
LATENCY_SHARES = "latency_shares.json"
#: the blocks a run chose (and the latency checks that chose them), so that a rerun drops the same ones
SELECTION = "selection.json"
#: tiny-set images the int8 models that selection times are calibrated on (their latency is all that is read)
INT8_TIMING_IMAGES = 32


def _final_check(cfg: CompressionConfig, measured: float, blocks: int) -> list[SelectionCheck]:
    """The final measurement against the target selection measured: a cut short of it by more than the tolerance
    means the timings moved between the two (another process on the machine, frequency scaling), and the result
    says so instead of passing it off as meeting the target."""
    if (
        cfg.num_blocks is not None
        or cfg.blocks is not None
        or cfg.latency_table is not None
        or not math.isfinite(measured)
    ):
        return []
    target = float(cfg.latency_reduction)
    if measured >= target - cfg.latency_tolerance:
        return []
    note = (
        f"the final measurement cuts latency by {100 * measured:.1f}%, short of the {100 * target:.0f}% target that "
        "selection measured for these blocks: the timings on this machine moved between the two (another process "
        "running?). Rerun on a quiet machine, raise --latency-repeats, or pass a latency table from the deployment "
        "device (--latency-table)."
    )
    logger.warning("latency: %s", note)
    return [SelectionCheck("final", blocks, None, measured, reason="timings_moved", note=note)]


def _measured_cut(result: CompressionResult) -> float:
    """The cut a result's target is checked against: fp32 latency, or with int8 the int8 models' latency."""
    return result.latency.reduction if result.int8 is None else 1.0 - 1.0 / result.int8.depth_speedup_int8


@contextlib.contextmanager
def _phase(times: dict[str, float], name: str) -> Iterator[None]:
    start = time.perf_counter()
    logger.info("phase %s: started", name)
    try:
        yield
    finally:
        times[name] = times.get(name, 0.0) + time.perf_counter() - start
        logger.info("phase %s: %.1f s", name, times[name])


def input_paths(model: str | None, *datasets: Any, work_dir: str | Path | None = None) -> dict[str, str]:
    """The local folders a run reads, by what they are: the model folder (`local-dir:PATH` or a folder), the
    dataset folders (loaded from disk by hf_practise), the work dir. An output may not be written over them."""
    paths = {}
    if model:
        folder = Path(model.removeprefix("local-dir:")).expanduser()
        if folder.is_dir():
            paths["the model folder"] = str(folder)
    for i, ds in enumerate(d for d in datasets if getattr(d, "_hf_practise_path", None)):
        paths["the dataset folder" if i == 0 else f"dataset folder {i + 1}"] = ds._hf_practise_path
    if work_dir:
        paths["the work dir"] = str(work_dir)
    return paths


class PractiseCompressor:
    """Compress a pretrained vision backbone by dropping residual blocks, with a tiny set of images.

    Example:
        >>> compressor = PractiseCompressor.from_pretrained("local-dir:teachers/resnet34-fmnist")
        >>> result = compressor.compress(tiny_set, eval_set=test_set)
        >>> result.save_pretrained("resnet34-practise")
    """

    def __init__(
        self,
        model: nn.Module,
        config: CompressionConfig | None = None,
        *,
        family: BackboneFamily | None = None,
        accelerator=None,
        source_config: dict[str, Any] | None = None,
    ) -> None:
        from accelerate import Accelerator

        config = config or CompressionConfig()
        self.family = (family or get_family(model)).with_units(config.units, model)
        if config.latency_table is None:
            require_backend(config.latency.backend)  # before any work: a missing runtime names its extra
        if config.quantize == "int8":
            require_int8_backend(config.latency.backend)
        # "auto" optimizer and learning rate, and the scan's steps, become the family's, so the report and card show
        # what ran
        self.config = dataclasses.replace(
            config, scan=config.scan.resolved(self.family), finetune=config.finetune.resolved(self.family, model)
        )
        self.accelerator = accelerator or Accelerator()
        # with quantize="int8": the images the int8 models that selection times are calibrated on, and the int8 teacher
        self._int8_images: torch.Tensor | None = None
        self._teacher_int8 = None
        self._ranked: list[ScanRow] | None = None  # with `config.rescore`: the drop order re-scoring found
        self._joint: Callable[[Sequence[ScanRow]], float] | None = None  # with `config.set_cost="joint"`
        self.source = dict(source_config or {})
        # the saved model keeps the teacher's dtype (a loader may already have widened it: hub records the file's);
        # the compression runs in float32, as half-precision weights would meet float32 images and adaptors
        dtype = weights_dtype(model.parameters())
        self.source.setdefault("dtype", str(dtype).removeprefix("torch."))
        if dtype != torch.float32:
            logger.info("the teacher's weights are %s: compressing in float32, saving in %s", dtype, dtype)
            model = model.float()
        self.model = model.to(self.accelerator.device).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.source["fingerprint"] = model_fingerprint(self.model)
        self.num_classes: int | None = None  # classes of the teacher's logits, once `check_forward` ran
        if "architecture" not in self.source:
            cfg = getattr(model, "pretrained_cfg", None) or {}
            self.source["architecture"] = cfg.get("architecture")
            self.source.setdefault("pretrained_cfg", {k: v for k, v in cfg.items() if k != "state_dict"})

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str,
        config: CompressionConfig | None = None,
        *,
        pretrained: bool = True,
        revision: str | None = None,
        token: str | bool | None = None,
        trust_remote_code: bool = False,
        accelerator=None,
        **model_kwargs: Any,
    ) -> PractiseCompressor:
        """Load a model from the Hub or disk and wrap it.

        Args:
            name_or_path: a timm name (`resnet50`), `hf-hub:ORG/NAME`, `local-dir:PATH`, a Hub repo id or a
                local folder (timm or transformers checkpoint). Weights are read from safetensors only.
            config: the compression settings.
            pretrained: load pretrained weights (False: random init, for tests).
            revision: a branch, tag or commit of a Hub repo.
            token: a Hub token for private repos.
            trust_remote_code: allow a transformers repo's own code to run (off unless you ask; for eval metric
                modules that are not shipped, `CompressionConfig.trust_remote_code`).
            accelerator: an `accelerate.Accelerator` (one is created if None).
            **model_kwargs: passed to the model constructor.
        """
        from .loading import load_model

        model, source = load_model(
            name_or_path,
            pretrained=pretrained,
            revision=revision,
            token=token,
            trust_remote_code=trust_remote_code,
            **model_kwargs,
        )
        return cls(model, config, accelerator=accelerator, source_config=source)

    # ---- small steps -------------------------------------------------------------------------------------
    @property
    def input_size(self) -> tuple[int, int, int]:
        if self.config.latency.input_size is not None:
            return tuple(self.config.latency.input_size)
        return tuple(self.family.data_config(self.model)["input_size"])

    def eval_transform(self) -> Callable:
        return model_transform(self.family.data_config(self.model), training=False)

    def candidates(self):
        return self.family.candidates(self.model)

    def check_candidates(self) -> None:
        """Fail with the reason when the model has no block PRACTISE could drop."""
        if self.family.feasible(self.model, self.candidates()):
            return
        depths = [len(s) for s in self.family.stages(self.model)]
        keep = self.family.min_blocks_per_stage
        raise ValueError(
            f"There is nothing to drop in this `{type(self.model).__name__}` ({self.family.name}, blocks per stage "
            f"{depths}): every block changes the shape of its input"
            + (f", or its stage is down to the {keep} block(s) a {self.family.name} model keeps" if keep else "")
            + ". PRACTISE removes residual blocks whose input and output shapes match; pick a deeper model."
        )

    def check_forward(self) -> int | None:
        """Run the teacher once on a zero image of its own input size, before any data is read: a model that cannot
        run on its own input (a config that breaks its head, a forward that raises) fails here with the reason.

        Returns:
            The number of classes of its logits (None for a model without a classifier), kept as `num_classes`.
        """
        shape = [1, *self.family.data_config(self.model)["input_size"]]
        p = next(self.model.parameters())
        try:
            with torch.no_grad():
                out = as_logits(self.model(torch.zeros(shape, device=p.device, dtype=p.dtype)))
        except Exception as e:  # noqa: BLE001 - whatever the model raises, it is said before any work
            raise ValueError(
                f"The teacher's forward fails on a {shape} input: {type(e).__name__}: {e}. Check how the model is "
                "built (timm: config.json's `model_args`, e.g. `global_pool`; transformers: config.json) or its code."
            ) from e
        headless = not any(True for _ in self.family.classifier(self.model).parameters())
        self.num_classes = None if headless or out.ndim != 2 else int(out.shape[-1])
        return self.num_classes

    def unpredictable_labels(self, labels: Sequence[int]) -> list[int]:
        """The labels of `labels` that are not a class of the teacher's classifier (none when it has none)."""
        if self.num_classes is None:
            return []
        return sorted({int(y) for y in labels if not 0 <= int(y) < self.num_classes})

    def _labels_note(self, bad: list[int]) -> str:
        shown = ", ".join(map(str, bad[:10])) + (f" and {len(bad) - 10} more" if len(bad) > 10 else "")
        return f"labels {shown} are outside its {self.num_classes} classes (0-{self.num_classes - 1})"

    def check_eval_labels(self, eval_ds: Any) -> None:
        """Refuse an eval set whose labels (read without decoding an image, where its kind allows) include ones the
        classifier cannot predict: top-1 would count each such image wrong, silently."""
        labels = known_labels(eval_ds)
        bad = self.unpredictable_labels(labels) if labels is not None else []
        if bad:
            raise ValueError(
                f"The eval set holds labels the model cannot predict: {self._labels_note(bad)}, so top-1 would count "
                "every such image wrong. Evaluate on a set labelled with the model's own classes (CLI: --eval-split), "
                "or leave the eval set out."
            )

    def _on_main(self, fn: Callable[[], Any]) -> Any:
        """Run `fn` on the main process only and give its result to every process (one measurement, one choice)."""
        if self.accelerator.num_processes == 1:
            return fn()
        from accelerate.utils import broadcast_object_list

        box = [fn() if self.accelerator.is_main_process else None]
        broadcast_object_list(box, from_process=0)
        return box[0]

    def latency_table(self) -> LatencyTable:
        """Each candidate's share of the model's latency, measured once on the main process."""
        cands = self.candidates()
        table = self.config.latency_table
        if table is not None:
            missing = [c.path for c in cands if c.path not in table]
            if missing:
                raise ValueError(
                    f"The latency table has no entry for {missing}; it needs every droppable block "
                    f"({[c.path for c in cands]}) with its share of the model's latency."
                )
            return LatencyTable({c.path: float(table[c.path]) for c in cands})
        # a resumed run reuses the shares its first attempt measured: re-timed, noise could rank the blocks
        # differently, choose other ones and throw the finetune checkpoint away
        cache = Path(self.config.work_dir) / LATENCY_SHARES if self.config.work_dir else None
        key = json.loads(
            json.dumps(
                {
                    "model": self.source["fingerprint"],
                    "latency": dataclasses.asdict(self.config.latency),
                    "quantize": self.config.quantize,
                    "input_size": list(self.input_size),
                    "candidates": [c.path for c in cands],
                }
            )
        )

        def reuse() -> dict[str, float] | None:
            saved = read_json(cache, "The saved latency shares") if cache is not None and cache.exists() else {}
            return {k: float(v) for k, v in saved["shares"].items()} if saved.get("key") == key else None

        reused = self._on_main(reuse)  # decided once: every process then calls the same collectives
        if reused is not None:
            logger.info("latency shares reused from %s", cache)
            return LatencyTable(reused)
        # the shares are checked against the model without every block that may go at once, timed beside them
        removable = self.family.feasible(self.model, cands)

        def measure():  # on the main process only: the copy without the blocks is built where it is timed
            if self.config.quantize == "int8":  # int8 kernels time differently: each block's cut, int8 against int8
                return LatencyTable({c.path: max(0.0, self._time_pruned([c]).reduction) for c in cands})
            without = (build_pruned(self.model, self.family, removable, adaptors=False), [r.path for r in removable])
            return block_latency_table(
                self.model,
                self.family,
                cands,
                input_size=self.input_size,
                config=self.config.latency,
                without=without if removable else None,
            )

        measured = self._on_main(measure)
        if cache is not None:
            self._write_cache(cache, {"key": key, "shares": measured.shares})
        return measured

    def _write_cache(self, path: Path, payload: dict) -> None:
        """Keep `payload` in the work dir (main process; unchanged content is not rewritten). A work dir that cannot
        be written (a read-only mount) only costs the reuse: said, not fatal."""
        if not self.accelerator.is_main_process:
            return
        try:
            atomic_write_text(path, json.dumps(payload, indent=1))
        except OSError as e:
            if e.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
                raise
            logger.warning("cannot write %s (%s): a rerun will measure again", path, e.strerror or e)

    def _selection_key(self, tiny: TinySet, shares: dict[str, float]) -> dict:
        """Everything the choice of blocks depends on: the scan's inputs (model, tiny set, settings), the target, the
        latency settings and the blocks' shares."""
        settings = self.config.to_dict()
        target = ("latency_reduction", "num_blocks", "latency_tolerance", "latency_table")
        return json.loads(
            json.dumps(
                {
                    "model": self.source["fingerprint"],
                    "tiny_set": tiny.fingerprint,
                    "scan": settings["scan"],
                    "seed": self.config.seed,
                    "target": {k: settings[k] for k in target},
                    "latency": settings["latency"],
                    "quantize": settings["quantize"],
                    "input_size": list(self.input_size),
                    "shares": shares,
                    **({"rescore": self.config.rescore} if self.config.rescore else {}),
                    **({"set_cost": self.config.set_cost} if self.config.set_cost != "summed" else {}),
                }
            )
        )

    def _choose(self, rows: Sequence[ScanRow], shares: dict[str, float], saved: dict | None, key: dict) -> Selection:
        """The blocks to drop: `config.blocks` as given, a selection saved in the work dir for the same `key`, or a
        new one (saved there)."""
        by_block = {r.block: r for r in rows}
        if self.config.blocks is not None:
            chosen = [by_block[b] for b in self.config.blocks]
            predicted = sum(shares.get(b, 0.0) for b in self.config.blocks)
            note = "blocks given by CompressionConfig.blocks (CLI: --blocks); no selection ran"
            return Selection(
                chosen, [SelectionCheck("fixed", len(chosen), predicted, None, self.config.blocks, note=note)]
            )
        if saved is not None and all(b in by_block for b in saved["blocks"]):
            logger.info("selection reused from the work dir (%s)", SELECTION)
            checks = [SelectionCheck.from_dict(c) for c in saved["checks"]]
            return Selection([by_block[b] for b in saved["blocks"]], checks)
        selection = self.select(rows)
        if self.config.work_dir:
            checks = [c.to_dict() for c in selection.checks]
            self._write_cache(
                Path(self.config.work_dir) / SELECTION, {"key": key, "blocks": selection.blocks, "checks": checks}
            )
        return selection

    def saved_selection(self, key: dict) -> dict | None:
        """The blocks (and latency checks) a run with the same `key` chose, kept in the work dir: a rerun drops the
        same blocks and reuses their finetune, whatever the timings say this time."""
        path = Path(self.config.work_dir) / SELECTION if self.config.work_dir else None
        if path is None or not path.exists():
            return None
        saved = read_json(path, "The saved block selection")
        return saved if isinstance(saved, dict) and saved.get("key") == key else None

    def fixed_blocks(self) -> list | None:
        """The candidates `config.blocks` names, in its order (None when selection chooses the blocks).

        Raises:
            ValueError: a name that is not a droppable block of this model, with the ones that are.
        """
        if self.config.blocks is None:
            return None
        cands = {c.path: c for c in self.candidates()}
        unknown = [b for b in self.config.blocks if b not in cands]
        if unknown:
            raise ValueError(
                f"`blocks` (CLI: --blocks) names {unknown}, which this model cannot drop; its droppable blocks are "
                f"{list(cands)}."
            )
        return [cands[b] for b in self.config.blocks]

    def scan(
        self,
        tiny: TinySet,
        *,
        targets: torch.Tensor | None = None,
        latency_saving: dict[str, float] | None = None,
        blocks: Sequence | None = None,
        model: nn.Module | None = None,
        cache_tag: str = "",
    ) -> list[ScanRow]:
        """Recoverability of every candidate (or of `blocks` only), split across processes and gathered on all;
        `model`: a pruned copy of the teacher to scan instead (re-scoring), its rows cached under `cache_tag`."""
        from accelerate.utils import gather_object

        model = self.model if model is None else model
        cands = list(blocks) if blocks is not None else self.candidates()
        if targets is None:
            targets = teacher_features(
                self.model, self.family, tiny.images, batch_size=self.config.scan.batch_size
            ).cpu()
        cache = Path(self.config.work_dir) / "scan" / cache_tag if self.config.work_dir else None
        fingerprint = (
            f"{self.source['fingerprint']}-{tiny.fingerprint}-"
            f"{json.dumps(self.config.to_dict()['scan'], sort_keys=True)}-{self.config.seed}"
        )
        from tqdm.auto import tqdm

        with self.accelerator.split_between_processes(cands) as mine:
            bar = tqdm(total=len(mine), desc="recoverability scan", disable=not self.accelerator.is_local_main_process)

            def on_row(row: ScanRow) -> None:
                bar.update(1)
                bar.set_postfix(block=row.block, recov=f"{row.recoverability:.3g}")
                logger.info(
                    "scan: %s initial %.4g -> recoverability %.4g (%.1fs)",
                    row.block,
                    row.initial_error,
                    row.recoverability,
                    row.seconds,
                )

            rows = scan_blocks(
                model,
                self.family,
                list(mine),
                tiny.images,
                targets,
                config=self.config.scan,
                seed=self.config.seed,
                latency_saving=latency_saving,
                cache_dir=cache,
                fingerprint=fingerprint,
                on_row=on_row,
            )
            bar.close()
        if self.accelerator.num_processes > 1:
            rows = gather_object(rows)
        order = {(c.stage, c.index): i for i, c in enumerate(self.family.blocks(model))}  # forward order
        return sorted(rows, key=lambda r: order[(r.stage, r.index)])

    def rescored_order(
        self, rows: Sequence[ScanRow], tiny: TinySet, targets: torch.Tensor, shares: dict[str, float]
    ) -> list[ScanRow]:
        """The candidates in the order re-scoring drops them (`config.rescore` = k): the k best by score, then the
        rest scanned again on the network without the blocks taken so far (the teacher's features still the
        target), the k best of those, and so on until the blocks taken alone would meet the largest target; then
        the rest by their last scores. Each row keeps its first scan's adaptors (where the finetune starts) and
        carries the recoverability it was taken with."""
        family, k = self.family, self.config.rescore
        first = {r.ref: r for r in rows}
        every = family.blocks(self.model)
        order: list[ScanRow] = []
        ranked = rank_blocks(rows)
        while True:
            taken_now = 0
            for row in list(ranked):
                refs = [r.ref for r in order]
                if row.ref in family.feasible(self.model, [*refs, row.ref])[len(refs) :]:
                    order.append(row)
                    ranked.remove(row)
                    taken_now += 1
                    if taken_now == k or self._enough(order, shares):
                        break
            if taken_now == 0 or not ranked or self._enough(order, shares):
                break
            pruned = build_pruned(self.model, family, [r.ref for r in order], adaptors=False)
            taken = {r.ref for r in order}
            left, now = [b for b in every if b not in taken], family.blocks(pruned)
            if len(now) != len(left):
                raise RuntimeError(f"Re-scoring: {family.name} did not remove exactly {[r.block for r in order]}.")
            original = dict(zip(now, left))  # a block of the pruned network -> the same block of the teacher
            waiting = {r.ref for r in ranked}
            key = hashlib.sha256(json.dumps(sorted(r.block for r in order)).encode()).hexdigest()[:12]
            todo = [b for b in now if original[b] in waiting]
            again = self.scan(tiny, targets=targets, blocks=todo, model=pruned, cache_tag=f"rescore-{key}")
            logger.info("re-scored %d candidates without %s", len(again), ", ".join(r.block for r in order))
            ranked = rank_blocks(
                [
                    dataclasses.replace(
                        first[original[r.ref]], recoverability=r.recoverability, initial_error=r.initial_error
                    )
                    for r in again
                ]
            )
        return order + ranked

    def _enough(self, order: Sequence[ScanRow], shares: dict[str, float]) -> bool:
        """Whether the blocks of `order` meet the run's largest target (by count, or by their latency shares)."""
        cfg = self.config
        if cfg.num_blocks is not None:
            return len(order) >= max(cfg.points or [cfg.num_blocks])
        return sum(shares.get(r.block, 0.0) for r in order) >= max(cfg.points or [cfg.latency_reduction])

    def select(self, rows: Sequence[ScanRow], *, criterion: str = "score") -> Selection:
        """Lowest-score blocks until the target holds; a latency target is checked by measuring the pruned model,
        and an overshoot comes back to the set of least total recoverability (or `criterion`'s error) inside it."""
        cost = {"score": "recoverability", "recoverability": "recoverability", "initial_error": "initial_error"}
        attr = cost.get(criterion)
        # with `config.rescore`, the order re-scoring found (`rescored_order`) stands for the score order
        rescored = self._ranked if criterion == "score" else None
        ranked = rescored if rescored is not None else rank_blocks(rows, criterion=criterion)
        return self.select_in_order(ranked, cost=(lambda r: getattr(r, attr)) if attr else None, joint=self._joint)

    def select_in_order(
        self,
        ranked: Sequence[ScanRow],
        *,
        cost: Callable[[ScanRow], float] | None = None,
        joint: Callable[[Sequence[ScanRow]], float] | None = None,
    ) -> Selection:
        """Take blocks from the front of `ranked` until the target holds (see `selection.select_in_order`), less
        the blocks that, with the ones before them, would empty a stage the family must keep."""
        allowed = set(self.family.feasible(self.model, [r.ref for r in ranked]))
        feasible = [r for r in ranked if r.ref in allowed]
        return select_in_order(feasible, config=self.config, measure=self.measure_pruned, cost=cost, joint=joint)

    def joint_cost(self, tiny: TinySet, targets: torch.Tensor) -> Callable[[Sequence[ScanRow]], float]:
        """`rows -> recoverability of their blocks dropped together` on the tiny set (`config.set_cost="joint"`),
        trained on the main process and shared with the others; a set the run's targets meet again is not retrained."""
        known: dict[tuple[str, ...], float] = {}

        def cost(rows: Sequence[ScanRow]) -> float:
            key = tuple(sorted(r.block for r in rows))
            if key in known:
                return known[key]
            refs, scan, seed = [r.ref for r in rows], self.config.scan, self.config.seed

            def train() -> dict:
                return set_recoverability(self.model, self.family, refs, tiny.images, targets, config=scan, seed=seed)

            known[key] = self._on_main(train)["recoverability"]
            logger.info("select: %s dropped together recover to %.4g", ", ".join(r.block for r in rows), known[key])
            return known[key]

        return cost

    def compare_int8(self, student: nn.Module, images: torch.Tensor, eval_ds: Any = None) -> Int8Comparison:
        """The teacher and `student` quantized to int8 on the tiny-set `images` and timed beside their fp32 models
        (main process); with `eval_ds`, the int8 models' top-1 on it (every process)."""
        cfg = self.config

        def compare() -> Int8Comparison:
            aware = None
            if cfg.quantize_aware:  # the compressed model's int8 from training through its quantizers
                aware = quantize_aware(
                    student,
                    self.model,
                    self.family,
                    images,
                    steps=cfg.quantize_aware,
                    lr=cfg.quantize_aware_lr,
                    batch_size=cfg.finetune.batch_size,
                    threads=cfg.latency.threads,
                    seed=cfg.seed,
                )
            return compare_int8(
                self.model,
                student,
                images,
                # the resolution the int8 models were exported and calibrated at: the tiny set's (and the eval set's)
                input_size=tuple(images.shape[1:]),
                config=cfg.latency,
                calibration=cfg.int8_calibration,
                seed=cfg.seed,
                compressed_int8=aware,
            )

        comparison = self._on_main(compare)
        if eval_ds is not None:
            for name, int8 in (("teacher int8", comparison.teacher), ("compressed int8", comparison.compressed)):
                metrics = evaluate_metrics(
                    Int8Module(int8, threads=cfg.latency.threads or torch.get_num_threads()),
                    eval_ds,
                    metrics=["accuracy"],
                    accelerator=self.accelerator,
                    batch_size=cfg.eval_batch_size,
                    desc=f"eval {name}",
                )
                comparison.top1[name] = metrics["accuracy"]
        return comparison

    def time_int8_on(self, images: torch.Tensor) -> None:
        """Calibrate and time the int8 models of `quantize="int8"` on the first `INT8_TIMING_IMAGES` of `images`
        (`compress` passes the tiny set's); an int8 teacher calibrated on other images is quantized again."""
        self._int8_images, self._teacher_int8 = images[:INT8_TIMING_IMAGES], None

    def measure_pruned(self, blocks) -> LatencyComparison:
        """The model without `blocks` (no adaptors) timed against the whole model, on the main process; with
        `quantize="int8"`, both quantized (int8 against int8: the time blocks cost after quantization)."""
        return self._on_main(lambda: self._time_pruned(blocks))

    def _time_pruned(self, blocks) -> LatencyComparison:
        pruned = build_pruned(self.model, self.family, blocks, adaptors=False)
        if self.config.quantize != "int8":
            return compare_latency(self.model, pruned, input_size=self.input_size, config=self.config.latency)
        images = self._int8_images
        if images is None or tuple(images.shape[1:]) != tuple(self.input_size):  # no tiny set yet: random images
            images = torch.randn(8, *self.input_size, generator=torch.Generator().manual_seed(self.config.seed))
        if self._teacher_int8 is None:
            calibration = TIMING_CALIBRATION[self.config.latency.backend]
            self._teacher_int8 = quantize_int8(
                self.model, images, backend=self.config.latency.backend, calibration=calibration, holdout=0
            )
        return int8_latency_comparison(self._teacher_int8, self.model, pruned, images, config=self.config.latency)

    def check_reachable(self, shares: dict[str, float]) -> None:
        """Fail before any training when even dropping every feasible block cannot meet the target."""
        by_share = sorted(self.candidates(), key=lambda r: -shares.get(r.path, 0.0))
        feasible = self.family.feasible(self.model, by_share)
        check_reachable(feasible, shares, config=self.config, measure=self.measure_pruned)

    def build_student(self, chosen: Sequence[ScanRow]) -> nn.Module:
        """The pruned network with adaptors around every hole, initialised as `finetune.adaptor_init` says."""
        student = build_pruned(self.model, self.family, [r.ref for r in chosen])
        if self.config.finetune.adaptor_init == "scan":
            loaded = load_adaptor_state(student, [r.adaptors for r in chosen])
            logger.info("finetune: %d adaptors start from the scan", loaded)
        for p in student.parameters():
            p.requires_grad_(True)
        return student

    # ---- the one call ------------------------------------------------------------------------------------
    def compress(
        self,
        tiny_set: Any,
        eval_set: Any = None,
        *,
        num_samples: int | None = None,
        per_class: int | None = None,
        image_column: str | None = None,
        label_column: str | None = None,
        skip_broken: bool = False,
    ) -> CompressionResult:
        """Run PRACTISE end to end.

        Args:
            tiny_set: the few images to learn from: a `datasets.Dataset`, a torch Dataset/DataLoader, an
                (N, C, H, W) tensor or a `TinySet`. Labels are not needed.
            eval_set: optional labelled set (same kinds) to measure top-1 before and after.
            num_samples: draw this many images (seeded by `config.seed`) from `tiny_set`; all when None.
            per_class: draw this many images of every class instead (a labelled `datasets.Dataset`).
            image_column: the image column of a `datasets.Dataset` (detected when None).
            label_column: the label column of a `datasets.Dataset` (detected when None).
            skip_broken: leave out tiny-set images that cannot be decoded (logged) instead of failing on them.
        """
        cfg, family = self.config, self.family
        times: dict[str, float] = {}
        torch.manual_seed(cfg.seed)
        self.check_candidates()
        fixed = self.fixed_blocks()
        self.check_forward()
        self._note_channels()
        if cfg.work_dir:
            claim_work_dir(cfg.work_dir, model_fingerprint=self.source["fingerprint"], model_name=self._model_name)
        with _phase(times, "data"):
            tiny, eval_ds = self._load_data(
                tiny_set,
                eval_set,
                num_samples=num_samples,
                per_class=per_class,
                image_column=image_column,
                label_column=label_column,
                skip_broken=skip_broken,
            )
        if cfg.quantize == "int8":
            self.time_int8_on(tiny.images)
        with _phase(times, "latency_table"):
            fractions = self.latency_table().shares
            points = cfg.points or [None]
            with self._target(points[-1]):  # the largest target decides what must be reachable
                key = self._selection_key(tiny, fractions)
                # decided on the main process: a rank that skipped selection would miss its collectives
                saved = self._on_main(lambda: self.saved_selection(key)) if fixed is None else None
                if saved is None and fixed is None:  # a saved selection met the target when it was made
                    self.check_reachable(fractions)
        with _phase(times, "teacher_features"):
            targets = teacher_features(self.model, family, tiny.images, batch_size=cfg.scan.batch_size).cpu()
        with _phase(times, "scan"):
            rows = self.scan(tiny, targets=targets, latency_saving=fractions, blocks=fixed)
        self._ranked = None
        self._joint = self.joint_cost(tiny, targets) if cfg.set_cost == "joint" else None
        if cfg.rescore and fixed is None:
            with _phase(times, "rescore"):
                self._ranked = self.rescored_order(rows, tiny, targets, fractions)
        augmented = self._augmented(tiny_set, tiny, image_column, label_column)
        results, by_blocks, teacher_metrics = (
            [],
            {},
            {},
        )  # (what the points share: points by blocks, the teacher's metrics)
        for point in points:
            with self._target(point):
                result = self._point(
                    rows, fractions, fixed, tiny, targets, augmented, eval_ds, dict(times), by_blocks, teacher_metrics
                )
                results.append(self._describe_inputs(result, tiny_set, eval_set))
        if len(results) > 1:
            results[-1].points = results
        return results[-1]

    def _point(
        self, rows, fractions, fixed, tiny, targets, augmented, eval_ds, point_times, by_blocks, teacher_metrics
    ):
        """Select, finetune (once per set of blocks: `by_blocks` keeps the points), measure and evaluate (the teacher once:
        `teacher_metrics` keeps its metrics) for the target `self.config` has."""
        with _phase(point_times, "select"):
            key = self._selection_key(tiny, fractions)
            saved = self._on_main(lambda: self.saved_selection(key)) if fixed is None else None
            chosen, checks = self._choose(rows, fractions, saved, key)
            logger.info("dropping %s", ", ".join(r.block for r in chosen))
        blocks = tuple(sorted(r.block for r in chosen))
        earlier = by_blocks.get(blocks)
        if earlier is not None:
            # a target that chose the blocks of another is that point's model: not finetuned, timed or evaluated
            # again (a second timing of one model would give it two latencies, and a curve two points)
            logger.info("this target chose the blocks of an earlier one: it is that point's model")
            result = copy.copy(earlier)
            result.config, result.phase_seconds, result.points = self.config, point_times, []
            result.selection = list(checks) + _final_check(self.config, _measured_cut(result), len(chosen))
            return result
        with _phase(point_times, "finetune"):
            student, ft = self._finetune(chosen, tiny, targets, augmented)
        result = self._finish(student, chosen, rows, checks, tiny, eval_ds, ft, point_times, teacher_metrics)
        if self.config.quantize == "int8":
            with _phase(point_times, "int8"):
                result.int8 = self.compare_int8(student, tiny.images, eval_ds)
            if result.top1_before is not None:
                fp32 = {"teacher fp32": result.top1_before, "compressed fp32": result.top1_after}
                result.int8.top1.update(fp32)
            result.selection += _final_check(self.config, _measured_cut(result), len(result.dropped))
        by_blocks[blocks] = result
        return result

    @contextlib.contextmanager
    def _target(self, target: float | None) -> Iterator[None]:
        """Within: `self.config` has the one latency target `target` (None: as it is)."""
        config = self.config
        if target is not None:
            self.config = config.for_target(target)
        try:
            yield
        finally:
            self.config = config

    def _describe_inputs(self, result: CompressionResult, tiny_set: Any, eval_set: Any) -> CompressionResult:
        if eval_set is not None:
            result.eval_set = describe_source(eval_set)
        hub_id = getattr(tiny_set, "_hf_practise_hub_id", None)
        if hub_id:
            result.tiny_set.hub_id = hub_id
        work_dir = self.config.work_dir
        result.input_paths = input_paths(self.source.get("name_or_path"), tiny_set, eval_set, work_dir=work_dir)
        return result

    def _note_channels(self) -> None:
        """Say how images are converted when the model does not take 3 channels."""
        data_config = self.family.data_config(self.model)
        channels = data_config["input_size"][0]
        if channels != 3:  # see `data.fit_channels` for the statistics of a grey model
            logger.info(
                "the model takes %d-channel images: images are converted to %s and normalised with mean %s, std %s",
                channels,
                "greyscale (PIL `L`)" if channels == 1 else f"{channels} channels",
                [round(v, 4) for v in data_config["mean"]],
                [round(v, 4) for v in data_config["std"]],
            )

    def _load_data(
        self,
        tiny_set: Any,
        eval_set: Any,
        *,
        num_samples: int | None,
        per_class: int | None,
        image_column: str | None,
        label_column: str | None,
        skip_broken: bool,
    ) -> tuple[TinySet, Any]:
        """The tiny set and the eval set, preprocessed as the model expects; refuses labels a `ce` objective or the
        eval set cannot use."""
        cfg = self.config
        tiny = load_tiny_set(
            tiny_set,
            transform=self.eval_transform(),
            num_samples=num_samples,
            per_class=per_class,
            seed=cfg.seed,
            image_column=image_column,
            label_column=label_column,
            skip_broken=skip_broken,
        )
        if cfg.finetune.objective == "ce" and tiny.labels is None and tiny.label_problem:
            raise ValueError(f"The `ce` objective needs the tiny set's labels as class ids. {tiny.label_problem}")
        if cfg.finetune.objective == "ce" and tiny.labels is None:
            raise ValueError(
                "The `ce` objective needs a label for every tiny-set image, and this tiny set has none (or not "
                "for all). Use `features` (CLI: --objective features; no labels needed) or a labelled set."
            )
        bad = self.unpredictable_labels(tiny.labels.tolist()) if cfg.finetune.objective == "ce" else []
        if bad:
            raise ValueError(
                f"The `ce` objective trains the classifier on the tiny set's labels, but {self._labels_note(bad)}. "
                "Use a tiny set labelled with the model's classes, or a label-free objective (CLI: --objective "
                "features)."
            )
        eval_ds = (
            as_torch_dataset(
                eval_set, transform=self.eval_transform(), image_column=image_column, label_column=label_column
            )
            if eval_set is not None
            else None
        )
        if eval_ds is not None:
            self.check_eval_labels(eval_ds)
        logger.info("tiny set: %d images from %s (fingerprint %s)", len(tiny), tiny.source, tiny.fingerprint)
        return tiny, eval_ds

    def _finetune(self, chosen: Sequence[ScanRow], tiny: TinySet, targets: torch.Tensor, augmented: Any):
        """Build the student without `chosen`, mimic-finetune it (again at a tenth of the rate when the loss turns
        non-finite, `FinetuneConfig.retries` times), fold its adaptors. Returns (student, FinetuneResult)."""
        cfg, acc, family = self.config, self.accelerator, self.family
        feature_targets = targets if cfg.finetune.objective in ("features", "features+kd") else None
        diverged: list[float] = []
        while True:
            student = self.build_student(chosen)
            try:
                ft = mimic_finetune(
                    student,
                    self.model,
                    family,
                    tiny.images,
                    config=cfg.finetune,
                    accelerator=acc,
                    seed=cfg.seed,
                    targets=feature_targets,
                    labels=tiny.labels,
                    augmented=augmented,
                    work_dir=self._finetune_dir(chosen, tiny),
                )
                break
            except FloatingPointError as e:
                if len(diverged) >= cfg.finetune.retries:
                    raise
                # the run is thrown away (its weights are not finite): again from the scan's adaptors, smaller steps
                diverged.append(cfg.finetune.lr)
                lr = cfg.finetune.lr / 10
                logger.warning(
                    "finetune: %s Starting again at lr %g (FinetuneConfig.retries: %d left).",
                    e,
                    lr,
                    cfg.finetune.retries - len(diverged),
                )
                self.config = cfg = dataclasses.replace(cfg, finetune=dataclasses.replace(cfg.finetune, lr=lr))
        ft.diverged_lrs = diverged
        student = acc.unwrap_model(student)
        acc.free_memory()
        if cfg.finetune.recalibrate_norms:
            n = recalibrate_norm_stats(student, tiny.images, batch_size=cfg.finetune.batch_size)
            logger.info("re-estimated the statistics of %d BatchNorm layers on the tiny set", n)
        fold_adaptors(student)
        student.eval()
        for p in student.parameters():
            p.requires_grad_(False)
        self._check_outputs(student, tiny)
        return student, ft

    @property
    def _model_name(self) -> str | None:
        return self.source.get("hub_id") or self.source.get("name_or_path") or self.source.get("architecture")

    def _check_outputs(self, student: nn.Module, tiny: TinySet) -> None:
        """The compressed model's logits on a few tiny-set images must be finite: weights can be finite and the
        outputs still overflow after a last diverging step."""
        device = next(student.parameters()).device
        with torch.no_grad():
            out = as_logits(student(tiny.images[: self.config.finetune.batch_size].to(device)))
        if not torch.isfinite(out).all():
            raise FloatingPointError(
                "The compressed model's outputs are NaN/inf on the tiny set: the finetune diverged. Lower "
                f"`finetune.lr` (CLI: --lr; now {self.config.finetune.lr}); nothing was saved."
            )

    def _finetune_dir(self, chosen: Sequence[ScanRow], tiny: TinySet) -> Path | None:
        """A checkpoint folder per (model, blocks, finetune settings, data, and the scan settings when the finetune
        starts from the scan's adaptors), so a resumed run never picks up another's."""
        if not self.config.work_dir:
            return None
        settings = self.config.to_dict()
        key = json.dumps(
            [
                self.source["fingerprint"],
                sorted(r.block for r in chosen),
                settings["finetune"],
                self.config.seed,
                tiny.fingerprint,
                # the adaptors it starts from were trained by the scan: other scan settings, another start
                *([settings["scan"]] if self.config.finetune.adaptor_init == "scan" else []),
            ],
            sort_keys=True,
        )
        return Path(self.config.work_dir) / f"finetune-{hashlib.sha256(key.encode()).hexdigest()[:12]}"

    def _augmented(self, source: Any, tiny: TinySet, image_column: str | None, label_column: str | None):
        if self.config.finetune.augmentation != "timm":
            return None  # none, or flips / crops / mixup of the preprocessed batch (done by the finetune loop)
        if isinstance(source, (torch.Tensor, TinySet)):
            raise ValueError(
                "`finetune.augmentation='timm'` needs the tiny set's original images (a `datasets.Dataset` or a "
                "torch Dataset of PIL images), not preprocessed tensors; pass those, or use augmentation='none'."
            )
        train_tf = model_transform(self.family.data_config(self.model), training=True)
        ds = as_torch_dataset(source, transform=train_tf, image_column=image_column, label_column=label_column)
        return torch.utils.data.Subset(ds, tiny.indices)

    def _finish(self, student, chosen, rows, checks, tiny, eval_ds, ft, times, teacher_metrics) -> CompressionResult:
        cfg, acc, family = self.config, self.accelerator, self.family
        with _phase(times, "measure"):
            latency = self._on_main(
                lambda: compare_latency(self.model, student, input_size=self.input_size, config=cfg.latency)
            )
            macs_before = count_macs(self.model, input_size=self.input_size)
            macs_after = count_macs(student, input_size=self.input_size)
        # with int8 the target is a cut of int8 latency, checked once the int8 models are timed (`_point`)
        checks = list(checks) + ([] if cfg.quantize == "int8" else _final_check(cfg, latency.reduction, len(chosen)))
        top1_before = top1_after = None
        metrics_before: dict[str, float] = {}
        metrics_after: dict[str, float] = {}
        if eval_ds is not None:
            with _phase(times, "evaluate"):
                evaluate = functools.partial(
                    evaluate_metrics,
                    metrics=cfg.eval_metrics,
                    accelerator=acc,
                    batch_size=cfg.eval_batch_size,
                    trust_remote_code=cfg.trust_remote_code,
                )
                if not teacher_metrics:  # the first point of the run: the teacher is the same for the others
                    teacher_metrics.update(evaluate(self.model, eval_ds, desc="eval teacher"))
                metrics_before = dict(teacher_metrics)
                metrics_after = evaluate(student, eval_ds, desc="eval compressed")
                top1_before, top1_after = metrics_before["accuracy"], metrics_after["accuracy"]
        result = CompressionResult(
            model=student,
            family=family,
            config=cfg,
            source=self.source,
            dropped=list(chosen),
            scan=list(rows),
            latency=latency,
            macs_before=macs_before,
            macs_after=macs_after,
            params_before=count_params(self.model),
            params_after=count_params(student),
            depths_before=family.architecture_summary(self.model)["depths"],
            depths_after=family.architecture_summary(student)["depths"],
            tiny_set=tiny.info(cfg.seed),
            phase_seconds=times,
            top1_before=top1_before,
            top1_after=top1_after,
            metrics_before=metrics_before,
            metrics_after=metrics_after,
            finetune=ft,
            selection=checks,
            check_images=tiny.images[:16].detach().cpu().clone(),
        )
        if not math.isfinite(latency.reduction):
            logger.warning("latency reduction is not finite; check the latency settings")
        return result
