"""Checkpoints that survive a kill, and fits that resume where they stopped.

* :class:`AtomicCheckpointIO` writes a checkpoint to a temporary file beside its
  final name, fsyncs it and renames it into place: a kill mid-write leaves the
  previous complete file, so ``last.ckpt`` is always the old or the new one. During a
  fit with :class:`BackgroundCheckpointWrites` it writes from a snapshot in a background
  thread while training goes on, and a second save of the same state links the first file.
* :class:`CheckpointOnSigterm` saves ``last.ckpt`` when Lightning stops a fit on
  SIGTERM; Lightning only stops (and saves nothing) outside SLURM's requeue signal.
  :func:`command_guard` then ends the command with :class:`Interrupted` (exit status 143)
  instead of Lightning's exit status 0, so ``fit && test`` stops there.
* :func:`reserve_run_version` gives each run its own ``version_N`` folder, created
  atomically, so fits started together in one folder never share one.
* :func:`resume_checkpoint` checks ``fit --ckpt_path`` before Lightning loads it,
  resolves ``last`` to the newest last (or SLURM ``hpc_ckpt_N``) checkpoint of the
  fit runs under the working directory, and continues that run's version folder,
  where :class:`ResumableCSVLogger` appends to its ``metrics.csv``.
"""

from __future__ import annotations

import contextlib
import csv
import glob
import importlib
import itertools
import logging
import os
import re
import signal
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch
from fsspec.core import url_to_fs
from fsspec.implementations.local import LocalFileSystem
from jsonargparse import Namespace
from lightning.fabric.plugins.io import TorchCheckpointIO
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities.exceptions import SIGTERMException

from landslide_lit.atomic import write_atomically
from landslide_lit.errors import LandslideLitError
from landslide_lit.runs import checkpoint_folders, read_checkpoint
from landslide_lit.snapshots import identical, on_cpu, snapshot, storages

__all__ = [
    "HPC_CHECKPOINT",
    "RANK_VARIABLES",
    "RESUME",
    "RUN_FOLDER_VARIABLE",
    "AtomicCheckpointIO",
    "BackgroundCheckpointWrites",
    "CheckpointOnSigterm",
    "Interrupted",
    "ResumableCSVLogger",
    "command_guard",
    "last_checkpoint",
    "reserve_run_version",
    "reserve_version",
    "resume_checkpoint",
]

log = logging.getLogger(__name__)

