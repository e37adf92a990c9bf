"""Nothing from outside the model folder is read or run, and nothing local is published.

A model folder's config may not name files for timm to read (`model_args.checkpoint_path`, ...), its shard index
and links may not lead out of it (a Hub snapshot's links into its cache's `blobs/` are fine), a metric that is not
shipped runs only with `trust_remote_code`, and the report names skipped images relative to the dataset folder.
The refusals themselves are rows of `test_bad_inputs.py`; the setups below build their folders.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from hf_practise.hub import load_model

from .conftest import save_tiny_teacher


# ---- folders for the bad-input table (setups: they prepare files under tmp and point --model at them) ---------
def _edit_json(path: Path, keys: tuple[str, ...], value) -> None:
    config = json.loads(path.read_text())
    node = config
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    node[keys[-1]] = value
    path.write_text(json.dumps(config))


def timm_config_naming(*keys: str, value) -> Callable[[Path, dict], None]:
    """A timm teacher whose config.json sets `keys` (a dotted path) to `value`."""

    def setup(tmp: Path, base: dict) -> None:
        folder = tmp / "teacher"
        folder.mkdir()
        save_tiny_teacher(folder)
        _edit_json(folder / "config.json", keys, value)
        base["--model"] = f"local-dir:{folder}"

    return setup


def timm_wrapper_naming_a_checkpoint(tmp: Path, base: dict) -> None:
    """A transformers TimmWrapper checkpoint whose `model_args` carry timm's `checkpoint_path`."""
    from hf_practise.backbones.transformers_timm_wrapper import TransformersTimmWrapperFamily

    folder = tmp / "wrapper"
    TransformersTimmWrapperFamily.tiny_models["timm-resnet"]().save_pretrained(folder)
    _edit_json(folder / "config.json", ("model_args", "checkpoint_path"), "../../etc/passwd")
    base["--model"] = str(folder)


def _sharded_transformers(folder: Path) -> tuple[torch.nn.Module, dict[str, str]]:
    """A tiny transformers ResNet in two shards and an index: {weight name: shard file name}."""
    from transformers import ResNetConfig, ResNetForImageClassification

    model = ResNetForImageClassification(
        ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[2, 2], num_labels=3)
    ).eval()
    model.save_pretrained(folder)
    state = load_file(str(folder / "model.safetensors"))
    (folder / "model.safetensors").unlink()
    names = sorted(state)
    weight_map = {k: f"model-0000{1 + (i >= len(names) // 2)}-of-00002.safetensors" for i, k in enumerate(names)}
    for shard in sorted(set(weight_map.values())):
        part = {k: state[k].contiguous() for k in names if weight_map[k] == shard}
        save_file(part, str(folder / shard), metadata={"format": "pt"})
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return model, weight_map


def shard_outside_the_folder(tmp: Path, base: dict) -> None:
    """A sharded transformers model whose index sends its second shard to `../outside/`."""
    folder = tmp / "model"
    _, weight_map = _sharded_transformers(folder)
    second = sorted(set(weight_map.values()))[1]
    (tmp / "outside").mkdir()
    (folder / second).rename(tmp / "outside" / second)
    index = {"metadata": {}, "weight_map": {k: v if v != second else f"../outside/{v}" for k, v in weight_map.items()}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    base["--model"] = str(folder)


def weights_linked_outside(tmp: Path, base: dict) -> None:
    """A timm teacher whose model.safetensors is a link to a file in another folder."""
    folder, elsewhere = tmp / "teacher", tmp / "elsewhere"
    folder.mkdir()
    elsewhere.mkdir()
    save_tiny_teacher(folder)
    (folder / "model.safetensors").rename(elsewhere / "model.safetensors")
    (folder / "model.safetensors").symlink_to(elsewhere / "model.safetensors")
    base["--model"] = f"local-dir:{folder}"


# ---- what stays allowed -----------------------------------------------------------------------------------------
def _as_hub_cache(folder: Path, cache: Path) -> Path:
    """Move `folder`'s files into a Hub-cache-like repo (`blobs/` + `snapshots/REV/` links); the snapshot."""
    repo = cache / "models--org--tiny"
    blobs, snapshot = repo / "blobs", repo / "snapshots" / "0123abcd"
    blobs.mkdir(parents=True)
    snapshot.mkdir(parents=True)
    for i, file in enumerate(sorted(folder.iterdir())):
        blob = blobs / f"blob{i}"
        file.rename(blob)
        (snapshot / file.name).symlink_to(os.path.relpath(blob, snapshot))
    return snapshot


def test_a_hub_cache_snapshot_with_linked_shards_loads(tmp_path):
    pytest.importorskip("transformers")
    ref, weight_map = _sharded_transformers(tmp_path / "plain")
    snapshot = _as_hub_cache(tmp_path / "plain", tmp_path / "cache")
    assert all((snapshot / shard).is_symlink() for shard in weight_map.values())
    model, _ = load_model(str(snapshot))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x).logits, ref(x).logits)


