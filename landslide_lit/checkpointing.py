"""Checkpoints that survive a kill, and fits that resume where they stopped.

* :class:`AtomicCheckpointIO` writes a checkpoint to a temporary file beside its
  final name, fsyncs it and renames it into place: a kill mid-write leaves the
  previous complete file, so ``last.ckpt`` is always the old or the new one.
* :class:`CheckpointOnSigterm` saves ``last.ckpt`` when Lightning stops a fit on
  SIGTERM; Lightning only stops (and saves nothing) outside SLURM's requeue signal.
* :func:`resume_checkpoint` checks ``fit --ckpt_path`` before Lightning loads it,
  resolves ``last`` to the newest last (or SLURM ``hpc_ckpt_N``) checkpoint of the
  fit runs under the working directory, and continues that run's version folder,
  where :class:`ResumableCSVLogger` appends to its ``metrics.csv``.
"""

from __future__ import annotations

import contextlib
import csv
import glob
import logging
import os
import re
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
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities.exceptions import SIGTERMException

from landslide_lit.runs import checkpoint_folders, read_checkpoint

log = logging.getLogger("landslide_lit")

HPC_CHECKPOINT = re.compile(r"hpc_ckpt_\d+\.ckpt")
"""Name of the checkpoints Lightning saves on SLURM's requeue signal (in ``default_root_dir``)."""


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` that never leaves a partial file under a checkpoint's name.

    The checkpoint goes to ``.<name>.<pid>.tmp`` in the same folder, is flushed and
    fsynced, then renamed over ``<name>`` with :func:`os.replace` (atomic within a
    POSIX file system); the folder is fsynced so the rename survives a crash of the
    machine. Temporary files a kill left behind are removed on the next save of that
    name. Remote (fsspec) paths go through Lightning's own writer. Under DDP the
    strategy calls this on global rank 0 only.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None
    ) -> None:
        fs, local_path = url_to_fs(str(path))
        if storage_options is not None or not isinstance(fs, LocalFileSystem):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        path = Path(local_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
            stale.unlink(missing_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            with open(temporary, "wb") as file:
                torch.save(checkpoint, file)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, path)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        _fsync_folder(path.parent)


def _fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (some file systems cannot sync a folder)."""
    with contextlib.suppress(OSError):
        descriptor = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


class CheckpointOnSigterm(Callback):
    """Save ``last.ckpt`` when a fit stops on SIGTERM.

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
        if not trainer.training:
            if trainer.is_global_zero:
                log.warning("SIGTERM during %s: no checkpoint saved", trainer.state.stage)
            return
        folders = {
            callback.dirpath
            for callback in trainer.checkpoint_callbacks
            if isinstance(callback, ModelCheckpoint) and callback.dirpath
        }
        for folder in sorted(folders):
            path = os.path.join(folder, f"{ModelCheckpoint.CHECKPOINT_NAME_LAST}.ckpt")
            trainer.save_checkpoint(path, weights_only=False)
            if trainer.is_global_zero:
                log.warning("SIGTERM: saved %s; resume with --ckpt_path last", path)


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
            log.warning("--ckpt_path last: no checkpoint under %s; starting a new run", directory)
            return None
        log.warning("resuming from %s", found)
        ckpt_path = str(found)
    checkpoint = read_checkpoint(ckpt_path)
    run_folder = _run_folder(checkpoint, Path(ckpt_path), Path(directory))
    if run_folder is not None:
        _pin_logger_versions(trainer_config, run_folder, Path(directory))
    return ckpt_path


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