HPC_CHECKPOINT = re.compile(r"hpc_ckpt_\d+\.ckpt")
"""Name of the checkpoints Lightning saves on SLURM's requeue signal (in ``default_root_dir``)."""


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` that never leaves a partial file under a checkpoint's name.

    The checkpoint is written with :func:`~landslide_lit.atomic.write_atomically`
    (``durable=True``): to a hidden temporary file in the same folder, flushed and
    fsynced, then renamed over ``<name>`` with :func:`os.replace` (atomic within a POSIX
    file system); the folder is fsynced so the rename survives a crash of the machine.
    Temporary files a kill left behind are removed on the next save of that name.
    Remote (fsspec) paths go through Lightning's own writer. Under DDP the strategy
    calls this on global rank 0 only.

    After :meth:`write_in_background` (:class:`BackgroundCheckpointWrites` calls it when
    a fit starts) until :meth:`teardown`, a checkpoint of CPU tensors is copied
    (:func:`~landslide_lit.snapshots.snapshot`) and written the same way by one
    background thread, in the order saved, one at a time: the files' bytes are those of
    a direct save. The copy keeps the tensors that only optimizer steps change (the
    parameters and the optimizer state) as they are, so :meth:`before_optimizer_step`
    must be called before each step. A save of a state
    :func:`~landslide_lit.snapshots.identical` to the one written last (the best and the
    last checkpoint of one epoch) becomes a hard link to that file, renamed into place
    the same way. :meth:`wait` waits for the writes and raises the first error of one;
    the next save and :meth:`teardown` wait too.
    """

    def __init__(self) -> None:
        super().__init__()
        self._writer: ThreadPoolExecutor | None = None
        self._pending: list[Future] = []
        self._kept: tuple[dict[str, Any], Path] | None = None
        """The snapshot written last in the background and its file."""
        self._stepped: Callable[[], set[int]] = set
        """The storages (``data_ptr``) that only optimizer steps change."""

    def write_in_background(self, stepped: Callable[[], set[int]] = set) -> None:
        """Write the checkpoints saved from now until :meth:`teardown` in a background thread.

        ``stepped`` gives the storages that only optimizer steps change, at each save:
        checkpoints share them instead of copying them, until :meth:`before_optimizer_step`.
        """
        self._stepped = stepped
        if self._writer is None:
            self._writer = ThreadPoolExecutor(1, thread_name_prefix="landslide-lit-checkpoint")

    def before_optimizer_step(self) -> None:
        """Wait for the writes (they share the tensors the step changes), and compare the
        next save with its own snapshot: the one kept now no longer holds its state."""
        self.wait()
        self._kept = None

    def wait(self) -> None:
        """Return when every checkpoint saved so far is on disk; raise a write's error."""
        pending, self._pending = self._pending, []
        errors = [error for error in (future.exception() for future in pending) if error]
        if errors:
            self._kept = None
            raise errors[0]

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None
    ) -> None:
        fs, local_path = url_to_fs(str(path))
        if storage_options is not None or not isinstance(fs, LocalFileSystem):
            self.wait()
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        path = Path(local_path)
        if self._writer is None or not on_cpu(checkpoint):
            self.wait()
            self._kept = None
            _write_checkpoint(checkpoint, path)
        elif self._kept is not None and identical(checkpoint, self._kept[0]):
            self._submit(_link_checkpoint, *self._kept, path)
        else:
            self.wait()  # one snapshot at a time
            self._kept = (snapshot(checkpoint, self._stepped()), path)
            self._submit(_write_checkpoint, *self._kept)

    def remove_checkpoint(self, path: _PATH) -> None:
        if self._writer is None:
            super().remove_checkpoint(path)
        else:  # after the writes saved before, as if they had been written then
            self._submit(super().remove_checkpoint, path)

    def teardown(self) -> None:
        """Wait for the background writes and stop writing in the background.

        A write's error is raised, or only logged while another exception ends the run.
        """
        writer, self._writer = self._writer, None
        ending_with_error = sys.exc_info()[1] is not None
        try:
            self.wait()
        except Exception as error:
            if not ending_with_error:
                raise
            log.error("a checkpoint could not be written: %s", error)
        finally:
            self._kept, self._stepped = None, set
            if writer is not None:
                writer.shutdown()

    def _submit(self, job: Callable[..., None], *args: Any) -> None:
        assert self._writer is not None
        self._pending.append(self._writer.submit(job, *args))


class BackgroundCheckpointWrites(Callback):
    """Lets the fit's checkpoints be written in a background thread while training goes on.

    With :class:`AtomicCheckpointIO` (the CLI's checkpoint plugin) from the start of the
    fit: a checkpoint costs the fit a copy of its buffers and containers in memory
    instead of its write (see there); the parameters and the optimizer state are
    written from the fit's own tensors. Before the next optimizer step the write is
    waited for, so a checkpoint is on disk before the weights after it change: a kill
    loses no more than it would with direct writes, one training step at most. The end
    of the fit, or an error, waits for the writes too (the strategy's teardown).
    """

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        io = trainer.strategy.checkpoint_io
        if isinstance(io, AtomicCheckpointIO):
            io.write_in_background(lambda: _stepped_storages(pl_module, trainer.optimizers))

    def on_before_optimizer_step(
        self, trainer: Trainer, pl_module: LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        io = trainer.strategy.checkpoint_io
        if isinstance(io, AtomicCheckpointIO):
            io.before_optimizer_step()


def _stepped_storages(module: torch.nn.Module, optimizers: list[torch.optim.Optimizer]) -> set[int]:
    """The storages only optimizer steps change: the parameters and the optimizers' state."""
    state = (
        value
        for optimizer in optimizers
        for values in optimizer.state.values()
        for value in values.values()
        if isinstance(value, torch.Tensor)
    )
    return storages(itertools.chain(module.parameters(), state))


def _wait_for_checkpoints(trainer: Trainer) -> None:
    """Wait for the checkpoints an :class:`AtomicCheckpointIO` writes in the background."""
    io = trainer.strategy.checkpoint_io
    if isinstance(io, AtomicCheckpointIO):
        io.wait()


def _write_checkpoint(checkpoint: dict[str, Any], path: Path) -> None:
    """``torch.save`` ``checkpoint`` to ``path`` atomically and durably."""
    for stale in _stale_temporaries(path):
        stale.unlink(missing_ok=True)

    def write(temporary: Path) -> None:
        with open(temporary, "wb") as file:
            torch.save(checkpoint, file)

    write_atomically(path, write, durable=True)


def _link_checkpoint(checkpoint: dict[str, Any], source: Path, path: Path) -> None:
    """Give ``path`` the file ``source``, written from ``checkpoint``: a hard link renamed
    into place; written from ``checkpoint`` where that fails (no hard links on this file
    system, or ``source`` removed since)."""
    if path == source and path.is_file():
        return
    for stale in _stale_temporaries(path):
        stale.unlink(missing_ok=True)
    try:
        write_atomically(path, lambda temporary: os.link(source, temporary), durable=True)
    except OSError:
        _write_checkpoint(checkpoint, path)


def _stale_temporaries(path: Path) -> list[Path]:
    """Temporary files of earlier saves of ``path`` (any process's, so a killed one's).

    Their names are :func:`~landslide_lit.atomic.temporary_path`'s, and
    ``.<name>.<pid>.tmp`` of the versions before it.
    """
    if not path.parent.is_dir():
        return []
    stem, suffix = glob.escape(path.stem), glob.escape(path.suffix)
    patterns = (f".{stem}.tmp-*{suffix}", f".{glob.escape(path.name)}.*.tmp")
    return [stale for pattern in patterns for stale in path.parent.glob(pattern)]


class Interrupted(LandslideLitError):
    """A command stopped by SIGTERM before it finished (a fit's ``last.ckpt`` is saved).

    Its exit status is 143 = 128 + SIGTERM, the shell's status of a process ended by
    SIGTERM, so ``landslide-lit fit ... && landslide-lit test ...`` stops there.
    Lightning itself ends such a command with status 0.
    """

    exit_code = 128 + signal.SIGTERM


_INTERRUPTION = "landslide_lit_interruption"
"""Attribute of Lightning's ``SIGTERMException`` where :class:`CheckpointOnSigterm` says
what it saved, for :func:`command_guard`."""


class CheckpointOnSigterm(Callback):
    """Save ``last.ckpt`` when a fit stops on SIGTERM, and say so in the command's error.

    Lightning's SIGTERM handler sets ``trainer.received_sigterm``; the training loop
    finishes the running batch and raises ``SIGTERMException``. This callback then
    writes ``last.ckpt`` in the folder of the ``ModelCheckpoint`` callbacks, so
    ``fit --ckpt_path last`` continues after that batch. A SIGTERM during validation
    saves nothing: metric states are not checkpointed, so a fit resumed mid-validation
    would score part of the validation set; it resumes from the previous checkpoint.
    Under DDP every rank must receive the signal (SLURM signals every task).
    """

    def on_exception(
        self, trainer: Trainer, pl_module: LightningModule, exception: BaseException
    ) -> None:
        if not isinstance(exception, SIGTERMException):
            return
        command = trainer.state.fn.value if trainer.state.fn else "the command"
        if command != "fit":
            what = "before it finished; its results are incomplete: run it again"
        elif not trainer.training:
            what = (
                f"during {trainer.state.stage.value} in epoch {trainer.current_epoch}; no "
                f"checkpoint saved mid-validation; {RESUME}"
            )
        else:
            progress = trainer.fit_loop.epoch_loop.batch_progress.current
            saved = ", ".join(self._save_last(trainer))
            what = (
                f"in epoch {trainer.current_epoch} after batch {progress.processed} of it "
                f"(global step {trainer.global_step}); saved {saved or 'nothing'}; {RESUME}"
            )
        setattr(exception, _INTERRUPTION, Interrupted(f"{command} stopped by SIGTERM {what}"))

    @staticmethod
    def _save_last(trainer: Trainer) -> list[str]:
        """Write ``last.ckpt`` in every ModelCheckpoint folder (all ranks: a collective)."""
        folders = {
            callback.dirpath
            for callback in trainer.checkpoint_callbacks
            if isinstance(callback, ModelCheckpoint) and callback.dirpath
        }
        paths = [
            os.path.join(folder, f"{ModelCheckpoint.CHECKPOINT_NAME_LAST}.ckpt")
            for folder in sorted(folders)
        ]
        for path in paths:
            trainer.save_checkpoint(path, weights_only=False)
        _wait_for_checkpoints(trainer)  # on disk before the message says so
        return paths


RESUME = "resume with the same `landslide-lit fit` command and `--ckpt_path last`"


@contextlib.contextmanager
def command_guard() -> Iterator[None]:
    """Around one LightningCLI command: a SIGTERM ends it with :class:`Interrupted`.

    Lightning stops a command on SIGTERM with ``SIGTERMException``, a ``SystemExit``
    without a code (exit status 0); it becomes :class:`Interrupted` (exit status 143),
    with what :class:`CheckpointOnSigterm` saved. A run folder that
    :func:`reserve_run_version` made for the command and that it left empty, failing
    before it wrote anything, is removed.
    """
    first = len(_RESERVED)  # the reservations of this command follow
    try:
        yield
    except BaseException as error:
        _release_empty_reservations(_RESERVED[first:])
        if isinstance(error, SIGTERMException):
            interruption = getattr(error, _INTERRUPTION, None)
            raise interruption or Interrupted(
                "stopped by SIGTERM before it finished; run it again"
            ) from None
        raise
    finally:
        del _RESERVED[first:]


RUN_FOLDER_VARIABLE = "LANDSLIDE_LIT_RUN_FOLDER"
"""The run folder global rank 0 reserved, for the ranks Lightning's launcher starts."""
RANK_VARIABLES = ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "SLURM_PROCID")
"""Set (non-zero) in the processes of the other ranks by launchers (Lightning, torchrun,
SLURM), before Lightning knows the rank."""
_VERSION = re.compile(r"version_(\d+)")
_RESERVED: list[tuple[Path, Path]] = []
"""(run folder, topmost folder created with it) reserved by the running command."""


def reserve_run_version(trainer_config: Namespace) -> None:
    """Give the run's TensorBoard and CSV loggers one ``version_N`` folder of its own.

    Applies when every logger is one of these, all write to one ``save_dir/name`` and none
    has a version (a resumed fit has its run's: :func:`resume_checkpoint`). Global rank 0
    creates the folder with :func:`reserve_version`: runs started together never share
    one. It passes it on in ``LANDSLIDE_LIT_RUN_FOLDER`` to the processes that Lightning's
    launcher starts for the other ranks with the same command line; they take its
    version and create nothing. Ranks started by srun or torchrun leave the version unset
    and create nothing either: they write nothing there, and Lightning gives them rank 0's
    ``log_dir`` where they need it.
    """
    loggers = trainer_config.get("logger")
    if not isinstance(loggers, list) or not loggers:
        return
    init = [logger.get("init_args") for logger in loggers if isinstance(logger, Namespace)]
    if len(init) != len(loggers) or not all(map(_versioned_logger, loggers)):
        return
    places = {(str(args.get("save_dir")), str(args.get("name") or "")) for args in init}
    if len(places) != 1 or any(args.get("version") is not None for args in init):
        return
    save_dir, name = places.pop()
    if "://" in save_dir:  # a remote logger folder: Lightning's own numbering
        return
    place = Path(save_dir, name)
    if _global_rank_zero():
        version = reserve_version(place)
        os.environ[RUN_FOLDER_VARIABLE] = str((place / f"version_{version}").resolve())
    else:
        inherited = Path(os.environ.get(RUN_FOLDER_VARIABLE, "/"))
        match = _VERSION.fullmatch(inherited.name)
        if match is None or inherited.parent != place.resolve():
            return
        version = int(match.group(1))
    for args in init:
        args["version"] = version


def reserve_version(place: Path) -> int:
    """Create ``place/version_N`` for the next free N with one ``mkdir`` each try; N.

    ``mkdir`` fails when the folder exists, so of two runs that pick the same N at once
    one gets it and the other tries N + 1.
    """
    topmost = next((p for p in [*reversed(place.parents), place] if not p.exists()), None)
    place.mkdir(parents=True, exist_ok=True)
    numbers = [int(m.group(1)) for p in place.iterdir() if (m := _VERSION.fullmatch(p.name))]
    version = max(numbers, default=-1) + 1
    while True:
        folder = place / f"version_{version}"
        try:
            folder.mkdir()
        except FileExistsError:
            version += 1
            continue
        _RESERVED.append((folder, topmost or folder))
        return version


def _release_empty_reservations(reserved: list[tuple[Path, Path]]) -> None:
    """Remove the reserved run folders still empty, and the folders made for them."""
    for folder, topmost in reserved:
        for path in [folder, *folder.parents]:
            try:
                path.rmdir()  # only when empty: never what a run wrote
            except OSError:
                break
            if path == topmost:
                break


def _global_rank_zero() -> bool:
    return all(os.environ.get(name, "0") == "0" for name in RANK_VARIABLES)


def _versioned_logger(logger: Namespace) -> bool:
    """Whether the logger is a TensorBoard or CSV logger (numbered ``version_N`` folders)."""
    module, _, name = str(logger.get("class_path")).rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        return False
    return isinstance(cls, type) and issubclass(cls, TensorBoardLogger | CSVLogger)


def last_checkpoint(directory: str | os.PathLike = ".", hpc_dir: str | None = None) -> Path | None:
    """The newest ``last*.ckpt`` of the fit runs under ``directory`` or ``hpc_ckpt_N.ckpt``.

    Run folders are found as for validate/test (:func:`landslide_lit.runs.checkpoint_folders`);
    SLURM requeue checkpoints are looked for in ``hpc_dir`` (Lightning's
    ``default_root_dir``, default ``directory``).
    """
    directory = Path(directory)
    candidates = [
        checkpoint
        for folder in checkpoint_folders(directory)
        for checkpoint in folder.glob("last*.ckpt")
    ]
    hpc_files = (Path(hpc_dir) if hpc_dir else directory).glob("hpc_ckpt_*.ckpt")
    candidates += [c for c in hpc_files if HPC_CHECKPOINT.fullmatch(c.name)]
    return max(candidates, key=lambda c: c.stat().st_mtime, default=None)


def resume_checkpoint(
    ckpt_path: str | None, trainer_config: Namespace, directory: str | os.PathLike = "."
) -> str | None:
    """The checkpoint ``fit --ckpt_path`` resumes from, checked before Lightning loads it.

    ``last`` becomes :func:`last_checkpoint` (``None``: nothing to resume, a new run
    starts, so one command line serves a job's first start and its requeues). A file
    is read with :func:`~landslide_lit.runs.read_checkpoint`, which raises one clear
    :class:`~landslide_lit.runs.CheckpointError` for a missing, truncated or foreign
    file. When the checkpoint lies in a run's ``checkpoints`` folder (or is a SLURM
    requeue checkpoint), the loggers are pinned to that run's version, so the fit
    continues its folder: one ``metrics.csv``, and the best checkpoint tracked across
    the interruption. Lightning's other special values (``hpc``, ``best``,
    ``registry...``) pass through unchanged.
    """
    if ckpt_path in (None, "hpc", "best") or ckpt_path.startswith("registry"):
        return ckpt_path
    if ckpt_path == "last":
        found = last_checkpoint(directory, trainer_config.get("default_root_dir"))
        if found is None:
            _warn_on_rank_zero(
                "--ckpt_path last: no checkpoint under %s; starting a new run", directory
            )
            return None
        _warn_on_rank_zero("resuming from %s", found)
        ckpt_path = str(found)
    checkpoint = read_checkpoint(ckpt_path)
    run_folder = _run_folder(checkpoint, Path(ckpt_path), Path(directory))
    if run_folder is not None:
        _pin_logger_versions(trainer_config, run_folder, Path(directory))
    return ckpt_path


def _warn_on_rank_zero(message: str, *args: Any) -> None:
    """Log a warning once per run: every rank of a DDP run resolves the checkpoint."""
    if _global_rank_zero():
        log.warning(message, *args)


def _run_folder(checkpoint: dict[str, Any], path: Path, directory: Path) -> Path | None:
    """The version folder whose ModelCheckpoint wrote ``checkpoint``, if it still holds it."""
    for key, state in checkpoint.get("callbacks", {}).items():
        dirpath = state.get("dirpath") if isinstance(state, dict) else None
        if not key.startswith("ModelCheckpoint") or not dirpath:
            continue
        folder = (directory / dirpath).resolve()
        if path.parent.resolve() == folder or (
            HPC_CHECKPOINT.fullmatch(path.name) and folder.is_dir()
        ):
            return folder.parent
    return None


def _pin_logger_versions(trainer_config: Namespace, run_folder: Path, directory: Path) -> None:
    """Set the version of every logger writing to ``save_dir/name`` of ``run_folder``."""
    loggers = trainer_config.get("logger")
    if not isinstance(loggers, list):
        return
    match = re.fullmatch(r"version_(\d+)", run_folder.name)
    version = int(match.group(1)) if match else run_folder.name
    for logger in loggers:
        args = logger.get("init_args") if isinstance(logger, Namespace) else None
        if args is None or args.get("save_dir") is None:
            continue
        place = (directory / str(args.save_dir) / str(args.get("name") or "")).resolve()
        if place == run_folder.parent:
            args["version"] = version


class ResumableCSVLogger(CSVLogger):
    """``CSVLogger`` that appends to the ``metrics.csv`` of a run folder it continues.

    Lightning's deletes the file when the folder is not empty, which would erase the
    history of a fit resumed into its own folder (see :func:`resume_checkpoint`).
    """

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment


class _AppendingWriter(ExperimentWriter):
    """``ExperimentWriter`` that keeps an existing metrics file and continues its columns."""

    def _check_log_dir_exists(self) -> None:
        # called by the base __init__ instead of deleting the file
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as file:
                self.metrics_keys = next(csv.reader(file), [])
