"""Surviving faults: atomic checkpoints, clear errors, resuming killed fits, repeatable runs.

The kill tests run ``python -m landslide_lit fit`` in subprocesses on the tiny cubes: an
uninterrupted reference and fits stopped by SIGKILL or SIGTERM in their second epoch, all
started, like their resumptions, with ``--ckpt_path last``, and run side by side.
"""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from jsonargparse import Namespace
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.utilities.exceptions import SIGTERMException

from landslide_lit.checkpointing import (
    RANK_VARIABLES,
    RUN_FOLDER_VARIABLE,
    AtomicCheckpointIO,
    Interrupted,
    command_guard,
    last_checkpoint,
    reserve_run_version,
    reserve_version,
    resume_checkpoint,
)
from landslide_lit.cli import run
from landslide_lit.errors import LandslideLitError
from landslide_lit.main import main
from tests.conftest import TINY_MODEL

REPO = Path(__file__).resolve().parents[1]
# 5 training chips in batches of 1: 5 steps per epoch, 15 in all
FIT = [
    "--config",
    "demo.yaml",
    *TINY_MODEL,
    "--data.augment={}",  # augmentation draws must resume too
    "--data.batch_size=1",
    "--data.num_workers=2",  # workers draw indices before Lightning sets the epoch
    "--trainer.max_epochs=3",
    "--trainer.deterministic=true",
    "--trainer.enable_progress_bar=false",
]
STEPS, STEPS_PER_EPOCH = 15, 5
PAUSE_STEP = 7  # the second batch of the second epoch
EVERY_STEP_CHECKPOINT = json.dumps(
    {
        "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
        "init_args": {"filename": "last-step", "every_n_train_steps": 1},
    }
)


class PauseAtStep(Callback):
    """In a fit subprocess: at ``step``, touch ``marker``, wait (a minute at most) for a signal."""

    def __init__(self, step: int, marker: str) -> None:
        self.step = step
        self.marker = marker

    def on_train_batch_end(self, trainer: Trainer, *args: object) -> None:
        if trainer.global_step != self.step:
            return
        Path(self.marker).touch()
        deadline = time.monotonic() + 60
        while not trainer.received_sigterm and time.monotonic() < deadline:
            time.sleep(0.02)


def _fit_command(root: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "landslide_lit", "fit", f"--data.root={root}", *FIT, *extra]


