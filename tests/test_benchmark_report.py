"""The benchmark report reads results folders written by older versions of the runner."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

COMPARE = Path(__file__).resolve().parents[1] / "benchmarks" / "compare.py"


@pytest.fixture(scope="module")
def compare():
    spec = importlib.util.spec_from_file_location("bench_compare", COMPARE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    sys.path.insert(0, str(COMPARE.parent))  # the scripts import the harness beside them
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(COMPARE.parent))
    yield module
    sys.modules.pop(spec.name, None)


def test_wall_time_table_tolerates_entries_without_newer_fields(compare, tmp_path):
    machine = {"cpu": "Some CPU", "threads": 2, "gpu": None}
    entries = [
        # written before entries carried their seeds
        {"part": "fmnist100", "seconds": 60.0, "machine": machine, "command": "python a", "finished": "t0"},
        {
            "part": "fmnist50",
            "seeds": [0, 2],
            "seconds": 120.0,
            "machine": machine,
            "command": "python b",
            "finished": "t1",
        },
        # the bare minimum
        {"seconds": 30.0},
    ]
    (tmp_path / "timings.jsonl").write_text("".join(json.dumps(e) + "\n" for e in entries))
    lines = compare.Bench.wall_time(SimpleNamespace(out=tmp_path))
    rows = [line for line in lines if line.startswith("| fmnist") or line.startswith("| ?")]
    assert rows == [
        "| fmnist100 | ? | 1.0 | t0 | Some CPU, 2 threads | `python a` |",
        "| fmnist50 | 0, 2 | 2.0 | t1 | Some CPU, 2 threads | `python b` |",
        "| ? | ? | 0.5 | ? | ? | `?` |",
    ]


def test_no_timings_no_wall_time_section(compare, tmp_path):
    assert compare.Bench.wall_time(SimpleNamespace(out=tmp_path)) == []


def test_the_plot_has_a_marker_for_every_method(compare, tmp_path):
    recs = [
        {"tiny_set": "fmnist", "num_samples": 500, "method": m, "latency_reduction": 0.2 + 0.01 * i, "top1": 0.9}
        for i, m in enumerate(compare.ALL_METHODS)
    ]
    runner = next(v for v in vars(compare).values() if isinstance(v, type) and hasattr(v, "plot"))
    runner.plot(SimpleNamespace(name="teacher", out=tmp_path), recs)
    assert (tmp_path / "top1_vs_latency.png").stat().st_size > 0


def test_the_int8_rows_come_from_one_comparison_and_render_in_every_table(compare, tmp_path):
    """`practise+int8` quantizes the teacher and practise's model and times the four in the same rounds; `int8` (the
    teacher's int8 row) is read from that comparison, and both rows render through the run tables and the headline."""
    import torch
    from accelerate import Accelerator
    from torch.utils.data import TensorDataset

    from hf_practise.compound import ROWS

    from .conftest import tiny_resnet

    g = torch.Generator().manual_seed(0)
    test = TensorDataset(torch.randn(16, 3, 32, 32, generator=g), torch.arange(16) % 5)
    args = SimpleNamespace(teacher=str(tmp_path / "t"), results=str(tmp_path / "results"), cache=str(tmp_path))
    args.__dict__.update(command="python benchmarks/compare.py", latency_repeats=2, int8_calibration="minmax")
    bench = compare.Bench(args)
    bench.__dict__.update(compressor=SimpleNamespace(model=tiny_resnet("resnet18")), test=test)
    bench.teacher_top1 = lambda: 0.5
    comp = SimpleNamespace(config=SimpleNamespace(seed=0), accelerator=Accelerator(cpu=True))
    tiny = SimpleNamespace(images=torch.randn(24, 3, 32, 32, generator=g))
    int8 = bench.int8_comparison(tiny_resnet("resnet18", seed=1), 0.25, tiny, comp)
    assert set(int8["latency"]) == set(int8["top1"]) == set(ROWS) and int8["backend"] == "onnxruntime"
    assert int8["top1"]["teacher fp32"] == 0.5 and int8["top1"]["compressed fp32"] == 0.25
    assert all(0 <= int8["top1"][row] <= 1 for row in ROWS) and int8["latency"]["teacher int8"]["repeats"] == 2

    machine = {"cpu": "Some CPU", "threads": 2, "gpu": None}
    base = {"teacher": "t", "tiny_set": "fmnist", "num_samples": 24, "seed": 0, "latency_target": 0.5}
    base.update(teacher_top1=0.5, eval_images=16, macs_reduction=0.3, dropped_blocks=["layer1.1"], wall_seconds=9.0)
    base.update(command="python benchmarks/compare.py", machine=machine, top1_before_finetune=None)
    practise = {**base, "method": "practise", "top1": 0.3, "latency_reduction": 0.4, "top1_no_recovery": 0.1}
    compound = {**base, "method": "practise+int8", "top1": int8["top1"]["compressed int8"], "top1_fp32": 0.25}
    compound.update(**compare.int8_timing(int8, "compressed int8"), int8=int8)
    for rec in (practise, compound):
        compare.h.write_json(bench.run_path(rec["method"], "fmnist", 24, 0, 0.5), rec)
    anchor = bench.int8_anchor("fmnist", 24, 0, 0.5)
    compare.h.write_json(bench.run_path("int8", "fmnist", 24, 0, 0.5), anchor)
    # the anchor is the teacher's int8 model of the same comparison: no second timing, the same fp32 reference
    assert anchor["top1"] == int8["top1"]["teacher int8"] and anchor["speedup"] == int8["speedup"]["teacher int8"]
    assert anchor["latency_reduction"] == pytest.approx(1 - 1 / anchor["speedup"])
    assert anchor["latency_ms"]["teacher"] == compound["latency_ms"]["teacher"]
    assert anchor["wall_seconds"] == int8["seconds"] and anchor["machine"] == machine and anchor["dropped_blocks"] == []

    bench.report()
    assert (bench.out / "int8_speedup.png").stat().st_size > 0  # the four models against their speed-up
    page = (bench.out / "results.md").read_text()
    speedup = {row: f"{int8['speedup'][row]:.2f}x" for row in ROWS}
    assert f"| int8 | 1 | {100 * anchor['top1']:.2f} |" in page and "(onnxruntime) | 0.00 |" in page
    assert "## Depth and int8 together" in page
    for row in ROWS:
        assert f"{int8['latency'][row]['median_ms']:.2f} | {speedup[row]} | {100 * int8['top1'][row]:.2f} |" in page
    assert "Ops left in float: teacher " in page and "(the practise run's blocks;" in page
    _, groups, settings = bench.grouped_runs()
    headline = "\n".join(bench.headline(groups, settings))
    assert f"| practise+int8 | {100 * compound['top1']:.2f} ({speedup['compressed int8']} onnxruntime) |" in headline
    assert "rows int8, practise+int8: int8 made from the tiny set" in headline


