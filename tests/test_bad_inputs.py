"""Bad input, table-driven: each must end with a message that says what was wrong and how to fix it.

CLI rows run `examples/compress.py`'s `main` in this process (one subprocess row checks the real exit code);
each must exit non-zero with its message, print no traceback and leave no output folder, not even a hidden
temporary one. API rows call the public functions and expect the exception and message.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from .conftest import CLI_FAST, REPO, save_tiny_teacher
from .test_compressor import image_dataset

SPEC = importlib.util.spec_from_file_location("compress_cli", REPO / "examples" / "compress.py")
compress_cli = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(compress_cli)


@dataclass
class Case:
    """A bad CLI input: extra flags (or replacements of the defaults below) and the message it must give."""

    id: str
    flags: list[str]
    message: str
    exit_code: int = 1  # argparse's own refusals exit with 2
    setup: Callable[[Path, dict], None] | None = None  # prepares files under tmp; may edit the base flags
    replace: dict[str, str] = field(default_factory=dict)  # base flag -> value


def _teacher_variant(edit: Callable[[Path], None]) -> Callable[[Path, dict], None]:
    def setup(tmp: Path, base: dict) -> None:
        folder = tmp / "teacher"
        folder.mkdir()
        save_tiny_teacher(folder)
        edit(folder)
        base["--model"] = f"local-dir:{folder}"

    return setup


def _truncate(folder: Path) -> None:
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])


def _drop_keys(folder: Path) -> None:
    state = load_file(str(folder / "model.safetensors"))
    save_file({k: v for k, v in state.items() if not k.startswith("layer4")}, str(folder / "model.safetensors"))


def _edit_config(**fields) -> Callable[[Path], None]:
    def edit(folder: Path) -> None:
        config = json.loads((folder / "config.json").read_text())
        config.update(fields)
        (folder / "config.json").write_text(json.dumps(config))

    return edit


def _shallow_teacher(tmp: Path, base: dict) -> None:
    """A ResNet with one block per stage, each changing the width: nothing can be dropped."""
    import timm

    from hf_practise import get_family

    model = timm.create_model("resnet18", layers=[1, 1, 1, 1], channels=(8, 16, 16, 32), num_classes=5)
    folder = tmp / "shallow"
    folder.mkdir()
    get_family(model).save_pretrained(model, folder, source_config={})
    base["--model"] = f"local-dir:{folder}"


def _file(name: str, text: str, flag: str) -> Callable[[Path, dict], None]:
    def setup(tmp: Path, base: dict) -> None:
        (tmp / name).write_text(text)
        base[flag] = str(tmp / name)

    return setup


def _table(shares: dict) -> Callable[[Path, dict], None]:
    return _file("table.json", json.dumps(shares), "--latency-table")


def _output_under_a_file(tmp: Path, base: dict) -> None:
    (tmp / "afile").write_text("x")
    base["--output-dir"] = str(tmp / "afile" / "out")


def _output_is_a_file(tmp: Path, base: dict) -> None:
    (tmp / "out").write_text("x")


def _output_not_empty(tmp: Path, base: dict) -> None:
    (tmp / "out").mkdir()
    (tmp / "out" / "keep.txt").write_text("x")


def _foreign_work_dir(tmp: Path, base: dict) -> None:
    (tmp / "work").mkdir()
    (tmp / "work" / "notes.txt").write_text("mine")
    base["--work-dir"] = str(tmp / "work")


def _other_models_work_dir(tmp: Path, base: dict) -> None:
    (tmp / "work").mkdir()
    (tmp / "work" / "hf_practise_work_dir.json").write_text(
        json.dumps({"model": "local-dir:other", "model_fingerprint": "0123456789abcdef"})
    )
    base["--work-dir"] = str(tmp / "work")


def _broken_image_set(tmp: Path, base: dict) -> None:
    root = tmp / "broken"
    rng = np.random.default_rng(0)
    for c in range(2):
        (root / f"c{c}").mkdir(parents=True)
        for i in range(4):
            Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(root / f"c{c}" / f"{i}.png")
    data = (root / "c1" / "2.png").read_bytes()
    (root / "c1" / "2.png").write_bytes(data[:40])  # a truncated PNG
    base["--dataset"] = str(root)
    base["--num-samples"] = "8"


def _unlabelled_set(tmp: Path, base: dict) -> None:
    image_dataset(12, labels=False).save_to_disk(str(tmp / "unlabelled"))
    base["--dataset"] = str(tmp / "unlabelled")
    base["--num-samples"] = "8"


CLI_CASES = [
    # targets
    Case("latency-reduction-0", ["--latency-reduction", "0"], r"fraction in \(0, 1\).*got 0"),
    Case("latency-reduction-1.5", ["--latency-reduction", "1.5"], r"fraction in \(0, 1\)"),
    Case("latency-reduction-nan", ["--latency-reduction", "nan"], r"fraction in \(0, 1\)"),
    Case("num-blocks-0", ["--num-blocks", "0"], r"--num-blocks\) must be at least 1"),
    Case("num-blocks-too-many", ["--num-blocks", "99"], r"only 4 droppable ones; use at most 4"),
    Case("both-targets", ["--num-blocks", "2", "--latency-reduction", "0.2"], r"not allowed with argument", 2),
    Case("unreachable-target", ["--latency-reduction", "0.99"], r"cannot be reached: dropping all 4"),
    # numbers of the phases
    Case("latency-batch-size-0", ["--latency-batch-size", "0"], r"--latency-batch-size\) must be an integer > 0"),
    Case("latency-repeats-0", ["--latency-repeats", "0"], r"--latency-repeats\) must be an integer > 0"),
    Case("latency-threads-0", ["--latency-threads", "0"], r"--latency-threads\) must be an integer > 0"),
    Case("kd-temperature-negative", ["--kd-temperature", "-1"], r"--kd-temperature\) must be a number > 0"),
    Case("lr-negative", ["--lr", "-1"], r"--lr\) must be a number > 0"),
    Case("lr-nan", ["--lr", "nan"], r"--lr\) must be a number > 0"),
    Case("scan-lr-0", ["--scan-lr", "0"], r"--scan-lr\) must be a number > 0"),
    Case("iterations-negative", ["--iterations", "-5"], r"--iterations\) must be an integer >= 0"),
    Case("batch-size-0", ["--batch-size", "0"], r"--batch-size\) must be an integer > 0"),
    Case("scan-iterations-negative", ["--scan-iterations", "-1"], r"--scan-iterations\) must be an integer >= 0"),
    Case("scan-batch-size-0", ["--scan-batch-size", "0"], r"--scan-batch-size\) must be an integer > 0"),
    Case("weight-decay-negative", ["--weight-decay", "-1"], r"--weight-decay\) must be a number >= 0"),
    Case("seed-negative", ["--seed", "-1"], r"--seed\) must be an integer >= 0"),
    Case("objective-unknown", ["--objective", "mse"], r"invalid choice: 'mse'", 2),
    Case("iterations-not-a-number", ["--iterations", "ten"], r"invalid int value: 'ten'", 2),
    # the tiny set and the eval set
    Case("num-samples-0", [], r"--num-samples must be at least 1", replace={"--num-samples": "0"}),
    Case(
        "num-samples-too-many", [], r"--num-samples 500 is larger than the 18 images", replace={"--num-samples": "500"}
    ),
    Case("per-class-0", ["--per-class", "0"], r"--per-class must be at least 1"),
    Case("per-class-too-many", ["--per-class", "100"], r"Class 0 has only 6 images; lower `per_class`"),
    Case("eval-num-samples-0", ["--eval-split", "train", "--eval-num-samples", "0"], r"--eval-num-samples must be"),
    Case("eval-num-samples-alone", ["--eval-num-samples", "5"], r"--eval-num-samples needs --eval-split"),
    Case("eval-split-missing", ["--eval-split", "validation"], r"Split `validation` not found.*available: \['train'\]"),
    Case("split-missing", ["--split", "test"], r"Split `test` not found"),
    Case("image-column-missing", ["--image-column", "picture"], r"Image column `picture` not found"),
    Case("dataset-missing", [], r"is not a local folder", replace={"--dataset": "no/such/dataset/folder"}),
    Case(
        "broken-image",
        [],
        r"Image `.*c1/2\.png` \(example \d+\) cannot be decoded.*--skip-broken-images",
        setup=_broken_image_set,
    ),
    Case(
        "ce-without-labels",
        ["--objective", "ce"],
        r"`ce` objective needs a label for every tiny-set image",
        setup=_unlabelled_set,
    ),
    # the model
    Case(
        "model-local-dir-missing",
        [],
        r"the folder `.*nowhere` does not exist",
        replace={"--model": "local-dir:nowhere"},
    ),
    Case(
        "model-path-missing",
        [],
        r"model folder `\./nowhere/teacher` does not exist",
        replace={"--model": "./nowhere/teacher"},
    ),
    Case(
        "model-unknown-timm-name", [], r"`resnet9000` is neither a timm model name", replace={"--model": "resnet9000"}
    ),
    Case(
        "model-truncated-safetensors",
        [],
        r"`model.safetensors` is not a valid safetensors file.*truncated",
        setup=_teacher_variant(_truncate),
    ),
    Case(
        "model-empty-safetensors",
        [],
        r"not a valid safetensors file",
        setup=_teacher_variant(lambda f: (f / "model.safetensors").write_bytes(b"")),
    ),
    Case(
        "model-random-safetensors",
        [],
        r"not a valid safetensors file",
        setup=_teacher_variant(lambda f: (f / "model.safetensors").write_bytes(os.urandom(4096))),
    ),
    Case(
        "model-missing-weights",
        [],
        r"weights do not match the architecture in config.json: \d+ missing \(layer4",
        setup=_teacher_variant(_drop_keys),
    ),
    Case(
        "model-only-pickle",
        [],
        r"has no .safetensors weights. hf_practise never unpickles",
        setup=_teacher_variant(lambda f: (f / "model.safetensors").rename(f / "pytorch_model.bin")),
    ),
    Case(
        "model-invalid-config-json",
        [],
        r"config `.*config.json` is not valid JSON",
        setup=_teacher_variant(lambda f: (f / "config.json").write_text("{not json")),
    ),
    Case("model-no-config", [], r"has no config.json", setup=_teacher_variant(lambda f: (f / "config.json").unlink())),
    Case(
        "model-unknown-architecture",
        [],
        r"names the architecture `resnet9000`, which this timm",
        setup=_teacher_variant(_edit_config(architecture="resnet9000")),
    ),
    Case(
        "model-nothing-to-drop",
        ["--num-blocks", "1"],
        r"There is nothing to drop.*blocks per stage \[1, 1, 1, 1\]",
        setup=_shallow_teacher,
    ),
    # the latency table
    Case("latency-table-missing-file", ["--latency-table", "nowhere.json"], r"--latency-table `nowhere.json` does not"),
    Case(
        "latency-table-invalid-json",
        [],
        r"latency table `.*table.json` is not valid JSON",
        setup=_file("table.json", "{'layer1.1': 0.1", "--latency-table"),
    ),
    Case(
        "latency-table-nan",
        [],
        r"not finite fractions in \(0, 1\): \{'layer1.1': nan\}",
        setup=_file("table.json", '{"layer1.1": NaN, "layer2.1": 0.1}', "--latency-table"),
    ),
    Case(
        "latency-table-negative",
        [],
        r"not finite fractions in \(0, 1\): \{'layer2.1': -0.3\}",
        setup=_table({"layer1.1": 0.1, "layer2.1": -0.3}),
    ),
    Case(
        "latency-table-sum-over-1",
        [],
        r"add up to 1.800, more than the whole model",
        setup=_table({"layer1.1": 0.6, "layer2.1": 0.6, "layer3.1": 0.6}),
    ),
    Case("latency-table-not-an-object", [], r"must be a non-empty JSON object", setup=_table([0.1, 0.2])),
    Case(
        "latency-table-missing-blocks",
        [],
        r"latency table has no entry for \['layer2.1', 'layer3.1', 'layer4.1'\]",
        setup=_table({"layer1.1": 0.1}),
    ),
    # where the output goes
    Case("output-dir-is-a-file", [], r"is a file; the output must be a folder", setup=_output_is_a_file),
    Case(
        "output-dir-under-a-file", [], r"`.*afile` is a file, so `.*out` cannot be created", setup=_output_under_a_file
    ),
    Case(
        "output-dir-not-empty",
        [],
        r"exists and is not empty; choose another one or pass --overwrite",
        setup=_output_not_empty,
    ),
    Case("push-without-repo-id", ["--push-to-hub"], r"--push-to-hub needs --hub-model-id ORG/NAME"),
    Case("push-to-invalid-repo-id", ["--push-to-hub", "--hub-model-id", "a/b/c"], r"is not a Hub repo id"),
    Case("work-dir-foreign", [], r"is not empty and has no hf_practise_work_dir.json", setup=_foreign_work_dir),
    Case(
        "work-dir-other-model",
        [],
        r"belongs to another model \(local-dir:other, weights 0123456789abcdef\)",
        setup=_other_models_work_dir,
    ),
    Case("work-dir-is-a-file", [], r"--work-dir .*wd is a file", setup=_file("wd", "x", "--work-dir")),
]


def run_main(argv: list[str], capsys) -> tuple[int, str]:
    """`compress.main(argv)` in this process: (exit code, stderr)."""
    try:
        code = compress_cli.main(argv)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
        if not isinstance(e.code, int) and e.code is not None:
            print(e.code, file=__import__("sys").stderr)
    return code, capsys.readouterr().err


def test_the_table_has_at_least_40_rows():
    assert len(CLI_CASES) + len(API_CASES) >= 40 and len({c.id for c in CLI_CASES}) == len(CLI_CASES)


@pytest.mark.parametrize("case", CLI_CASES, ids=lambda c: c.id)
def test_bad_cli_input(case: Case, teacher_dir, imagefolder, tmp_path, capsys):
    base = {
        "--model": f"local-dir:{teacher_dir}",
        "--dataset": str(imagefolder),
        "--output-dir": str(tmp_path / "out"),
        "--num-samples": "12",
    }
    if case.setup is not None:
        case.setup(tmp_path, base)
    base.update(case.replace)
    argv = [w for kv in base.items() for w in kv] + CLI_FAST + case.flags
    before = {p.name for p in tmp_path.iterdir()}
    code, err = run_main(argv, capsys)
    assert code == case.exit_code, err[-2000:]
    assert "Traceback" not in err
    message = err.strip().splitlines()[-1]
    import re

    assert re.search(case.message, message), message
    # nothing half-written: no new output folder, no hidden temporary sibling
    after = {p.name for p in tmp_path.iterdir()}
    new = after - before - {"work"}
    assert not new, new


def test_a_bad_input_exits_non_zero_without_traceback_in_a_real_process(teacher_dir, imagefolder, tmp_path):
    import subprocess
    import sys

    argv = ["--model", f"local-dir:{teacher_dir}", "--dataset", str(imagefolder), "--output-dir", str(tmp_path / "o")]
    proc = subprocess.run(
        [sys.executable, str(REPO / "examples" / "compress.py"), *argv, "--latency-reduction", "0"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().endswith("e.g. 0.22 for 22%; got 0.0.")
    assert not (tmp_path / "o").exists()


# ---- the Python API ---------------------------------------------------------------------------------------
def _api_config(**kw):
    from hf_practise import CompressionConfig

    return lambda: CompressionConfig(**kw)


def _api(factory: str, **kw):
    import hf_practise

    return lambda: getattr(hf_practise, factory)(**kw)


def _compress_tensor(shape):
    def call():
        from hf_practise import PractiseCompressor

        from .conftest import tiny_resnet

        PractiseCompressor(tiny_resnet("resnet18"), _api_config(num_blocks=1)()).compress(torch.randn(*shape))

    return call


def _wrap_linear():
    from hf_practise import PractiseCompressor

    PractiseCompressor(torch.nn.Linear(3, 3))


def _load(name: str):
    from hf_practise.hub import load_model

    return lambda: load_model(name)


API_CASES = [
    ("config-latency-reduction-0", _api_config(latency_reduction=0), ValueError, r"fraction in \(0, 1\)"),
    ("config-no-target", _api_config(latency_reduction=None), ValueError, r"Set a target"),
    ("config-num-blocks-float", _api_config(num_blocks=1.5), ValueError, r"must be at least 1"),
    ("config-table-inf", _api_config(latency_table={"a": math.inf}), ValueError, r"not finite fractions"),
    ("latency-batch-0", _api("LatencyConfig", batch_size=0), ValueError, r"latency.batch_size"),
    ("latency-input-size", _api("LatencyConfig", input_size=(3, 32)), ValueError, r"\(channels, height, width\)"),
    ("finetune-kd-temperature", _api("FinetuneConfig", kd_temperature=0), ValueError, r"kd_temperature"),
    ("finetune-optimizer", _api("FinetuneConfig", optimizer="rmsprop"), ValueError, r"finetune.optimizer"),
    ("finetune-objective", _api("FinetuneConfig", objective="mse"), ValueError, r"finetune.objective"),
    ("scan-lr", _api("ScanConfig", lr=-1e-3), ValueError, r"scan.lr"),
    ("no-family", _wrap_linear, ValueError, r"No backbone adapter for `Linear`; supported:"),
    ("tensor-3d", _compress_tensor((4, 3, 32)), ValueError, r"must be \(N, C, H, W\)"),
    ("tensor-empty", _compress_tensor((0, 3, 32, 32)), ValueError, r"empty"),
    ("load-missing-folder", _load("/no/such/model"), FileNotFoundError, r"does not exist"),
    ("load-unknown-name", _load("resnet9000"), ValueError, r"neither a timm model name"),
]


@pytest.mark.parametrize("case", API_CASES, ids=lambda c: c[0])
def test_bad_api_input(case):
    _, call, error, message = case
    with pytest.raises(error, match=message):
        call()
