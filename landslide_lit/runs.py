"""Find fit runs and their checkpoints, and read the settings a checkpoint was trained with."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_only

from landslide_lit.argv import option_value
from landslide_lit.errors import ConfigError, LandslideLitError

__all__ = [
    "CHECKPOINT_GLOBS",
    "EVALUATION_DATA_SETTINGS",
    "NETWORK_SETTINGS",
    "RUNS_DIR",
    "CheckpointError",
    "checkpoint_arguments",
    "checkpoint_channels",
    "checkpoint_differences",
    "checkpoint_folders",
    "latest_best_checkpoint",
    "read_checkpoint",
    "restore_from_checkpoint",
]

log = logging.getLogger(__name__)

RUNS_DIR = "runs"
# Checkpoint folders of runs under the working directory: runs/<name>/version_N/checkpoints
# (the CLI's default) and Lightning's plain lightning_logs/version_N/checkpoints.
CHECKPOINT_GLOBS = ("*/*/*/checkpoints", "*/*/checkpoints", "*/checkpoints")

# Data settings that belong to the evaluation, not to the checkpoint. The data root is
# restored (evaluate where you trained) and can be overridden like any other setting.
# `synthetic` is not: a checkpoint trained on synthetic cubes must not make a later
# evaluation synthetic; synthetic data only when this command line asks for them.
EVALUATION_DATA_SETTINGS = {
    "test_region",
    "validate_region",
    "batch_size",
    "num_workers",
    "synthetic",
}
# Model settings that shape the network: a checkpoint only loads into the same ones.
NETWORK_SETTINGS = ("arch", "encoder_name", "model_kwargs")


class CheckpointError(LandslideLitError, ValueError):
    """A checkpoint that cannot be found or read; the message says what to do."""


def latest_best_checkpoint(directory: str | os.PathLike = ".") -> Path:
    """The best checkpoint of the most recent fit run under ``directory``.

    The run is the checkpoint folder modified last; its best checkpoint is the
    one its ModelCheckpoint recorded (``best_model_path`` in ``last.ckpt``), else
    its newest non-``last`` checkpoint.
    """
    directory = Path(directory)
    folders = [folder for folder in checkpoint_folders(directory) if any(folder.glob("*.ckpt"))]
    if not folders:
        raise CheckpointError(
            f"no --ckpt_path given and no fit run found under {directory.resolve()} "
            f"(looked for {', '.join(CHECKPOINT_GLOBS)} with .ckpt files). Train first with "
            "`landslide-lit fit --config ...`, run from the folder you trained in, or pass "
            "--ckpt_path PATH"
        )
    run = max(folders, key=lambda f: max(c.stat().st_mtime for c in f.glob("*.ckpt")))
    last = run / "last.ckpt"
    if last.exists():
        for state in read_checkpoint(last).get("callbacks", {}).values():
            # only a monitoring ModelCheckpoint knows a best; one without a monitor
            # (the run's `last` callback) records its latest save under that name
            monitored = isinstance(state, dict) and state.get("monitor")
            recorded = state.get("best_model_path") if monitored else None
            if recorded:
                # a relative path is relative to where fit ran: the run's working directory
                best = Path(recorded) if Path(recorded).is_absolute() else directory / recorded
                if best.is_file():
                    return best
    candidates = [c for c in run.glob("*.ckpt") if not c.name.startswith("last")] or [last]
    return max(candidates, key=lambda c: c.stat().st_mtime)


def checkpoint_folders(directory: str | os.PathLike = ".") -> list[Path]:
    """The runs' checkpoint folders under ``directory`` (:data:`CHECKPOINT_GLOBS`), not hidden."""
    directory = Path(directory)
    return [
        folder
        for pattern in CHECKPOINT_GLOBS
        for folder in directory.glob(pattern)
        if not any(part.startswith(".") for part in folder.relative_to(directory).parts)
    ]


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint on the CPU, with one clear error for missing or foreign files."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(_folder_message(path))
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint not found: {path} (--ckpt_path). Check the path, or leave --ckpt_path "
            "out to use the best checkpoint of the latest fit run here"
        )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # truncated zip, pickle garbage, wrong format...
        raise CheckpointError(
            f"cannot read checkpoint {path} ({type(exc).__name__}: {exc}); the file is "
            "truncated or not a PyTorch checkpoint. Use another checkpoint of the run "
            "(e.g. last.ckpt) or train again"
        ) from exc
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(
            f"{path} is not a Lightning checkpoint (no 'state_dict'); pass a .ckpt file "
            "written by `landslide-lit fit`"
        )
    if "datamodule_hyper_parameters" not in checkpoint:
        raise CheckpointError(
            f"{path} was not written by landslide-lit (no data settings inside); pass a "
            ".ckpt file written by `landslide-lit fit`"
        )
    return checkpoint