def test_the_openvino_and_quantization_aware_rows_time_their_own_runtime(compare, tmp_path):
    """`practise+int8-ov` and `practise+int8-qat` quantize and time in OpenVINO; the qat row's practise int8 comes
    from quantization-aware training, its teacher int8 stays post-training (the `int8-ov` anchor's)."""
    pytest.importorskip("nncf")
    import torch
    from accelerate import Accelerator
    from torch.utils.data import TensorDataset

    from hf_practise import get_family

    from .conftest import tiny_resnet

    g = torch.Generator().manual_seed(0)
    test = TensorDataset(torch.randn(8, 3, 32, 32, generator=g), torch.arange(8) % 5)
    args = SimpleNamespace(teacher=str(tmp_path / "t"), results=str(tmp_path / "results"), cache=str(tmp_path))
    args.__dict__.update(command="c", latency_repeats=2, int8_calibration="minmax", qat_steps=2, qat_lr=1e-5)
    bench = compare.Bench(args)
    teacher = tiny_resnet("resnet18")
    bench.__dict__.update(compressor=SimpleNamespace(model=teacher, family=get_family(teacher)), test=test)
    bench.teacher_top1 = lambda: 0.5
    comp = SimpleNamespace(
        config=SimpleNamespace(seed=0, finetune=SimpleNamespace(batch_size=8)), accelerator=Accelerator(cpu=True)
    )
    tiny = SimpleNamespace(images=torch.randn(16, 3, 32, 32, generator=g))
    assert compare.COMPOUND["practise+int8-qat"] == ("openvino", True, "practise")
    int8 = bench.int8_comparison(
        tiny_resnet("resnet18", seed=1), 0.25, tiny, comp, *compare.COMPOUND["practise+int8-qat"][:2]
    )
    assert int8["backend"] == "openvino" and int8["compressed"]["calibration"] == "quantization-aware (2 steps)"
    assert int8["teacher"]["calibration"] == "performance"  # --quick's ONNX Runtime method has no OpenVINO twin
    assert compare.int8_names("practise+int8-qat")["teacher int8"] == "teacher int8 (`int8-ov`)"
    # the default finetune's compound rows (what `--quantize int8` runs) name their model apart from practise's
    names = compare.int8_names("default+int8-ov")
    assert (
        names["teacher int8"] == "teacher int8 (`int8-ov`)"
        and names["compressed int8"] == "default int8 (`default+int8-ov`)"
    )


