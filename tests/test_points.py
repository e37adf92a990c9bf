"""Several latency targets in one run (`CompressionConfig(latency_reduction=[...])`, CLI `--latency-reduction 0.1 0.3`):
one latency table and one scan, one selection and finetune per target, each point equal to its one-target run, saved
as one folder per target under a card of all of them."""

from __future__ import annotations

import json

import pytest
import torch

from hf_practise import CompressionConfig, PractiseCompressor

from .conftest import tiny_resnet
from .test_backbones import reload_in_plain_timm
from .test_compressor import fast_config


@pytest.fixture
def tensors():
    return torch.randn(24, 3, 32, 32, generator=torch.Generator().manual_seed(0))


# the deployment table: the selection trusts its shares, so the blocks each target takes are known
TABLE = {"layer1.1": 0.08, "layer2.1": 0.1, "layer3.1": 0.12, "layer4.1": 0.15}


def run(target, images, **kw):
    cfg = fast_config(num_blocks=None, latency_reduction=target, latency_table=TABLE, **kw)
    return PractiseCompressor(tiny_resnet("resnet18"), cfg).compress(images)


def test_each_point_is_its_one_target_run_and_saves_in_its_own_folder(tensors, tmp_path):
    result = run([0.3, 0.1, 0.2], tensors)
    points = result.points
    assert [p.config.latency_reduction for p in points] == [0.1, 0.2, 0.3] and points[-1] is result
    assert len(points[0].dropped) < len(points[2].dropped)
    # one scan: every point carries the same rows
    assert all([r.recoverability for r in p.scan] == [r.recoverability for r in points[0].scan] for p in points)
    alone = run(0.2, tensors)
    assert [r.block for r in alone.dropped] == [r.block for r in points[1].dropped]
    for name, w in alone.model.state_dict().items():
        torch.testing.assert_close(points[1].model.state_dict()[name], w, rtol=0, atol=0, msg=name)
    out = result.save_pretrained(tmp_path / "out")
    report = json.loads((out / "practise_report.json").read_text())
    assert [p["folder"] for p in report["points"]] == ["0.1", "0.2", "0.3"]
    assert (out / "pareto.png").exists() and "| 20% |" in (out / "README.md").read_text()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    for p in points:
        sub = out / f"{p.config.latency_reduction:g}"
        assert json.loads((sub / "practise_report.json").read_text())["dropped_blocks"] == [r.block for r in p.dropped]
        with torch.no_grad():
            expected = p.model.eval()(x)
        torch.testing.assert_close(reload_in_plain_timm(sub, x), expected, atol=1e-4, rtol=1e-4)


def test_targets_that_choose_the_same_blocks_are_one_point(tensors, monkeypatch):
    """One model: finetuned, timed and evaluated once, so that a curve shows it once with one latency."""
    import hf_practise.compressor as compressor

    from .test_compressor import image_dataset

    timed = []
    real = compressor.compare_latency
    monkeypatch.setattr(compressor, "compare_latency", lambda *a, **k: timed.append(1) or real(*a, **k))
    cfg = fast_config(num_blocks=None, latency_reduction=[0.09, 0.1], latency_table=TABLE)
    # by the table's shares, the blocks that reach 9% reach 10% too
    result = PractiseCompressor(tiny_resnet("resnet18"), cfg).compress(tensors, eval_set=image_dataset(12))
    a, b = result.points
    assert [r.block for r in a.dropped] == [r.block for r in b.dropped] and a.model is b.model
    assert len(timed) == 1 and a.latency is b.latency and a.top1_after == b.top1_after is not None
    assert (a.config.latency_reduction, b.config.latency_reduction) == (0.09, 0.1) and b is result
    assert result.points == [a, b] and a.points == []


def test_several_block_counts_give_a_point_each(tensors, tmp_path):
    cfg = fast_config(num_blocks=[3, 1], latency_table=TABLE)
    result = PractiseCompressor(tiny_resnet("resnet18"), cfg).compress(tensors)
    assert [len(p.dropped) for p in result.points] == [1, 3] and cfg.points == [1, 3]
    alone = PractiseCompressor(tiny_resnet("resnet18"), fast_config(num_blocks=3, latency_table=TABLE)).compress(
        tensors
    )
    assert [r.block for r in alone.dropped] == [r.block for r in result.dropped]
    out = result.save_pretrained(tmp_path / "out")
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["1-blocks", "3-blocks"]
    assert "| 3 blocks |" in (out / "README.md").read_text()


