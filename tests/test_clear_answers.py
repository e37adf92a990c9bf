"""Clear answers instead of tracebacks or silence (#22, 8-10): a full disk, Ctrl-C, a teacher that cannot run,
labels the model cannot predict or that are strings, and what is not a refusal: a grey model takes RGB images,
a half-precision teacher is saved in its dtype, class names map to ids, and a finished work dir reruns read-only.

The refusals are rows of `test_bad_inputs.py`; the setups and patches below prepare them.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import datasets
import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from hf_practise import PractiseCompressor, get_family
from hf_practise.data import fit_channels, load_tiny_set

from .conftest import save_tiny_teacher, tiny_resnet
from .test_compressor import fast_config

#: what safetensors raises when the disk fills up while it writes (its Rust I/O error, not an OSError)
DISK_FULL = "Error while serializing: I/O error: No space left on device (os error 28)"


# ---- data sets, teachers and patches for the bad-input table ------------------------------------------------
def _images(n: int, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)) for _ in range(n)]


def _dataset(labels: list, dtype: str = "int64") -> datasets.Dataset:
    features = datasets.Features({"image": datasets.Image(), "label": datasets.Value(dtype)})
    return datasets.Dataset.from_dict({"image": _images(len(labels)), "label": labels}, features=features)


def labelled_set(train: list, *, test: list | None = None, dtype: str = "int64") -> Callable[[Path, dict], None]:
    """A `save_to_disk` folder whose train split (and test split, when given) carry these labels."""

    def setup(tmp: Path, base: dict) -> None:
        splits = {"train": _dataset(train, dtype)}
        if test is not None:
            splits["test"] = _dataset(test, dtype)
        datasets.DatasetDict(splits).save_to_disk(str(tmp / "labelled"))
        base["--dataset"] = str(tmp / "labelled")
        base["--num-samples"] = "8"

    return setup


def teacher_model_args(**args) -> Callable[[Path, dict], None]:
    """The tiny timm teacher with these config.json `model_args` (e.g. `global_pool=""`: its head cannot run)."""

    def setup(tmp: Path, base: dict) -> None:
        folder = tmp / "teacher"
        folder.mkdir()
        save_tiny_teacher(folder)
        config = json.loads((folder / "config.json").read_text())
        config["model_args"].update(args)
        (folder / "config.json").write_text(json.dumps(config))
        base["--model"] = f"local-dir:{folder}"

    return setup


def with_a_work_dir(tmp: Path, base: dict) -> None:
    base["--work-dir"] = str(tmp / "work")


def _raise_disk_full(*args, **kwargs):
    raise SafetensorError(DISK_FULL)


def disk_full_in_the_work_dir(monkeypatch: pytest.MonkeyPatch, tmp: Path) -> None:
    """The finetune checkpoint's safetensors writer finds the disk full."""
    import hf_practise.checkpoint

    monkeypatch.setattr(hf_practise.checkpoint, "save_file", _raise_disk_full)


def disk_full_in_the_output(monkeypatch: pytest.MonkeyPatch, tmp: Path) -> None:
    """The safetensors writer timm's `save_for_hf` calls (`safetensors.torch.save_file`) finds the disk full."""
    import safetensors.torch

    monkeypatch.setattr(safetensors.torch, "save_file", _raise_disk_full)


def ctrl_c_in_the_finetune(monkeypatch: pytest.MonkeyPatch, tmp: Path) -> None:
    import hf_practise.compressor

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(hf_practise.compressor, "mimic_finetune", interrupted)


# ---- the API rows -------------------------------------------------------------------------------------------
def compress_uint8_images() -> None:
    images = torch.randint(0, 255, (8, 3, 32, 32), dtype=torch.uint8)
    PractiseCompressor(tiny_resnet("resnet18"), fast_config(num_blocks=1)).compress(images)


def compress_with_a_broken_head() -> None:
    import timm

    model = timm.create_model("resnet18", num_classes=5, global_pool="", channels=(8, 16, 16, 32))
    PractiseCompressor(model, fast_config(num_blocks=1)).compress(torch.randn(8, 3, 32, 32))


