"""`PractiseCompressor`: the one call that strings the PRACTISE steps together.

load model -> measure per-block latency -> recoverability scan -> choose blocks (checked by measuring the
pruned model) -> mimic finetune with adaptors -> fold adaptors -> measure and evaluate -> save natively.
Each step is also a public function (`scan_blocks`, `mimic_finetune`, `fold_adaptors`, `compare_latency`, ...)
for researchers who want to run them alone.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from .adaptors import fold_adaptors, load_adaptor_state
from .backbones import BackboneFamily, get_family
from .config import CompressionConfig
from .data import TinySet, as_torch_dataset, describe_indices, describe_source, load_tiny_set, model_transform
from .latency import LatencyComparison, block_latency_table, compare_latency, count_macs, count_params
from .mimic import FinetuneResult, evaluate_top1, mimic_finetune
from .recoverability import ScanRow, build_pruned, rank_blocks, scan_blocks, teacher_features

logger = logging.getLogger(__name__)

__all__ = ["PractiseCompressor", "CompressionResult", "save_directory_atomically"]

REPORT_FILE = "practise_report.json"


@contextlib.contextmanager
def _phase(times: dict[str, float], name: str) -> Iterator[None]:
    start = time.perf_counter()
    logger.info("phase %s: started", name)
    try:
        yield
    finally:
        times[name] = times.get(name, 0.0) + time.perf_counter() - start
        logger.info("phase %s: %.1f s", name, times[name])


def save_directory_atomically(
    save_directory: str | Path, write: Callable[[Path], None], *, overwrite: bool = False
) -> Path:
    """Run `write(tmp_dir)` and move the result to `save_directory` only once it is complete.

    Raises:
        FileExistsError: `save_directory` exists, is not empty, and `overwrite` is False.
    """
    target = Path(save_directory)
    if target.exists() and (not target.is_dir() or any(target.iterdir())) and not overwrite:
        raise FileExistsError(
            f"Output directory `{target}` exists and is not empty; choose another one or pass `overwrite=True` "
            "(CLI: --overwrite)."
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        write(tmp)
        if target.exists():
            old = target.with_name(f".{target.name}.old-{time.time_ns()}")
            target.rename(old)
            tmp.rename(target)
            shutil.rmtree(old) if old.is_dir() else old.unlink()
        else:
            tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


@dataclass
class CompressionResult:
    """What `PractiseCompressor.compress` returns: the compressed model and every number about it."""

    model: nn.Module  # the block-dropped, finetuned network with adaptors folded in
    family: BackboneFamily
    config: CompressionConfig
    source: dict[str, Any]  # the teacher's config (architecture, pretrained_cfg, name)
    dropped: list[ScanRow]  # the dropped blocks, in the order they were chosen
    scan: list[ScanRow]  # every candidate's scan row, in forward order
    latency: LatencyComparison  # teacher vs compressed, measured alternately
    macs_before: int
    macs_after: int
    params_before: int
    params_after: int
    depths_before: list[int]
    depths_after: list[int]
    tiny_set: dict[str, Any]  # source, size, seed, fingerprint, indices hash
    phase_seconds: dict[str, float] = field(default_factory=dict)
    top1_before: float | None = None
    top1_after: float | None = None
    finetune: FinetuneResult | None = None
    selection: list[dict[str, Any]] = field(default_factory=list)  # latency checks made while choosing
    eval_set: dict[str, Any] | None = None  # name, split, size (and Hub id) of the data top-1 was measured on
    command: str | None = None  # the command line that produced this result, for the model card
    saved_to: Path | None = None  # where `save_pretrained` last wrote it

    @property
    def latency_reduction(self) -> float:
        return self.latency.reduction

    def to_dict(self) -> dict[str, Any]:
        return {
            "family": self.family.name,
            "source": {k: v for k, v in self.source.items() if k in ("name_or_path", "architecture")},
            "dropped_blocks": [r.block for r in self.dropped],
            "depths_before": self.depths_before,
            "depths_after": self.depths_after,
            "scan": [r.to_dict() for r in self.scan],
            "latency": self.latency.to_dict(),
            "latency_reduction": self.latency.reduction,
            "macs_before": self.macs_before,
            "macs_after": self.macs_after,
            "params_before": self.params_before,
            "params_after": self.params_after,
            "top1_before": self.top1_before,
            "top1_after": self.top1_after,
            "tiny_set": self.tiny_set,
            "phase_seconds": self.phase_seconds,
            "finetune_losses": self.finetune.losses if self.finetune else [],
            "selection": self.selection,
            "eval_set": self.eval_set,
            "command": self.command,
            "config": self.config.to_dict(),
        }

    def scan_table(self) -> str:
        """The scan as a markdown table, in forward order."""
        chosen = {r.block: i + 1 for i, r in enumerate(self.dropped)}
        lines = [
            "| block | initial error | recoverability | latency saving | score | dropped | seconds |",
            "| --- | ---: | ---: | ---: | ---: | :---: | ---: |",
        ]
        for r in self.scan:
            mark = f"#{chosen[r.block]}" if r.block in chosen else ""
            lines.append(
                f"| {r.block} | {r.initial_error:.4g} | {r.recoverability:.4g} | {100 * r.latency_saving:.1f}% "
                f"| {r.score:.4g} | {mark} | {r.seconds:.1f} |"
            )
        return "\n".join(lines)

    def summary(self) -> str:
        """Before/after numbers as a markdown table."""
        lat = self.latency

        def top1(v: float | None) -> str:
            return "-" if v is None else f"{100 * v:.2f}%"

        rows = [
            "| | teacher | compressed | change |",
            "| --- | ---: | ---: | ---: |",
            f"| latency (ms / batch {lat.base.batch_size}) | {lat.base.median_ms:.2f} | {lat.candidate.median_ms:.2f} "
            f"| -{100 * lat.reduction:.1f}% |",
            f"| MACs / image | {self.macs_before / 1e6:.1f}M | {self.macs_after / 1e6:.1f}M "
            f"| -{100 * (1 - self.macs_after / self.macs_before):.1f}% |",
            f"| params | {self.params_before / 1e6:.2f}M | {self.params_after / 1e6:.2f}M "
            f"| -{100 * (1 - self.params_after / self.params_before):.1f}% |",
            f"| blocks per stage | {self.depths_before} | {self.depths_after} | -{len(self.dropped)} |",
            f"| top-1 | {top1(self.top1_before)} | {top1(self.top1_after)} | "
            + (
                f"{100 * (self.top1_after - self.top1_before):+.2f} pts |"
                if self.top1_before is not None and self.top1_after is not None
                else "- |"
            ),
        ]
        device = (
            f"{lat.base.device} ({lat.base.device_name}), {lat.base.threads} threads, input {list(lat.base.input_size)}"
        )
        return "\n".join(rows) + f"\n\nLatency measured on {device}, {lat.base.dtype}, torch {lat.base.torch_version}."

    def save_pretrained(
        self, save_directory: str | Path, *, overwrite: bool = False, repo_id: str | None = None
    ) -> Path:
        """Write the compressed model so the family's own library reloads it, with its model card (README.md and
        plots) and `practise_report.json`. The folder is written to a temporary sibling and renamed when complete.

        Args:
            save_directory: the folder to write; it must not exist or be empty unless `overwrite`.
            overwrite: replace a non-empty folder.
            repo_id: the Hub repository the card's load snippet should name (a local path otherwise).
        """

        def write(tmp: Path) -> None:
            self.family.save_pretrained(self.model, tmp, source_config=self.source)
            (tmp / REPORT_FILE).write_text(json.dumps(self.to_dict(), indent=2, default=str))
            name = repo_id.split("/")[-1] if repo_id else Path(save_directory).name
            self.model_card(repo_id=repo_id, directory=tmp, name=name).save(tmp / "README.md")

        path = save_directory_atomically(save_directory, write, overwrite=overwrite)
        self.saved_to = path
        logger.info("saved the compressed model to %s", path)
        return path

    def model_card(self, *, repo_id: str | None = None, directory: Path | None = None, name: str | None = None):
        """The model card (`huggingface_hub.ModelCard`); its plots are written into `directory` when given."""
        from .card import render_model_card, save_plots

        plots = save_plots(self, directory) if directory is not None else {}
        return render_model_card(self, repo_id=repo_id, name=name, plots=plots)

    def push_to_hub(
        self,
        repo_id: str,
        *,
        private: bool | None = None,
        token: str | None = None,
        revision: str | None = None,
        commit_message: str = "Upload model compressed with hf_practise",
    ) -> str:
        """Upload exactly the folder `save_pretrained` wrote (saving to a temporary folder first if needed).

        Returns the URL of the commit. A failed upload leaves the local folder in place and says how to retry.
        """
        from huggingface_hub import HfApi

        folder = self.saved_to
        if folder is None or not folder.exists():
            folder = Path(tempfile.mkdtemp(prefix="hf_practise-")) / repo_id.split("/")[-1]
            self.save_pretrained(folder, repo_id=repo_id)
        api = HfApi(token=token)
        try:
            api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
            info = api.upload_folder(
                repo_id=repo_id,
                folder_path=str(folder),
                commit_message=commit_message,
                revision=revision,
                repo_type="model",
            )
        except Exception as e:
            raise RuntimeError(
                f"Uploading {folder} to {repo_id} failed: {e}. The compressed model is saved in {folder}; retry with "
                f"`huggingface-cli upload {repo_id} {folder}` or `result.push_to_hub({repo_id!r})`."
            ) from e
        logger.info("pushed %s to %s", folder, repo_id)
        return str(getattr(info, "commit_url", info))


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

        self.family = family or get_family(model)
        config = config or CompressionConfig()
        # "auto" optimizer and learning rate become the family's, so the report and card show what ran
        self.config = dataclasses.replace(config, finetune=config.finetune.resolved(self.family))
        self.accelerator = accelerator or Accelerator()
        self.model = model.to(self.accelerator.device).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.source = dict(source_config or {})
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
            trust_remote_code: allow a transformers repo's own code to run (off unless you ask).
            accelerator: an `accelerate.Accelerator` (one is created if None).
            **model_kwargs: passed to the model constructor.
        """
        from .hub import load_model

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

    def _on_main(self, fn: Callable[[], Any]) -> Any:
        """Run `fn` on the main process only and give its result to every process (one measurement, one choice)."""
        if self.accelerator.num_processes == 1:
            return fn()
        from accelerate.utils import broadcast_object_list

        box = [fn() if self.accelerator.is_main_process else None]
        broadcast_object_list(box, from_process=0)
        return box[0]

    def latency_table(self) -> tuple[dict[str, float], Any]:
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
            return {c.path: float(table[c.path]) for c in cands}, None
        return self._on_main(
            lambda: block_latency_table(
                self.model, self.family, cands, input_size=self.input_size, config=self.config.latency
            )
        )

    def scan(
        self, tiny: TinySet, *, targets: torch.Tensor | None = None, latency_saving: dict[str, float] | None = None
    ) -> list[ScanRow]:
        """Recoverability of every candidate, split across processes and gathered on all of them."""
        from accelerate.utils import gather_object

        cands = self.candidates()
        if targets is None:
            targets = teacher_features(
                self.model, self.family, tiny.images, batch_size=self.config.scan.batch_size
            ).cpu()
        cache = Path(self.config.work_dir) / "scan" if self.config.work_dir else None
        fingerprint = (
            f"{tiny.fingerprint}-{json.dumps(self.config.to_dict()['scan'], sort_keys=True)}-{self.config.seed}"
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
                self.model,
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
        order = {(c.stage, c.index): i for i, c in enumerate(cands)}
        return sorted(rows, key=lambda r: order[(r.stage, r.index)])

    def select(self, rows: Sequence[ScanRow], *, criterion: str = "score") -> tuple[list[ScanRow], list[dict]]:
        """Lowest-score blocks until the target holds; a latency target is checked by measuring the pruned model."""
        ranked = rank_blocks(rows, criterion=criterion)
        return self.select_in_order(ranked)

    def select_in_order(self, ranked: Sequence[ScanRow]) -> tuple[list[ScanRow], list[dict]]:
        """Take blocks from the front of `ranked` until the target holds (see `select`)."""
        # less the blocks that, with the ones before them, would empty a stage the family must keep
        allowed = set(self.family.feasible(self.model, [r.ref for r in ranked]))
        ranked = [r for r in ranked if r.ref in allowed]
        cfg = self.config
        if cfg.num_blocks is not None:
            if cfg.num_blocks > len(ranked):
                raise ValueError(
                    f"Asked to drop {cfg.num_blocks} blocks but the model has only {len(ranked)} droppable ones; "
                    f"use at most {len(ranked)}."
                )
            return ranked[: cfg.num_blocks], []
        target = float(cfg.latency_reduction)
        predicted, k = 0.0, 0
        while k < len(ranked) and predicted < target:
            predicted += ranked[k].latency_saving
            k += 1
        checks: list[dict] = []
        if cfg.latency_table is not None:
            # the user's table was measured on the deployment device: trust it rather than timing locally
            if predicted < target:
                raise ValueError(
                    f"Latency target {100 * target:.1f}% cannot be reached: by the given latency table, dropping all "
                    f"{len(ranked)} droppable blocks saves {100 * predicted:.1f}%. Use a target of at most {predicted:.2f}."
                )
            return ranked[:k], [{"blocks": k, "predicted": predicted, "measured": None}]
        while True:
            chosen = ranked[:k]
            measured = self.measure_pruned([r.ref for r in chosen])
            checks.append({"blocks": len(chosen), "predicted": predicted, "measured": measured.reduction})
            logger.info(
                "select: %d blocks, predicted %.1f%%, measured %.1f%%", k, 100 * predicted, 100 * measured.reduction
            )
            if measured.reduction >= target:
                return chosen, checks
            if k == len(ranked):
                raise ValueError(
                    f"Latency target {100 * target:.1f}% cannot be reached: dropping all {k} droppable blocks saves "
                    f"{100 * measured.reduction:.1f}% (measured on {measured.base.device}). Use a target of at most "
                    f"{measured.reduction:.2f}, or --num-blocks."
                )
            predicted += ranked[k].latency_saving
            k += 1

    def measure_pruned(self, blocks) -> LatencyComparison:
        pruned = build_pruned(self.model, self.family, blocks, adaptors=False)
        return self._on_main(
            lambda: compare_latency(self.model, pruned, input_size=self.input_size, config=self.config.latency)
        )

    def check_reachable(self, fractions: dict[str, float]) -> None:
        """Fail before any training when even dropping every candidate cannot meet the latency target."""
        cfg = self.config
        if cfg.num_blocks is not None:
            n = len(self.family.feasible(self.model, self.candidates()))
            if cfg.num_blocks > n:
                raise ValueError(
                    f"Asked to drop {cfg.num_blocks} blocks but the model has only {n} droppable ones; use at most {n}."
                )
            return
        if sum(fractions.values()) >= cfg.latency_reduction or cfg.latency_table is not None:
            return
        most = self.family.feasible(self.model, self.candidates())
        measured = self.measure_pruned(most)
        if measured.reduction < cfg.latency_reduction:
            raise ValueError(
                f"Latency target {100 * cfg.latency_reduction:.1f}% cannot be reached: dropping all "
                f"{len(most)} droppable blocks saves {100 * measured.reduction:.1f}% (measured on "
                f"{measured.base.device}). Use a target of at most {measured.reduction:.2f}, or --num-blocks."
            )

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
        """
        cfg, acc, family = self.config, self.accelerator, self.family
        times: dict[str, float] = {}
        torch.manual_seed(cfg.seed)
        with _phase(times, "data"):
            tiny = load_tiny_set(
                tiny_set,
                transform=self.eval_transform(),
                num_samples=num_samples,
                per_class=per_class,
                seed=cfg.seed,
                image_column=image_column,
                label_column=label_column,
            )
            eval_ds = (
                as_torch_dataset(
                    eval_set, transform=self.eval_transform(), image_column=image_column, label_column=label_column
                )
                if eval_set is not None
                else None
            )
            logger.info("tiny set: %d images from %s (fingerprint %s)", len(tiny), tiny.source, tiny.fingerprint)
        with _phase(times, "latency_table"):
            fractions, _ = self.latency_table()
            self.check_reachable(fractions)
        with _phase(times, "teacher_features"):
            targets = teacher_features(self.model, family, tiny.images, batch_size=cfg.scan.batch_size).cpu()
        with _phase(times, "scan"):
            rows = self.scan(tiny, targets=targets, latency_saving=fractions)
        with _phase(times, "select"):
            chosen, checks = self.select(rows)
            logger.info("dropping %s", ", ".join(r.block for r in chosen))
        with _phase(times, "finetune"):
            student = self.build_student(chosen)
            ft = mimic_finetune(
                student,
                self.model,
                family,
                tiny.images,
                config=cfg.finetune,
                accelerator=acc,
                seed=cfg.seed,
                targets=targets if cfg.finetune.objective == "features" else None,
                labels=tiny.labels,
                augmented=self._augmented(tiny_set, tiny, image_column, label_column),
                work_dir=self._finetune_dir(chosen, tiny),
            )
            student = acc.unwrap_model(student)
            acc.free_memory()
            fold_adaptors(student)
            student.eval()
            for p in student.parameters():
                p.requires_grad_(False)
        result = self._finish(student, chosen, rows, checks, tiny, eval_ds, ft, times)
        if eval_set is not None:
            result.eval_set = describe_source(eval_set)
        hub_id = getattr(tiny_set, "_hf_practise_hub_id", None)
        if hub_id:
            result.tiny_set["hub_id"] = hub_id
        return result

    def _finetune_dir(self, chosen: Sequence[ScanRow], tiny: TinySet) -> Path | None:
        """A checkpoint folder per (blocks, finetune settings, data), so a resumed run never picks up another's."""
        if not self.config.work_dir:
            return None
        key = json.dumps(
            [sorted(r.block for r in chosen), self.config.to_dict()["finetune"], self.config.seed, tiny.fingerprint],
            sort_keys=True,
        )
        return Path(self.config.work_dir) / f"finetune-{hashlib.sha256(key.encode()).hexdigest()[:12]}"

    def _augmented(self, source: Any, tiny: TinySet, image_column: str | None, label_column: str | None):
        if self.config.finetune.augmentation == "none":
            return None
        if isinstance(source, (torch.Tensor, TinySet)):
            raise ValueError(
                "`finetune.augmentation='timm'` needs the tiny set's original images (a `datasets.Dataset` or a "
                "torch Dataset of PIL images), not preprocessed tensors; pass those, or use augmentation='none'."
            )
        train_tf = model_transform(self.family.data_config(self.model), training=True)
        ds = as_torch_dataset(source, transform=train_tf, image_column=image_column, label_column=label_column)
        return torch.utils.data.Subset(ds, tiny.indices)

    def _finish(self, student, chosen, rows, checks, tiny, eval_ds, ft, times) -> CompressionResult:
        cfg, acc, family = self.config, self.accelerator, self.family
        with _phase(times, "measure"):
            latency = self._on_main(
                lambda: compare_latency(self.model, student, input_size=self.input_size, config=cfg.latency)
            )
            macs_before = count_macs(self.model, input_size=self.input_size)
            macs_after = count_macs(student, input_size=self.input_size)
        top1_before = top1_after = None
        if eval_ds is not None:
            with _phase(times, "evaluate"):
                top1_before = evaluate_top1(
                    self.model, eval_ds, accelerator=acc, batch_size=cfg.eval_batch_size, desc="eval teacher"
                )
                top1_after = evaluate_top1(
                    student, eval_ds, accelerator=acc, batch_size=cfg.eval_batch_size, desc="eval compressed"
                )
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
            tiny_set={
                "source": tiny.source,
                "num_samples": len(tiny),
                "seed": cfg.seed,
                "fingerprint": tiny.fingerprint,
                "indices_sha256": describe_indices(tiny.indices),
                "labelled": tiny.labels is not None,
            },
            phase_seconds=times,
            top1_before=top1_before,
            top1_after=top1_after,
            finetune=ft,
            selection=checks,
        )
        if not math.isfinite(latency.reduction):
            logger.warning("latency reduction is not finite; check the latency settings")
        return result
