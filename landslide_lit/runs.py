"""Find fit runs and their checkpoints, and read the settings a checkpoint was trained with."""

from __future__ import annotations

import dataclasses
import glob
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from lightning.pytorch.utilities import rank_zero_only

from landslide_lit.argv import config_file_with, option_value
from landslide_lit.errors import ConfigError, LandslideLitError

__all__ = [
    "CHECKPOINT_GLOBS",
    "EVALUATION_DATA_SETTINGS",
    "INPUT_SETTINGS",
    "NETWORK_SETTINGS",
    "RUNS_DIR",
    "CheckpointError",
    "check_ensemble",
    "checkpoint_arguments",
    "checkpoint_channels",
    "checkpoint_differences",
    "checkpoint_folders",
    "ensemble_members",
    "ensemble_patterns",
    "latest_best_checkpoint",
    "member_differences",
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
# Data settings that shape a model's input: an ensemble's members must share them (the
# first member's are restored, and every member sees the same standardised windows).
INPUT_SETTINGS = ("composite", "chip_size", "norm_stats")


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


def read_checkpoint(path: str | os.PathLike, option: str = "--ckpt_path") -> dict[str, Any]:
    """Load a checkpoint on the CPU, with one clear error for missing or foreign files.

    ``option``: the option that named it, for the messages.
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(_folder_message(path, option))
    if not path.is_file():
        hint = (
            "leave --ckpt_path out to use the best checkpoint of the latest fit run here"
            if option == "--ckpt_path"
            else "list existing checkpoint files or glob patterns"
        )
        raise CheckpointError(f"checkpoint not found: {path} ({option}). Check the path, or {hint}")
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


def _folder_message(folder: Path, option: str) -> str:
    """``option`` names a folder: say so and list the checkpoints found in it."""
    found = sorted(folder.glob("*.ckpt")) + sorted(
        c for run in checkpoint_folders(folder) for c in run.glob("*.ckpt")
    )
    listed = "\n".join(f"  {c}" for c in found[:20])
    more = f"\n  ... and {len(found) - 20} more" if len(found) > 20 else ""
    if not found:
        return f"{option} {folder} is a folder, not a checkpoint file, and holds no .ckpt files"
    return (
        f"{option} {folder} is a folder, not a checkpoint file; pass one of its "
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

    Without ``--ckpt_path`` the first ``--ensemble`` member is used, else the best
    checkpoint of the latest fit run here. The checkpoint's settings come first, so
    options given on the command line still win.
    """
    ckpt_path = option_value(args, "--ckpt_path")
    if (ckpt_path is None and "--ckpt_path" in args) or str(ckpt_path).startswith("-"):
        raise ConfigError(
            "--ckpt_path needs a value: the path of a .ckpt file (leave the option out to use "
            "the best checkpoint of the latest fit run here)"
        )
    option, patterns = "--ckpt_path", ensemble_patterns(args)
    if ckpt_path is None and patterns:  # an ensemble's config file may name the first member
        ckpt_path = _config_value(args, "ckpt_path")
        ckpt_path = None if ckpt_path is None else str(ckpt_path)
    if ckpt_path in (None, "null", "None") and patterns:
        option, ckpt_path = "--ensemble", str(ensemble_members(None, patterns)[0])
        args = [*args, "--ckpt_path", ckpt_path]
    if ckpt_path in (None, "null", "None"):
        ckpt_path = str(latest_best_checkpoint())
        # every DDP rank restores (the launcher reruns the command line); one says so
        if rank_zero_only.rank == 0:
            log.warning("using checkpoint %s (best of the latest fit run here)", ckpt_path)
        args = [*args, "--ckpt_path", ckpt_path]
    checkpoint = read_checkpoint(ckpt_path, option)
    # The checkpoint holds the encoder's weights: never fetch pretrained ones to overwrite.
    restored = [
        args[0],
        *checkpoint_arguments(checkpoint),
        *args[1:],
        "--model.encoder_weights=null",
    ]
    return restored, checkpoint


def ensemble_patterns(args: list[str]) -> list[str]:
    """The ``--ensemble`` checkpoints or glob patterns of ``args``, else of its config files.

    ``--ensemble A B`` (its values run to the next option) and ``--ensemble=A``; a later
    ``--ensemble`` replaces an earlier one, as the parser does.
    """
    found = None
    for i, arg in enumerate(args):
        if arg.startswith("--ensemble="):
            found = [arg.split("=", 1)[1]]
        elif arg == "--ensemble":
            end = next((j for j in range(i + 1, len(args)) if args[j].startswith("-")), len(args))
            found = args[i + 1 : end]
    if found is not None:
        return found
    value = _config_value(args, "ensemble")
    return [] if value is None else [str(v) for v in ([value] if isinstance(value, str) else value)]


def _config_value(args: list[str], key: str) -> Any:
    """The top-level ``key`` of the last config file in ``args`` that sets it, or None."""
    config = config_file_with(key, args)
    return None if config is None else yaml.safe_load(Path(config).read_text()).get(key)


def ensemble_members(first: str | os.PathLike | None, patterns: list[str]) -> list[Path]:
    """The checkpoints of an ensemble: ``first`` (``--ckpt_path``), then the files and glob
    matches (sorted) of ``patterns``, each file once (a glob may match ``first`` again)."""
    members: dict[Path, Path] = {}
    for pattern in [] if first is None else [str(first)]:
        members[Path(pattern).resolve()] = Path(pattern)
    for pattern in patterns:
        if not any(c in pattern for c in "*?["):  # a file, not a glob pattern
            members.setdefault(Path(pattern).resolve(), Path(pattern))
            continue
        matches = sorted(glob.glob(pattern, recursive=True))
        if not matches:
            raise CheckpointError(
                f"--ensemble {pattern} matches no file; check the pattern (quote it, so that "
                "the shell leaves it to landslide-lit) or list the checkpoint files"
            )
        for match in matches:
            members.setdefault(Path(match).resolve(), Path(match))
    return list(members.values())


def check_ensemble(
    first_path: str | os.PathLike, first: dict[str, Any], patterns: list[str]
) -> list[Path]:
    """The ensemble's checkpoints, first member first, once each have been read and found to
    share the first member's channels, network and input (one error lists all that differ)."""
    members = ensemble_members(first_path, patterns)
    problems = []
    for path in members[1:]:
        differences = member_differences(first, read_checkpoint(path, "--ensemble"))
        if differences:
            problems.append(f"\n- {path}: " + "; ".join(differences))
    if problems:
        raise CheckpointError(
            f"the --ensemble members do not all fit the first member {first_path}:"
            + "".join(problems)
            + "\nThe members of an ensemble predict the same windows: they must share the "
            "channels, the network and the normalisation (e.g. the seeds of one `reproduce` "
            "config). Leave those out of --ensemble"
        )
    return members


def member_differences(first: dict[str, Any], other: dict[str, Any]) -> list[str]:
    """How ``other`` differs from the ensemble's ``first`` checkpoint, in words."""
    settings = [("channels", checkpoint_channels(first), checkpoint_channels(other))]
    settings += [
        (key, first["hyper_parameters"].get(key), other["hyper_parameters"].get(key))
        for key in NETWORK_SETTINGS
    ]
    settings += [
        (
            key,
            first["datamodule_hyper_parameters"].get(key),
            other["datamodule_hyper_parameters"].get(key),
        )
        for key in INPUT_SETTINGS
    ]
    differences = [
        f"{key} {_plain(theirs)!r}, the first member {_plain(ours)!r}"
        for key, ours, theirs in settings
        if _plain(ours) != _plain(theirs)
    ]
    if not differences and first["datamodule_hyper_parameters"].get("norm_stats") == "train":
        (our_region, ours), (their_region, theirs) = _train_stats(first), _train_stats(other)
        if our_region != their_region:
            differences.append(
                f"norm_stats train with train region {their_region!r}'s statistics, the first "
                f"member with {our_region!r}'s"
            )
        elif not _same_stats(ours, theirs):
            differences.append(
                f"norm_stats train with other statistics of train region {their_region!r} "
                "than the first member's (other data or data settings)"
            )
    return differences


def _train_stats(checkpoint: dict[str, Any]) -> tuple[str | None, dict[str, Any] | None]:
    """The train region and its statistics saved by the data module (see its state_dict)."""
    state = checkpoint.get("LandslideDataModule") or {}
    return state.get("train_region"), state.get("train_stats")


def _same_stats(ours: dict[str, Any] | None, theirs: dict[str, Any] | None) -> bool:
    """Equal up to float rounding: the same train data give the same statistics."""
    if ours is None or theirs is None:
        return ours is theirs
    return all(np.allclose(ours[k], theirs[k], rtol=1e-6, atol=0) for k in ("mean", "std"))


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
