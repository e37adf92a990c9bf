"""`hf-practise compress`'s flags are generated from the config dataclasses: every field a user sets has one, each
flag lands in its field, today's flag names stay, and the installed console script runs."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from hf_practise import cli
from hf_practise.config import CompressionConfig

from .conftest import REPO

#: the config fields that deliberately have no flag, and why (a new one must be added here, with its reason)
NO_FLAG = {
    "CompressionConfig.scan": "a section: its fields have flags",
    "CompressionConfig.finetune": "a section: its fields have flags",
    "CompressionConfig.latency": "a section: its fields have flags",
}

#: every flag of examples/compress.py before the flags were generated (scripts and benchmarks pass them)
FLAGS_BEFORE = (
    "--adaptor-init --augmentation --batch-size --checkpoint-every --cpu --dataset --dataset-revision "
    "--eval-num-samples --eval-split --export --holdout --hub-model-id --image-column --iterations --kd-temperature "
    "--label-column --latency-backend --latency-batch-size --latency-precision --latency-reduction --latency-repeats "
    "--latency-table --latency-threads --latency-tolerance --lr --metric --mixed-precision --model --num-blocks "
    "--num-samples --objective --optimizer --output-dir --overwrite --per-class --private --push-to-hub "
    "--recalibrate-norms --report-to --revision --scan-batch-size --scan-iterations --scan-lr --scan-optimizer "
    "--scan-retries --schedule --seed --skip-broken-images --split --token --trust-remote-code --weight-decay "
    "--work-dir"
).split()

BASE = ["compress", "--model", "m", "--dataset", "d", "--output-dir", "o"]


def compress_parser():
    parser = cli.build_parser()
    return next(a for a in parser._actions if a.dest == "command").choices["compress"]


def options() -> dict[str, object]:
    return {s: a for a in compress_parser()._actions for s in a.option_strings}


def test_every_config_field_has_a_flag_or_a_reason():
    flags = options()
    without = {}
    for _, (cls, prefix) in cli.SECTIONS.items():
        for f in dataclasses.fields(cls):
            flag = cli.field_flag(f, prefix)
            if flag is None:
                without[f"{cls.__name__}.{f.name}"] = f.metadata["no_flag"]
                continue
            assert flag in flags, f"{cls.__name__}.{f.name}: no {flag} in the parser"
            assert f.metadata.get("help"), f"{cls.__name__}.{f.name} has no metadata['help']"
    assert without == NO_FLAG


def test_todays_flag_names_are_kept():
    flags = options()
    assert len(FLAGS_BEFORE) == 53
    assert [f for f in FLAGS_BEFORE if f not in flags] == []
    assert len(set(flags)) == len({id(a) for a in flags.values()}) + 1  # one name per flag (-h and --help)


def _other_value(f: dataclasses.Field, action, tmp_path: Path):
    """(argv words, expected field value) for a value other than the default."""
    if f.name == "latency_table":
        (tmp_path / "table.json").write_text(json.dumps({"layer1.1": 0.1}))
        return [str(tmp_path / "table.json")], {"layer1.1": 0.1}
    if f.name == "eval_metrics":
        return ["top_k_accuracy"], ["accuracy", "top_k_accuracy"]
    if f.name == "blocks":
        return ["layer3.1"], ["layer3.1"]
    if action.nargs == 0:  # a switch
        return [], True
    if action.choices:
        value = next(c for c in action.choices if c != action.default)
        return [value], value
    if action.nargs == 3:
        return ["3", "40", "48"], (3, 40, 48)
    if action.type is int:
        value = 3 if action.default in (None, 0) else action.default + 1
        return [str(value)], value
    if action.type is float:
        value = 0.3 if action.default is None else action.default / 2 or 0.5
        return [str(value)], value
    return [str(tmp_path / "x")], str(tmp_path / "x")


#: flags that are valid only with others (int8 needs an int8 runtime)
COMPANIONS = {
    "quantize": ["--latency-backend", "onnxruntime"],
    "int8_calibration": ["--quantize", "int8", "--latency-backend", "onnxruntime"],
    "quantize_aware": ["--quantize", "int8", "--latency-backend", "openvino"],
    "quantize_aware_lr": ["--quantize", "int8", "--latency-backend", "openvino"],
}


def test_each_flag_sets_its_field(tmp_path, monkeypatch):
    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    flags = options()
    checked = 0
    for section, f, flag in cli.config_flags():
        words, expected = _other_value(f, flags[flag], tmp_path)
        config = cli.build_config(cli.parse_args([*BASE, *COMPANIONS.get(f.name, []), flag, *words]))
        holder = getattr(config, section) if section else config
        assert getattr(holder, f.name) == expected, (flag, words)
        moved = {"latency"} if f.name in COMPANIONS else set()
        for other in {"scan", "finetune", "latency"} - {section} - moved:  # and no other section moved
            assert getattr(config, other) == getattr(CompressionConfig(), other), (flag, other)
        checked += 1
    assert checked == len(cli.config_flags()) > 40


def test_no_flag_restates_a_default(monkeypatch):
    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    assert cli.build_config(cli.parse_args(BASE)).to_dict() == CompressionConfig().to_dict()


def test_the_targets_exclude_each_other_and_num_blocks_clears_the_reduction(capsys):
    config = cli.build_config(cli.parse_args([*BASE, "--num-blocks", "2"]))
    assert config.num_blocks == 2 and config.latency_reduction is None
    with pytest.raises(SystemExit):
        cli.parse_args([*BASE, "--num-blocks", "2", "--latency-reduction", "0.22"])
    assert "not allowed with argument" in capsys.readouterr().err


def test_every_flag_a_config_message_names_exists():
    named = set(re.findall(r'"(--[a-z][a-z0-9-]+)"', (REPO / "src/hf_practise/config.py").read_text()))
    flags = options()
    assert named and sorted(n for n in named if n not in flags) == []


def test_the_console_script_and_the_module_run():
    script = Path(sys.executable).parent / "hf-practise"
    assert script.exists(), "no hf-practise console script: run `pip install -e .`"
    for command in ([str(script)], [sys.executable, "-m", "hf_practise.cli"]):
        proc = subprocess.run([*command, "compress", "--help"], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert "usage: hf-practise compress" in proc.stdout and "--scan-stage-cache-mb" in proc.stdout
    proc = subprocess.run([str(script)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "COMMAND" in proc.stderr


def test_a_repeated_flag_is_recorded_so_that_it_parses_back():
    args = cli.parse_args([*BASE, "--blocks", "layer1.1", "--blocks", "layer2.1", "--metric", "top_k_accuracy"])
    words = cli.reproduce_command(args).split()[3:]  # after `accelerate launch examples/compress.py`
    again = cli.parse_args(["compress", *words] if words[0] != "compress" else words)
    assert again.blocks == ["layer1.1", "layer2.1"] and again.metric == ["top_k_accuracy"]