def ce_on_labels_outside_the_classes() -> None:
    from hf_practise import FinetuneConfig

    cfg = fast_config(num_blocks=1, finetune=FinetuneConfig(iterations=2, batch_size=8, lr=1e-4, objective="ce"))
    PractiseCompressor(tiny_resnet("resnet18", num_classes=4), cfg).compress(_dataset([0, 3, 7, 100] * 2))


def eval_labels_outside_the_classes() -> None:
    x = torch.randn(8, 3, 32, 32)
    eval_set = torch.utils.data.TensorDataset(x, torch.tensor([0, 1, 7, 100] * 2))
    PractiseCompressor(tiny_resnet("resnet18"), fast_config(num_blocks=1)).compress(x, eval_set)


def per_class_on_string_labels() -> None:
    load_tiny_set(_dataset(["cat", "dog"] * 4, "string"), transform=lambda im: torch.zeros(3, 32, 32), per_class=2)


def checkpoint_on_a_full_disk() -> None:
    from hf_practise.checkpoint import save_checkpoint

    with pytest.MonkeyPatch.context() as m, tempfile.TemporaryDirectory() as work:
        disk_full_in_the_work_dir(m, Path(work))
        save_checkpoint(
            work, step=1, model_state={"w": torch.zeros(2)}, optimizer_state={"state": {}, "param_groups": []}, extra={}
        )


def dataset_that_is_a_file() -> None:
    from hf_practise.hub import load_dataset_source

    with tempfile.NamedTemporaryFile(suffix=".csv") as f:
        load_dataset_source(f.name)


# ---- what is not a refusal ----------------------------------------------------------------------------------
def test_a_grey_model_takes_rgb_images_converted_to_grey_and_says_so(caplog):
    import timm

    from hf_practise import LatencyConfig

    torch.manual_seed(0)
    model = timm.create_model("resnet18", num_classes=5, in_chans=1, channels=(8, 16, 16, 32))
    # timm keeps the RGB pretrained_cfg (3 channels, ImageNet mean/std) of a model built with in_chans=1
    model.pretrained_cfg = {**model.pretrained_cfg, "input_size": (3, 32, 32), "crop_pct": 1.0}
    data = datasets.Dataset.from_dict({"image": _images(12)}, features=datasets.Features({"image": datasets.Image()}))
    cfg = fast_config(num_blocks=1, latency=LatencyConfig(batch_size=4, repeats=3, warmup=1))
    with caplog.at_level("INFO", logger="hf_practise"):
        result = PractiseCompressor(model, cfg).compress(data)
    assert result.latency.base.input_size[0] == 1
    # each RGB image made grey (PIL's luma), normalised as timm's scripts normalise a grey model: with the
    # average of the RGB statistics its pretrained_cfg kept
    mean, std = (0.485 + 0.456 + 0.406) / 3, (0.229 + 0.224 + 0.225) / 3
    config = get_family(model).data_config(model)
    assert config["input_size"] == (1, 32, 32)
    assert config["mean"] == pytest.approx((mean,)) and config["std"] == pytest.approx((std,))
    resolve = getattr(timm.data, "resolve_input_data_config", None)  # timm's own (newer timm versions)
    if resolve is not None:
        theirs = resolve(model)
        assert tuple(theirs["input_size"]) == config["input_size"]
        assert theirs["mean"] == pytest.approx(config["mean"]) and theirs["std"] == pytest.approx(config["std"])
    images = result.check_images
    assert images.shape[1] == 1
    grey = torch.stack([torch.from_numpy(np.asarray(im.convert("L"), dtype=np.float32) / 255) for im in _images(12)])
    expected = ((grey - mean) / std)[:, None]
    assert any(torch.allclose(images[0], e, atol=1e-5) for e in expected)
    assert any("converted to greyscale" in r.getMessage() for r in caplog.records)


def test_channel_statistics_fit_the_model():
    rgb = {"input_size": (3, 32, 32), "mean": (0.5, 0.4, 0.3), "std": (0.2, 0.2, 0.2)}
    assert fit_channels(rgb, 3) is rgb  # nothing to change: the very same config
    grey = fit_channels(rgb, 1)
    assert grey["input_size"] == (1, 32, 32) and grey["mean"] == pytest.approx((0.4,))
    one = fit_channels({"input_size": (3, 8, 8), "mean": (0.5,), "std": (0.25,)}, 3)
    assert one["mean"] == (0.5, 0.5, 0.5) and one["std"] == (0.25, 0.25, 0.25)


