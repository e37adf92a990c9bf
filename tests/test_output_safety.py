"""What saving may replace, and that no kill or symlink loses a model: `--overwrite` replaces only an earlier
hf_practise output, never a folder the run read; the previous output survives a writer killed mid-swap; folders
get a plain `mkdir`'s permissions; a symlinked output folder stays a symlink and its target is written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hf_practise import PractiseCompressor
from hf_practise import files as files_module
from hf_practise.files import atomic_write_text, save_directory_atomically
from hf_practise.result import REPORT_FILE

from .conftest import save_tiny_teacher
from .test_bad_inputs import tree_digest
from .test_compressor import fast_config, image_dataset


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A user's project folder: a teacher, a dataset on disk, notes; and the result of compressing them."""
    root = tmp_path_factory.mktemp("project")
    (root / "teacher").mkdir()
    save_tiny_teacher(root / "teacher")
    image_dataset(16).save_to_disk(str(root / "data"))
    (root / "notes.txt").write_text("mine")
    from hf_practise.data import load_image_dataset

    compressor = PractiseCompressor.from_pretrained(
        f"local-dir:{root / 'teacher'}", fast_config(num_blocks=1, work_dir=str(root / "work"))
    )
    result = compressor.compress(load_image_dataset(root / "data"))
    return root, result


@pytest.mark.parametrize("where", ["teacher", "data", "work", ".", "teacher/sub", "data/compressed"])
def test_save_pretrained_never_writes_over_what_the_run_read(project, where):
    root, result = project
    before = tree_digest(root, skip=())
    with pytest.raises(
        ValueError, match=r"(is|contains|lies inside) (the model folder|the dataset folder|the work dir)"
    ):
        result.save_pretrained(root / where, overwrite=True)
    assert tree_digest(root, skip=()) == before


def test_overwrite_replaces_an_earlier_output_and_nothing_else(project, tmp_path):
    _, result = project
    out = result.save_pretrained(tmp_path / "out")
    report = json.loads((out / REPORT_FILE).read_text())
    assert set(report["files"]) == {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    result.save_pretrained(out, overwrite=True)  # an earlier output: replaced
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no sibling left behind
    (out / "my_notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=r"did not write \(my_notes.txt\)"):
        result.save_pretrained(out, overwrite=True)
    (out / "my_notes.txt").unlink()
    (tmp_path / "theirs").mkdir()
    (tmp_path / "theirs" / "model.safetensors").write_bytes(b"x")
    with pytest.raises(FileExistsError, match=r"not an earlier hf_practise output"):
        result.save_pretrained(tmp_path / "theirs", overwrite=True)
    assert (tmp_path / "theirs" / "model.safetensors").read_bytes() == b"x"


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _write(text: str):
    def write(tmp: Path) -> None:
        (tmp / "model.txt").write_text(text)

    return write


def _killed_between_the_renames(tmp_path: Path) -> Path:
    """The state a writer leaves when killed after `target -> .old` and before `tmp -> target`."""
    target = save_directory_atomically(tmp_path / "out", _write("previous"))
    pid = _dead_pid()
    target.rename(tmp_path / f".out.old-{pid}-123")
    (tmp_path / f".out.tmp-{pid}-abc").mkdir()
    (tmp_path / f".out.tmp-{pid}-abc" / "model.txt").write_text("new")
    return target


def test_a_previous_output_set_aside_by_a_killed_writer_is_restored(tmp_path):
    target = _killed_between_the_renames(tmp_path)

    def failing(tmp: Path) -> None:
        raise OSError("No space left on device")

    with pytest.raises(OSError, match="No space"):  # the next save fails too: the previous model is still there
        save_directory_atomically(target, failing, overwrite=True)
    assert (target / "model.txt").read_text() == "previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_save_after_a_killed_writer_replaces_the_restored_output(tmp_path):
    target = _killed_between_the_renames(tmp_path)
    save_directory_atomically(target, _write("next"), overwrite=True)
    assert (target / "model.txt").read_text() == "next"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two-renames"])
def test_replacing_keeps_the_previous_folder_until_the_new_one_is_in_place(tmp_path, monkeypatch, exchange):
    target = save_directory_atomically(tmp_path / "out", _write("previous"))
    if not exchange:
        monkeypatch.setattr(files_module, "_exchange", lambda a, b: False)
    renames = []
    real_rename = Path.rename

    def rename(self, new):
        renames.append(Path(new).name)
        if not exchange and len(renames) == 2:  # interrupted between `out -> .old` and `tmp -> out`
            raise KeyboardInterrupt
        return real_rename(self, new)

    monkeypatch.setattr(Path, "rename", rename)
    if exchange:
        save_directory_atomically(target, _write("new"), overwrite=True)
        assert renames == [] and (target / "model.txt").read_text() == "new"  # one renameat2, no Path.rename
    else:
        with pytest.raises(KeyboardInterrupt):
            save_directory_atomically(target, _write("new"), overwrite=True)
        assert (target / "model.txt").read_text() == "previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_folders_and_files_get_a_plain_mkdir_s_permissions(tmp_path):
    mask = os.umask(0o027)
    try:
        target = save_directory_atomically(tmp_path / "out", _write("x"))
        assert target.stat().st_mode & 0o777 == 0o750
        file = atomic_write_text(tmp_path / "note.json", "{}")
        assert file.stat().st_mode & 0o777 == 0o640
    finally:
        os.umask(mask)


def test_a_symlinked_output_stays_a_link_and_its_target_is_written(project, tmp_path):
    _, result = project
    real = result.save_pretrained(tmp_path / "real")
    (tmp_path / "link").symlink_to(real, target_is_directory=True)
    result.save_pretrained(tmp_path / "link", overwrite=True)
    assert (tmp_path / "link").is_symlink() and (tmp_path / "link").resolve() == real.resolve()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "real"]
    assert json.loads((real / REPORT_FILE).read_text())["dropped_blocks"] == [r.block for r in result.dropped]
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    result.save_pretrained(dangling)
    assert dangling.is_symlink() and (tmp_path / "elsewhere" / REPORT_FILE).is_file()
    with torch.no_grad():
        assert torch.isfinite(result.model(torch.randn(1, 3, 32, 32))).all()


def test_an_output_saved_before_reports_listed_files_is_replaced_only_with_its_own_files(project, tmp_path):
    _, result = project
    out = tmp_path / "old"
    out.mkdir()
    for name in ("config.json", "model.safetensors", "README.md", "block_scores.png"):
        (out / name).write_text("x")
    (out / REPORT_FILE).write_text(json.dumps({"dropped_blocks": []}))  # no "files": an older hf_practise
    (out / "eval_log.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=r"did not write \(eval_log.txt\)"):
        result.save_pretrained(out, overwrite=True)
    (out / "eval_log.txt").unlink()
    result.save_pretrained(out, overwrite=True)
    assert "files" in json.loads((out / REPORT_FILE).read_text())
