"""The `landslide-lit` command: LightningCLI for fit/validate/test/predict, plus synth and demo.

``run(args)`` is callable from tests and returns the LightningCLI. Before LightningCLI
parses anything:

* ``--config NAME.yaml`` falls back to the configs bundled with the package
  when no such file exists in the working directory;
* validate/test/predict without ``--ckpt_path`` use the best checkpoint of the
  latest fit run under the working directory, and restore the model and data
  settings it was trained with (command-line values still win).

``main(args)`` turns every error a user can cause (:class:`LandslideLitError`, also when
Lightning or jsonargparse wrapped it) into one ``error: ...`` block on stderr and its exit
code; ``LANDSLIDE_LIT_TRACEBACK=1`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import difflib
import errno
import logging
import os
import re
import sys
import warnings
from importlib import resources
from pathlib import Path

import yaml
from lightning.pytorch.cli import LightningCLI

from landslide_lit.checkpointing import (
    command_guard,
    reserve_run_version,
    resume_checkpoint,
)
from landslide_lit.data.composite import resolve_channels
from landslide_lit.data.cube import region_cube_path
from landslide_lit.data.datamodule import LandslideDataModule
from landslide_lit.encoders import EncoderWeightsError
from landslide_lit.errors import ConfigError, LandslideLitError, OutputError
from landslide_lit.module import LandslideSegmenter
from landslide_lit.regions import REGIONS, get_region
from landslide_lit.runs import (
    NETWORK_SETTINGS,
    RUNS_DIR,
    CheckpointError,
    checkpoint_arguments,
    checkpoint_differences,
    latest_best_checkpoint,
    read_checkpoint,
)

log = logging.getLogger("landslide_lit")
EVALUATION_COMMANDS = ("validate", "test", "predict")
LIGHTNING_COMMANDS = ("fit", *EVALUATION_COMMANDS)
COMMANDS = (*LIGHTNING_COMMANDS, "synth", "demo", "cache", "reproduce", "transfer")
TRACEBACK_ENV = "LANDSLIDE_LIT_TRACEBACK"
# jsonargparse's message for a value that fits no member of a union type (str | Region)
UNION_DUMP = "Does not validate against any of the Union subtypes"
REGION_KEYS = ("train_region", "validate_region", "test_region")


class LandslideCLI(LightningCLI):
    """LightningCLI with the region flag, checkpoint defaults and model/data links."""

    def __init__(self, *args, checkpoint: dict | None = None, **kwargs) -> None:
        self.checkpoint = checkpoint
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
                    {"class_path": "landslide_lit.maps.ProbabilityMapWriter"},
                    # validate/test: metrics.json with bootstrap intervals, PR curve, panels
                    {"class_path": "landslide_lit.evaluation.EvaluationWriter"},
                    {"class_path": "landslide_lit.checkpointing.CheckpointOnSigterm"},
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
            raise ConfigError(explain_parse_error(str(error), self._keys(args), args)) from None
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
            raise ConfigError(self._explain_region_error(str(error))) from None

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

    def _explain_region_error(self, message: str) -> str:
        """A region mapping that fails to build: the key, the config file, the reason."""
        data = self._config().data
        keys = [
            k
            for k in ("train_region", "test_region", "validate_region")
            if _is_mapping(data.get(k))
        ]
        reason = _union_reason(message.splitlines())
        named = " or ".join(f"data.{k}" for k in keys) or "a region mapping"
        source = next(
            (f for k in keys if (f := _config_file_with(f"data.{k}", self._raw_args))), None
        )
        where = f" in {source}" if source else ""
        return f"{named}{where}: {reason}"

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
        check_output_folders(config.trainer)
        reserve_run_version(config.trainer)


def check_output_folders(trainer_config) -> None:
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


def bundled_config_dir() -> Path:
    return Path(str(resources.files("landslide_lit.configs")))


def resolve_bundled_configs(args: list[str]) -> list[str]:
    """Replace ``--config NAME`` by the bundled file when NAME is not a file here."""
    resolved = list(args)
    for i, arg in enumerate(resolved):
        name, inline = (
            (arg.split("=", 1)[1], True) if arg.startswith("--config=") else (None, False)
        )
        if arg == "--config" and i + 1 < len(resolved):
            name = resolved[i + 1]
        if name is None or Path(name).exists():
            continue
        bundled = bundled_config_dir() / (name if name.endswith(".yaml") else f"{name}.yaml")
        if not bundled.exists():
            known = ", ".join(sorted(p.name for p in bundled_config_dir().glob("*.yaml")))
            raise ConfigError(
                f"--config {name}: no such file here and no bundled config of that name; "
                f"bundled configs: {known}"
            )
        if inline:
            resolved[i] = f"--config={bundled}"
        else:
            resolved[i + 1] = str(bundled)
    return resolved


def option_value(args: list[str], option: str) -> str | None:
    for i, arg in enumerate(args):
        if arg == option and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(option + "="):
            return arg.split("=", 1)[1]
    return None


def restore_from_checkpoint(args: list[str]) -> tuple[list[str], dict]:
    """Insert the checkpoint's settings (and path) after the subcommand name."""
    ckpt_path = option_value(args, "--ckpt_path")
    if (ckpt_path is None and "--ckpt_path" in args) or str(ckpt_path).startswith("-"):
        raise ConfigError(
            "--ckpt_path needs a value: the path of a .ckpt file (leave the option out to use "
            "the best checkpoint of the latest fit run here)"
        )
    if ckpt_path in (None, "null", "None"):
        ckpt_path = str(latest_best_checkpoint())
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


