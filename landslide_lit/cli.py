"""The LightningCLI of `landslide-lit fit|validate|test|predict`.

``run(args)`` is callable from tests and experiments and returns the LightningCLI. Before
LightningCLI parses anything:

* ``--config NAME.yaml`` falls back to the configs bundled with the package
  when no such file exists in the working directory;
* validate/test/predict without ``--ckpt_path`` use the best checkpoint of the
  latest fit run under the working directory, and restore the model and data
  settings it was trained with (command-line values still win).

``predict --ensemble A B ...`` (files or quoted glob patterns) adds members to the
``--ckpt_path`` model (without ``--ckpt_path`` the first member is it): the first member's
settings are restored, the others must share its channels, network and normalisation,
and the map holds the members' mean probability and standard deviation (see
:mod:`landslide_lit.ensemble`). The map writer's options are ``--maps.*``; predict checks
``--maps.threshold`` against the checkpoint's validation thresholds before any work.

Errors come out as :class:`LandslideLitError`; ``landslide_lit.main`` says them.
"""

from __future__ import annotations

import argparse
import copy
import logging
import os
import sys
import warnings
from pathlib import Path

from lightning.pytorch.cli import LightningCLI

from landslide_lit.argv import only_prints, resolve_bundled_configs
from landslide_lit.checkpointing import command_guard, reserve_run_version, resume_checkpoint
from landslide_lit.data.composite import resolve_channels
from landslide_lit.data.cube import region_cube_path
from landslide_lit.data.datamodule import LandslideDataModule
from landslide_lit.encoders import EncoderWeightsError
from landslide_lit.ensemble import EnsembleSegmenter
from landslide_lit.errors import TRACEBACK_ENV, ConfigError, LandslideLitError
from landslide_lit.logs import configure_logging
from landslide_lit.maps import ProbabilityMapWriter
from landslide_lit.module import LandslideSegmenter
from landslide_lit.parse_errors import UNION_DUMP, explain_region_error, parse_error
from landslide_lit.regions import REGIONS, get_region
from landslide_lit.runs import (
    NETWORK_SETTINGS,
    RUNS_DIR,
    CheckpointError,
    check_ensemble,
    checkpoint_differences,
    read_checkpoint,
    restore_from_checkpoint,
)

__all__ = ["LandslideCLI", "run"]

log = logging.getLogger(__name__)

EVALUATION_COMMANDS = ("validate", "test", "predict")
MAP_WRITER = f"{ProbabilityMapWriter.__module__}.{ProbabilityMapWriter.__qualname__}"


