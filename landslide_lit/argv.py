"""Command-line arguments as lists of strings, before any parser sees them.

Pure helpers shared by the LightningCLI entry (``cli``) and the experiments: bundled
config files by name, an option's value, the config files a command line names and the
keys they set. Nothing here imports Lightning or torch, so the entry point stays fast.
"""

from __future__ import annotations

import argparse
from importlib import resources
from pathlib import Path

import yaml

from landslide_lit.errors import ConfigError

__all__ = [
    "ArgumentParser",
    "bundled_config_dir",
    "config_file_with",
    "config_files",
    "only_prints",
    "option_value",
    "resolve_bundled_configs",
]


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose usage errors are ConfigErrors: one ``error:`` line from main()."""

    def error(self, message: str):
        raise ConfigError(f"{self.prog}: {message} (`{self.prog} --help` lists the options)")


def bundled_config_dir() -> Path:
    """The folder of the configs shipped with the package (``configs/`` in the repository)."""
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
    """The value of ``option`` in ``args`` (``--option VALUE`` or ``--option=VALUE``)."""
    for i, arg in enumerate(args):
        if arg == option and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(option + "="):
            return arg.split("=", 1)[1]
    return None


def only_prints(arg: str) -> bool:
    """Whether ``arg`` asks for help or the config rather than a run."""
    return arg in ("-h", "--help") or arg.startswith("--print_config")


def config_files(args: list[str]) -> list[str]:
    """The ``--config`` files named in ``args`` that exist."""
    files = []
    for i, arg in enumerate(args):
        path = arg.split("=", 1)[1] if arg.startswith("--config=") else None
        if arg in ("--config", "-c") and i + 1 < len(args):
            path = args[i + 1]
        if path is not None and Path(path).is_file():
            files.append(path)
    return files


def config_file_with(key: str, args: list[str]) -> str | None:
    """The last ``--config`` file in ``args`` that sets ``key`` (or a key inside it)."""
    found = None
    for path in config_files(args):
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
