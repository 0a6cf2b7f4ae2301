"""What `reproduce` and `transfer` share before running: options, set-up, checks, the grid.

Both take the same options (:func:`common_parser`), resolve them into a :class:`Setup`,
make sure the cubes exist (:func:`require_cubes`), refuse to mix settings in one experiment
folder (:func:`check_settings`), build each run's fit arguments (:func:`fit_args`) and run
the grid, all of it or one run (:func:`run_grid`: ``--only K``, ``$SLURM_ARRAY_TASK_ID``).
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from landslide_lit.argv import option_value, resolve_bundled_configs
from landslide_lit.atomic import write_json_atomically
from landslide_lit.bootstrap import (
    DEFAULT_BOOTSTRAP_SEED,
    DEFAULT_METHOD,
    DEFAULT_REPLICATES,
    METHOD_NAMES,
)
from landslide_lit.data.cube import existing_cube
from landslide_lit.data.synthetic import write_synthetic_cube
from landslide_lit.errors import ConfigError
from landslide_lit.experiments.runner import Runner, RunSpec, progress
from landslide_lit.regions import ZENODO_DOI, data_root, get_region

__all__ = [
    "ARRAY_TASK_VARIABLE",
    "FIRST_SEED",
    "INPUTS",
    "Setup",
    "banner",
    "check_settings",
    "common_parser",
    "fit_args",
    "inputs",
    "list_runs",
    "offline_note",
    "require_cubes",
    "run_grid",
    "seeds_text",
    "selected_run",
    "setup_study",
]

INPUTS = {
    "sar": "SAR",
    "sar_dem": "SAR & DEM",
    "sar_aug": "SAR (AUG)",
    "sar_dem_aug": "SAR & DEM (AUG)",
}
"""The inputs of the Table 1 configs, as the tables name them."""
FIRST_SEED = 42  # the configs' seed_everything: seed 42 is the published run's
ARRAY_TASK_VARIABLE = "SLURM_ARRAY_TASK_ID"
# Pass-through options the runner sets itself, and the flag to use instead.
RESERVED = {
    "--ckpt_path": "(the runner resumes by itself)",
    "--seed_everything": "--seeds / --first-seed",
    "--data.root": "--root",
    "--data.synthetic": "--synthetic",
    "--data.train_region": "--train-region (reproduce) or --regions (transfer)",
    "--data.test_region": "--test-region (reproduce) or --regions (transfer)",
    "--trainer.logger": "(runs log to their own folders)",
    "--trainer.default_root_dir": "(each run works in its own folder)",
}
# Pass-through options that evaluations take too (the rest only shape the fit).
EVALUATION_PREFIXES = ("--trainer.", "--config", "--data.batch_size", "--data.num_workers")
EVALUATION_PREFIXES += ("--data.cache",)


def inputs(config: str) -> str:
    """The table name of ``config``'s inputs (the config's name for other configs)."""
    return INPUTS.get(config, config)


def common_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """The options `reproduce` and `transfer` share."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description=description,
        allow_abbrev=False,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Other options (e.g. --trainer.max_epochs 1, --model.encoder_weights null, "
        "--config gpu.yaml) are passed to every fit; --trainer.*, --config and "
        "--data.batch_size/num_workers/cache to the evaluations too. The Table 1 configs "
        "load ImageNet encoder weights from the Hugging Face hub: offline, pass "
        "--model.encoder_weights null (from scratch, not the published setting) or a local "
        "file. Rerun the same command to continue after an interruption.",
    )
    parser.add_argument("--name", default=None, help="experiment folder name under --output")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per run (default 3)")
    parser.add_argument(
        "--first-seed",
        "--first_seed",
        type=int,
        default=FIRST_SEED,
        help=f"seed_everything of the first seed; the others follow (default {FIRST_SEED})",
    )
    parser.add_argument(
        "--synthetic",
        action="store_true",
        help="use synthetic cubes (ROOT/synthetic/, generated when missing) instead of the "
        "real ones; the tables say so",
    )
    parser.add_argument(
        "--root", default=None, help="data root (default: $LANDSLIDE_LIT_DATA or ./data)"
    )
    parser.add_argument("--output", default="results", help="results folder (default results)")
    _add_bootstrap_options(parser)
    _add_grid_options(parser)
    return parser


