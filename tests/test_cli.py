"""`examples/compress.py` as users run it: on a local imagefolder and a save_to_disk folder, plus its refusals."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from .conftest import CLI_FAST, REPO, save_tiny_teacher
from .test_backbones import reload_in_plain_timm
from .test_compressor import image_dataset

SCRIPT = REPO / "examples" / "compress.py"
FAST = CLI_FAST


def compress(teacher_dir, dataset: str, output_dir: str, *flags: str) -> subprocess.CompletedProcess:
    """examples/compress.py on the tiny teacher, with the fast flags."""
    return run("--model", f"local-dir:{teacher_dir}", "--dataset", dataset, "--output-dir", output_dir, *flags, *FAST)


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=600)


def test_cli_on_imagefolder_saves_a_plain_timm_model(teacher_dir, imagefolder, tmp_path):
    out = tmp_path / "out"
    proc = compress(teacher_dir, str(imagefolder), str(out), "--num-samples", "12", "--num-blocks", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Recoverability scan" in proc.stdout and "| block |" in proc.stdout and "Dropped:" in proc.stdout
    config = json.loads((out / "config.json").read_text())
    assert sum(config["model_args"]["layers"]) == 8 - 2
    x = torch.randn(2, 3, 32, 32)
    logits = reload_in_plain_timm(out, x, tmp_path)
    assert logits.shape == (2, 5) and torch.isfinite(logits).all()


def test_cli_on_save_to_disk_with_eval_split(teacher_dir, tmp_path):
    import datasets

    data = tmp_path / "data"
    datasets.DatasetDict({"train": image_dataset(16), "test": image_dataset(10)}).save_to_disk(str(data))
    out = tmp_path / "out"
    proc = compress(
        teacher_dir,
        str(data),
        str(out),
        "--split",
        "train",
        "--eval-split",
        "test",
        "--num-samples",
        "10",
        "--num-blocks",
        "1",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "practise_report.json").read_text())
    assert report["top1_before"] is not None and report["tiny_set"]["num_samples"] == 10


def test_cli_objective_flag_reaches_the_finetune_and_the_card(teacher_dir, imagefolder, tmp_path):
    out = tmp_path / "out"
    proc = compress(
        teacher_dir,
        str(imagefolder),
        str(out),
        "--num-samples",
        "12",
        "--num-blocks",
        "1",
        "--objective",
        "kd",
        "--kd-temperature",
        "2",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "practise_report.json").read_text())
    assert report["config"]["finetune"]["objective"] == "kd"
    card = (out / "README.md").read_text()
    assert "KL divergence to the teacher's logits at temperature 2" in card and "classifier trained with" in card


def test_cli_refusals(teacher_dir, imagefolder, tmp_path):
    proc = compress(teacher_dir, str(imagefolder), str(tmp_path / "o1"), "--num-samples", "500")
    assert proc.returncode != 0 and "--num-samples 500 is larger than the 18 images" in proc.stderr
    assert not (tmp_path / "o1").exists()

    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x").write_text("x")
    proc = compress(teacher_dir, str(imagefolder), str(busy))
    assert proc.returncode != 0 and "--overwrite" in proc.stderr
    assert [p.name for p in busy.iterdir()] == ["x"]

    proc = compress(teacher_dir, str(tmp_path / "nowhere"), str(tmp_path / "o2"))
    assert proc.returncode != 0 and "is not a local folder" in proc.stderr

    proc = compress(
        teacher_dir, str(imagefolder), str(tmp_path / "o3"), "--num-samples", "12", "--latency-reduction", "0.99"
    )
    assert proc.returncode != 0 and "cannot be reached" in proc.stderr
    assert not (tmp_path / "o3").exists()


@pytest.mark.parametrize("form", [["--token", "hf_Secret1"], ["--token=hf_Secret1"], ["--tok", "hf_Secret1"]])
def test_the_recorded_command_has_no_token_and_no_local_paths(form):
    from hf_practise import cli

    args = cli.parse_args(
        [
            "compress",
            "--model",
            "local-dir:/home/someone/teachers/r34",
            "--dataset",
            "/home/someone/data/fmnist",
            "--output-dir",
            "/home/someone/out/r34-practise",
            "--num-blocks",
            "3",
            "--work-dir",
            "/home/someone/work",
            "--metric",
            "/home/someone/metrics/f1",
            *form,
        ]
    )
    assert args.token == "hf_Secret1"  # argparse took it, in each form
    command = cli.reproduce_command(args)
    assert "hf_Secret1" not in command and "--token" not in command and "/home/someone" not in command
    assert "--model local-dir:r34" in command and "--dataset fmnist" in command and "--num-blocks 3" in command
    assert "--metric f1" in command


def test_a_work_dir_refuses_a_second_teacher(teacher_dir, imagefolder, tmp_path):
    """Same command, same work dir, another teacher of the same architecture: refused, never A's result as B's."""
    import torch as _torch

    from hf_practise import get_family
    from hf_practise.backbones.tiny import randomise_norms

    other = tmp_path / "teacher-b"
    other.mkdir()
    save_tiny_teacher(other)
    model_b = randomise_norms(
        __import__("timm").create_model("resnet18", num_classes=5, channels=(8, 16, 16, 32)), seed=5
    )
    config = (other / "config.json").read_text()
    get_family(model_b).save_pretrained(model_b, other, source_config={})
    (other / "config.json").write_text(config)  # same config, other weights
    work = tmp_path / "work"
    flags = ("--num-samples", "12", "--num-blocks", "1", "--work-dir", str(work))
    first = compress(teacher_dir, str(imagefolder), str(tmp_path / "a"), *flags)
    assert first.returncode == 0, first.stderr[-2000:]
    assert (work / "hf_practise_work_dir.json").exists() and list(work.glob("finetune-*/checkpoint-*"))
    second = compress(other, str(imagefolder), str(tmp_path / "b"), *flags)
    assert second.returncode == 1 and "belongs to another model" in second.stderr and "Traceback" not in second.stderr
    assert not (tmp_path / "b").exists()
    # the same teacher again reuses its own scan and finished finetune, and says so; the weights are identical
    again = compress(teacher_dir, str(imagefolder), str(tmp_path / "c"), *flags)
    assert again.returncode == 0 and "finished checkpoint" in again.stdout
    from safetensors.torch import load_file

    a, c = load_file(str(tmp_path / "a" / "model.safetensors")), load_file(str(tmp_path / "c" / "model.safetensors"))
    assert all(_torch.equal(a[k], c[k]) for k in a)
    assert "finished checkpoint" in (tmp_path / "c" / "README.md").read_text()


def test_cli_times_in_onnxruntime_and_exports_onnx(teacher_dir, imagefolder, tmp_path):
    out = tmp_path / "out"
    proc = compress(
        teacher_dir,
        str(imagefolder),
        str(out),
        "--num-samples",
        "12",
        "--num-blocks",
        "1",
        "--latency-backend",
        "onnxruntime",
        "--export",
        "onnx",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ONNX export: max |logit difference|" in proc.stdout
    report = json.loads((out / "practise_report.json").read_text())
    assert report["latency"]["base"]["backend"] == report["latency"]["candidate"]["backend"] == "onnxruntime"
    assert report["config"]["latency"]["backend"] == "onnxruntime" and report["onnx"]["relative_diff"] < 1e-4
    assert (out / "model.onnx").exists()
    card = (out / "README.md").read_text()
    assert "ONNX Runtime" in card and "### ONNX" in card


def test_cli_names_the_extra_of_a_missing_runtime(teacher_dir, imagefolder, tmp_path):
    # a runtime that cannot be imported: the run stops before any work and says what to install
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "openvino.py").write_text("raise ImportError('openvino is not installed here')\n")
    env = {**__import__("os").environ, "PYTHONPATH": str(blocker)}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--model", f"local-dir:{teacher_dir}", "--dataset", str(imagefolder)]
        + ["--output-dir", str(tmp_path / "out"), "--latency-backend", "openvino", *FAST],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert proc.returncode != 0 and 'pip install "hf-practise[openvino]"' in proc.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "flags,env,expected",
    [
        ([], {}, "fp32"),
        (["--mixed-precision", "bf16"], {}, "bf16"),
        ([], {"ACCELERATE_MIXED_PRECISION": "fp16"}, "fp16"),
        (["--mixed-precision", "bf16", "--latency-precision", "fp32"], {}, "fp32"),
        (["--mixed-precision", "bf16", "--latency-backend", "onnxruntime"], {}, "fp32"),
    ],
)
def test_latency_is_timed_in_the_finetune_precision(flags, env, expected, monkeypatch):
    from hf_practise import cli

    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    args = cli.parse_args(["compress", "--model", "m", "--dataset", "d", "--output-dir", "o", *flags])
    assert cli.build_config(args).latency.precision == expected


LATENCY_TABLE = REPO / "examples" / "latency_table.py"


def test_latency_table_tool_measures_a_table_compress_accepts(teacher_dir, tmp_path):
    from hf_practise.config import check_latency_table

    table = tmp_path / "table.json"
    proc = subprocess.run(
        [sys.executable, str(LATENCY_TABLE), "--model", f"local-dir:{teacher_dir}", "--output", str(table)]
        + ["--backend", "onnxruntime", "--batch-size", "2", "--repeats", "3", "--threads", "1"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    shares = check_latency_table(json.loads(table.read_text()))
    assert len(shares) == 4 and "ONNX Runtime" in proc.stdout


def test_latency_table_tool_exports_every_block_for_another_device(teacher_dir, tmp_path):
    import numpy as np
    import onnxruntime as ort

    folder = tmp_path / "blocks"
    proc = subprocess.run(
        [sys.executable, str(LATENCY_TABLE), "--model", f"local-dir:{teacher_dir}", "--export-onnx", str(folder)]
        + ["--batch-size", "2"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest = json.loads((folder / "manifest.json").read_text())
    assert len(manifest["blocks"]) == 4
    for entry in [manifest["model"], *manifest["blocks"].values()]:  # each file runs on the inputs it lists
        session = ort.InferenceSession(str(folder / entry["file"]), providers=["CPUExecutionProvider"])
        feed = {
            i.name: np.random.rand(*shape).astype(np.float32) for i, shape in zip(session.get_inputs(), entry["inputs"])
        }
        assert all(np.isfinite(o).all() for o in session.run(None, feed))


def test_the_recorded_command_writes_a_negated_boolean_flag_as_its_flag():
    import argparse

    from hf_practise.provenance import recorded_command

    p = argparse.ArgumentParser()
    p.add_argument("--single", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--extra", action=argparse.BooleanOptionalAction, default=False)
    assert recorded_command("run", p, p.parse_args(["--no-single"])) == "run --no-single"
    assert recorded_command("run", p, p.parse_args(["--extra"])) == "run --extra"
    assert recorded_command("run", p, p.parse_args(["--single", "--no-extra"])) == "run"
