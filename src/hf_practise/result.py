"""`CompressionResult`: the compressed model and every number measured about it.

It is a record: saving, pushing and exporting it live in `publish.py`, its model card and markdown tables in
`card.py`; its methods of those names are those functions (neither module imports this one).
"""

from __future__ import annotations

import copy
import functools
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import card, publish
from .backbones import BackboneFamily
from .compound import Int8Comparison
from .config import CompressionConfig
from .data import TinySetInfo
from .latency import LatencyComparison
from .mimic import FinetuneResult
from .provenance import public_name
from .publish import ONNX_FILE, REPORT_FILE, OnnxCheck, check_replaceable_output
from .recoverability import ScanRow
from .selection import SelectionCheck

logger = logging.getLogger(__name__)

__all__ = ["CompressionResult", "REPORT_FILE", "ONNX_FILE", "check_replaceable_output"]


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
    tiny_set: TinySetInfo
    phase_seconds: dict[str, float] = field(default_factory=dict)
    top1_before: float | None = None
    top1_after: float | None = None
    metrics_before: dict[str, float] = field(default_factory=dict)  # every eval metric (evaluate modules)
    metrics_after: dict[str, float] = field(default_factory=dict)
    finetune: FinetuneResult | None = None
    selection: list[SelectionCheck] = field(default_factory=list)  # latency checks made while choosing
    eval_set: dict[str, Any] | None = None  # name, split, size (and Hub id) of the data top-1 was measured on
    command: str | None = None  # the command line that produced this result, for the model card
    saved_to: Path | None = None  # where `save_pretrained` last wrote it
    check_images: torch.Tensor | None = field(default=None, repr=False)  # a few preprocessed tiny-set images
    onnx: OnnxCheck | None = None  # the ONNX export and its parity check, once `export_onnx` ran
    onnx_bytes: bytes | None = field(default=None, repr=False)  # the exported model, written by save_pretrained
    int8: Int8Comparison | None = None  # with `quantize="int8"`: the int8 models, timed beside the fp32 ones
    # with several latency targets: every target's result, ascending (this one is the last: the largest target)
    points: list[CompressionResult] = field(default_factory=list, repr=False)
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
            "native_reload_why": self.family.why_not_native(self.model),
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
            "tiny_set": self.tiny_set.to_dict(),
            "phase_seconds": self.phase_seconds,
            "finetune_losses": self.finetune.losses if self.finetune else [],
            "finetune_resumed_from": self.finetune.resumed_from if self.finetune else 0,
            "finetune_reused_finished": self.finetune.reused_finished if self.finetune else False,
            "finetune_diverged_lrs": list(self.finetune.diverged_lrs) if self.finetune else [],
            "finetune_holdout_curve": self.finetune.holdout_curve if self.finetune else [],
            "finetune_best_step": self.finetune.best_step if self.finetune else None,
            "selection": [c.to_dict() for c in self.selection],
            "onnx": self.onnx.to_dict() if self.onnx is not None else None,
            "int8": self.int8.to_dict() if self.int8 is not None else None,
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
        return [c.note for c in self.selection if c.step == "final" and c.note]

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

    # rendering and publishing live in card.py and publish.py; their functions take the result first, so they
    # are its methods as they stand (one signature and docstring each)
    scan_table = card.scan_table  # the scan as a markdown table, in forward order
    summary = card.summary_table  # before/after numbers as a markdown table
    model_card = card.model_card
    export_onnx = publish.export_onnx
    save_pretrained = publish.save_pretrained
    push_to_hub = publish.push_to_hub
