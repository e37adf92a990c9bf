"""Reload a saved model with its family's own library, in a fresh process that never imports hf_practise.

With library "onnxruntime", the folder's `model.onnx` (see `CompressionResult.export_onnx`) is run instead.

This is the check behind "a compressed model reloads with plain timm / transformers": the folder is loaded by
`timm.create_model("local-dir:...")` or `AutoModelForImageClassification.from_pretrained(...)` (which must report
no missing, unexpected or mismatched keys) and its logits on given inputs come back for comparison. Support for
the benchmarks (which import it as `native`) and the tests (as `benchmarks.native`), not part of the package.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from torch import nn

__all__ = ["reload_logits", "reload_many", "native_reload_gap"]

_SCRIPT = """
import json, sys, traceback, torch
assert "hf_practise" not in sys.modules
for job in json.load(open(sys.argv[1])):
    library, folder = job["library"], job["folder"]
    try:
        if library == "onnxruntime":  # the exported model.onnx beside the checkpoint
            import onnxruntime as ort
            session = ort.InferenceSession(folder + "/model.onnx", providers=["CPUExecutionProvider"])
            x = torch.load(job["x"], weights_only=True).numpy()
            torch.save(torch.from_numpy(session.run(["logits"], {"pixel_values": x})[0]), job["y"])
            continue
        if library == "hf_practise":  # families whose own library cannot rebuild the model: the documented loader
            from hf_practise import load_compressed
            model = load_compressed(folder)
        elif library == "timm":
            import timm
            model = timm.create_model("local-dir:" + folder, pretrained=True)
        else:
            from transformers import AutoModelForImageClassification
            model, info = AutoModelForImageClassification.from_pretrained(folder, output_loading_info=True)
            assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
        with torch.no_grad():
            out = model.eval()(torch.load(job["x"], weights_only=True))
        torch.save(out if isinstance(out, torch.Tensor) else out.logits, job["y"])
    except Exception as e:
        # the message cut short, so its start (what failed: "Missing key(s) in state_dict ...") survives the
        # caller's cut to the traceback's tail, even when a strict load lists hundreds of keys
        lines = traceback.format_exception(e)
        lines[-1] = lines[-1][:1500] + (" [...]" if len(lines[-1]) > 1500 else "")
        open(job["error"], "w").write("".join(lines))
"""


def reload_many(
    jobs: list[tuple[str | Path, str, torch.Tensor]], *, timeout: float = 1200
) -> list[torch.Tensor | RuntimeError]:
    """`reload_logits` for several (folder, library, x) at once: the plain timm / transformers reloads in one
    fresh process that never imports hf_practise, the `hf_practise` ones in another (one import of the libraries
    for all). Per job, the logits or the RuntimeError saying why the reload failed."""
    with tempfile.TemporaryDirectory(prefix="hf_practise-reload-") as tmp:
        spec = []
        for i, (folder, library, x) in enumerate(jobs):
            paths = {k: str(Path(tmp) / f"{i}.{k}") for k in ("x", "y", "error")}
            torch.save(x.detach().cpu(), paths["x"])
            spec.append({"library": library, "folder": str(folder), **paths})
        for loader in (False, True):
            batch = [job for job in spec if (job["library"] == "hf_practise") == loader]
            if not batch:
                continue
            jobs_file = Path(tmp) / f"jobs-{int(loader)}.json"
            jobs_file.write_text(json.dumps(batch))
            proc = subprocess.run(
                [sys.executable, "-c", _SCRIPT, str(jobs_file)], capture_output=True, text=True, timeout=timeout
            )
            if proc.returncode != 0:
                raise RuntimeError(f"The reload process failed:\n{proc.stderr[-3000:]}")
        out: list[torch.Tensor | RuntimeError] = []
        for job in spec:
            if Path(job["error"]).exists():
                error = Path(job["error"]).read_text()
                out.append(RuntimeError(f"Plain {job['library']} could not reload {job['folder']}:\n{error[-3000:]}"))
            else:
                out.append(torch.load(job["y"], weights_only=True))
        return out


def reload_logits(folder: str | Path, library: str, x: torch.Tensor, *, timeout: float = 600) -> torch.Tensor:
    """Logits of `x` from `folder` reloaded by plain `library` ("timm" or "transformers") in a fresh process
    (or, with "hf_practise", by `hf_practise.load_compressed`, for families that need it).

    Raises:
        RuntimeError: the reload failed; the message holds the end of the child's traceback.
    """
    (result,) = reload_many([(folder, library, x)], timeout=timeout)
    if isinstance(result, RuntimeError):
        raise result
    return result


@torch.no_grad()
def native_reload_gap(folder: str | Path, library: str, model: nn.Module, x: torch.Tensor) -> float:
    """Largest |logit| difference between `model` and its reload from `folder` by plain `library`."""
    out = model.eval()(x.to(next(model.parameters()).device))
    logits = out if isinstance(out, torch.Tensor) else out.logits
    return (reload_logits(folder, library, x) - logits.cpu()).abs().max().item()
