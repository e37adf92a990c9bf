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
from .test_clear_answers import (
    ce_on_labels_outside_the_classes,
    checkpoint_on_a_full_disk,
    compress_uint8_images,
    compress_with_a_broken_head,
    ctrl_c_in_the_finetune,
    dataset_that_is_a_file,
    disk_full_in_the_output,
    disk_full_in_the_work_dir,
    eval_labels_outside_the_classes,
    labelled_set,
    per_class_on_string_labels,
    teacher_model_args,
    with_a_work_dir,
)
from .test_compressor import image_dataset
from .test_outside_files import (
    shard_outside_the_folder,
    timm_config_naming,
    timm_wrapper_naming_a_checkpoint,
    weights_linked_outside,
)

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
    # replaces library functions for the run (e.g. a writer that finds the disk full); undone after it
    patch: Callable[[pytest.MonkeyPatch, Path], None] | None = None
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


def _plain_stack_teacher(tmp: Path, base: dict) -> None:
    """A transformers MobileNetV1: one plain stack of convs, no residual block anywhere."""
    from transformers import MobileNetV1Config, MobileNetV1ForImageClassification

    config = MobileNetV1Config(depth_multiplier=0.25, num_labels=5, image_size=32)
    MobileNetV1ForImageClassification(config).save_pretrained(tmp / "plain")
    base["--model"] = str(tmp / "plain")


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


def _local_teacher(tmp: Path, base: dict, where: str = "teacher") -> Path:
    folder = tmp / where
    folder.mkdir(parents=True)
    save_tiny_teacher(folder)
    base["--model"] = f"local-dir:{folder}"
    return folder


def _local_dataset(tmp: Path, base: dict, where: str = "data") -> Path:
    import shutil

    folder = shutil.copytree(base["--dataset"], tmp / where)
    base["--dataset"] = str(folder)
    return folder


def _output_is_the_teacher(tmp: Path, base: dict) -> None:
    base["--output-dir"] = str(_local_teacher(tmp, base))


def _output_inside_the_teacher(tmp: Path, base: dict) -> None:
    base["--output-dir"] = str(_local_teacher(tmp, base) / "compressed")


def _output_is_the_dataset(tmp: Path, base: dict) -> None:
    base["--output-dir"] = str(_local_dataset(tmp, base))


def _output_inside_the_dataset(tmp: Path, base: dict) -> None:
    base["--output-dir"] = str(_local_dataset(tmp, base) / "compressed")


def _output_is_the_inputs_parent(tmp: Path, base: dict) -> None:
    _local_teacher(tmp, base, "project/teacher")
    _local_dataset(tmp, base, "project/images")
    (tmp / "project" / "notes.txt").write_text("mine")
    base["--output-dir"] = str(tmp / "project")


def _output_is_the_work_dir(tmp: Path, base: dict) -> None:
    base["--work-dir"] = base["--output-dir"]


def _output_inside_the_work_dir(tmp: Path, base: dict) -> None:
    base["--work-dir"] = str(tmp / "work")
    base["--output-dir"] = str(tmp / "work" / "out")


def _output_holds_the_latency_table(tmp: Path, base: dict) -> None:
    (tmp / "out").mkdir()
    (tmp / "out" / "table.json").write_text(json.dumps({"layer1.1": 0.1, "layer2.1": 0.1}))
    base["--latency-table"] = str(tmp / "out" / "table.json")


def _output_links_to_the_teacher(tmp: Path, base: dict) -> None:
    (tmp / "out").symlink_to(_local_teacher(tmp, base), target_is_directory=True)


def _output_of_someone_else(tmp: Path, base: dict) -> None:
    (tmp / "out").mkdir()
    (tmp / "out" / "model.safetensors").write_bytes(b"their weights")


def _earlier_output_with_added_files(tmp: Path, base: dict) -> None:
    (tmp / "out").mkdir()
    (tmp / "out" / "practise_report.json").write_text(json.dumps({"files": ["practise_report.json"]}))
    (tmp / "out" / "my_notes.txt").write_text("mine")


def _earlier_output_with_broken_report(tmp: Path, base: dict) -> None:
    (tmp / "out").mkdir()
    (tmp / "out" / "practise_report.json").write_text("{not json")


