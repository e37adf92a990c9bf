"""`CompressionResult`: the compressed model, every number measured about it, and how to save, push and show it.

`save_pretrained` writes the family's native checkpoint (so timm / transformers reload it without hf_practise),
`practise_report.json` and the model card, to a temporary folder renamed when complete; `push_to_hub` uploads
exactly that folder.
"""

from __future__ import annotations

import copy
import functools
import json
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .backbones import BackboneFamily
from .config import CompressionConfig
from .files import check_output_location, save_directory_atomically
from .latency import LatencyComparison
from .mimic import FinetuneResult
from .provenance import public_name
from .recoverability import ScanRow

logger = logging.getLogger(__name__)

__all__ = ["CompressionResult", "REPORT_FILE", "ONNX_FILE", "check_replaceable_output"]

REPORT_FILE = "practise_report.json"
ONNX_FILE = "model.onnx"
#: the ONNX export's logits may differ from PyTorch's by this much (relative to the largest logit) before a warning
ONNX_TOLERANCE = 1e-4


def check_replaceable_output(folder: str | Path) -> None:
    """Refuse to replace `folder` unless it is an earlier output of `save_pretrained`: it carries
    `practise_report.json`, and (for outputs that list what they wrote) nothing else was added to it since.

    Raises:
        FileExistsError: naming what makes the folder someone else's and how to proceed.
    """
    folder = Path(folder)
    report = folder / REPORT_FILE
    if not report.is_file():
        raise FileExistsError(
            f"`{folder}` is not empty and is not an earlier hf_practise output (it has no {REPORT_FILE}), so "
            "--overwrite / overwrite=True will not replace it: it may hold a teacher, a dataset or your own files. "
            "Choose another output folder, or empty this one yourself."
        )
    try:
        written = json.loads(report.read_text()).get("files")
    except (OSError, ValueError, AttributeError) as e:
        raise FileExistsError(
            f"`{report}` is not a readable hf_practise report ({e}), so `{folder}` will not be replaced. Choose "
            "another output folder, or empty this one yourself."
        ) from e
    if written is None:  # saved before outputs listed their files
        return
    present = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if not p.is_dir() or p.is_symlink()}
    foreign = sorted(present - set(written))
    if foreign:
        raise FileExistsError(
            f"`{folder}` is an earlier hf_practise output, but holds files hf_practise did not write "
            f"({', '.join(foreign[:5])}{', ...' if len(foreign) > 5 else ''}), so it will not be replaced. Move them "
            "out, or choose another output folder."
        )


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
    metrics_before: dict[str, float] = field(default_factory=dict)  # every eval metric (evaluate modules)
    metrics_after: dict[str, float] = field(default_factory=dict)
    finetune: FinetuneResult | None = None
    selection: list[dict[str, Any]] = field(default_factory=list)  # latency checks made while choosing
    eval_set: dict[str, Any] | None = None  # name, split, size (and Hub id) of the data top-1 was measured on
    command: str | None = None  # the command line that produced this result, for the model card
    saved_to: Path | None = None  # where `save_pretrained` last wrote it
    check_images: torch.Tensor | None = field(default=None, repr=False)  # a few preprocessed tiny-set images
    onnx: dict[str, Any] | None = None  # the ONNX export and its parity check, once `export_onnx` ran
    onnx_bytes: bytes | None = field(default=None, repr=False)  # the exported model, written by save_pretrained
    # local folders the run read ({"the model folder": path, ...}); save_pretrained refuses to write over them
    input_paths: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def latency_reduction(self) -> float:
        return self.latency.reduction

    @property
    def weights_dtype(self) -> str:
        """The dtype the saved weights are stored in: the teacher's ("bfloat16"); the compression ran in float32."""
        return self.source.get("dtype") or "float32"

    def model_to_save(self) -> nn.Module:
        """`model`, or a copy of it cast back to the teacher's dtype when that is not the one it was compressed in."""
        dtype = getattr(torch, self.weights_dtype, None)
        if not isinstance(dtype, torch.dtype) or all(p.dtype == dtype for p in self.model.parameters()):
            return self.model
        return copy.deepcopy(self.model).to(dtype)

    def to_dict(self) -> dict[str, Any]:
        return {
            "family": self.family.name,
            "reloads_natively": self.reloads_natively,
            "weights_dtype": self.weights_dtype,
            "source": self.public_source(),
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
            "metrics_before": self.metrics_before,
            "metrics_after": self.metrics_after,
            "tiny_set": self.tiny_set,
            "phase_seconds": self.phase_seconds,
            "finetune_losses": self.finetune.losses if self.finetune else [],
            "finetune_resumed_from": self.finetune.resumed_from if self.finetune else 0,
            "finetune_reused_finished": self.finetune.reused_finished if self.finetune else False,
            "finetune_diverged_lrs": list(self.finetune.diverged_lrs) if self.finetune else [],
            "finetune_holdout_curve": self.finetune.holdout_curve if self.finetune else [],
            "finetune_best_step": self.finetune.best_step if self.finetune else None,
            "selection": self.selection,
            "onnx": self.onnx,
            "eval_set": self.eval_set,
            "command": self.command,
            "config": {
                **self.config.to_dict(),
                "work_dir": public_name(self.config.work_dir),
                "eval_metrics": [public_name(m) for m in self.config.eval_metrics],  # a local folder by its name
            },
        }

    @functools.cached_property
    def reloads_natively(self) -> bool:
        """Whether plain timm / transformers reload the saved model (else `hf_practise.load_compressed` does); asked
        once (a timm family builds the shallower model on the meta device to know)."""
        return self.family.reloads_natively(self.model)

    def public_source(self) -> dict[str, Any]:
        """Where the teacher came from, as it may be published: a Hub id and revision, or a local folder's name,
        with the fingerprint of its weights (never the user's absolute path)."""
        src = self.source
        out = {
            "name": public_name(src.get("hub_id") or src.get("name_or_path") or src.get("architecture")),
            "architecture": src.get("architecture"),
            "fingerprint": src.get("fingerprint"),
        }
        for key in ("hub_id", "revision"):
            if src.get(key):
                out[key] = src[key]
        return out

    def other_metrics(self) -> list[tuple[str, float]]:
        """The eval metrics besides top-1 (the `accuracy` module), with their values before compression."""
        return [(k, v) for k, v in self.metrics_before.items() if k != "accuracy"]

    def latency_notes(self) -> list[str]:
        """What the final latency measurement said against the target (see the compressor's final check)."""
        return [c["note"] for c in self.selection if c.get("step") == "final" and c.get("note")]

    def resume_note(self) -> str | None:
        """How the finetune was resumed or rerun, if it was (for the card and the summary)."""
        ft = self.finetune
        if ft is None:
            return None
        notes = []
        if ft.diverged_lrs:
            notes.append(
                "The finetune's loss turned non-finite at lr "
                + ", then ".join(f"{lr:g}" for lr in ft.diverged_lrs)
                + f"; the run that counts started again from the scan's adaptors at lr {self.config.finetune.lr:g}."
            )
        if ft.reused_finished:
            notes.append(
                f"The finetune was not rerun: its finished checkpoint ({ft.steps} steps) was loaded from the work dir."
            )
        elif ft.resumed_from:
            notes.append(
                f"The finetune was resumed from its checkpoint at step {ft.resumed_from} of {ft.steps} (work dir)."
            )
        return " ".join(notes) or None

    def scan_table(self) -> str:
        """The scan as a markdown table, in forward order."""
        chosen = {r.block: i + 1 for i, r in enumerate(self.dropped)}
        lines = [
            "| block | initial error | recoverability | latency saving | score | dropped | seconds |",
            "| --- | ---: | ---: | ---: | ---: | :---: | ---: |",
        ]
        retried = 0
        for r in self.scan:
            mark = f"#{chosen[r.block]}" if r.block in chosen else ""
            kept = "" if r.trained else " (identity kept)"
            if r.trained and getattr(r, "retried", 0):
                kept, retried = f" (lr {r.lr:.2g})", retried + 1
            lines.append(
                f"| {r.block} | {r.initial_error:.4g} | {r.recoverability:.4g}{kept} | {100 * r.latency_saving:.1f}% "
                f"| {r.score:.4g} | {mark} | {r.seconds:.1f} |"
            )
        untrained = sum(not r.trained for r in self.scan)
        if retried:
            lines.append(
                f"\n*lr*: on {retried} of {len(self.scan)} candidates adaptor training at the scan's rate raised the "
                "feature error; the row is the retry from identity at the smaller rate shown."
            )
        if untrained:
            lines.append(
                f"\n*identity kept*: on {untrained} of {len(self.scan)} candidates adaptor training raised the feature "
                "error, so the identity adaptors were kept and the recoverability is the initial error."
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
        rows += [
            f"| {name} | {before:.4g} | {self.metrics_after.get(name, float('nan')):.4g} | "
            f"{self.metrics_after.get(name, float('nan')) - before:+.4g} |"
            for name, before in self.other_metrics()
        ]
        device = (
            f"{lat.base.device} ({lat.base.device_name}), {lat.base.threads} threads, input {list(lat.base.input_size)}"
        )
        notes = self.latency_notes()
        return (
            "\n".join(rows)
            + f"\n\nLatency measured on {device}, in {lat.base.runtime()}."
            + "".join(f"\n\n**Note**: {n}" for n in notes)
        )

    def export_onnx(
        self, path: str | Path | None = None, *, images: torch.Tensor | None = None, opset: int = 17
    ) -> dict[str, Any]:
        """Export the compressed model to ONNX (dynamic batch, input `pixel_values`, output `logits`) and check it
        against PyTorch in ONNX Runtime on `images` (default: the tiny-set images kept from the run).

        The file is written by `save_pretrained` (and so uploaded by `push_to_hub`) as `model.onnx`, and to `path`
        when given. Needs `pip install "hf-practise[onnx]"`.

        Returns:
            The parity record (also `result.onnx`): max |logit difference|, relative to the largest logit, images.
        """
        from .files import atomic_write_bytes
        from .runtimes import export_onnx_bytes, require_backend
        from .training import as_logits

        require_backend("onnxruntime")
        import onnxruntime as ort

        source = "given"
        if images is None and self.check_images is not None:
            images, source = self.check_images, "tiny set"
        if images is None:
            source = "random"
            size = tuple(self.family.data_config(self.model)["input_size"])
            images = torch.randn(4, *size, generator=torch.Generator().manual_seed(0))
        images = images.detach().float().cpu()
        model = self.model.eval()
        device = next(model.parameters()).device
        with torch.no_grad():
            data = export_onnx_bytes(
                model,
                (images[:2].to(device),),
                dynamic_batch=True,
                input_names=["pixel_values"],
                output_names=["logits"],
                opset=opset,
            )
            reference = as_logits(model(images.to(device))).float().cpu()
        session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
        exported = torch.from_numpy(session.run(None, {"pixel_values": images.numpy()})[0])
        diff = (exported - reference).abs().max().item()
        relative = diff / max(reference.abs().max().item(), 1e-12)
        self.onnx = {
            "file": ONNX_FILE,
            "opset": opset,
            "dynamic_batch": True,
            "images": int(images.shape[0]),
            "images_from": source,
            "max_abs_logit_diff": diff,
            "relative_diff": relative,
            "onnxruntime": ort.__version__,
            "torch": str(torch.__version__),
            "bytes": len(data),
        }
        if relative > ONNX_TOLERANCE:
            logger.warning(
                "the ONNX export's logits differ from PyTorch's by %.3g (%.3g of the largest logit)", diff, relative
            )
        self.onnx_bytes = data
        if path is not None:
            atomic_write_bytes(Path(path), data)
        logger.info("exported ONNX: max |logit difference| %.3g (relative %.3g)", diff, relative)
        return self.onnx

    def save_pretrained(
        self, save_directory: str | Path, *, overwrite: bool = False, repo_id: str | None = None
    ) -> Path:
        """Write the compressed model so the family's own library reloads it, with its model card (README.md and
        plots) and `practise_report.json`. The folder is written to a temporary sibling and renamed when complete.

        Args:
            save_directory: the folder to write; it must not exist or be empty unless `overwrite`. It may not be,
                contain or lie inside a folder the run read (the model's, the dataset's, the work dir).
            overwrite: replace a non-empty folder, when it is an earlier output of this method (it carries
                `practise_report.json` and no file this method did not write); anything else is refused.
            repo_id: the Hub repository the card's load snippet should name (a local path otherwise).
        """
        check_output_location(save_directory, self.input_paths)

        def write(tmp: Path) -> None:
            self.family.save_pretrained(self.model_to_save(), tmp, source_config=self.source)
            if self.onnx_bytes is not None:
                (tmp / ONNX_FILE).write_bytes(self.onnx_bytes)
            name = repo_id.split("/")[-1] if repo_id else Path(save_directory).name
            self.model_card(repo_id=repo_id, directory=tmp, name=name).save(tmp / "README.md")
            # written last, listing every file: the mark that lets a later --overwrite replace this folder
            files = sorted([p.relative_to(tmp).as_posix() for p in tmp.rglob("*") if not p.is_dir()] + [REPORT_FILE])
            (tmp / REPORT_FILE).write_text(json.dumps({**self.to_dict(), "files": files}, indent=2, default=str))

        path = save_directory_atomically(
            save_directory, write, overwrite=overwrite, may_replace=check_replaceable_output
        )
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
