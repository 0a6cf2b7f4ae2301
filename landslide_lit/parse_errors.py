"""jsonargparse's parse errors in one line: the option (and its config file), the fix.

jsonargparse explains a bad value with a dump of every type of a union and the value
echoed back; these functions keep what a user needs: the option or config key, the
file that set it, what was expected, and the closest known option for a typo.
"""

from __future__ import annotations

import difflib
import re
from typing import Any, get_args

from landslide_lit.argv import config_file_with, config_files
from landslide_lit.errors import ConfigError, NoCommandError
from landslide_lit.stages import Command

__all__ = ["UNION_DUMP", "explain_region_error", "parse_error"]

# jsonargparse's message for a value that fits no member of a union type (str | Region)
UNION_DUMP = "Does not validate against any of the Union subtypes"
_UNION_NOISE = ("Given value type", "Subtypes:", "Errors:", "Problem with given class_path")
_REGION_OPTIONS = ("train_region", "test_region", "validate_region")


def parse_error(message: str, keys: list[str], args: list[str]) -> ConfigError:
    """The error to raise for jsonargparse's ``message`` on the command line ``args``.

    ``keys`` are the option keys of the command (``trainer.max_epochs``...), for the
    closest match of a typo.
    """
    lines = [line for line in message.strip().splitlines() if line.strip()]
    first = lines[0] if lines else message
    if match := re.search(r"does not accept (?:nested key|option) '([^']+)'", first):
        return ConfigError(_unknown_option(match.group(1), keys, args))
    if match := re.match(r"unrecognized arguments: (.*)", first, re.IGNORECASE):
        options = [a for a in match.group(1).split() if a.startswith("-")]
        if options:
            return ConfigError(_unknown_option(options[0].lstrip("-").split("=")[0], keys, args))
        return ConfigError(
            f"unexpected value(s) {match.group(1)} on the command line: each value follows "
            "its option, e.g. --data.root PATH"
        )
    if first.startswith("Unexpected config"):
        files = ", ".join(config_files(args)) or "--config"
        return ConfigError(
            f"{files}: a config file holds a mapping of options (e.g. `trainer: "
            f"{{max_epochs: 3}}`); jsonargparse says: {first}"
        )
    if match := re.search(r"argument (\S+): expected one argument", first):
        return ConfigError(f"{match.group(1)} needs a value, e.g. {match.group(1)} VALUE")
    if match := re.match(r'Parser key "([^"]+)":', first):
        key = match.group(1)
        source = config_file_with(key, args)
        where = f"{key} in {source}" if source else f"--{key}"
        return ConfigError(f"{where}: {_union_reason(lines[1:])}")
    if "subcommand" in first:
        return NoCommandError("give a command first")
    return ConfigError(" ".join(line.strip() for line in lines))


def explain_region_error(message: str, data: dict[str, Any], args: list[str]) -> str:
    """A region mapping in ``data`` that fails to build: the key, the config file, the reason."""
    keys = [k for k in _REGION_OPTIONS if _is_mapping(data.get(k))]
    reason = _union_reason(message.splitlines())
    named = " or ".join(f"data.{k}" for k in keys) or "a region mapping"
    source = next((f for k in keys if (f := config_file_with(f"data.{k}", args))), None)
    where = f" in {source}" if source else ""
    return f"{named}{where}: {reason}"


def _unknown_option(key: str, keys: list[str], args: list[str]) -> str:
    source = config_file_with(key, args)
    what = f"unknown key {key!r} in {source}" if source else f"unknown option --{key}"
    close = difflib.get_close_matches(key, keys, n=1, cutoff=0.6)
    if not close:  # a typo'd last part: compare it with the keys of the same section
        section, _, name = key.rpartition(".")
        siblings = [k for k in keys if k.rpartition(".")[0] == section]
        close = difflib.get_close_matches(name, [k.rpartition(".")[2] for k in siblings], n=1)
        close = [f"{section}.{c}" if section else c for c in close]
    hint = f"; did you mean {close[0] if source else '--' + close[0]}?" if close else ""
    command = args[0] if args and args[0] in get_args(Command) else "fit"
    return f"{what}{hint} (`landslide-lit {command} --help` lists the options)"


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


def _is_mapping(value: Any) -> bool:
    return value is not None and not isinstance(value, str)
