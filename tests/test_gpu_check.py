"""`benchmarks/gpu_check.py` where it cannot run: without a CUDA device, or without its teacher and data, it says
what is missing, exits 0 and writes nothing, in seconds. (Its run is for a GPU machine; `--device cpu --quick`
is the same path on CPU, minutes: not a unit test.)"""

from __future__ import annotations

import os
import subprocess
import sys

from .conftest import REPO

SCRIPT = REPO / "benchmarks" / "gpu_check.py"


def run_check(tmp_path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")  # no GPU, whatever the machine has
    cmd = [sys.executable, str(SCRIPT), *args, "--results", str(tmp_path / "results")]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)


def test_without_cuda_it_says_so_and_writes_nothing(tmp_path):
    proc = run_check(tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "no CUDA device here: gpu_check did not run"
    assert list(tmp_path.iterdir()) == []


def test_a_missing_teacher_and_dataset_are_named_with_how_to_get_them(tmp_path):
    teacher, data = tmp_path / "no-teacher", tmp_path / "no-data"
    proc = run_check(tmp_path, "--device", "cpu", "--teacher", str(teacher), "--data", str(data))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("skipped: gpu_check needs the teacher")
    for words in (str(teacher), "--teacher", str(data), "apt-get install dataset-fashion-mnist", "--pack"):
        assert words in proc.stdout
    assert list(tmp_path.iterdir()) == []