def _add_bootstrap_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--bootstrap",
        type=int,
        default=DEFAULT_REPLICATES,
        help=f"bootstrap replicates over chips (default {DEFAULT_REPLICATES})",
    )
    parser.add_argument(
        "--bootstrap-seed", "--bootstrap_seed", type=int, default=DEFAULT_BOOTSTRAP_SEED
    )
    parser.add_argument(
        "--bootstrap-method",
        "--bootstrap_method",
        choices=tuple(METHOD_NAMES),
        default=DEFAULT_METHOD,
        help="bootstrap interval: bca (bias-corrected and accelerated) or percentile "
        f"(default {DEFAULT_METHOD})",
    )


def _add_grid_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--only",
        type=int,
        default=None,
        metavar="K",
        help="run only run K of the grid (0-based, as --list numbers them; default "
        f"${ARRAY_TASK_VARIABLE} when set) and write no tables: a SLURM job array runs "
        "the grid, a rerun without --only then writes the tables",
    )
    parser.add_argument(
        "--list",
        action="store_true",
        help="list the grid's runs (K, label, folder, finished or not) and stop",
    )


@dataclass
class Setup:
    """What both commands resolve before running."""

    folder: Path
    root: Path
    synthetic: bool
    seeds: list[int]
    fit_extra: list[str]
    evaluation_extra: list[str]
    encoder_weights: str


def setup_study(options: argparse.Namespace, extra: list[str], default_name: str) -> Setup:
    """Check the options and the pass-through ``extra`` and resolve them."""
    if options.seeds < 1:
        raise ConfigError(f"--seeds {options.seeds}: must be at least 1")
    for arg in extra:
        option = arg.split("=", 1)[0]
        if option in RESERVED:
            raise ConfigError(f"{option} is set by the runner; use {RESERVED[option]}")
    extra = _absolute_paths(resolve_bundled_configs(["fit", *extra])[1:])
    name = options.name or default_name + ("_synthetic" if options.synthetic else "")
    weights = option_value(extra, "--model.encoder_weights")
    return Setup(
        folder=(Path(options.output) / name).resolve(),
        root=data_root(options.root).resolve(),
        synthetic=options.synthetic,
        seeds=list(range(options.first_seed, options.first_seed + options.seeds)),
        fit_extra=extra,
        # the evaluations read the cubes the fits read: synthetic is never restored
        evaluation_extra=[
            *_evaluation_options(extra),
            f"--data.synthetic={'true' if options.synthetic else 'false'}",
        ],
        encoder_weights=weights or "the config's (imagenet for the Table 1 configs)",
    )


def _absolute_paths(args: list[str]) -> list[str]:
    """Relative paths that exist here, made absolute: the runs work in their own folders."""
    out = []
    for arg in args:
        option, sep, value = arg.partition("=") if arg.startswith("--") else ("", "", arg)
        if value and not value.startswith("-") and Path(value).exists():
            value = str(Path(value).resolve())
        out.append(f"{option}{sep}{value}" if option else value)
    return out


def _evaluation_options(args: list[str]) -> list[str]:
    """The pass-through options that also apply to validate/test."""
    out, i = [], 0
    while i < len(args):
        arg = args[i]
        takes_value = "=" not in arg and i + 1 < len(args) and not args[i + 1].startswith("--")
        group = [arg, args[i + 1]] if takes_value else [arg]
        if arg.startswith(EVALUATION_PREFIXES):
            out += group
        i += len(group)
    return out


def require_cubes(regions: Sequence[str], setup: Setup) -> None:
    """Every region needs its cube: a missing synthetic one is generated here (only `fit`
    generates, and a transfer evaluates regions its fit did not use); a missing real one
    is one error naming all missing."""
    if setup.synthetic:
        for region in regions:
            if existing_cube(get_region(region), setup.root, synthetic=True) is None:
                progress(f"generating a synthetic {region} cube under {setup.root}")
                write_synthetic_cube(region, root=setup.root)
        return
    missing = [
        get_region(r).cube_path(setup.root)
        for r in regions
        if existing_cube(get_region(r), setup.root) is None
    ]
    if missing:
        raise ConfigError(
            "real datacubes not found: "
            + ", ".join(str(p) for p in missing)
            + f". Download them from Zenodo (DOI {ZENODO_DOI}) and unzip them into "
            f"{setup.root} (or pass --root DIR), or pass --synthetic to run on synthetic "
            "cubes (generated when missing; the tables are then marked synthetic)."
        )


