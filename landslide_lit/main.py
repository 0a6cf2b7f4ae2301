"""`landslide-lit` and `python -m landslide_lit`: the command table and the one error exit.

Each command names the function that runs it, imported only when that command runs, so
``landslide-lit --help`` lists the commands without importing torch or Lightning.
:func:`main` is the one place where an error becomes a message and an exit code: an error
the user can fix (:class:`LandslideLitError`, also when Lightning or jsonargparse wrapped
it, and a full or read-only disk) is one ``error: ...`` block on stderr and its
``exit_code``; ``LANDSLIDE_LIT_TRACEBACK=1`` raises it with its traceback instead.
"""

from __future__ import annotations

import difflib
import errno
import importlib
import os
import sys
from typing import NamedTuple

from landslide_lit.errors import (
    TRACEBACK_ENV,
    ConfigError,
    LandslideLitError,
    NoCommandError,
    OutputError,
)
from landslide_lit.logs import configure_logging

__all__ = ["COMMANDS", "CommandEntry", "main", "user_error"]


class CommandEntry(NamedTuple):
    """What runs a command (``module:function``) and what it does, in one line."""

    target: str
    summary: str
    lightning: bool = False
    """A LightningCLI subcommand: the function gets the command name too (``["fit", ...]``)."""


_LIGHTNING = "landslide_lit.cli:run"


def _lightning(summary: str) -> CommandEntry:
    return CommandEntry(_LIGHTNING, summary, lightning=True)


COMMANDS: dict[str, CommandEntry] = {
    "fit": _lightning("train a model on a region's chips (checkpoints, logs, config)"),
    "validate": _lightning("score a checkpoint on a region's validation chips"),
    "test": _lightning("score a checkpoint on a test region: AUPRC, intervals, PR curve"),
    "predict": _lightning("map a whole region's landslide probability with a checkpoint"),
    "synth": CommandEntry(
        "landslide_lit.tools:synth_main", "write a synthetic cube in a region's real schema"
    ),
    "demo": CommandEntry(
        "landslide_lit.experiments.demo:main",
        "the whole study in miniature, on synthetic cubes, on a CPU",
    ),
    "cube": CommandEntry(
        "landslide_lit.event.command:main",
        "a new event's cube (and region file) from Sentinel-1 RTC GeoTIFFs or STAC",
    ),
    "cache": CommandEntry("landslide_lit.tools:cache_main", "clear the chip cache"),
    "polygonize": CommandEntry(
        "landslide_lit.polygonize:main",
        "threshold an existing map into a landslide mask and polygons, without the model",
    ),
    "reproduce": CommandEntry(
        "landslide_lit.experiments.table1:main",
        "Table 1 of Prapas et al.: four configs over seeds, with intervals (resumable)",
    ),
    "transfer": CommandEntry(
        "landslide_lit.experiments.transfer:main",
        "train on each region, test on every region: the transfer matrix (resumable)",
    ),
}

# Storage faults that happen wherever a run writes, with what to do about them.
_STORAGE_ERRORS = {
    errno.ENOSPC: "The disk is full: free space, or write elsewhere (--trainer.default_root_dir, "
    "run from another folder).",
    errno.EDQUOT: "Your disk quota is used up: free space, or write elsewhere.",
    errno.EROFS: "That file system is read-only: run from a folder you can write.",
}


def main(args: list[str] | None = None) -> None:
    """Run the command in ``args`` (default ``sys.argv[1:]``); user errors in plain words.

    An error the user can fix is one ``error: ...`` block on stderr and the error's
    ``exit_code`` (2 unless it says otherwise); ``LANDSLIDE_LIT_TRACEBACK=1`` raises it
    with its traceback instead, for bug reports. Anything else is a bug: its traceback shows.
    """
    # sys.argv stays as it is: Lightning's DDP launcher starts the other ranks with it
    args = list(sys.argv[1:] if args is None else args)
    if args[:1] in (["-h"], ["--help"]):
        _print_help(sys.stdout)
        raise SystemExit(0)
    try:
        _dispatch(args)
    except Exception as exc:
        error = user_error(exc)
        if error is None or os.environ.get(TRACEBACK_ENV, "0") not in ("", "0"):
            raise
        if not args:  # a bare `landslide-lit`: what there is to run, then the error
            _print_help(sys.stderr)
        sys.stderr.write(f"error: {_message(error)}\n")
        raise SystemExit(error.exit_code) from None


def _dispatch(args: list[str]) -> None:
    """Run the command ``args[0]``; options first go to the LightningCLI (``-c FILE fit``)."""
    if not args:
        raise NoCommandError("give a command first")
    configure_logging()
    name = args[0]
    if name.startswith("-"):
        entry = _lightning("")
    elif name in COMMANDS:
        entry = COMMANDS[name]
    else:
        close = difflib.get_close_matches(name, COMMANDS, n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise ConfigError(
            f"unknown command {name!r}{hint} Commands: {', '.join(COMMANDS)} "
            "(`landslide-lit --help`)"
        )
    module, _, function = entry.target.partition(":")
    getattr(importlib.import_module(module), function)(args if entry.lightning else args[1:])


def _print_help(stream) -> None:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {entry.summary}" for name, entry in COMMANDS.items()]
    stream.write(
        "usage: landslide-lit COMMAND [OPTIONS]\n\n"
        "Map landslides in Sentinel-1 SAR datacubes with PyTorch Lightning.\n\n"
        "commands:\n" + "\n".join(lines) + "\n\n"
        "`landslide-lit COMMAND --help` lists a command's options.\n"
        f"Set {TRACEBACK_ENV}=1 to see the traceback of an error (bug reports).\n"
    )


def _message(error: LandslideLitError) -> str:
    if isinstance(error, NoCommandError):
        return f"{error}: one of {', '.join(COMMANDS)} (`landslide-lit --help`)"
    return str(error)


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
