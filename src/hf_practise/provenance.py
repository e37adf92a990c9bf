"""What a result records about where it came from, without leaking what it should not.

A model is identified by a hash of its weights and architecture (so a work dir or a cache can tell two teachers
apart), a local folder by its name (never the user's absolute path), a run by a command rebuilt from its parsed
arguments (secrets left out, whatever way they were typed), and a device by its GPU or CPU model.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import platform
import shlex
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import nn

__all__ = ["device_name", "looks_like_path", "model_fingerprint", "public_name", "recorded_command", "weights_dtype"]


def model_fingerprint(model: nn.Module) -> str:
    """sha256 (16 hex digits) of the model's class, state-dict names, shapes, dtypes and values."""
    h = hashlib.sha256(type(model).__qualname__.encode())
    for name, tensor in model.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def weights_dtype(tensors: Iterable[torch.Tensor]) -> torch.dtype:
    """The floating dtype that holds most of the weights' elements (float32 when none is floating): the dtype a
    checkpoint is stored in, mixed-precision leftovers (a float32 norm in a bfloat16 model) aside."""
    counts: dict[torch.dtype, int] = {}
    for t in tensors:
        if t.is_floating_point():
            counts[t.dtype] = counts.get(t.dtype, 0) + t.numel()
    return max(counts, key=counts.get) if counts else torch.float32


def looks_like_path(text: str) -> bool:
    """A name that can only mean a local path: absolute, ./ or ../ or ~, or more than one `/` (a Hub id has one)."""
    return text.startswith(("/", "./", "../", "~", ".\\")) or text.count("/") > 1 or "\\" in text


def public_name(name_or_path: str | os.PathLike | None) -> str | None:
    """A model or data location as it may be published: Hub ids and timm names unchanged, local paths reduced
    to their last component (`local-dir:/home/me/teachers/r34` -> `local-dir:r34`)."""
    if name_or_path is None:
        return None
    text = str(name_or_path)
    for prefix in ("local-dir:", "file:"):
        if text.startswith(prefix):
            return prefix + Path(text[len(prefix) :]).name
    if looks_like_path(text) or Path(text).expanduser().exists():  # an existing folder is local, whatever its name
        return Path(text).name or text
    return text


def recorded_command(
    prog: str,
    parser: argparse.ArgumentParser,
    args: argparse.Namespace,
    *,
    secrets: Iterable[str] = ("token",),
    paths: Iterable[str] = (),
) -> str:
    """The command line that reproduces `args`, rebuilt from the parsed values (never from argv text).

    Options at their default are left out, options named in `secrets` always are (however the user typed them:
    `--token X`, `--token=X`, `--tok X`), and the options named in `paths` keep only their last path component.
    """
    secrets, paths = set(secrets), set(paths)
    words: list[str] = []
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction) or action.dest in secrets or not action.option_strings:
            continue
        value = getattr(args, action.dest, None)
        if value == action.default or value is None:
            continue
        if isinstance(action, argparse.BooleanOptionalAction):  # `--flag` / `--no-flag`: the one that gives `value`
            negative = [s for s in action.option_strings if s.startswith("--no-")]
            words.append(next(s for s in action.option_strings if s not in negative) if value else negative[0])
            continue
        flag = max(action.option_strings, key=len)
        if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
            words.append(flag)
            continue
        values = value if isinstance(value, (list, tuple)) else [value]
        shown = [shlex.quote(str(public_name(v) if action.dest in paths else v)) for v in values]
        if isinstance(action, argparse._AppendAction):  # repeatable: the flag before each value
            words += [w for v in shown for w in (flag, v)]
        else:
            words += [flag, *shown]
    return " ".join([prog, *words])


def device_name(device: torch.device) -> str:
    """A human-readable name of the device: the GPU model, or the CPU model."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    with contextlib.suppress(OSError):
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()