def _in(workdir: Path) -> dict[str, object]:
    """Popen arguments: run in ``workdir`` with this checkout, output read as text."""
    workdir.mkdir(exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return {
        "cwd": workdir,
        "env": env,
        "stdout": subprocess.PIPE,
        "stderr": subprocess.STDOUT,
        "text": True,
    }


def _start(workdir: Path, root: str, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([*_fit_command(root, *extra), "--ckpt_path", "last"], **_in(workdir))


def _output(process: subprocess.Popen) -> str:
    """Wait (at most 5 minutes) for ``process`` to end and return what it printed."""
    try:
        return process.communicate(timeout=300)[0]
    except subprocess.TimeoutExpired:
        process.kill()
        raise


def _finish(process: subprocess.Popen) -> str:
    output = _output(process)
    assert process.returncode == 0, output[-3000:]
    return output


@dataclass
class InterruptedFit:
    """A fit stopped by a signal at PAUSE_STEP, and its resumption."""

    returncode: int
    stopped_output: str
    stopped_checkpoint: Path
    checkpoint_at_stop: dict
    resumed_output: str
    workdir: Path


# name: (signal, extra fit arguments)
SCENARIOS = {
    # SIGKILL with the default checkpoints: resumes from the end of the first epoch
    "sigkill": (signal.SIGKILL, []),
    # SIGKILL with a checkpoint every step: resumes mid-epoch
    "sigkill_mid_epoch": (signal.SIGKILL, ["--trainer.callbacks+=" + EVERY_STEP_CHECKPOINT]),
    # SIGTERM with the default checkpoints: CheckpointOnSigterm saves mid-epoch
    "sigterm": (signal.SIGTERM, []),
}


@pytest.fixture(scope="module")
def fault_runs(synthetic_root, tmp_path_factory) -> dict[str, object]:
    """The reference fit and the interrupted ones, each resumed once; all run side by side."""
    base = tmp_path_factory.mktemp("faults")
    reference = _start(base / "reference", synthetic_root)
    stopped = {}
    for name, (_, args) in SCENARIOS.items():
        marker = base / f"{name}.paused"
        pause = {
            "class_path": f"{__name__}.PauseAtStep",
            "init_args": {"step": PAUSE_STEP, "marker": str(marker)},
        }
        pause_arg = "--trainer.callbacks+=" + json.dumps(pause)
        stopped[name] = (_start(base / name, synthetic_root, *args, pause_arg), marker)
    deadline = time.monotonic() + 300
    for process, marker in stopped.values():
        while not marker.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"the fit never paused:\n{process.communicate()[0][-3000:]}")
            time.sleep(0.05)
    for name, (process, _) in stopped.items():
        process.send_signal(SCENARIOS[name][0])
    runs: dict[str, object] = {}
    resumed = {}
    for name, (process, _) in stopped.items():
        output = _output(process)
        path = last_checkpoint(base / name)
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
        runs[name] = (process.returncode, output, path, checkpoint)
        resumed[name] = _start(base / name, synthetic_root, *SCENARIOS[name][1])
    runs["reference"] = (base / "reference", _finish(reference))
    for name, process in resumed.items():
        runs[name] = InterruptedFit(*runs[name], _finish(process), base / name)
    return runs


def _weights(workdir: Path) -> dict[str, torch.Tensor]:
    checkpoint = torch.load(last_checkpoint(workdir), map_location="cpu", weights_only=False)
    return checkpoint["state_dict"]


def _metrics(workdir: Path) -> dict[tuple[int, str], float]:
    """(epoch, key) -> value of every value logged in the run's metrics.csv."""
    (run,) = workdir.glob("runs/landslide/version_*")
    return metrics_of(run)


def metrics_of(run: Path) -> dict[tuple[int, str], float]:
    """(epoch, key) -> value of every value logged in ``run``'s metrics.csv."""
    with (run / "metrics.csv").open(newline="") as file:
        rows = list(csv.DictReader(file))
    return {
        (int(row["epoch"]), key): float(value)
        for row in rows
        for key, value in row.items()
        if value and key not in ("epoch", "step")
    }


def _assert_resumed(run: InterruptedFit, reference_dir: Path) -> None:
    """The fit resumed from its checkpoint, in its own folder, to the uninterrupted result."""
    stopped = run.checkpoint_at_stop
    batches_done = stopped["loops"]["fit_loop"]["epoch_loop.batch_progress"]["current"]
    mid_epoch = batches_done["processed"] < STEPS_PER_EPOCH
    relative = run.stopped_checkpoint.relative_to(run.workdir)
    assert f"Restoring states from the checkpoint path at {relative}" in run.resumed_output
    assert [p.name for p in run.workdir.glob("runs/landslide/*")] == ["version_0"]
    final = torch.load(last_checkpoint(run.workdir), map_location="cpu", weights_only=False)
    assert final["global_step"] == STEPS
    # metrics.csv keeps the epochs logged before the kill
    assert {epoch for epoch, key in _metrics(run.workdir) if key == "val/auprc"} == {0, 1, 2}

    reference, resumed = _metrics(reference_dir), _metrics(run.workdir)
    # train/loss is an epoch mean; after a mid-epoch resume it averages the later batches only
    partial = (stopped["epoch"], "train/loss") if mid_epoch else None
    compared = {k: v for k, v in reference.items() if k != partial}
    weights, reference_weights = _weights(run.workdir), _weights(reference_dir)
    assert all(torch.equal(v, weights[k]) for k, v in reference_weights.items())
    assert {k: resumed.get(k) for k in compared} == compared


def test_sigkill_resumes_from_the_last_epoch_to_the_uninterrupted_result(fault_runs):
    run = fault_runs["sigkill"]
    assert run.returncode == -signal.SIGKILL
    assert run.checkpoint_at_stop["global_step"] == STEPS_PER_EPOCH  # saved after validation
    _assert_resumed(run, fault_runs["reference"][0])


def test_sigkill_mid_epoch_resumes_to_the_uninterrupted_result(fault_runs):
    run = fault_runs["sigkill_mid_epoch"]
    assert run.returncode == -signal.SIGKILL
    assert run.checkpoint_at_stop["global_step"] == PAUSE_STEP - 1  # the last one on disk
    _assert_resumed(run, fault_runs["reference"][0])


def test_sigterm_mid_epoch_saves_last_and_resumes_to_the_uninterrupted_result(fault_runs):
    run = fault_runs["sigterm"]
    # exit status 128 + SIGTERM (Lightning's own is 0): `fit && test` stops here
    assert run.returncode == 143, run.stopped_output[-3000:]
    saved = run.stopped_checkpoint.relative_to(run.workdir)
    message = (
        f"error: fit stopped by SIGTERM in epoch 1 after batch 2 of it (global step 7); "
        f"saved {saved}; resume with the same `landslide-lit fit` command and "
        "`--ckpt_path last`"
    )
    assert run.stopped_output.count("error: ") == 1 and message in run.stopped_output
    assert "Traceback" not in run.stopped_output
    assert run.checkpoint_at_stop["global_step"] == PAUSE_STEP  # the batch it was in finished
    _assert_resumed(run, fault_runs["reference"][0])


def test_a_first_start_with_ckpt_path_last_starts_a_new_run(fault_runs):
    workdir, output = fault_runs["reference"]
    assert "--ckpt_path last: no checkpoint" in output
    assert torch.load(last_checkpoint(workdir), weights_only=False)["global_step"] == STEPS


def test_a_crash_mid_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    path = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"step": 1, "weights": torch.ones(1000)}, path)
    (path.parent / ".last.ckpt.12345.tmp").write_bytes(b"left by a SIGKILL mid-save")
    (path.parent / ".last.tmp-12346.ckpt").write_bytes(b"left by a SIGKILL mid-save")

    def crash(checkpoint: dict, file, *args, **kwargs) -> None:
        file.write(b"PK\x03\x04" + bytes(4096))
        raise OSError("killed mid-write")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError, match="killed mid-write"):
        io.save_checkpoint({"step": 2, "weights": torch.zeros(1000)}, path)
    with pytest.raises(OSError, match="killed mid-write"):
        io.save_checkpoint({"step": 1}, tmp_path / "checkpoints" / "best.ckpt")
    monkeypatch.undo()
    assert torch.load(path, weights_only=True)["step"] == 1
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]