def _folder_message(folder: Path) -> str:
    """``--ckpt_path`` names a folder: say so and list the checkpoints found in it."""
    found = sorted(folder.glob("*.ckpt")) + sorted(
        c for run in checkpoint_folders(folder) for c in run.glob("*.ckpt")
    )
    listed = "\n".join(f"  {c}" for c in found[:20])
    more = f"\n  ... and {len(found) - 20} more" if len(found) > 20 else ""
    if not found:
        return f"--ckpt_path {folder} is a folder, not a checkpoint file, and holds no .ckpt files"
    return (
        f"--ckpt_path {folder} is a folder, not a checkpoint file; pass one of its "
        f"checkpoints:\n{listed}{more}"
    )


def checkpoint_differences(
    checkpoint: dict[str, Any], channels: list[str], model: dict[str, Any]
) -> list[str]:
    """How a run's channels and network settings (:data:`NETWORK_SETTINGS` given in
    ``model``) differ from those ``checkpoint`` was trained with, in words."""
    differences = []
    trained = checkpoint_channels(checkpoint)
    if trained is not None and trained != channels:
        differences.append(
            f"it was trained on channels {trained}, --data.channels gives {channels}"
        )
    hparams = checkpoint["hyper_parameters"]
    for key, value in model.items():
        if key in hparams and _plain(value) != _plain(hparams[key]):
            differences.append(
                f"it was trained with {key} {hparams[key]!r}, --model.{key} gives {value!r}"
            )
    return differences


def checkpoint_arguments(checkpoint: dict[str, Any]) -> list[str]:
    """Command-line arguments that restore the model and data settings of a checkpoint.

    Settings that only matter for training (optimiser, scheduler) and those that
    belong to the evaluation (data root, regions evaluated, batch size) are left out.
    """
    arguments = []
    for key, value in checkpoint["hyper_parameters"].items():
        if key != "channel_names" and not key.startswith("_") and _is_json(value):
            arguments.append(f"--model.{key}={_cli_value(value)}")
    for key, value in checkpoint["datamodule_hyper_parameters"].items():
        if key in EVALUATION_DATA_SETTINGS or key.startswith("_"):
            continue
        value = _plain(value)
        if _is_json(value):
            arguments.append(f"--data.{key}={_cli_value(value)}")
    return arguments


def restore_from_checkpoint(args: list[str]) -> tuple[list[str], dict[str, Any]]:
    """Insert the checkpoint's settings (and path) after the command name in ``args``.

    Without ``--ckpt_path`` the best checkpoint of the latest fit run here is used. The
    checkpoint's settings come first, so options given on the command line still win.
    """
    ckpt_path = option_value(args, "--ckpt_path")
    if (ckpt_path is None and "--ckpt_path" in args) or str(ckpt_path).startswith("-"):
        raise ConfigError(
            "--ckpt_path needs a value: the path of a .ckpt file (leave the option out to use "
            "the best checkpoint of the latest fit run here)"
        )
    if ckpt_path in (None, "null", "None"):
        ckpt_path = str(latest_best_checkpoint())
        # every DDP rank restores (the launcher reruns the command line); one says so
        if rank_zero_only.rank == 0:
            log.warning("using checkpoint %s (best of the latest fit run here)", ckpt_path)
        args = [*args, "--ckpt_path", ckpt_path]
    checkpoint = read_checkpoint(ckpt_path)
    # The checkpoint holds the encoder's weights: never fetch pretrained ones to overwrite.
    restored = [
        args[0],
        *checkpoint_arguments(checkpoint),
        *args[1:],
        "--model.encoder_weights=null",
    ]
    return restored, checkpoint


def checkpoint_channels(checkpoint: dict[str, Any]) -> list[str] | None:
    channels = checkpoint["hyper_parameters"].get("channel_names")
    return None if channels is None else list(channels)


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, tuple):
        return list(value)
    return value


def _cli_value(value: Any) -> str:
    """A value as the command line takes it: strings as they are, the rest as JSON."""
    return value if isinstance(value, str) else json.dumps(value)


def _is_json(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True
