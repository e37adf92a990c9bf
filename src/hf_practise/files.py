"""Writing files so that no reader ever sees half of them: temporary siblings, then an atomic rename.

A folder is written as `.NAME.tmp-PID-XXXX` beside its target and swapped in when complete (one atomic exchange
where the OS has `renameat2(RENAME_EXCHANGE)`, else two renames); leftovers of a killed writer (whose process is gone)
are cleaned up by the next write to the same target, and a previous folder set aside by a writer killed between its
two renames is put back. Single files go through `atomic_write_text` the same way. Everything is created with the
permissions a plain `mkdir` / `open` would give (the umask's), not the private ones of `tempfile`.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path

__all__ = [
    "DiskFullError",
    "atomic_write_bytes",
    "atomic_write_text",
    "check_output_location",
    "check_writable_parent",
    "is_disk_full",
    "save_directory_atomically",
]

#: `renameat2` flag that swaps two paths in one step (Linux >= 3.15, on most local file systems)
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _umask() -> int:
    """The process's umask, read without changing it where Linux says it (`/proc/self/status`)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True) if path.is_dir() and not path.is_symlink() else path.unlink(missing_ok=True)


def _remove_stale_siblings(target: Path) -> None:
    """Clean up after writers of `target` that are no longer running: remove their `.NAME.tmp-PID-*` folders, and
    their `.NAME.old-PID-*` ones unless `target` is missing, in which case the newest of those (the previous folder,
    set aside by a writer killed between its two renames) is renamed back to `target`."""
    pattern = re.compile(rf"^\.{re.escape(target.name)}\.(tmp|old)-(\d+)-")
    stale = {"tmp": [], "old": []}
    for path in target.parent.iterdir():
        m = pattern.match(path.name)
        if m and not _pid_alive(int(m.group(2))):
            stale[m.group(1)].append(path)
    if stale["old"] and not os.path.lexists(target):
        newest = max(stale["old"], key=lambda p: p.lstat().st_mtime_ns)
        newest.rename(target)
        stale["old"].remove(newest)
    for path in stale["tmp"] + stale["old"]:
        _remove(path)


def _exchange(a: Path, b: Path) -> bool:
    """Swap `a` and `b` in one atomic step; False where the OS or file system cannot (then nothing changed)."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError, TypeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err == errno.ENOENT:
        raise OSError(err, f"Could not swap `{a}` and `{b}`: {os.strerror(err)}")
    return False  # not supported here (ENOSYS, EINVAL, a sandbox's EPERM, ...): the two renames will say more


def _within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_output_location(output: str | Path, inputs: Mapping[str, str | Path | None]) -> None:
    """Refuse an output folder that is, contains or lies inside one of the run's inputs (a model folder, a dataset
    folder, the work dir, ...): writing it would replace or change what the run reads. Symlinks are followed.

    Args:
        output: the folder the result will be written to.
        inputs: {what it is, e.g. "the model folder": its path}; None values are skipped.

    Raises:
        ValueError: naming the input and how to fix it.
    """
    out = Path(output).expanduser().resolve()
    for what, path in inputs.items():
        if path is None:
            continue
        real = Path(path).expanduser().resolve()
        if out == real:
            relation = "is"
        elif _within(out, real):
            relation = "lies inside"
        elif _within(real, out):
            relation = "contains"
        else:
            continue
        raise ValueError(
            f"The output folder `{output}` {relation} {what} `{path}`: saving there would replace or change what "
            "this run reads. Choose an output folder outside it (e.g. a sibling folder)."
        )


def _bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def is_disk_full(error: BaseException) -> bool:
    """Whether `error` (or what caused it) is a write that ran out of space: an OSError with ENOSPC, or the
    SafetensorError that safetensors raises instead ("No space left on device")."""
    from safetensors import SafetensorError

    seen = 0
    while error is not None and seen < 8:
        if isinstance(error, OSError) and error.errno == errno.ENOSPC:
            return True
        if isinstance(error, SafetensorError) and "No space left on device" in str(error):
            return True
        error, seen = error.__cause__ or error.__context__, seen + 1
    return False


class DiskFullError(OSError):
    """A write ran out of space; the message names the folder, the space left there, and that a rerun resumes."""

    def __init__(self, target: str | Path) -> None:
        folder = Path(target).absolute().parent
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        try:
            free = _bytes(shutil.disk_usage(folder).free)
        except OSError:
            free = "unknown"
        super().__init__(
            f"No space left on device while writing `{target}`: the disk holding `{folder}` is full ({free} free "
            "there). Free some space there (or choose a folder on another disk) and rerun the same command: it "
            "resumes from the work dir (CLI: --work-dir) when one was given."
        )
        self.errno, self.folder = errno.ENOSPC, folder


def check_writable_parent(target: str | Path) -> None:
    """Fail now, not after an hour of work, when `target` cannot be created where it is asked for.

    Raises:
        FileExistsError: `target` or one of its parents is a file.
        PermissionError: the nearest existing parent folder cannot be written.
    """
    target = Path(target)
    real = target.resolve() if target.is_symlink() else target
    if real.parent.is_dir():  # a previous output set aside by a writer killed mid-swap is back before we look
        with contextlib.suppress(OSError):
            _remove_stale_siblings(real)
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
    save_directory: str | Path,
    write: Callable[[Path], None],
    *,
    overwrite: bool = False,
    may_replace: Callable[[Path], None] | None = None,
) -> Path:
    """Run `write(tmp_dir)` and move the result to `save_directory` only once it is complete.

    A symlink `save_directory` is kept and its target written. The previous folder is swapped out in one step
    where the OS allows it; otherwise a kill between the two renames leaves it beside the target, and the next
    write to the same target puts it back first.

    Args:
        save_directory: the folder to write.
        write: fills the temporary folder it is given.
        overwrite: replace a non-empty `save_directory`.
        may_replace: called with a non-empty `save_directory` before it is replaced; raises to refuse.

    Raises:
        FileExistsError: `save_directory` exists, is not empty, and `overwrite` is False.
    """
    target = Path(save_directory)
    if target.is_symlink():
        target = target.resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_siblings(target)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        if not overwrite:
            raise FileExistsError(
                f"Output directory `{save_directory}` exists and is not empty; choose another one or pass "
                "`overwrite=True` (CLI: --overwrite)."
            )
        if may_replace is not None:
            may_replace(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-{os.getpid()}-", dir=target.parent))
    try:
        write(tmp)
        tmp.chmod(0o777 & ~_umask())  # mkdtemp's folder is private (0700); a plain mkdir's is not
        if may_replace is not None and target.exists() and any(target.iterdir()):
            may_replace(target)  # again: files added while `write` ran are someone's too
        if target.exists() and _exchange(tmp, target):
            _remove(tmp)  # now the previous folder
        elif target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}-{time.time_ns()}")
            target.rename(old)
            try:
                tmp.rename(target)
            except BaseException:
                old.rename(target)
                raise
            _remove(old)
        else:
            tmp.rename(target)
    except BaseException as e:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        if is_disk_full(e):
            raise DiskFullError(target) from e
        raise
    return target


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write `text` to `path` so that a reader sees the old file or the new one, never a part."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write `data` to `path` so that a reader sees the old file or the new one, never a part. A file that
    already holds `data` is left alone (nothing is written: a finished work dir reruns on a read-only mount)."""
    path = Path(path)
    if path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.tmp-{os.getpid()}-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(name, 0o666 & ~_umask())  # mkstemp's file is private (0600); a plain open's is not
        os.replace(name, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(name)
        if is_disk_full(e):
            raise DiskFullError(path) from e
        raise
    return path