def test_several_targets_are_checked_like_one():
    assert CompressionConfig(latency_reduction=[0.3]).latency_reduction == 0.3
    assert CompressionConfig(latency_reduction=(0.5, 0.2)).points == [0.2, 0.5]
    with pytest.raises(ValueError, match="distinct"):
        CompressionConfig(latency_reduction=[0.2, 0.2])
    with pytest.raises(ValueError, match="fraction in"):
        CompressionConfig(latency_reduction=[0.2, 1.5])
    assert CompressionConfig(num_blocks=[2]).num_blocks == 2
    with pytest.raises(ValueError, match=r"distinct ones\); got \[2, 2\]"):
        CompressionConfig(num_blocks=[2, 2])
    with pytest.raises(ValueError, match="at least 1"):
        CompressionConfig(num_blocks=[2, 0])


def test_the_cli_takes_several_targets_and_writes_a_folder_each(teacher_dir, imagefolder, tmp_path):
    from .test_cli import compress

    (tmp_path / "table.json").write_text(json.dumps(TABLE))
    out = tmp_path / "out"
    args = ["--num-samples", "12", "--latency-table", str(tmp_path / "table.json")]
    proc = compress(teacher_dir, str(imagefolder), str(out), *args, "--latency-reduction", "0.1", "0.3")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Operating points" in proc.stdout and "target 30%" in proc.stdout
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["0.1", "0.3"]
    assert str(out / "0.3") in proc.stdout  # the reload line names a model folder
    for target in ("0.1", "0.3"):  # each card says how to reproduce it
        report = json.loads((out / target / "practise_report.json").read_text())
        assert report["config"]["latency_reduction"] == float(target)
        assert "--latency-reduction 0.1 0.3" in report["command"]


def test_the_teacher_is_evaluated_once_for_all_points(tensors, monkeypatch):
    import hf_practise.compressor as compressor

    from .test_compressor import image_dataset

    evaluated = []
    real = compressor.evaluate_metrics

    def counting(model, *args, **kwargs):
        evaluated.append(kwargs["desc"])
        return real(model, *args, **kwargs)

    monkeypatch.setattr(compressor, "evaluate_metrics", counting)
    cfg = fast_config(num_blocks=None, latency_reduction=[0.1, 0.3], latency_table=TABLE)
    result = PractiseCompressor(tiny_resnet("resnet18"), cfg).compress(tensors, eval_set=image_dataset(12))
    assert evaluated == ["eval teacher", "eval compressed", "eval compressed"]
    a, b = result.points
    assert a.top1_before == b.top1_before is not None and a.top1_after is not None and b.top1_after is not None


def _point(cut, top1, model=None):
    from types import SimpleNamespace

    return SimpleNamespace(latency=SimpleNamespace(reduction=cut), top1_after=top1, model=model or object())


def test_a_point_as_slow_and_less_accurate_than_another_is_beaten():
    from hf_practise.card import beaten_by

    a, b, c, d = _point(0.2, 0.90), _point(0.3, 0.85), _point(0.4, 0.87), _point(0.5, 0.80)
    assert beaten_by([a, b, c, d]) == [None, c, None, None]
    # level on both is no beating; one better at the same cut is; of several, the most accurate beats
    assert beaten_by([_point(0.3, 0.85), _point(0.3, 0.85)]) == [None, None]
    e, f, g = _point(0.3, 0.85), _point(0.3, 0.86), _point(0.35, 0.88)
    assert beaten_by([e, f, g]) == [g, g, None]
    # targets that chose the same blocks are one model; without top-1 nothing is beaten
    shared = object()
    assert beaten_by([_point(0.3, 0.8, shared), _point(0.3, 0.9, shared)]) == [None, None]
    assert beaten_by([_point(0.2, None), _point(0.3, 0.9)]) == [None, None]


def test_the_card_and_report_say_which_point_not_to_choose(tensors, tmp_path):
    result = run([0.1, 0.2, 0.3], tensors)
    for p, top1 in zip(result.points, (0.80, 0.70, 0.75)):  # the 20% point is beaten by the 30% one
        p.top1_after = top1
    out = result.save_pretrained(tmp_path / "out")
    card = (out / "README.md").read_text()
    assert "| no: the 30% point is at least as fast and as accurate |" in card and card.count("| yes |") == 2
    report = json.loads((out / "practise_report.json").read_text())
    assert [p["beaten_by"] for p in report["points"]] == [None, "30%", None]
