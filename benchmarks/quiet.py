"""Timing benchmarks beside other jobs: stop them while timing, and scan with fewer threads.

`add_arguments` gives a script `--scan-threads` and `--pause-pids`; `paused` stops those processes (SIGSTOP) for
the duration of a block and lets them continue (SIGCONT) however it ends; `threads` sets torch's threads for a
block (the recoverability scan does no timing, so it can share the machine).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import time
from collections.abc import Iterator

import torch


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--scan-threads",
        type=int,
        default=None,
        help="torch threads of the recoverability scan (no timing in it; default: torch's), e.g. 1 beside other jobs",
    )
    p.add_argument(
        "--pause-pids",
        type=int,
        nargs="*",
        default=[],
        help="other jobs of this machine to stop (SIGSTOP) while timing and continue afterwards",
    )


@contextlib.contextmanager
def paused(pids: list[int]) -> Iterator[None]:
    """Stop other jobs of this machine (SIGSTOP) while timing, and let them go on afterwards (SIGCONT)."""
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(2.0 if pids else 0.0)
        yield
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)


@contextlib.contextmanager
def threads(n: int | None) -> Iterator[None]:
    """torch's threads set to `n` (None: unchanged) for the block."""
    before = torch.get_num_threads()
    torch.set_num_threads(n or before)
    try:
        yield
    finally:
        torch.set_num_threads(before)