CLI_CASES = [
    # targets
    Case("latency-reduction-0", ["--latency-reduction", "0"], r"fraction in \(0, 1\).*got 0"),
    Case("latency-reduction-1.5", ["--latency-reduction", "1.5"], r"fraction in \(0, 1\)"),
    Case("latency-reduction-nan", ["--latency-reduction", "nan"], r"fraction in \(0, 1\)"),
    Case("num-blocks-0", ["--num-blocks", "0"], r"--num-blocks\) must be at least 1"),
    Case("num-blocks-too-many", ["--num-blocks", "99"], r"only 4 droppable ones; use at most 4"),
    Case("both-targets", ["--num-blocks", "2", "--latency-reduction", "0.2"], r"not allowed with argument", 2),
    Case("unreachable-target", ["--latency-reduction", "0.99"], r"cannot be reached: dropping all 4"),
    Case("blocks-not-droppable", ["--blocks", "layer2.0"], r"names \['layer2.0'\], which this model cannot drop"),
    Case("blocks-and-num-blocks", ["--blocks", "layer1.1", "--num-blocks", "1"], r"not allowed with argument", 2),
    Case("blocks-twice", ["--blocks", "layer1.1", "--blocks", "layer1.1"], r"non-empty list of distinct block"),
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
    Case(
        "model-without-residual-blocks",
        [],
        r"There is nothing to drop in a `MobileNetV1ForImageClassification`: its layers are one plain stack",
        setup=_plain_stack_teacher,
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
    # trust II (#22) 1, 2, 10, 11: what --overwrite may replace, where the output may go
    Case("overwrite-the-teacher", ["--overwrite"], r"is the model folder `.*teacher`", setup=_output_is_the_teacher),
    Case("output-inside-the-teacher", [], r"lies inside the model folder", setup=_output_inside_the_teacher),
    Case("overwrite-the-dataset", ["--overwrite"], r"is the dataset folder `.*data`", setup=_output_is_the_dataset),
    Case(
        "output-inside-the-dataset",
        [],
        r"`.*data/compressed` lies inside the dataset folder .*Choose an output folder outside it",
        setup=_output_inside_the_dataset,
    ),
    Case(
        "overwrite-the-inputs-parent",
        ["--overwrite"],
        r"`.*project` contains the model folder `.*project/teacher`",
        setup=_output_is_the_inputs_parent,
    ),
    Case("output-is-the-work-dir", [], r"is the work dir", setup=_output_is_the_work_dir),
    Case("overwrite-the-work-dir", ["--overwrite"], r"is the work dir", setup=_output_is_the_work_dir),
    Case("output-inside-the-work-dir", [], r"lies inside the work dir", setup=_output_inside_the_work_dir),
    Case(
        "overwrite-the-latency-tables-folder",
        ["--overwrite"],
        r"contains the latency table",
        setup=_output_holds_the_latency_table,
    ),
    Case(
        "output-links-to-the-teacher",
        ["--overwrite"],
        r"`.*out` is the model folder",
        setup=_output_links_to_the_teacher,
    ),
    Case(
        "overwrite-a-foreign-folder",
        ["--overwrite"],
        r"is not an earlier hf_practise output \(it has no practise_report.json\), so --overwrite",
        setup=_output_of_someone_else,
    ),
    Case(
        "overwrite-an-output-with-added-files",
        ["--overwrite"],
        r"holds files hf_practise did not write \(my_notes.txt\), so it will not be replaced",
        setup=_earlier_output_with_added_files,
    ),
    Case(
        "overwrite-an-output-with-a-broken-report",
        ["--overwrite"],
        r"is not a readable hf_practise report",
        setup=_earlier_output_with_broken_report,
    ),
    # trust II (#22) 4-7: nothing from outside the model folder is read or run
    Case(
        "model-args-checkpoint-path",
        [],
        r"config.json sets `model_args.checkpoint_path`, which names a file .*remove `model_args.checkpoint_path`",
        setup=timm_config_naming("model_args", "checkpoint_path", value="../../etc/passwd"),
    ),
    Case(
        "model-args-overlay-file",
        [],
        r"sets `model_args.pretrained_cfg_overlay.file`, which names a file",
        setup=timm_config_naming("model_args", "pretrained_cfg_overlay", value={"file": "/tmp/weights.pth"}),
    ),
    Case(
        "model-args-path-value",
        [],
        r"sets `model_args.norm_layer`, which names a file",
        setup=timm_config_naming("model_args", "norm_layer", value="../other/weights.pth"),
    ),
    Case(
        "pretrained-cfg-file",
        [],
        r"sets `pretrained_cfg.file`, which names a file",
        setup=timm_config_naming("pretrained_cfg", "file", value="/etc/passwd"),
    ),
    Case(
        "timm-wrapper-checkpoint-path",
        [],
        r"sets `model_args.checkpoint_path`, which names a file",
        setup=timm_wrapper_naming_a_checkpoint,
    ),
    Case(
        "shard-outside-the-folder",
        [],
        r"the shard `../outside/model-00002-of-00002.safetensors` listed in `model.safetensors.index.json` resolves "
        r"to .*outside the model folder",
        setup=shard_outside_the_folder,
    ),
    Case(
        "weights-linked-outside",
        [],
        r"`model.safetensors` resolves to .*elsewhere/model.safetensors`, outside the model folder",
        setup=weights_linked_outside,
    ),
    Case(
        "metric-not-shipped",
        ["--metric", "f1"],
        r"metric 'f1' is not shipped with hf_practise \(shipped: accuracy, top_k_accuracy\).*--trust-remote-code",
    ),
    # trust II (#22) 8-9: clear answers instead of tracebacks or silence
    Case(
        "disk-full-in-the-work-dir",
        ["--num-blocks", "1"],  # a target the run surely reaches, so that it gets to the write
        r"No space left on device while writing `.*work/finetune-.*`: the disk holding `.*work/finetune-\w+` is full "
        r"\(.* free there\).*rerun the same command: it resumes from the work dir",
        setup=with_a_work_dir,
        patch=disk_full_in_the_work_dir,
    ),
    Case(
        "disk-full-in-the-output",
        ["--num-blocks", "1"],
        r"No space left on device while writing `.*out`: the disk holding `.*` is full \(.* free there\)",
        patch=disk_full_in_the_output,
    ),
    Case(
        "ctrl-c-with-a-work-dir",
        ["--num-blocks", "1"],
        r"^interrupted; rerun the same command to resume from the work dir `.*work`\.$",
        exit_code=130,
        setup=with_a_work_dir,
        patch=ctrl_c_in_the_finetune,
    ),
    Case(
        "ctrl-c-without-a-work-dir",
        ["--num-blocks", "1"],
        r"^interrupted; nothing can be resumed, as no --work-dir was given: rerun with --work-dir DIR",
        exit_code=130,
        patch=ctrl_c_in_the_finetune,
    ),
    Case(
        "teacher-forward-fails",
        [],
        r"The teacher's forward fails on a \[1, 3, 32, 32\] input: RuntimeError: mat1 and mat2 shapes cannot be "
        r"multiplied.*`global_pool`",
        setup=teacher_model_args(global_pool=""),
    ),
    Case(
        "ce-labels-outside-the-classes",
        ["--objective", "ce"],
        r"`ce` objective trains the classifier on the tiny set's labels, but labels 7, 100 are outside its 5 classes "
        r"\(0-4\)\..*--objective features",
        setup=labelled_set([0, 3, 7, 100] * 3),
    ),
    Case(
        "eval-labels-outside-the-classes",
        ["--eval-split", "test"],
        r"eval set holds labels the model cannot predict: labels 7, 100 are outside its 5 classes \(0-4\)",
        setup=labelled_set([0, 1, 2, 3] * 3, test=[1, 7, 100, 2]),
    ),
    Case(
        "ce-string-labels",
        ["--objective", "ce"],
        r"Labels of column `label` are strings, not class ids; cast it to ClassLabel \(datasets: "
        r"`\.class_encode_column\('label'\)`",
        setup=labelled_set(["cat", "dog", "bird"] * 4, dtype="string"),
    ),
    Case(
        "per-class-string-labels",
        ["--per-class", "2"],
        r"`per_class` sampling needs class ids\. Labels of column `label` are strings, not class ids",
        setup=labelled_set(["cat", "dog", "bird"] * 4, dtype="string"),
    ),
    Case(
        "eval-string-labels",
        ["--eval-split", "test"],
        r"eval set needs class ids\. Labels of column `label` are strings",
        setup=labelled_set(["cat", "dog", "bird"] * 4, test=["cat", "dog"], dtype="string"),
    ),
    Case(
        "dataset-is-a-file",
        [],
        r"The dataset `.*data\.csv` is a file; pass a folder \(an imagefolder.*\) or a Hub dataset id",
        setup=_file("data.csv", "image,label\n", "--dataset"),
    ),
]


def tree_digest(root: Path, *, skip: tuple[str, ...] = ("work",)) -> dict[str, str]:
    """{relative path: kind, mode and content hash} of everything under `root` but its `skip` children."""
    import hashlib

    digest = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if rel.parts[0] in skip:
            continue
        st = path.lstat()
        if path.is_symlink():
            digest[str(rel)] = f"link {os.readlink(path)}"
        elif path.is_dir():
            digest[str(rel)] = f"dir {st.st_mode:o}"
        else:
            digest[str(rel)] = f"file {st.st_mode:o} {hashlib.sha256(path.read_bytes()).hexdigest()}"
    return digest


def run_main(argv: list[str], capsys) -> tuple[int, str]:
    """`compress.main(argv)` in this process: (exit code, stderr)."""
    try:
        code = compress_cli.main(argv)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
        if not isinstance(e.code, int) and e.code is not None:
            print(e.code, file=__import__("sys").stderr)
    return code, capsys.readouterr().err


def test_the_table_has_more_than_100_rows():  # the README says "more than 100"
    assert len(CLI_CASES) + len(API_CASES) > 100 and len({c.id for c in CLI_CASES}) == len(CLI_CASES)


@pytest.mark.parametrize("case", CLI_CASES, ids=lambda c: c.id)
def test_bad_cli_input(case: Case, teacher_dir, imagefolder, tmp_path, capsys, monkeypatch):
    base = {
        "--model": f"local-dir:{teacher_dir}",
        "--dataset": str(imagefolder),
        "--output-dir": str(tmp_path / "out"),
        "--num-samples": "12",
    }
    if case.setup is not None:
        case.setup(tmp_path, base)
    if case.patch is not None:
        case.patch(monkeypatch, tmp_path)
    base.update(case.replace)
    argv = [w for kv in base.items() for w in kv] + CLI_FAST + case.flags
    before = tree_digest(tmp_path)
    code, err = run_main(argv, capsys)
    assert code == case.exit_code, err[-2000:]
    assert "Traceback" not in err
    message = err.strip().splitlines()[-1]
    import re

    assert re.search(case.message, message), message
    # nothing half-written and nothing else touched: the output's parent (all but the work dir) is unchanged
    after = tree_digest(tmp_path)
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    assert not changed, changed


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
    # trust II (#22) 1, 2, 10, 11: what --overwrite may replace, where the output may go
    # trust II (#22) 4-7: nothing from outside the model folder is read or run
    (
        "config-metric-not-shipped",
        _api_config(eval_metrics=["./my_metric"]),
        ValueError,
        r"'./my_metric' is not shipped.*trust_remote_code=True",
    ),
    # trust II (#22) 8-9: clear answers instead of tracebacks or silence
    ("work-dir-disk-full", checkpoint_on_a_full_disk, OSError, r"No space left on device while writing .*free there"),
    ("teacher-forward-fails", compress_with_a_broken_head, ValueError, r"forward fails on a \[1, 3, 224, 224\]"),
    ("ce-labels-outside", ce_on_labels_outside_the_classes, ValueError, r"labels 7, 100 are outside its 4 classes"),
    ("eval-labels-outside", eval_labels_outside_the_classes, ValueError, r"cannot predict: labels 7, 100 are outside"),
    ("tensor-uint8", compress_uint8_images, ValueError, r"this one is torch.uint8: raw pixels\? Convert it to float"),
    ("per-class-string-labels", per_class_on_string_labels, ValueError, r"`label` are strings, not class ids"),
    ("dataset-is-a-file", dataset_that_is_a_file, ValueError, r"is a file; pass a folder"),
]


@pytest.mark.parametrize("case", API_CASES, ids=lambda c: c[0])
def test_bad_api_input(case):
    _, call, error, message = case
    with pytest.raises(error, match=message):
        call()
