"""The one atomic writer: a target is the old file or the new one, never a part of one."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from landslide_lit.atomic import (
    temporary_path,
    write_atomically,
    write_json_atomically,
    write_text_atomically,
)


def test_the_target_keeps_its_old_content_until_the_new_one_is_complete(tmp_path):
    target = tmp_path / "metrics.json"
    target.write_text("old")
    seen_while_writing = []

    def write(temporary: Path) -> None:
        temporary.write_text("new, part 1")
        seen_while_writing.append(target.read_text())
        temporary.write_text("new, complete")

    assert write_atomically(target, write) == target
    assert seen_while_writing == ["old"]
    assert target.read_text() == "new, complete"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


@pytest.mark.parametrize("failure", [OSError("disk full"), KeyboardInterrupt()])
def test_a_failing_writer_leaves_the_old_file_and_no_temporary(tmp_path, failure):
    target = tmp_path / "scores.npz"
    target.write_bytes(b"old")

    def write(temporary: Path) -> None:
        temporary.write_bytes(b"half of the new")
        raise failure

    with pytest.raises(type(failure)):
        write_atomically(target, write)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["scores.npz"]


def test_a_failing_writer_of_a_folder_leaves_no_temporary_folder(tmp_path):
    def write(temporary: Path) -> None:
        (temporary / "chunk").mkdir(parents=True)
        raise OSError("interrupted")

    with pytest.raises(OSError, match="interrupted"):
        write_atomically(tmp_path / "map.zarr", write)
    assert list(tmp_path.iterdir()) == []


def test_the_temporary_is_hidden_beside_the_target_with_its_suffix(tmp_path):
    target = tmp_path / "new" / "folder" / "pr_curve.png"
    given = []
    write_atomically(target, lambda temporary: given.append(temporary) or temporary.touch())
    (temporary,) = given
    assert temporary == temporary_path(target)
    assert temporary.parent == target.parent
    assert temporary.name.startswith(".") and temporary.suffix == ".png"
    assert str(os.getpid()) in temporary.name
    assert target.is_file() and not temporary.exists()


def test_a_durable_write_syncs_the_file_and_then_its_folder(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync

    def fsync(descriptor: int) -> None:
        synced.append(Path(os.readlink(f"/proc/self/fd/{descriptor}")))
        real_fsync(descriptor)

    monkeypatch.setattr(os, "fsync", fsync)
    target = tmp_path / "last.ckpt"
    write_atomically(target, lambda temporary: temporary.write_bytes(b"weights"), durable=True)
    assert synced == [temporary_path(target), tmp_path]
    assert target.read_bytes() == b"weights"

    synced.clear()
    write_atomically(tmp_path / "summary.json", lambda temporary: temporary.write_text("{}"))
    assert synced == []


def test_the_text_and_json_helpers_write_utf8_and_indented_json(tmp_path):
    text = write_text_atomically(tmp_path / "note.txt", "Talakmau, Sumatra – 2022")
    assert text.read_bytes() == "Talakmau, Sumatra – 2022".encode()

    data = {"region": "hokkaido", "auprc": 0.5, "folder": tmp_path}
    path = write_json_atomically(tmp_path / "summary.json", data, default=str)
    assert path.read_text() == json.dumps(data, indent=2, default=str) + "\n"
    assert json.loads(path.read_text())["folder"] == str(tmp_path)
    with pytest.raises(TypeError):
        write_json_atomically(tmp_path / "summary.json", {"folder": tmp_path})
    assert json.loads(path.read_text())["region"] == "hokkaido"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["note.txt", "summary.json"]