def test_a_grey_transformers_model_gets_one_mean_and_std():
    from types import SimpleNamespace

    from hf_practise.backbones.transformers_common import processor_data_config

    config = processor_data_config({"size": {"height": 32, "width": 32}}, SimpleNamespace(num_channels=1))
    assert config["input_size"] == (1, 32, 32) and len(config["mean"]) == len(config["std"]) == 1


def _bf16_timm_teacher(folder: Path) -> None:
    save_tiny_teacher(folder)
    weights = folder / "model.safetensors"
    save_file(
        {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in load_file(str(weights)).items()},
        str(weights),
    )


def _floating_dtypes(folder: Path) -> set[torch.dtype]:
    return {v.dtype for v in load_file(str(folder / "model.safetensors")).values() if v.is_floating_point()}


def test_a_bf16_timm_teacher_is_saved_in_bf16_and_the_card_says_so(tmp_path):
    _bf16_timm_teacher(tmp_path / "teacher")
    compressor = PractiseCompressor.from_pretrained(f"local-dir:{tmp_path / 'teacher'}", fast_config(num_blocks=1))
    assert next(compressor.model.parameters()).dtype == torch.float32  # compressed in float32
    result = compressor.compress(torch.randn(12, 3, 32, 32))
    out = result.save_pretrained(tmp_path / "out")
    assert _floating_dtypes(out) == {torch.bfloat16}
    assert next(result.model.parameters()).dtype == torch.float32  # the result in memory is left as it ran
    assert json.loads((out / "practise_report.json").read_text())["weights_dtype"] == "bfloat16"
    assert "stored in bfloat16, the base model's dtype" in (out / "README.md").read_text()
    # and plain timm still reloads it (into its float32 model), to the compressed model's logits at bf16 precision
    from .conftest import reload_natively

    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = result.model_to_save().float()(x)
    torch.testing.assert_close(reload_natively("timm", out, x), expected, rtol=0, atol=1e-5)


def test_a_float32_teacher_is_saved_in_float32(tmp_path):
    result = PractiseCompressor(tiny_resnet("resnet18"), fast_config(num_blocks=1)).compress(torch.randn(12, 3, 32, 32))
    assert result.model_to_save() is result.model and result.weights_dtype == "float32"
    assert _floating_dtypes(result.save_pretrained(tmp_path / "out")) == {torch.float32}


def test_a_bf16_transformers_teacher_compresses_and_is_saved_in_bf16(tmp_path):
    from .tiny_models import tiny_model

    teacher = tiny_model("transformers-resnet/basic").to(torch.bfloat16)
    result = PractiseCompressor(teacher, fast_config(num_blocks=1)).compress(torch.randn(12, 3, 32, 32))
    out = result.save_pretrained(tmp_path / "out")
    assert _floating_dtypes(out) == {torch.bfloat16}
    assert json.loads((out / "config.json").read_text()).get("dtype") == "bfloat16"


def test_class_names_of_a_class_label_map_to_its_ids():
    names = ["bird", "cat", "dog"]
    encoded = _dataset(["cat", "dog", "bird", "cat", "dog", "bird"], "string").class_encode_column("label")
    assert encoded.features["label"].names == names
    # a ClassLabel column read back as names (a transform that decodes them) still gives the ClassLabel's ids
    as_names = encoded.with_transform(lambda b: {**b, "label": [names[i] for i in b["label"]]})
    for ds in (encoded, as_names):
        tiny = load_tiny_set(ds, transform=lambda im: torch.zeros(3, 8, 8), per_class=2)
        assert tiny.labels.tolist() == [1, 2, 0, 1, 2, 0]


def test_string_labels_are_not_needed_by_a_label_free_objective():
    tiny = load_tiny_set(_dataset(["cat", "dog"] * 3, "string"), transform=lambda im: torch.zeros(3, 8, 8))
    assert tiny.labels is None and "are strings, not class ids" in tiny.label_problem