def test_ckpt_path_last_is_the_newest_last_or_slurm_checkpoint(tmp_path):
    def save(path: Path, run_folder: str, mtime: int) -> None:
        callbacks = {"ModelCheckpoint{'monitor': None}": {"dirpath": f"{run_folder}/checkpoints"}}
        state = {"state_dict": {}, "datamodule_hyper_parameters": {}, "callbacks": callbacks}
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(state, path)
        os.utime(path, (mtime, mtime))

    def trainer_config() -> Namespace:
        args = {"save_dir": "runs", "name": "landslide", "version": None}
        return Namespace(logger=[Namespace(class_path="CSVLogger", init_args=Namespace(**args))])

    save(tmp_path / "runs/landslide/version_0/checkpoints/last.ckpt", "runs/landslide/version_0", 1)
    save(tmp_path / "runs/landslide/version_1/checkpoints/last.ckpt", "runs/landslide/version_1", 2)
    config = trainer_config()
    path = resume_checkpoint("last", config, tmp_path)
    assert path == str(tmp_path / "runs/landslide/version_1/checkpoints/last.ckpt")
    assert config.logger[0].init_args.version == 1  # the fit continues that run's folder
    # SLURM's requeue checkpoint (in default_root_dir) wins when it is newer
    save(tmp_path / "hpc_ckpt_1.ckpt", "runs/landslide/version_0", 3)
    config = trainer_config()
    assert resume_checkpoint("last", config, tmp_path) == str(tmp_path / "hpc_ckpt_1.ckpt")
    assert config.logger[0].init_args.version == 0
    # a checkpoint outside its run folder starts a new version
    save(tmp_path / "elsewhere/last.ckpt", "runs/landslide/version_0", 4)
    config = trainer_config()
    resume_checkpoint(str(tmp_path / "elsewhere/last.ckpt"), config, tmp_path)
    assert config.logger[0].init_args.version is None


