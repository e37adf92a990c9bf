"""`accelerate launch` on 2 CPU processes (gloo, DDP) against 1 process, same seed and data.

What must match: the candidate scan is split across the ranks and gathered, so every block is scored exactly
as in one process (recoverabilities equal up to float summation order: rtol 1e-4); latency comes from one
shared table, so the same blocks are dropped; the global batch is split between the ranks and BatchNorm
statistics are frozen, so the finetune follows the same path, and the saved models agree up to the order in
which DDP sums gradients across ranks (logits within atol 1e-4 + rtol 1e-3).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys

import pytest
import torch

from .conftest import REPO
from .test_backbones import reload_in_plain_timm
from .test_compressor import image_dataset

SCRIPT = str(REPO / "examples" / "compress.py")
WORKER = str(REPO / "tests" / "multiprocess_worker.py")
ARGS = [
    "--num-samples",
    "16",
    "--latency-reduction",
    "0.3",
    "--scan-iterations",
    "5",
    "--iterations",
    "6",
    "--batch-size",
    "8",
    "--scan-batch-size",
    "8",
    "--lr",
    "1e-3",
    "--latency-batch-size",
    "2",
    "--latency-repeats",
    "3",
    "--seed",
    "3",
]


def accelerate_bin() -> str | None:
    exe = os.path.join(os.path.dirname(sys.executable), "accelerate")
    return exe if os.path.exists(exe) else shutil.which("accelerate")


def launch_two(script: str, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """`accelerate launch` of `script` on 2 CPU processes (gloo), one thread each, the repository importable."""
    env = dict(os.environ, ACCELERATE_USE_CPU="1", OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    with socket.socket() as s:  # a free port of its own: tests run beside each other (pytest -n)
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    return subprocess.run(
        [accelerate_bin(), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1"]
        + ["--main_process_port", port]
        + ["--mixed_precision", "no", "--dynamo_backend", "no", script, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.slow  # 40 s: the CLI end to end twice; the loss-curve tests below check the same path in the default suite
@pytest.mark.skipif(accelerate_bin() is None, reason="needs the accelerate CLI")
def test_two_processes_match_one(teacher_dir, tmp_path):
    import datasets

    data = tmp_path / "data"
    datasets.DatasetDict({"train": image_dataset(20), "test": image_dataset(11)}).save_to_disk(str(data))
    table = tmp_path / "latency.json"
    table.write_text(json.dumps({"layer1.1": 0.1, "layer2.1": 0.12, "layer3.1": 0.15, "layer4.1": 0.2}))
    common = [
        "--model",
        f"local-dir:{teacher_dir}",
        "--dataset",
        str(data),
        "--split",
        "train",
        "--eval-split",
        "test",
        "--latency-table",
        str(table),
        *ARGS,
    ]
    env = dict(os.environ, ACCELERATE_USE_CPU="1", OMP_NUM_THREADS="1")
    one = subprocess.run(
        [sys.executable, SCRIPT, *common, "--output-dir", str(tmp_path / "one")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run(
        [
            accelerate_bin(),
            "launch",
            "--multi_gpu",
            "--num_processes",
            "2",
            "--num_machines",
            "1",
            "--mixed_precision",
            "no",
            "--dynamo_backend",
            "no",
            SCRIPT,
            *common,
            "--output-dir",
            str(tmp_path / "two"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    r1 = json.loads((tmp_path / "one" / "practise_report.json").read_text())
    r2 = json.loads((tmp_path / "two" / "practise_report.json").read_text())
    assert r1["dropped_blocks"] == r2["dropped_blocks"] and len(r1["dropped_blocks"]) >= 2
    assert [s["block"] for s in r1["scan"]] == [s["block"] for s in r2["scan"]]
    for a, b in zip(r1["scan"], r2["scan"]):
        assert b["recoverability"] == pytest.approx(a["recoverability"], rel=1e-4)
    assert r1["depths_after"] == r2["depths_after"]
    # top-1 is gathered across ranks without padding duplicates (11 images do not split evenly)
    assert r1["eval_set"]["num_samples"] == 11
    assert (r1["top1_before"], r1["top1_after"]) == (r2["top1_before"], r2["top1_after"])
    assert round(11 * r1["top1_before"], 6) == int(round(11 * r1["top1_before"]))
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    l1 = reload_in_plain_timm(tmp_path / "one", x, tmp_path)
    l2 = reload_in_plain_timm(tmp_path / "two", x, tmp_path)
    torch.testing.assert_close(l2, l1, atol=1e-4, rtol=1e-3)
    assert r1["finetune_losses"] == pytest.approx(r2["finetune_losses"], rel=1e-5)


NAN_ON_ONE_RANK = """
import torch
from accelerate import Accelerator

