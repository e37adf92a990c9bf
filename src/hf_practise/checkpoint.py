"""Resumable state on disk, without pickles: safetensors for tensors, JSON for the rest, written atomically.

A work dir belongs to one model: `claim_work_dir` records the model's fingerprint (a hash of its weights) in
it and refuses a work dir that another model wrote, so cached scan rows and finetune checkpoints are never
reused across teachers. A finetune checkpoint is one folder (`checkpoint-STEP`) holding the student's weights,
the optimizer's tensors, the RNG states and a `state.json` (step, schedule, loss curve, finished or not); it is
written to a temporary sibling and renamed, so a kill leaves the previous checkpoint whole.
"""

from __future__ import annotations

import json
import logging
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .files import atomic_write_text, save_directory_atomically
from .provenance import public_name

logger = logging.getLogger(__name__)

__all__ = ["WORK_DIR_FILE", "claim_work_dir", "save_checkpoint", "load_checkpoint", "rng_state", "set_rng_state"]

WORK_DIR_FILE = "hf_practise_work_dir.json"
_CKPT = re.compile(r"^checkpoint-(\d+)$")


def read_json(path: Path, what: str) -> Any:
    """`path` parsed as JSON, or a ValueError that names the file and says how to fix it."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{what} `{path}` is not valid JSON ({e}). Fix or remove that file.") from e


def claim_work_dir(work_dir: str | Path, *, model_fingerprint: str, model_name: str | None) -> Path:
    """Make `work_dir` this model's, or check that it already is.

    Raises:
        ValueError: the folder belongs to another model, or holds files hf_practise did not write.
    """
    root = Path(work_dir)
    if root.exists() and not root.is_dir():
        raise ValueError(f"Work dir `{root}` is a file; pass a folder (CLI: --work-dir).")
    manifest = root / WORK_DIR_FILE
    if manifest.exists():
        owner = read_json(manifest, "The work dir's manifest")
        if owner.get("model_fingerprint") != model_fingerprint:
            raise ValueError(
                f"Work dir `{root}` belongs to another model ({owner.get('model')}, weights "
                f"{owner.get('model_fingerprint')}); this model is {model_name} (weights {model_fingerprint}). Its "
                "scan rows and checkpoints would give you the other model's result: pass another --work-dir, or "
                "delete that folder to start over."
            )
        return root
    if root.exists() and any(root.iterdir()):
        raise ValueError(
            f"Work dir `{root}` is not empty and has no {WORK_DIR_FILE}: it was not written by this version of "
            "hf_practise for this model. Pass an empty or new folder (CLI: --work-dir)."
        )
    root.mkdir(parents=True, exist_ok=True)
    atomic_write_text(
        manifest, json.dumps({"model": public_name(model_name), "model_fingerprint": model_fingerprint}, indent=2)
    )
    return root


# ---- RNG ---------------------------------------------------------------------------------------------------
def rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Every RNG a training step draws from: tensors (torch CPU/CUDA, numpy keys) and JSON (python, numpy)."""
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda_{i}"] = s
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    tensors["numpy_keys"] = torch.from_numpy(np.asarray(keys, dtype=np.int64))
    state = {"python": _listify(random.getstate()), "numpy": [kind, int(pos), int(has_gauss), float(gauss)]}
    return tensors, state


def set_rng_state(tensors: dict[str, torch.Tensor], state: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["torch_cpu"])
    if torch.cuda.is_available():
        cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("torch_cuda_"))]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
    random.setstate(_tuplify(state["python"]))
    kind, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, tensors["numpy_keys"].numpy().astype(np.uint32), pos, has_gauss, gauss))


def _listify(x: Any) -> Any:
    return [_listify(v) for v in x] if isinstance(x, (tuple, list)) else x


def _tuplify(x: Any) -> Any:
    return tuple(_tuplify(v) for v in x) if isinstance(x, list) else x


# ---- optimizer ---------------------------------------------------------------------------------------------
def _split_optimizer(state_dict: dict) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors, plain = {}, {}
    for idx, entries in state_dict["state"].items():
        for name, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{idx}.{name}"] = value.detach().cpu().contiguous()
            else:
                plain[f"{idx}.{name}"] = value
    return tensors, {"plain": plain, "param_groups": _listify(state_dict["param_groups"])}


def _join_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict:
    state: dict[int, dict[str, Any]] = {}
    for key, value in [*tensors.items(), *meta["plain"].items()]:
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    return {"state": state, "param_groups": meta["param_groups"]}


# ---- checkpoints ---------------------------------------------------------------------------------------------
def save_checkpoint(
    folder: str | Path,
    *,
    step: int,
    model_state: dict[str, torch.Tensor],
    optimizer_state: dict,
    extra: dict[str, Any],
    finished: bool = False,
) -> Path:
    """Write `folder/checkpoint-STEP` atomically and remove the older checkpoints once it is complete."""
    folder = Path(folder)
    rng_tensors, rng_json = rng_state()
    opt_tensors, opt_meta = _split_optimizer(optimizer_state)

    def write(tmp: Path) -> None:
        save_file({k: v.detach().cpu().contiguous() for k, v in model_state.items()}, str(tmp / "model.safetensors"))
        save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
        save_file(rng_tensors, str(tmp / "rng.safetensors"))
        state = {"step": step, "finished": finished, "optimizer": opt_meta, "rng": rng_json, **extra}
        (tmp / "state.json").write_text(json.dumps(state, indent=1))

    path = save_directory_atomically(folder / f"checkpoint-{step:07d}", write, overwrite=True)
    for old in folder.iterdir():
        m = _CKPT.match(old.name)
        if m and int(m.group(1)) != step:
            shutil.rmtree(old, ignore_errors=True)
    return path


def load_checkpoint(folder: str | Path) -> dict[str, Any] | None:
    """The latest complete checkpoint in `folder` (None when there is none): `model`, `optimizer` (a state dict),
    `rng` (tensors, json) and the saved `state.json` entries."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    found = sorted((int(m.group(1)), p) for p in folder.iterdir() if (m := _CKPT.match(p.name)) and p.is_dir())
    for step, path in reversed(found):
        if not (path / "state.json").exists():
            continue
        state = read_json(path / "state.json", "The finetune checkpoint state")
        try:
            model = load_file(str(path / "model.safetensors"))
            optimizer = _join_optimizer(load_file(str(path / "optimizer.safetensors")), state.pop("optimizer"))
            rng = (load_file(str(path / "rng.safetensors")), state.pop("rng"))
        except (SafetensorError, OSError, KeyError) as e:
            raise ValueError(
                f"The finetune checkpoint `{path}` is damaged ({e}); delete it to start the finetune over."
            ) from e
        return {"model": model, "optimizer": optimizer, "rng": rng, **state}
    return None