def fit_args(config: str, setup: Setup, seed: int, train: str, test: str) -> tuple[str, ...]:
    """The options of one run's ``fit``."""
    (config_path,) = resolve_bundled_configs(["fit", "--config", config])[2:]
    return (
        "--config",
        str(Path(config_path).resolve()),
        *setup.fit_extra,
        f"--data.root={setup.root}",
        f"--data.synthetic={'true' if setup.synthetic else 'false'}",
        f"--data.train_region={train}",
        f"--data.test_region={test}",
        f"--seed_everything={seed}",
    )


def check_settings(setup: Setup, settings: dict[str, Any]) -> None:
    """Refuse to mix runs made with other settings into one experiment folder.

    Tasks of a job array call this at once: ``settings.json`` is replaced atomically, and
    only when it changes, so a task never reads it half-written.
    """
    path = setup.folder / "settings.json"
    before = json.loads(path.read_text()) if path.exists() else None
    if before is not None:
        changed = [k for k in settings if k in before and before[k] != settings[k]]
        if changed:
            details = "; ".join(f"{k}: {before[k]} -> {settings[k]}" for k in changed)
            raise ConfigError(
                f"{setup.folder} holds runs made with other settings ({details}). "
                "Use another --name, or delete that folder to start over."
            )
    if before != settings:
        write_json_atomically(path, settings)


def offline_note(setup: Setup) -> None:
    """Say that the default encoder weights need the network once."""
    if option_value(setup.fit_extra, "--model.encoder_weights") is None:
        progress(
            "the Table 1 configs start from ImageNet encoder weights, downloaded from the "
            "Hugging Face hub (network needed once). Offline, add --model.encoder_weights null "
            "(from scratch, not the published setting) or a local file."
        )


def selected_run(options: argparse.Namespace, total: int) -> int | None:
    """The one run to do (``--only``, else ``$SLURM_ARRAY_TASK_ID``), or None for all."""
    only, source = options.only, "--only"
    if only is None and os.environ.get(ARRAY_TASK_VARIABLE):
        variable = os.environ[ARRAY_TASK_VARIABLE]
        source = f"${ARRAY_TASK_VARIABLE}"
        if not variable.isdigit():
            raise ConfigError(f"{source}={variable}: expected a run number")
        only = int(variable)
    if only is not None and not 0 <= only < total:
        raise ConfigError(
            f"{source} {only}: the grid has {total} runs, numbered 0 to {total - 1} (--list)"
        )
    return only


def list_runs(runner: Runner, specs: Sequence[RunSpec]) -> None:
    """Print the grid, one run a line: K, label, folder, finished or to do."""
    for index, spec in enumerate(specs):
        state = "finished" if runner.finished(spec) else "to do"
        print(f"{index}\t{spec.label}\t{runner.folder / spec.folder}\t{state}")


def run_grid(
    setup: Setup,
    options: argparse.Namespace,
    grid: Callable[[], list[RunSpec]],
    regions: Sequence[str],
    settings: dict[str, Any],
) -> tuple[list[RunSpec], list[dict[str, Any]]] | None:
    """List, run one run of, or run all of the grid; the specs and results when all ran.

    Before the grid is built, the cubes of ``regions`` must exist and the experiment
    folder must hold no runs made with other ``settings`` (the synthetic flag and the
    fit options added), except for ``--list``, which neither needs cubes nor writes
    anything.
    """
    runner = Runner(setup.folder, setup.evaluation_extra)
    if options.list:
        list_runs(runner, grid())
        return None
    require_cubes(regions, setup)
    check_settings(setup, {**settings, "synthetic": setup.synthetic, "fit_extra": setup.fit_extra})
    offline_note(setup)
    specs = grid()
    only = selected_run(options, len(specs))
    if only is not None:
        runner.run_only(specs, only)
        progress("the tables are written by a run without --only once every run finished")
        return None
    return specs, runner.run_all(specs)


def seeds_text(setup: Setup) -> str:
    """``3 seeds (42, 43, 44)``."""
    seeds = ", ".join(map(str, setup.seeds))
    return f"{len(setup.seeds)} seed{'s' if len(setup.seeds) > 1 else ''} ({seeds})"


def banner(synthetic: bool, published: bool = False) -> list[str]:
    """The warning lines atop a table made on synthetic cubes (none for real cubes)."""
    if not synthetic:
        return []
    return [
        "> **SYNTHETIC CUBES.** These runs used synthetic datacubes in the real schema, "
        "not Sentinel-1 data: the numbers test the pipeline, they do not reproduce the "
        "paper." + (" The published values are shown for layout only." if published else ""),
        "",
    ]
