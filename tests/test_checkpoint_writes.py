"""Checkpoints written in the background: the same bytes, links for repeated states, errors."""

from __future__ import annotations

import io
import os
import threading
from collections import OrderedDict

import pytest
import torch

from landslide_lit.checkpointing import AtomicCheckpointIO
from landslide_lit.snapshots import identical, snapshot, storages


def _bytes(checkpoint: dict) -> bytes:
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    return buffer.getvalue()


def _checkpoint() -> dict:
    weights = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    score = torch.tensor(0.5)
    return {
        "epoch": 3,
        "state_dict": OrderedDict(w=weights, row=weights[1]),  # a view: one storage
        "callbacks": {"best": {"score": score, "models": {"best.ckpt": score}}},
        "lr": 1e-3,
        "names": ["a", None, (1, True)],
    }


def test_a_snapshot_saves_to_the_same_bytes_and_shares_nothing():
    checkpoint = _checkpoint()
    kept = snapshot(checkpoint)
    assert _bytes(kept) == _bytes(checkpoint)
    assert identical(checkpoint, kept)
    checkpoint["state_dict"]["w"][0, 0] = 7.0
    checkpoint["callbacks"]["best"]["models"]["other.ckpt"] = torch.tensor(1.0)
    assert kept["state_dict"]["w"][0, 0] == 0.0 and len(kept["callbacks"]["best"]["models"]) == 1


def test_a_snapshot_keeps_the_storages_named_unchanged_and_copies_the_rest():
    checkpoint = _checkpoint()
    weights, score = checkpoint["state_dict"]["w"], checkpoint["callbacks"]["best"]["score"]
    kept = snapshot(checkpoint, storages([weights]))
    assert kept["state_dict"]["w"] is weights and kept["state_dict"]["row"] is not weights
    assert kept["state_dict"]["row"].untyped_storage().data_ptr() == weights.data_ptr()
    assert kept["callbacks"]["best"]["score"].data_ptr() != score.data_ptr()
    assert kept["callbacks"] is not checkpoint["callbacks"]
    assert _bytes(kept) == _bytes(checkpoint) and identical(checkpoint, kept)
    score.add_(1)
    assert not identical(checkpoint, kept)


@pytest.mark.parametrize(
    "change",
    [
        lambda c: c["state_dict"]["w"].view(-1)[0].fill_(-0.0),  # equal to 0.0, other bits
        lambda c: c["state_dict"].__setitem__("row", c["state_dict"]["w"][1].clone()),
        lambda c: c.__setitem__("lr", 1e-3 + 1e-18),
        lambda c: c.__setitem__("epoch", 3.0),
        lambda c: c["names"].append("b"),
        lambda c: c["callbacks"]["best"].__setitem__("score", torch.tensor(0.5)),  # unshared
    ],
)
def test_any_difference_in_what_torch_save_writes_is_not_identical(change):
    checkpoint = _checkpoint()
    kept = snapshot(checkpoint)
    change(checkpoint)
    assert _bytes(checkpoint) != _bytes(kept)
    assert not identical(checkpoint, kept)


def test_background_writes_hold_the_state_at_save_and_repeated_states_are_links(tmp_path):
    checkpoint = _checkpoint()
    expected = _bytes(checkpoint)
    writer = AtomicCheckpointIO()
    writer.write_in_background()
    best, last = tmp_path / "best.ckpt", tmp_path / "last.ckpt"
    writer.save_checkpoint(checkpoint, best)
    writer.save_checkpoint(checkpoint, last)  # the same state: a link
    checkpoint["state_dict"]["w"].add_(1)  # training goes on at once
    writer.remove_checkpoint(best)  # in order, after the writes
    writer.wait()
    assert last.read_bytes() == expected and not best.exists()
    writer.save_checkpoint(checkpoint, best)
    writer.save_checkpoint(checkpoint, last)
    writer.teardown()
    assert os.stat(best).st_ino == os.stat(last).st_ino
    assert best.read_bytes() == _bytes(checkpoint) != expected
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.ckpt", "last.ckpt"]


def test_a_failed_background_write_is_raised_and_leaves_the_previous_file(tmp_path, monkeypatch):
    writer = AtomicCheckpointIO()
    writer.write_in_background()
    path = tmp_path / "last.ckpt"
    writer.save_checkpoint({"step": 1}, path)
    writer.wait()

    def crash(*args, **kwargs) -> None:
        raise OSError("No space left on device")

    monkeypatch.setattr(torch, "save", crash)
    writer.save_checkpoint({"step": 2}, path)
    with pytest.raises(OSError, match="No space left"):
        writer.teardown()
    monkeypatch.undo()
    assert torch.load(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]
    writer.save_checkpoint({"step": 3}, path)  # after teardown: written before save returns
    assert torch.load(path)["step"] == 3


def test_stepped_tensors_are_written_from_the_fit_before_its_next_optimizer_step(
    tmp_path, monkeypatch
):
    checkpoint = _checkpoint()
    expected = _bytes(checkpoint)
    weights, score = checkpoint["state_dict"]["w"], checkpoint["callbacks"]["best"]["score"]
    writer = AtomicCheckpointIO()
    writer.write_in_background(lambda: storages([weights]))
    save, release = torch.save, threading.Event()

    def held_save(*args, **kwargs) -> None:
        release.wait()
        save(*args, **kwargs)

    monkeypatch.setattr(torch, "save", held_save)
    best, last = tmp_path / "best.ckpt", tmp_path / "last.ckpt"
    writer.save_checkpoint(checkpoint, best)
    score.add_(1)  # not stepped (a buffer, say): the snapshot holds a copy

    def step() -> None:
        writer.before_optimizer_step()
        weights.add_(1)

    stepping = threading.Thread(target=step)
    stepping.start()
    stepping.join(timeout=0.5)
    assert stepping.is_alive()  # the step waits for the write that shares its weights
    release.set()
    stepping.join()
    assert best.read_bytes() == expected
    score.sub_(1)  # only the stepped weights differ from the state saved
    writer.save_checkpoint(checkpoint, last)  # stepped since: written, not linked
    writer.teardown()
    assert os.stat(best).st_ino != os.stat(last).st_ino
    assert last.read_bytes() == _bytes(checkpoint) != expected