class _ArgumentParser(argparse.ArgumentParser):
    """argparse whose usage errors are ConfigErrors: one ``error:`` line from main()."""

    def error(self, message: str):
        raise ConfigError(f"{self.prog}: {message} (`{self.prog} --help` lists the options)")


def synth_main(args: list[str]) -> None:
    """`landslide-lit synth`: write a synthetic cube in a region's real schema."""
    from landslide_lit.data.synthetic import write_synthetic_cube

    parser = _ArgumentParser(
        prog="landslide-lit synth",
        description="Write a synthetic datacube with a region's real file name and schema "
        "under ROOT/synthetic/.",
    )
    parser.add_argument("--region", required=True, choices=sorted(REGIONS))
    parser.add_argument(
        "--root", default=None, help="data root (default: $LANDSLIDE_LIT_DATA or ./data)"
    )
    parser.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--format", choices=("zarr", "netcdf"), default="zarr")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing cube")
    options = parser.parse_args(args)
    try:
        path = write_synthetic_cube(
            options.region,
            root=options.root,
            size=tuple(options.size) if options.size else None,
            seed=options.seed,
            fmt=options.format,
            overwrite=options.overwrite,
        )
    except FileExistsError as error:
        raise ConfigError(
            f"landslide-lit synth: {error.filename or error} exists already; pass --overwrite "
            "to replace it, or --root to write elsewhere"
        ) from None
    print(path)


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is now (tests and notebooks replace it)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def cache_main(args: list[str]) -> None:
    """`landslide-lit cache clear`: remove the prepared chips of the chip cache.

    Without ``--cache-dir`` both places a run may have used are emptied: the data root's
    ``.chip_cache`` and the per-user folder a read-only data root falls back to.
    """
    from landslide_lit.data.cache import CACHE_DIR, ChipCache, user_cache_dir
    from landslide_lit.regions import data_root

    parser = argparse.ArgumentParser(
        prog="landslide-lit cache",
        description=f"Manage the chip cache (<data root>/{CACHE_DIR}, else {user_cache_dir()}).",
    )
    parser.add_argument("action", choices=("clear",))
    parser.add_argument(
        "--root", default=None, help="data root (default: $LANDSLIDE_LIT_DATA or ./data)"
    )
    parser.add_argument(
        "--cache-dir",
        default=None,
        help="clear this folder only (what --data.cache_dir named)",
    )
    options = parser.parse_args(args)
    if options.cache_dir is not None:
        folders = [Path(options.cache_dir).expanduser()]
    else:
        folders = [data_root(options.root) / CACHE_DIR, user_cache_dir()]
    for folder in folders:
        print(f"removed {ChipCache(folder).clear()} cache entries from {folder}")