class LandslideCLI(LightningCLI):
    """LightningCLI with the region flag, checkpoint defaults and model/data links."""

    def __init__(self, *args, checkpoint: dict | None = None, **kwargs) -> None:
        self.checkpoint = checkpoint
        self.members: list[Path] = []  # predict --ensemble: every member's checkpoint
        super().__init__(*args, **kwargs)

    def init_parser(self, **kwargs):
        # Parse errors come back as exceptions, to be said in one line by parse_arguments;
        # no abbreviations: a typo'd option is an error, never taken for another one.
        return super().init_parser(**kwargs, exit_on_error=False, allow_abbrev=False)

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument(
            "--region",
            type=str | None,
            default=None,
            help="region to evaluate: validate scores it, test/predict use it as the "
            f"test region (built-in: {', '.join(sorted(REGIONS))})",
        )
        parser.add_argument(
            "--ensemble",
            type=str,
            nargs="+",
            default=None,
            help="predict: more checkpoints (files or quoted glob patterns) that predict with "
            "the --ckpt_path one (without --ckpt_path, the first of them is it); the map holds "
            "their mean probability and its standard deviation",
        )
        # the map writer's options, --maps.*: saved in config.yaml, a callback of every command
        parser.add_lightning_class_args(ProbabilityMapWriter, "maps")
        parser.link_arguments("data.channel_names", "model.channel_names", apply_on="instantiate")
        parser.set_defaults(
            {
                "trainer.logger": [
                    {
                        "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                        "init_args": {"save_dir": RUNS_DIR, "name": "landslide"},
                    },
                    {
                        "class_path": "landslide_lit.checkpointing.ResumableCSVLogger",
                        "init_args": {"save_dir": RUNS_DIR, "name": "landslide"},
                    },
                ],
                "trainer.callbacks": [
                    {
                        "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                        "init_args": {
                            "monitor": "val/auprc",
                            "mode": "max",
                            "filename": "best-epoch{epoch:02d}",
                            "auto_insert_metric_name": False,
                        },
                    },
                    # last.ckpt after every validation: since Lightning 2.6 `save_last`
                    # writes it only together with a new best checkpoint
                    {
                        "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                        "init_args": {"filename": "last"},
                    },
                    # validate/test: metrics.json with bootstrap intervals, PR curve, panels
                    {"class_path": "landslide_lit.evaluation.EvaluationWriter"},
                    {"class_path": "landslide_lit.checkpointing.CheckpointOnSigterm"},
                    # checkpoints written by a background thread while the fit goes on
                    {"class_path": "landslide_lit.checkpointing.BackgroundCheckpointWrites"},
                ],
                # add plugins with --trainer.plugins+=...; a plain --trainer.plugins replaces it
                "trainer.plugins": [
                    {"class_path": "landslide_lit.checkpointing.AtomicCheckpointIO"}
                ],
                # the data module shards every loader itself, evaluation without padding
                "trainer.use_distributed_sampler": False,
            }
        )

    def parse_arguments(self, parser, args) -> None:
        self._raw_args = list(args)
        try:
            super().parse_arguments(parser, args)
        except argparse.ArgumentError as error:
            raise parse_error(str(error), self._keys(args), args) from None
        subcommand = self.config.get("subcommand")
        config = self.config[subcommand]
        # before LightningCLI reads the checkpoint's hyperparameters: check it, resolve `last`
        if subcommand == "fit":
            config.ckpt_path = resume_checkpoint(config.ckpt_path, config.trainer)
            if config.ckpt_path and Path(config.ckpt_path).is_file():
                self.checkpoint = read_checkpoint(config.ckpt_path)
        if self.checkpoint is not None:
            parser = self._subcommand_parsers[subcommand]
            self._check_checkpoint_fits(config, parser, resuming=subcommand == "fit")
        if config.get("ensemble"):
            if subcommand != "predict":
                raise ConfigError(
                    f"--ensemble applies to predict only, not to {subcommand}: drop it, or "
                    "`landslide-lit predict --ensemble ...`"
                )
            self.members = check_ensemble(config.ckpt_path, self.checkpoint, config.ensemble)
        if subcommand == "predict":
            self._check_threshold(config)

    def _check_threshold(self, config) -> None:
        """The --maps options and the threshold they ask of the checkpoint, checked before
        any work (the map writer resolves it again, from the model, at predict start)."""
        writer = ProbabilityMapWriter(**config.maps.as_dict())
        stored = (self.checkpoint or {}).get("thresholds")
        writer.choose_threshold(stored, str(config.ckpt_path or ""))

    def _check_checkpoint_fits(self, config, parser, resuming: bool) -> None:
        """A checkpoint for other channels or another network: one error, not a state dump.

        fit resumes with the checkpoint's network (Lightning puts its hyperparameters over
        the config), so only model settings given here (not the defaults) can clash; for
        evaluation the checkpoint's settings come first on the command line already.
        """
        model = {
            key: config.model.get(key)
            for key in NETWORK_SETTINGS
            if not resuming or config.model.get(key) != parser.get_default(f"model.{key}")
        }
        channels = list(resolve_channels(config.data.channels))
        differences = checkpoint_differences(self.checkpoint, channels, model)
        if differences:
            raise CheckpointError(
                f"checkpoint {config.ckpt_path} does not fit this run: "
                + "; ".join(differences)
                + ". Drop these options (the checkpoint's own settings are used), or pass a "
                "checkpoint trained with them (--ckpt_path)"
            )

    def _keys(self, args: list[str]) -> list[str]:
        """The option keys of the command in ``args`` (``trainer.max_epochs``...)."""
        parser = self._subcommand_parsers.get(args[0] if args else "", self.parser)
        return [a.dest for a in parser._actions if not a.dest.endswith("help")]

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except EncoderWeightsError as error:
            missing = self._missing_cubes()
            if missing:
                raise EncoderWeightsError(f"{error}\nThe data are missing too:{missing}") from None
            raise
        except (TypeError, ValueError) as error:
            if UNION_DUMP not in str(error) or isinstance(error, LandslideLitError):
                raise
            message = explain_region_error(str(error), self._config().data, self._raw_args)
            raise ConfigError(message) from None
        if len(self.members) > 1:  # the others' weights come with the first's (ckpt_path)
            clones = [copy.deepcopy(self.model) for _ in self.members[1:]]
            self.model = EnsembleSegmenter([self.model, *clones], self.members)
            log.info("predicting with an ensemble of %d models", len(self.members))

    def _missing_cubes(self) -> str:
        """The real cubes this command reads that are missing, in words ('' if none)."""
        data = self._config().data
        if data.get("synthetic"):
            return ""
        read = {
            "fit": ("train_region", "validate_region"),
            "validate": ("validate_region", "train_region"),
        }.get(self.subcommand, ("test_region",))
        problems = []
        for key in read:
            if data.get(key) is None:
                continue
            try:
                region_cube_path(get_region(data[key]), data.get("root"))
            except LandslideLitError as error:
                problems.append(f"\n- {error}")
            if self.subcommand == "validate":
                break  # the validation region, else the training region's held-out chips
        return "".join(dict.fromkeys(problems))

    def _config(self):
        return self.config[self.subcommand] if self.subcommand else self.config

    def _parse_ckpt_path(self) -> None:
        """Leave the parsed config as it is for evaluation commands.

        LightningCLI would re-apply the checkpoint's model hyperparameters over the
        command line. ``restore_from_checkpoint`` already put them first on the command
        line, so later options (``--model.encoder_weights=null``, ``--model.val_auprc``)
        must keep winning. ``fit --ckpt_path`` keeps Lightning's behaviour.
        """
        if self.config.get("subcommand") == "fit":
            super()._parse_ckpt_path()

    def before_instantiate_classes(self) -> None:
        config = self._config()
        if config.region:
            key = "validate_region" if self.subcommand == "validate" else "test_region"
            config.data[key] = config.region
        _one_map_writer(config)
        _check_output_folders(config.trainer)
        reserve_run_version(config.trainer)