def test_the_int8_chosen_row_ranks_blocks_by_their_int8_cut(compare, tmp_path):
    """`quantize-int8` chooses blocks as `--quantize int8` does: by the scan's recoverability over each block's cut
    timed int8 against int8 (kept in its own work dir), then selected with the compressor set up for int8."""
    import torch

    from hf_practise import LatencyConfig, PractiseCompressor
    from hf_practise.recoverability import ScanRow

    from .conftest import tiny_resnet
    from .test_compressor import fast_config

    args = SimpleNamespace(teacher=str(tmp_path / "t"), results=str(tmp_path / "results"), cache=str(tmp_path))
    args.__dict__.update(command="c", latency_repeats=3)
    bench = compare.Bench(args)
    bench.latency = lambda repeats, backend="torch": LatencyConfig(
        batch_size=4, repeats=repeats, warmup=1, input_size=(3, 32, 32), backend=backend
    )
    assert "quantize-int8" in compare.INT8_CHOSEN and "quantize-int8" not in compare.SAME_BLOCKS
    assert compare.int8_names("quantize-int8")["compressed int8"] == "int8-chosen int8 (`quantize-int8`)"
    # a target every timing reaches (all four blocks measured 17-25% int8 against int8 here): only the order matters
    comp = PractiseCompressor(tiny_resnet("resnet18"), fast_config(num_blocks=None, latency_reduction=0.05))
    # every block recovers alike and the fp32 shares rank them backwards: only the int8 shares may order them
    rows = [ScanRow(c.path, c.stage, c.index, 1.0, 1.0, 0.01 * (k + 1), 0.0) for k, c in enumerate(comp.candidates())]
    seen = {}

    def select_in_order(ranked):
        seen.update(ranked=list(ranked), quantize=comp.config.quantize, images=len(comp._int8_images))
        return ranked[:1], []

    comp.select_in_order = select_in_order
    tiny = SimpleNamespace(images=torch.randn(40, 3, 32, 32, generator=torch.Generator().manual_seed(0)))
    chosen = bench.int8_chosen(comp, rows, tiny, "fmnist", 40, 0, "onnxruntime")
    saved = json.loads((tmp_path / "t" / "int8_onnxruntime_fmnist_40_s0" / "latency_shares.json").read_text())
    shares = saved["shares"]
    assert saved["key"]["quantize"] == "int8" and saved["key"]["latency"]["backend"] == "onnxruntime"
    assert seen["quantize"] == "int8" and seen["images"] == 32  # timed on the images `compress` would use
    assert [r.block for r in seen["ranked"]] == sorted(shares, key=lambda b: -shares[b])
    assert [r.latency_saving for r in seen["ranked"]] == sorted(shares.values(), reverse=True)
    assert chosen == seen["ranked"][:1] and rows[0].latency_saving == 0.01  # the scan's rows are left as they were