def test_fit_from_a_bad_checkpoint_is_one_clear_error(
    synthetic_root, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    truncated, foreign = tmp_path / "truncated.ckpt", tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {"w": torch.ones(10_000)}}, foreign)
    truncated.write_bytes(foreign.read_bytes()[:2000])
    fit = ["fit", f"--data.root={synthetic_root}", *FIT, "--ckpt_path"]
    for path, message in (
        (truncated, "error: cannot read checkpoint .*truncated"),
        (foreign, "error: .*foreign.ckpt was not written by landslide-lit"),
        (tmp_path / "missing.ckpt", "error: checkpoint not found: .*missing.ckpt"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            main([*fit, str(path)])
        assert exit_info.value.code == 2
        assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "runs").exists()


def test_user_plugins_and_precision_keep_atomic_checkpoints(synthetic_root, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cli = run(
        [
            "fit",
            f"--data.root={synthetic_root}",
            *FIT,
            "--trainer.deterministic=false",
            "--trainer.fast_dev_run=true",
            "--trainer.precision=bf16-mixed",
            "--trainer.plugins+=lightning.fabric.plugins.environments.LightningEnvironment",
        ]
    )
    plugins = [plugin.class_path for plugin in cli.config.fit.trainer.plugins]
    assert plugins == [
        "landslide_lit.checkpointing.AtomicCheckpointIO",
        "lightning.fabric.plugins.environments.LightningEnvironment",
    ]
    assert isinstance(cli.trainer.strategy.checkpoint_io, AtomicCheckpointIO)
    assert cli.trainer.strategy.precision_plugin.precision == "bf16-mixed"


@pytest.fixture
def restore_determinism():
    """``--trainer.deterministic`` switches torch's global flag on; switch it back."""
    before = torch.are_deterministic_algorithms_enabled()
    yield
    torch.use_deterministic_algorithms(before)


def test_same_seed_and_config_give_identical_runs(
    synthetic_root, tmp_path, monkeypatch, restore_determinism
):
    args = [
        "fit",
        f"--data.root={synthetic_root}",
        *FIT,
        "--data.batch_size=2",
        "--trainer.max_epochs=2",
    ]
    workdirs = [tmp_path / "first", tmp_path / "second"]
    for workdir in workdirs:
        workdir.mkdir()
        monkeypatch.chdir(workdir)
        cli = run(args)
        assert isinstance(cli.trainer.strategy.checkpoint_io, AtomicCheckpointIO)
    first, second = workdirs
    assert _metrics(first) == _metrics(second) and len(_metrics(first)) > 10
    weights = _weights(second)
    assert all(torch.equal(value, weights[key]) for key, value in _weights(first).items())


def test_sigterm_stops_every_ddp_rank_with_exit_status_143(synthetic_root, tmp_path):
    """Lightning's launcher passes the SIGTERM on to the other rank; each saves its share
    of ``last.ckpt`` (a collective) and ends with the same error."""
    marker = tmp_path / "paused"
    pause = {
        "class_path": f"{__name__}.PauseAtStep",
        "init_args": {"step": 2, "marker": str(marker)},
    }
    ddp = ["--trainer.strategy=ddp", "--trainer.accelerator=cpu", "--trainer.devices=2"]
    ddp.append("--data.keep=valid")  # a validation chip for each rank
    process = _start(
        tmp_path / "ddp", synthetic_root, *ddp, "--trainer.callbacks+=" + json.dumps(pause)
    )
    deadline = time.monotonic() + 300
    while not marker.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"the fit never paused:\n{process.communicate()[0][-3000:]}")
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    output = _output(process)  # the pipe closes when both ranks have ended
    assert process.returncode == 143, output[-3000:]
    assert output.count("error: fit stopped by SIGTERM in epoch 0 after batch") == 2, output
    assert "Traceback" not in output
    (path,) = (tmp_path / "ddp").glob("runs/landslide/version_0/checkpoints/last.ckpt")
    assert torch.load(path, map_location="cpu", weights_only=False)["global_step"] == 2


def test_a_sigterm_outside_training_still_ends_the_command_non_zero():
    """Without a word from CheckpointOnSigterm (a command without it) the status is 143 too."""
    expected = pytest.raises(Interrupted, match="stopped by SIGTERM before it finished")
    with expected as error, command_guard():
        raise SIGTERMException
    assert error.value.exit_code == 143 and isinstance(error.value, LandslideLitError)


def test_runs_reserving_a_version_at_once_get_different_ones(tmp_path):
    place = tmp_path / "runs" / "landslide"
    (place / "version_3").mkdir(parents=True)
    start = threading.Barrier(8)

    def reserve(_: int) -> int:
        start.wait()
        return reserve_version(place)

    with ThreadPoolExecutor(8) as pool:
        versions = list(pool.map(reserve, range(8)))
    assert sorted(versions) == list(range(4, 12))
    assert {p.name for p in place.iterdir()} == {f"version_{n}" for n in range(3, 12)}


def _trainer_config(tmp_path: Path) -> Namespace:
    loggers = [
        ("lightning.pytorch.loggers.TensorBoardLogger", "runs"),
        ("landslide_lit.checkpointing.ResumableCSVLogger", "runs"),
    ]
    return Namespace(
        logger=[
            Namespace(
                class_path=path,
                init_args=Namespace(save_dir=str(tmp_path / d), name="landslide", version=None),
            )
            for path, d in loggers
        ]
    )


def test_only_the_first_rank_reserves_and_the_launched_ranks_take_its_version(
    tmp_path, monkeypatch
):
    for name in RANK_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv(RUN_FOLDER_VARIABLE, raising=False)
    (tmp_path / "runs" / "landslide" / "version_0").mkdir(parents=True)
    rank_zero = _trainer_config(tmp_path)
    reserve_run_version(rank_zero)
    assert [logger.init_args.version for logger in rank_zero.logger] == [1, 1]
    assert os.environ[RUN_FOLDER_VARIABLE] == str(tmp_path / "runs/landslide/version_1")
    # a rank started by Lightning's launcher: rank 0's version, nothing created
    monkeypatch.setenv("LOCAL_RANK", "1")
    launched = _trainer_config(tmp_path)
    reserve_run_version(launched)
    assert [logger.init_args.version for logger in launched.logger] == [1, 1]
    # a rank started by srun without that word from rank 0: nothing pinned, nothing created
    monkeypatch.delenv(RUN_FOLDER_VARIABLE)
    monkeypatch.setenv("SLURM_PROCID", "3")
    alone = _trainer_config(tmp_path)
    reserve_run_version(alone)
    assert [logger.init_args.version for logger in alone.logger] == [None, None]
    assert sorted(p.name for p in (tmp_path / "runs/landslide").iterdir()) == [
        "version_0",
        "version_1",
    ]


def test_a_command_that_fails_before_writing_gives_its_run_folder_back(tmp_path, monkeypatch):
    for name in RANK_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ValueError, match="bad data"), command_guard():
        reserve_run_version(_trainer_config(tmp_path))
        assert (tmp_path / "runs/landslide/version_0").is_dir()
        raise ValueError("bad data")
    assert list(tmp_path.iterdir()) == []


def test_two_fits_started_together_in_one_folder_keep_apart(synthetic_root, tmp_path):
    short = ["--trainer.max_epochs=1", "--trainer.limit_train_batches=2"]
    processes = [subprocess.Popen(_fit_command(synthetic_root, *short), **_in(tmp_path))]
    processes.append(subprocess.Popen(_fit_command(synthetic_root, *short), **_in(tmp_path)))
    for process in processes:
        _finish(process)
    folders = sorted((tmp_path / "runs" / "landslide").iterdir())
    assert [folder.name for folder in folders] == ["version_0", "version_1"]
    for folder in folders:
        checkpoint = torch.load(folder / "checkpoints/last.ckpt", weights_only=False)
        written_to = {state.get("dirpath") for state in checkpoint["callbacks"].values()}
        assert written_to == {f"runs/landslide/{folder.name}/checkpoints"}
        assert checkpoint["global_step"] == 2
        assert {epoch for epoch, key in metrics_of(folder) if key == "val/auprc"} == {0}
        assert len(list(folder.glob("events.out.tfevents.*"))) == 1
