"""The Hugging Face workflow over real HTTP: pull a model and a dataset from a local Hub, push the result back,
pull it again with plain timm; plus the safety rules of loading (safetensors only, no remote code unasked)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import datasets
import pytest
import torch
from huggingface_hub import ModelCard

from hf_practise import get_family
from hf_practise.hub import load_model

from .conftest import CLI_FAST, REPO, save_tiny_teacher, tiny_resnet
from .hub_server import LocalHub, olah_cli, publish
from .test_compressor import image_dataset

HERE = REPO / "tests"
FAST = CLI_FAST


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    if olah_cli() is None:
        pytest.skip("needs olah (pip install olah) for a local Hub server")
    root = tmp_path_factory.mktemp("hub")
    server = LocalHub(root).start()
    teacher = root / "teacher"
    teacher.mkdir()
    save_tiny_teacher(teacher)
    publish(server.mirrors, "model", "org/tiny-teacher", teacher)
    data = root / "data"
    (data / "data").mkdir(parents=True)
    image_dataset(15).to_parquet(str(data / "data" / "train-00000-of-00001.parquet"))
    image_dataset(10).to_parquet(str(data / "data" / "test-00000-of-00001.parquet"))
    (data / "README.md").write_text("---\nlicense: mit\n---\n# tiny images\n")
    publish(server.mirrors, "dataset", "org/tiny-images", data)
    yield server
    server.stop()


def run_cli(hub, tmp_path, *args, extra_env=None):
    env = hub.env(tmp_path / "hf-home")
    env.update(extra_env or {})
    return subprocess.run(
        [sys.executable, str(HERE / "hub_runner.py"), *args], env=env, capture_output=True, text=True, timeout=600
    )


PULL = textwrap.dedent(
    """
    import sys, torch, timm
    from huggingface_hub import ModelCard
    assert "hf_practise" not in sys.modules
    hub = timm.create_model("hf-hub:" + sys.argv[1], pretrained=True).eval()
    local = timm.create_model("local-dir:" + sys.argv[2], pretrained=True).eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(hub(x), local(x))
    card = ModelCard.load(sys.argv[1].split("@")[0])  # a point's branch: the repo's card is on main
    print("pulled", card.data.base_model)
    """
)


def test_pull_compress_push_and_pull_again(hub, tmp_path):
    out = tmp_path / "out"
    proc = run_cli(
        hub,
        tmp_path,
        "--model",
        "hf-hub:org/tiny-teacher",
        "--dataset",
        "org/tiny-images",
        "--split",
        "train",
        "--eval-split",
        "test",
        "--per-class",
        "3",
        "--num-blocks",
        "2",
        "--output-dir",
        str(out),
        "--push-to-hub",
        "--hub-model-id",
        "org/tiny-practise",
        "--token=hf_NotARealTokenButSecret",
        "--work-dir",
        str(tmp_path / "work"),
        *FAST,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "Pushed to org/tiny-practise" in proc.stdout
    report = json.loads((out / "practise_report.json").read_text())
    assert report["tiny_set"]["num_samples"] == 15  # 3 per class x 5 classes
    # the card parses back, its model-index holds the measured numbers, its images exist
    card = ModelCard.load(out / "README.md")
    assert card.data.base_model == "org/tiny-teacher" and card.data.library_name == "timm"
    assert card.data.license == "mit" and "org/tiny-images" in card.data.datasets
    metrics = {r.metric_type: r for r in card.data.eval_results}
    assert metrics["accuracy"].metric_value == pytest.approx(report["top1_after"], abs=1e-5)
    assert metrics["latency_ms"].metric_value == pytest.approx(report["latency"]["candidate"]["median_ms"], abs=1e-3)
    assert metrics["latency_ms"].metric_args["batch_size"] == 2
    for png in ("block_scores.png", "top1_vs_latency.png"):
        assert (out / png).stat().st_size > 1000 and f"]({png})" in card.text
    assert 'timm.create_model("hf-hub:org/tiny-practise"' in card.text
    assert "--token" not in card.text and "hf_NotARealToken" not in card.text  # passed as --token=hf_... above
    assert "hf_NotARealToken" not in (out / "practise_report.json").read_text()
    assert str(tmp_path) not in card.text and str(tmp_path) not in (out / "practise_report.json").read_text()
    # the mirror holds exactly what save_pretrained wrote
    pushed = hub.mirrors / "models" / "org" / "tiny-practise"
    assert sorted(p.name for p in pushed.iterdir() if p.name != ".git") == sorted(p.name for p in out.iterdir())
    assert (pushed / "model.safetensors").read_bytes() == (out / "model.safetensors").read_bytes()
    # and plain timm pulls it back over HTTP with identical logits
    pull = subprocess.run(
        [sys.executable, "-c", PULL, "org/tiny-practise", str(out)],
        env=hub.env(tmp_path / "hf2"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert pull.returncode == 0, pull.stderr[-3000:]
    assert "pulled org/tiny-teacher" in pull.stdout


def test_failed_push_keeps_the_folder_and_says_how_to_retry(hub, tmp_path):
    out = tmp_path / "out"
    proc = run_cli(
        hub,
        tmp_path,
        "--model",
        "hf-hub:org/tiny-teacher",
        "--dataset",
        "org/tiny-images",
        "--num-samples",
        "10",
        "--num-blocks",
        "1",
        "--output-dir",
        str(out),
        "--push-to-hub",
        "--hub-model-id",
        "org/never",
        *FAST,
        extra_env={"PRACTISE_TEST_FAIL_UPLOAD": "1"},
    )
    assert proc.returncode == 1
    assert f"huggingface-cli upload org/never {out}" in proc.stderr
    assert (out / "model.safetensors").exists() and (out / "README.md").exists()
    assert not (hub.mirrors / "models" / "org" / "never").exists()


def test_missing_hub_repo_says_what_to_check(hub, tmp_path):
    proc = run_cli(
        hub,
        tmp_path,
        "--model",
        "hf-hub:org/does-not-exist",
        "--dataset",
        "org/tiny-images",
        "--num-samples",
        "5",
        "--output-dir",
        str(tmp_path / "o"),
        *FAST,
    )
    assert proc.returncode != 0 and "Could not download `org/does-not-exist`" in proc.stderr


def test_weights_load_only_from_safetensors(tmp_path):
    model = tiny_resnet("resnet18")
    get_family(model).save_pretrained(model, tmp_path, source_config={})
    (tmp_path / "model.safetensors").rename(tmp_path / "elsewhere")
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    with pytest.raises(FileNotFoundError, match="never unpickles"):
        load_model(f"local-dir:{tmp_path}")
    with pytest.raises(FileNotFoundError, match="never unpickles"):
        load_model(str(tmp_path))


def test_a_pickle_beside_the_safetensors_is_never_read(tmp_path):
    """timm itself prefers pytorch_model.bin when both are present; we load exactly the checked safetensors."""
    model = tiny_resnet("resnet18")
    get_family(model).save_pretrained(model, tmp_path, source_config={})
    other = tiny_resnet("resnet18", seed=7)
    torch.save(other.state_dict(), tmp_path / "pytorch_model.bin")
    loaded, _ = load_model(f"local-dir:{tmp_path}")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded.eval()(x), model(x)) and not torch.equal(loaded(x), other.eval()(x))


def test_a_transformers_checkpoint_missing_weights_is_refused(tmp_path):
    from safetensors.torch import load_file, save_file

    tiny_transformers_resnet(tmp_path)
    state = load_file(str(tmp_path / "model.safetensors"))
    kept = {k: v for k, v in state.items() if "encoder.stages.1" not in k}
    assert len(kept) < len(state)
    save_file(kept, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"weights do not match the architecture in config.json \(missing keys"):
        load_model(str(tmp_path))


def tiny_transformers_resnet(folder):
    pytest.importorskip("transformers")
    from transformers import ResNetConfig, ResNetForImageClassification

    cfg = ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[2, 2], num_labels=3)
    model = ResNetForImageClassification(cfg).eval()
    model.save_pretrained(folder)
    return model


def test_transformers_models_load_safely_and_find_their_family(tmp_path):
    from hf_practise import PractiseCompressor

    ref = tiny_transformers_resnet(tmp_path)
    model, source = load_model(str(tmp_path))
    assert type(model).__name__ == "ResNetForImageClassification" and source["library"] == "transformers"
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x).logits, ref(x).logits)
    assert PractiseCompressor(model).family.name == "transformers-resnet"


def test_remote_code_runs_only_when_asked(tmp_path):
    tiny_transformers_resnet(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["auto_map"] = {"AutoModelForImageClassification": "modeling_evil.Model"}
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="trust_remote_code=True"):
        load_model(str(tmp_path))


def test_k_per_class_sampling_is_seeded_and_balanced():
    from hf_practise.data import load_tiny_set

    ds = image_dataset(25)
    a = load_tiny_set(ds, transform=lambda im: torch.zeros(3, 4, 4), per_class=3, seed=1)
    b = load_tiny_set(ds, transform=lambda im: torch.zeros(3, 4, 4), per_class=3, seed=1)
    assert a.indices == b.indices and len(a) == 15
    assert sorted(torch.bincount(a.labels).tolist()) == [3] * 5
    with pytest.raises(ValueError, match="Class 0 has only 5 images"):
        load_tiny_set(ds, transform=lambda im: torch.zeros(3, 4, 4), per_class=6)
    assert isinstance(ds, datasets.Dataset)


def test_timm_names_resolve_to_their_hub_checkpoint(hub, tmp_path):
    folder = tmp_path / "r18"
    folder.mkdir()
    save_tiny_teacher(folder)
    sha = publish(hub.mirrors, "model", "timm/resnet18.a1_in1k", folder)
    code = (
        "from hf_practise.hub import load_model\n"
        "m, s = load_model('resnet18')\n"
        "print(s['hub_id'], s['revision'], m.num_classes)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], env=hub.env(tmp_path / "h"), capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["timm/resnet18.a1_in1k", sha, "5"]


def test_every_point_of_a_several_target_run_is_a_branch_plain_timm_loads(hub, tmp_path):
    table = {"layer1.1": 0.08, "layer2.1": 0.1, "layer3.1": 0.12, "layer4.1": 0.15}
    (tmp_path / "table.json").write_text(json.dumps(table))
    out = tmp_path / "out"
    common = ["--model", "hf-hub:org/tiny-teacher", "--dataset", "org/tiny-images", "--split", "train"]
    proc = run_cli(
        hub,
        tmp_path,
        *common,
        "--num-samples",
        "12",
        "--latency-table",
        str(tmp_path / "table.json"),
        "--latency-reduction",
        "0.1",
        "0.3",
        "--output-dir",
        str(out),
        "--push-to-hub",
        "--hub-model-id",
        "org/tiny-points",
        *FAST,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    pushed = hub.mirrors / "models" / "org" / "tiny-points"
    assert sorted(p.name for p in pushed.iterdir() if p.is_dir() and p.name != ".git") == ["0.1", "0.3"]
    listed = ["git", "branch", "--format=%(refname:short)"]
    branches = subprocess.run(listed, cwd=pushed, capture_output=True, text=True, check=True).stdout
    assert set(branches.split()) == {"main", "latency-0.1", "latency-0.3"}
    top = (out / "README.md").read_text()
    assert 'timm.create_model("hf-hub:org/tiny-points@latency-0.3", pretrained=True)' in top
    assert "hf-hub:org/tiny-points@latency-0.1" in (out / "0.1" / "README.md").read_text()
    for target in ("0.1", "0.3"):  # the branch is the point's folder, and plain timm pulls it over HTTP
        pull = subprocess.run(
            [sys.executable, "-c", PULL, f"org/tiny-points@latency-{target}", str(out / target)],
            env=hub.env(tmp_path / f"hf-{target}"),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert pull.returncode == 0, pull.stderr[-3000:]