# ---- a finished work dir on a read-only mount --------------------------------------------------------------
def _read_only(monkeypatch: pytest.MonkeyPatch, root: Path) -> list[str]:
    """Make every write under `root` fail as on a read-only mount (and record it); as a user that is not root the
    folder is made read-only for real too."""
    attempts: list[str] = []
    root = root.resolve()

    def under(path) -> bool:
        try:
            return Path(os.fspath(path)).resolve().is_relative_to(root)
        except TypeError:
            return False

    def refuse(path) -> None:
        attempts.append(str(path))
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    def guard(owner, name: str, path_arg: Callable) -> None:
        real = getattr(owner, name)

        def wrapper(*args, **kwargs):
            path = path_arg(args, kwargs)
            if path is not None and under(path):
                refuse(path)
            return real(*args, **kwargs)

        monkeypatch.setattr(owner, name, wrapper)

    import safetensors.torch

    import hf_practise.checkpoint
    import hf_practise.recoverability

    guard(tempfile, "mkstemp", lambda a, k: k.get("dir"))
    guard(tempfile, "mkdtemp", lambda a, k: k.get("dir"))
    guard(os, "replace", lambda a, k: a[1])
    guard(os, "rename", lambda a, k: a[1])
    guard(Path, "mkdir", lambda a, k: a[0] if not a[0].exists() else None)
    guard(Path, "write_text", lambda a, k: a[0])
    guard(Path, "write_bytes", lambda a, k: a[0])
    guard(Path, "touch", lambda a, k: a[0])
    for module in (safetensors.torch, hf_practise.checkpoint, hf_practise.recoverability):
        guard(module, "save_file", lambda a, k: a[1] if len(a) > 1 else k.get("filename"))
    if os.geteuid() != 0:  # root ignores permissions: there the patches above stand in for the mount
        for path in [root, *root.rglob("*")]:
            path.chmod(path.stat().st_mode & ~0o222)
    return attempts


def _writable_again(root: Path) -> None:
    for path in [root, *root.rglob("*")]:
        path.chmod(path.stat().st_mode | 0o200)


def test_a_finished_work_dir_reruns_read_only_to_the_same_result(tmp_path, monkeypatch):
    work = tmp_path / "work"
    images = torch.randn(16, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    cfg = fast_config(work_dir=str(work), num_blocks=None, latency_reduction=0.05)

    def timed(self, blocks):  # the first run's timings, made steady: 4% of latency per block
        return SimpleNamespace(reduction=0.04 * len(blocks), base=SimpleNamespace(device="cpu"))

    monkeypatch.setattr(PractiseCompressor, "measure_pruned", timed)
    first = PractiseCompressor(tiny_resnet("resnet18"), cfg).compress(images)
    assert len(first.dropped) == 2
    assert (work / "latency_shares.json").exists()

    # the rerun may not write, and its timings would choose other blocks (or none) if it measured again
    attempts = _read_only(monkeypatch, work)

    def no_measuring(self, blocks):
        raise AssertionError(f"the rerun measured {[b.path for b in blocks]} again")

    monkeypatch.setattr(PractiseCompressor, "measure_pruned", no_measuring)
    try:
        second = PractiseCompressor(tiny_resnet("resnet18"), cfg).compress(images)
    finally:
        if os.geteuid() != 0:
            _writable_again(work)
    assert attempts == []
    assert [r.block for r in second.dropped] == [r.block for r in first.dropped]
    assert second.finetune.reused_finished
    a, b = first.model.state_dict(), second.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_file_that_already_holds_the_bytes_is_not_rewritten(tmp_path, monkeypatch):
    from hf_practise.files import atomic_write_text

    path = atomic_write_text(tmp_path / "a.json", "{}")
    attempts = _read_only(monkeypatch, tmp_path)
    atomic_write_text(path, "{}")  # the same text: nothing to write
    with pytest.raises(OSError, match="Read-only"):
        atomic_write_text(path, "{ }")
    assert attempts
    if os.geteuid() != 0:
        _writable_again(tmp_path)