def _one_map_writer(config) -> None:
    """Drop a ProbabilityMapWriter that a config lists in ``trainer.callbacks`` (as configs
    saved before the writer's options became ``--maps.*`` do) when it has the ``maps``
    settings; with other settings one of the two would be ignored: an error."""
    callbacks = config.trainer.get("callbacks")
    if not isinstance(callbacks, list):
        return
    maps = config.maps.as_dict()
    kept = []
    for callback in callbacks:
        if callback.get("class_path") != MAP_WRITER:
            kept.append(callback)
            continue
        settings = callback.get("init_args")
        settings = {} if settings is None else settings.as_dict()
        if {**maps, **settings} != maps:
            raise ConfigError(
                f"trainer.callbacks lists {MAP_WRITER} with {settings}, and its settings are "
                f"now options of their own: `maps:` in a config, --maps.output_dir, "
                f"--maps.formats, --maps.threshold... (they give {maps}). Move its init_args to "
                "a top-level `maps:` section and remove it from trainer.callbacks"
            )
        log.info(
            "trainer.callbacks lists %s: its settings are the maps: ones, used once", MAP_WRITER
        )
    config.trainer.callbacks = kept


def _check_output_folders(trainer_config) -> None:
    """Fail before any work when the run's folders cannot be written (a file, read-only)."""
    folders = [("--trainer.default_root_dir", trainer_config.get("default_root_dir") or ".")]
    loggers = trainer_config.get("logger")
    for logger in loggers if isinstance(loggers, list) else []:
        save_dir = logger.get("init_args", {}).get("save_dir") if "init_args" in logger else None
        if save_dir is not None:
            folders.append(("--trainer.logger save_dir", save_dir))
    for option, folder in folders:
        existing = Path(folder).absolute()
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir():
            raise ConfigError(
                f"{option} {folder}: {existing} is a file, not a folder; the run writes its "
                "logs and checkpoints there. Move the file or choose another folder"
            )
        if not os.access(existing, os.W_OK | os.X_OK):
            raise ConfigError(
                f"{option} {folder}: {existing} is not writable; the run writes its logs and "
                "checkpoints there. Run from a folder you can write (cd), or choose one with "
                "--trainer.default_root_dir and the loggers' save_dir"
            )


def run(args: list[str] | None = None) -> LandslideCLI:
    """Run `landslide-lit fit|validate|test|predict ...`; the LightningCLI that ran it."""
    configure_logging()
    _quiet_known_warnings()
    args = resolve_bundled_configs(list(sys.argv[1:] if args is None else args))
    checkpoint = None
    if args and args[0] in EVALUATION_COMMANDS and not any(map(only_prints, args)):
        args, checkpoint = restore_from_checkpoint(args)
    with command_guard():
        return LandslideCLI(
            LandslideSegmenter,
            LandslideDataModule,
            seed_everything_default=42,
            save_config_kwargs={"overwrite": True},
            parser_kwargs={
                "description": __doc__.splitlines()[0],
                "epilog": f"Set {TRACEBACK_ENV}=1 to see the traceback of an error (bug reports).",
            },
            checkpoint=checkpoint,
            args=args,
        )


def _quiet_known_warnings() -> None:
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
    # main() leaves sys.argv as it is for Lightning's DDP launcher and passes args too
    warnings.filterwarnings("ignore", message=r"LightningCLI's args parameter is intended")
    # Evaluation runs keep the fit's ModelCheckpoint defaults; it saves nothing there.
    warnings.filterwarnings("ignore", message=r"The dirpath has changed from")
