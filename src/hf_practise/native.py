"""Reload a saved model with its family's own library, in a fresh process that never imports hf_practise.

This is the check behind "a compressed model reloads with plain timm / transformers": the folder is loaded by
`timm.create_model("local-dir:...")` or `AutoModelForImageClassification.from_pretrained(...)` (which must report
no missing, unexpected or mismatched keys) and its logits on given inputs come back for comparison.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from torch import nn

__all__ = ["reload_logits", "native_reload_gap"]

_SCRIPT = """
import sys, torch
assert "hf_practise" not in sys.modules
library, folder, x_path, y_path = sys.argv[1:5]
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
    out = model.eval()(torch.load(x_path, weights_only=True))
torch.save(out if isinstance(out, torch.Tensor) else out.logits, y_path)
"""


def reload_logits(folder: str | Path, library: str, x: torch.Tensor, *, timeout: float = 600) -> torch.Tensor:
    """Logits of `x` from `folder` reloaded by plain `library` ("timm" or "transformers") in a fresh process
    (or, with "hf_practise", by `hf_practise.load_compressed`, for families that need it).

    Raises:
        RuntimeError: the reload failed; the message holds the end of the child's stderr.
    """
    with tempfile.TemporaryDirectory(prefix="hf_practise-reload-") as tmp:
        x_path, y_path = Path(tmp) / "x.pt", Path(tmp) / "y.pt"
        torch.save(x.detach().cpu(), x_path)
        cmd = [sys.executable, "-c", _SCRIPT, library, str(folder), str(x_path), str(y_path)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"Plain {library} could not reload {folder}:\n{proc.stderr[-3000:]}")
        return torch.load(y_path, weights_only=True)


@torch.no_grad()
def native_reload_gap(folder: str | Path, library: str, model: nn.Module, x: torch.Tensor) -> float:
    """Largest |logit| difference between `model` and its reload from `folder` by plain `library`."""
    out = model.eval()(x.to(next(model.parameters()).device))
    logits = out if isinstance(out, torch.Tensor) else out.logits
    return (reload_logits(folder, library, x) - logits.cpu()).abs().max().item()