def test_a_snapshot_link_leading_out_of_the_cached_repo_is_refused(tmp_path):
    pytest.importorskip("transformers")
    _, weight_map = _sharded_transformers(tmp_path / "plain")
    snapshot = _as_hub_cache(tmp_path / "plain", tmp_path / "cache")
    shard = sorted(set(weight_map.values()))[0]
    (tmp_path / "elsewhere").mkdir()
    (snapshot / shard).resolve().rename(tmp_path / "elsewhere" / shard)
    (snapshot / shard).unlink()
    (snapshot / shard).symlink_to(tmp_path / "elsewhere" / shard)
    with pytest.raises(ValueError, match=rf"`{shard}` resolves to .*elsewhere.*outside the model folder"):
        load_model(str(snapshot))


def test_a_timm_snapshot_in_a_hub_cache_loads(tmp_path):
    (tmp_path / "plain").mkdir()
    ref = save_tiny_teacher(tmp_path / "plain").eval()
    snapshot = _as_hub_cache(tmp_path / "plain", tmp_path / "cache")
    model, _ = load_model(f"local-dir:{snapshot}")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), ref(x))


def test_harmless_model_args_are_not_taken_for_files(tmp_path):
    (tmp_path / "t").mkdir()
    save_tiny_teacher(tmp_path / "t")
    config = json.loads((tmp_path / "t" / "config.json").read_text())
    assert config["model_args"]["global_pool"] == "avg"  # a string argument that names no file
    load_model(f"local-dir:{tmp_path / 't'}")


# ---- what is published --------------------------------------------------------------------------------------------
def test_the_report_names_skipped_images_relative_to_the_dataset(tmp_path):
    from hf_practise import PractiseCompressor
    from hf_practise.data import load_image_dataset

    from .test_compressor import fast_config

    root = tmp_path / "images"
    rng = np.random.default_rng(0)
    for c in range(2):
        (root / f"c{c}").mkdir(parents=True)
        for i in range(4):
            Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(root / f"c{c}" / f"{i}.png")
    (root / "c1" / "2.png").write_bytes((root / "c1" / "2.png").read_bytes()[:40])  # a truncated PNG
    (tmp_path / "teacher").mkdir()
    save_tiny_teacher(tmp_path / "teacher")
    compressor = PractiseCompressor.from_pretrained(f"local-dir:{tmp_path / 'teacher'}", fast_config(num_blocks=1))
    result = compressor.compress(load_image_dataset(root), num_samples=8, skip_broken=True)
    assert result.tiny_set.skipped_broken == ["c1/2.png"]
    out = result.save_pretrained(tmp_path / "out")
    for name in ("practise_report.json", "README.md"):
        text = (out / name).read_text()
        assert str(tmp_path) not in text and str(tmp_path.resolve()) not in text, name
    assert json.loads((out / "practise_report.json").read_text())["tiny_set"]["skipped_broken"] == ["c1/2.png"]


def test_a_saved_name_or_path_does_not_steer_where_the_preprocessor_is_read(tmp_path, monkeypatch):
    """An hf_practise-format transformers folder is rebuilt from its config: a `_name_or_path` there (or none, with
    a preprocessor_config.json in the current directory) must not pick the preprocessing the model is fed with."""
    pytest.importorskip("transformers")
    from hf_practise import get_family
    from hf_practise.backbones.transformers_mobilenetv2 import TransformersMobileNetV2Family
    from hf_practise.compressor import build_pruned

    model = TransformersMobileNetV2Family.tiny_models["mobilenetv2"]().eval()
    family = get_family(model)
    pruned = build_pruned(model, family, family.feasible(model, family.candidates(model))[:1], adaptors=False)
    folder = tmp_path / "saved"
    folder.mkdir()
    family.save_pretrained(pruned, folder, source_config={})
    assert json.loads((folder / "config.json").read_text())["model_type"] == "hf_practise"
    foreign = {"image_mean": [0.123] * 3, "image_std": [0.456] * 3}
    for elsewhere in (tmp_path / "elsewhere", tmp_path / "cwd"):
        elsewhere.mkdir()
        (elsewhere / "preprocessor_config.json").write_text(json.dumps(foreign))
    monkeypatch.chdir(tmp_path / "cwd")
    for name_or_path in (None, str(tmp_path / "elsewhere")):
        config = json.loads((folder / "config.json").read_text())
        config.pop("_name_or_path", None)
        if name_or_path:
            config["_name_or_path"] = name_or_path
        (folder / "config.json").write_text(json.dumps(config))
        loaded, _ = load_model(str(folder))
        assert get_family(loaded).data_config(loaded)["mean"] != (0.123,) * 3, name_or_path
    again = tmp_path / "again"
    again.mkdir()
    family.save_pretrained(loaded, again, source_config={})  # saved again: where it was loaded from stays local
    assert "_name_or_path" not in json.loads((again / "config.json").read_text())
