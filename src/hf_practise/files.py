"""Writing files so that no reader ever sees half of them: temporary siblings, then an atomic rename.

A folder is written as `.NAME.tmp-PID-XXXX` beside its target and renamed when complete; leftovers of a killed
writer (whose process is gone) are removed by the next write to the same target. Single files go through
`atomic_write_text` the same way.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

__all__ = ["save_directory_atomically", "atomic_write_text", "check_writable_parent"]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale_siblings(target: Path) -> None:
    """Remove `.NAME.tmp-PID-*` / `.NAME.old-PID-*` folders beside `target` whose writer is no longer running."""
    pattern = re.compile(rf"^\.{re.escape(target.name)}\.(tmp|old)-(\d+)-")
    for path in target.parent.iterdir():
        m = pattern.match(path.name)
        if m and not _pid_alive(int(m.group(2))):
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)


def check_writable_parent(target: str | Path) -> None:
    """Fail now, not after an hour of work, when `target` cannot be created where it is asked for.

    Raises:
        FileExistsError: `target` or one of its parents is a file.
        PermissionError: the nearest existing parent folder cannot be written.
    """
    target = Path(target)
    if target.exists() and not target.is_dir():
        raise FileExistsError(f"`{target}` is a file; the output must be a folder. Choose another path.")
    parent = target.parent.absolute()
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise FileExistsError(f"`{parent}` is a file, so `{target}` cannot be created under it. Choose another path.")
    try:
        probe = tempfile.mkdtemp(prefix=".hf_practise-probe-", dir=parent)
    except OSError as e:
        raise PermissionError(
            f"Cannot write under `{parent}` ({e.strerror or e}), so `{target}` could not be saved there. Choose a "
            "folder you can write to."
        ) from e
    os.rmdir(probe)


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
    _remove_stale_siblings(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-{os.getpid()}-", dir=target.parent))
    try:
        write(tmp)
        if target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}-{time.time_ns()}")
            target.rename(old)
            tmp.rename(target)
            shutil.rmtree(old) if old.is_dir() else old.unlink()
        else:
            tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write `text` to `path` so that a reader sees the old file or the new one, never a part."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write `data` to `path` so that a reader sees the old file or the new one, never a part."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.tmp-{os.getpid()}-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(name)
        raise
    return path