from hf_practise.training import check_finite

acc = Accelerator(cpu=True)
loss = torch.tensor(float("nan") if acc.process_index == 1 else 0.5)
try:
    check_finite(loss, phase="finetune", step=3, accelerator=acc)
except FloatingPointError as e:
    print(f"rank {acc.process_index} stopped: {e}", flush=True)
else:
    print(f"rank {acc.process_index} went on", flush=True)
acc.end_training()
"""


@pytest.mark.skipif(accelerate_bin() is None, reason="needs the accelerate CLI")
def test_a_loss_that_is_not_finite_on_one_process_stops_every_process(tmp_path):
    # a rank that stopped alone would leave the others waiting in the next all-reduce (and the retry would start
    # on one rank only)
    script = tmp_path / "nan_on_one_rank.py"
    script.write_text(NAN_ON_ONE_RANK)
    run = launch_two(str(script))
    assert run.returncode == 0, run.stderr[-3000:]
    assert "rank 0 stopped" in run.stdout and "rank 1 stopped" in run.stdout, run.stdout
    assert "not on another process" in run.stdout and "(nan)" in run.stdout


@pytest.mark.skipif(accelerate_bin() is None, reason="needs the accelerate CLI")
@pytest.mark.parametrize(
    "objective, batch_size, holdout",
    [
        ("auto", 64, 0),  # the defaults (features+kd, mixup) with a tiny set smaller than the batch: 14 images
        ("features", 5, 3),  # a batch that splits 3 + 2, an epoch boundary, a held-out slice
        ("ce", 7, 0),  # 4 + 3
    ],
)
def test_two_processes_compute_the_one_process_loss_at_every_step(tmp_path, objective, batch_size, holdout):
    # Accelerate's sharded loader repeated a tiny set smaller than the batch on every rank (mixup then drew its
    # partners from 2x the images) and dropped the odd image of an uneven split: the curves parted at step 0
    from .multiprocess_worker import finetune_curve

    two = launch_two(WORKER, str(tmp_path / "two.pt"), objective, str(batch_size), str(holdout))
    assert two.returncode == 0, two.stderr[-3000:]
    finetune_curve(str(tmp_path / "one.pt"), objective, batch_size, holdout)
    one, two = torch.load(tmp_path / "one.pt"), torch.load(tmp_path / "two.pt")
    assert len(one["losses"]) == len(two["losses"]) == 5
    assert two["losses"] == pytest.approx(one["losses"], rel=1e-5, abs=0)
    assert [s for s, _ in two["holdout"]] == [s for s, _ in one["holdout"]]
    assert [e for _, e in two["holdout"]] == pytest.approx([e for _, e in one["holdout"]], rel=1e-5)
    for name, weight in one["state"].items():
        torch.testing.assert_close(two["state"][name], weight, rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.skipif(accelerate_bin() is None, reason="needs the accelerate CLI")
def test_a_global_batch_smaller_than_the_processes_is_refused(tmp_path):
    run = launch_two(WORKER, str(tmp_path / "two.pt"), "features", "1", "0")
    assert run.returncode != 0 and "fewer than the 2 processes" in run.stderr, run.stderr[-3000:]
    assert not (tmp_path / "two.pt").exists()