def _configure_logging() -> None:
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
    # main() leaves sys.argv as it is for Lightning's DDP launcher and passes args too
    warnings.filterwarnings("ignore", message=r"LightningCLI's args parameter is intended")
    # Evaluation runs keep the fit's ModelCheckpoint defaults; it saves nothing there.
    warnings.filterwarnings("ignore", message=r"The dirpath has changed from")
    if not log.handlers:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("[landslide-lit] %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)


def main(args: list[str] | None = None) -> None:
    """Entry point of `landslide-lit` and `python -m landslide_lit`: errors in plain words.

    An error the user can fix is one ``error: ...`` block on stderr and the error's
    ``exit_code`` (2 unless it says otherwise); ``LANDSLIDE_LIT_TRACEBACK=1`` raises it
    with its traceback instead, for bug reports. Anything else is a bug: its traceback shows.
    """
    if args is None:
        # sys.argv stays: Lightning's DDP launcher starts the other ranks with it
        args = sys.argv[1:]
    try:
        run(args)
    except Exception as exc:
        error = user_error(exc)
        if error is None or os.environ.get(TRACEBACK_ENV, "0") not in ("", "0"):
            raise
        sys.stderr.write(f"error: {error}\n")
        raise SystemExit(error.exit_code) from None


# Storage faults that happen wherever a run writes, with what to do about them.
_STORAGE_ERRORS = {
    errno.ENOSPC: "The disk is full: free space, or write elsewhere (--trainer.default_root_dir, "
    "run from another folder).",
    errno.EDQUOT: "Your disk quota is used up: free space, or write elsewhere.",
    errno.EROFS: "That file system is read-only: run from a folder you can write.",
}


def user_error(exc: BaseException) -> LandslideLitError | None:
    """The user's error behind ``exc``: itself, or the one Lightning or a library wrapped."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, LandslideLitError):
            return current
        if isinstance(current, OSError) and current.errno in _STORAGE_ERRORS:
            return OutputError(
                f"cannot write {current.filename or 'a file'}: {current.strerror}. "
                f"{_STORAGE_ERRORS[current.errno]}"
            )
        seen.add(id(current))
        current = current.__cause__ or (
            None if current.__suppress_context__ else current.__context__
        )
    return None


def explain_parse_error(message: str, keys: list[str], args: list[str]) -> str:
    """jsonargparse's parse error in one line: the option (and config file), the fix."""
    lines = [line for line in message.strip().splitlines() if line.strip()]
    first = lines[0] if lines else message
    if match := re.search(r"does not accept (?:nested key|option) '([^']+)'", first):
        return _unknown_option(match.group(1), keys, args)
    if match := re.match(r"unrecognized arguments: (.*)", first, re.IGNORECASE):
        options = [a for a in match.group(1).split() if a.startswith("-")]
        if options:
            return _unknown_option(options[0].lstrip("-").split("=")[0], keys, args)
        return (
            f"unexpected value(s) {match.group(1)} on the command line: each value follows "
            "its option, e.g. --data.root PATH"
        )
    if first.startswith("Unexpected config"):
        files = ", ".join(_config_files(args)) or "--config"
        return (
            f"{files}: a config file holds a mapping of options (e.g. `trainer: "
            f"{{max_epochs: 3}}`); jsonargparse says: {first}"
        )
    if match := re.search(r"argument (\S+): expected one argument", first):
        return f"{match.group(1)} needs a value, e.g. {match.group(1)} VALUE"
    if match := re.match(r'Parser key "([^"]+)":', first):
        key = match.group(1)
        source = _config_file_with(key, args)
        where = f"{key} in {source}" if source else f"--{key}"
        return f"{where}: {_union_reason(lines[1:])}"
    if 'expected "subcommand"' in first or "subcommand" in first:
        return f"give a command first: one of {', '.join(COMMANDS)} (`landslide-lit --help`)"
    return " ".join(line.strip() for line in lines)


def _unknown_option(key: str, keys: list[str], args: list[str]) -> str:
    source = _config_file_with(key, args)
    what = f"unknown key {key!r} in {source}" if source else f"unknown option --{key}"
    close = difflib.get_close_matches(key, keys, n=1, cutoff=0.6)
    if not close:  # a typo'd last part: compare it with the keys of the same section
        section, _, name = key.rpartition(".")
        siblings = [k for k in keys if k.rpartition(".")[0] == section]
        close = difflib.get_close_matches(name, [k.rpartition(".")[2] for k in siblings], n=1)
        close = [f"{section}.{c}" if section else c for c in close]
    hint = f"; did you mean {close[0] if source else '--' + close[0]}?" if close else ""
    command = args[0] if args and args[0] in LIGHTNING_COMMANDS else "fit"
    return f"{what}{hint} (`landslide-lit {command} --help` lists the options)"


_UNION_NOISE = ("Given value type", "Subtypes:", "Errors:", "Problem with given class_path")


def _union_reason(lines: list[str]) -> str:
    """The useful part of jsonargparse's account of a bad value: no type dump, no echo.

    Its lines say which types were expected (``Expected a <class 'int'>``), the value
    given, a nested key (``Parser key "orbit":``) or why a class could not take the value.
    """
    expected, reasons, given, key = [], [], None, ""
    for raw in lines:
        line = raw.strip().removeprefix("- ").strip()
        if line.startswith(_UNION_NOISE) or UNION_DUMP in line:
            continue
        if match := re.fullmatch(r'Parser key "([^"]+)":', line):
            key, expected = f"{match.group(1)}: ", []  # what follows is about that key
        elif match := re.fullmatch(r"Expected a (.+?)(?:\. Got value: (.*))?", line):
            expected.append(_type_name(match.group(1)))
            given = match.group(2) if match.group(2) is not None else given
        elif line.startswith("Given value:") and given is None:
            given = line.removeprefix("Given value:").strip()
        else:
            reasons.append(line.replace("the following arguments are required:", "missing key"))
    if reasons:
        return key + " ".join(reasons)
    got = f", got {given}" if given is not None and len(given) < 80 else ""
    return f"{key}expected {' or '.join(dict.fromkeys(expected)) or 'another type'}{got}"


def _type_name(annotation: str) -> str:
    """``<class 'int'>`` -> ``int``, ``typing.Literal['a', 'b']`` -> ``one of 'a', 'b'``."""
    if match := re.fullmatch(r"typing\.Literal\[(.*)\]", annotation):
        return f"one of {match.group(1)}"
    name = re.sub(r"<class '(?:[\w.]+\.)?(\w+)'>", r"\1", annotation)
    return {"NoneType": "null", "str": "a name", "Region": "a region mapping"}.get(name, name)


def _config_files(args: list[str]) -> list[str]:
    """The ``--config`` files named in ``args`` that exist."""
    files = []
    for i, arg in enumerate(args):
        path = arg.split("=", 1)[1] if arg.startswith("--config=") else None
        if arg in ("--config", "-c") and i + 1 < len(args):
            path = args[i + 1]
        if path is not None and Path(path).is_file():
            files.append(path)
    return files


def _config_file_with(key: str, args: list[str]) -> str | None:
    """The last ``--config`` file in ``args`` that sets ``key`` (or a key inside it)."""
    found = None
    for path in _config_files(args):
        try:
            # BaseLoader: keys only, no values parsed (a date like 2020-13-01 would fail)
            content = yaml.load(Path(path).read_text(), Loader=yaml.BaseLoader)
        except (OSError, yaml.YAMLError):  # an unreadable file: jsonargparse says why
            continue
        if any(k == key or k.startswith(key + ".") for k in _flat_keys(content)):
            found = path
    return found


def _flat_keys(tree, prefix: str = "") -> list[str]:
    if not isinstance(tree, dict):
        return [prefix.rstrip(".")] if prefix else []
    keys = []
    for key, value in tree.items():
        keys += _flat_keys(value, f"{prefix}{key}.") or [f"{prefix}{key}"]
    return keys


def _is_mapping(value) -> bool:
    return value is not None and not isinstance(value, str)


def run(args: list[str] | None = None) -> LandslideCLI | None:
    """Run a `landslide-lit` command; the LightningCLI (None for synth, cache, demo, reproduce,
    transfer)."""
    _configure_logging()
    args = list(sys.argv[1:] if args is None else args)
    if args and not args[0].startswith("-") and args[0] not in COMMANDS:
        close = difflib.get_close_matches(args[0], COMMANDS, n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise ConfigError(
            f"unknown command {args[0]!r}{hint} Commands: {', '.join(COMMANDS)} "
            "(`landslide-lit --help`)"
        )
    if args and args[0] == "synth":
        synth_main(args[1:])
        return None
    if args and args[0] == "demo":
        from landslide_lit.demo import demo_main

        demo_main(args[1:])
        return None
    if args and args[0] == "cache":
        cache_main(args[1:])
        return None
    if args and args[0] in ("reproduce", "transfer"):
        from landslide_lit.reproduce import reproduce_main, transfer_main

        (reproduce_main if args[0] == "reproduce" else transfer_main)(args[1:])
        return None
    args = resolve_bundled_configs(args)
    checkpoint = None
    if args and args[0] in EVALUATION_COMMANDS and not any(map(_only_prints, args)):
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


def _only_prints(arg: str) -> bool:
    """Whether ``arg`` asks for help or the config rather than a run."""
    return arg in ("-h", "--help") or arg.startswith("--print_config")
