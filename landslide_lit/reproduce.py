"""`landslide-lit reproduce` (Table 1 over seeds, with intervals) and `landslide-lit transfer`
(the cross-region matrix), on one resumable runner.

Every (config, seed) or (train region, seed) run gets its own folder under
``OUTPUT/NAME/``, in which the runner works (it is the run's working directory):

* ``runs/landslide/version_N/``: the fit (checkpoints, ``metrics.csv``, ``config.yaml``);
* ``fit.json``: written when the fit finished, with its best checkpoint;
* ``evaluation/<val|test>_<region>/``: what ``validate``/``test`` of the best checkpoint
  write (``metrics.json``, ``pr_curve.png``, ``predictions.png``, ``scores.npz``);
* ``result.json``: written last and atomically, with every evaluation's metrics: a run
  with it is finished and skipped by a rerun. A run without it resumes: a fit without
  ``fit.json`` continues from its ``last.ckpt`` (``fit --ckpt_path last``), evaluations
  are redone.

The tables then pool the seeds: mean +- std of the AUPRC over seeds, and a 95 % chip
bootstrap interval of the seed-mean (chips resampled jointly over seeds, from the saved
per-pixel scores; see :mod:`landslide_lit.evaluation`).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import logging
import os
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from landslide_lit.bootstrap import (
    DEFAULT_BOOTSTRAP_SEED,
    DEFAULT_METHOD,
    DEFAULT_REPLICATES,
    METHOD_NAMES,
    chip_bootstrap,
    paired_difference,
)
from landslide_lit.errors import ConfigError
from landslide_lit.evaluation import Scores, write_json
from landslide_lit.precision import precision_recall_points
from landslide_lit.regions import REGIONS, data_root, get_region

log = logging.getLogger("landslide_lit")

TABLE1_CONFIGS = ("sar", "sar_dem", "sar_aug", "sar_dem_aug")
INPUTS = {
    "sar": "SAR",
    "sar_dem": "SAR & DEM",
    "sar_aug": "SAR (AUG)",
    "sar_dem_aug": "SAR & DEM (AUG)",
}
# Table 1 of Prapas et al.: AUPRC on Hokkaido's validation chips and Talakmau's test chips.
PAPER_TABLE1 = {
    "sar": {"hokkaido": 0.618, "talakmau": 0.421},
    "sar_dem": {"hokkaido": 0.639, "talakmau": 0.388},
    "sar_aug": {"hokkaido": 0.612, "talakmau": 0.456},
    "sar_dem_aug": {"hokkaido": 0.636, "talakmau": 0.402},
}
PAPER_NO_SKILL = {"hokkaido": 0.092, "talakmau": 0.062}
PAPER_PAIR = ("hokkaido", "talakmau")
# The paper's claims, as paired differences (A - B) on the same chips.
COMPARISONS = (
    ("sar_dem", "sar", "DEM, no augmentation"),
    ("sar_dem_aug", "sar_aug", "DEM, with augmentation"),
    ("sar_aug", "sar", "augmentation, SAR"),
    ("sar_dem_aug", "sar_dem", "augmentation, SAR & DEM"),
)
FIRST_SEED = 42  # the configs' seed_everything: seed 42 is the published run's
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


# -- runs ------------------------------------------------------------------------------


@dataclass(frozen=True)
class EvaluationSpec:
    """``validate`` or ``test`` of a run's best checkpoint on one region."""

    command: str
    region: str

    @property
    def key(self) -> str:
        return f"{'val' if self.command == 'validate' else 'test'}_{self.region}"


@dataclass(frozen=True)
class RunSpec:
    """One fit and its evaluations, in ``folder`` (relative to the experiment folder)."""

    folder: str
    label: str
    fit_args: tuple[str, ...]
    evaluations: tuple[EvaluationSpec, ...]
    info: dict[str, Any] = field(default_factory=dict, compare=False)


class Runner:
    """Runs :class:`RunSpec` s in order, skipping finished ones and resuming the others.

    Args:
        folder: the experiment folder (``OUTPUT/NAME``).
        evaluation_args: options added to every validate/test command.
    """

    def __init__(self, folder: Path, evaluation_args: Sequence[str] = ()) -> None:
        self.folder = folder
        self.evaluation_args = list(evaluation_args)
        self._started = time.perf_counter()
        self._work_seconds = 0.0
        self._work_done = 0

    def run_all(self, specs: Sequence[RunSpec]) -> list[dict[str, Any]]:
        total = len(specs)
        finished = sum((self.folder / s.folder / "result.json").exists() for s in specs)
        _progress(f"{total} runs in {self.folder}: {finished} finished, {total - finished} to do")
        results = []
        for index, spec in enumerate(specs, 1):
            results.append(self.run_one(spec, index, total, total - index))
        return results

    def run_one(self, spec: RunSpec, index: int, total: int, after: int) -> dict[str, Any]:
        folder = self.folder / spec.folder
        marker = folder / "result.json"
        if marker.exists():
            _progress(f"[{index}/{total}] {spec.label}: finished earlier, skipped")
            return json.loads(marker.read_text())
        started = time.perf_counter()

        def say(step: str) -> None:
            _progress(f"[{index}/{total}] {spec.label}: {step} {self._clock(after + 1)}")

        folder.mkdir(parents=True, exist_ok=True)
        fit_marker = folder / "fit.json"
        with working_directory(folder):
            if not fit_marker.exists():
                self._fit(spec, folder, say)
            fit = json.loads(fit_marker.read_text())
            checkpoint = folder / fit["best_checkpoint"]
            evaluations = {}
            for evaluation in spec.evaluations:
                say(f"{evaluation.command} on {evaluation.region}")
                evaluations[evaluation.key] = self._evaluate(checkpoint, evaluation, folder)
        result = {
            **spec.info,
            "label": spec.label,
            "best_checkpoint": fit["best_checkpoint"],
            "fit_args": list(spec.fit_args),
            "evaluations": evaluations,
            "seconds": round(time.perf_counter() - started + fit.get("seconds", 0.0), 1),
        }
        write_json(marker, result)
        self._work_seconds += time.perf_counter() - started
        self._work_done += 1
        _progress(
            f"[{index}/{total}] {spec.label}: done, "
            + ", ".join(f"{k} AUPRC {v['auprc']:.3f}" for k, v in evaluations.items())
            + f" {self._clock(after)}"
        )
        return result

    def _fit(self, spec: RunSpec, folder: Path, say) -> None:
        from landslide_lit.checkpointing import last_checkpoint
        from landslide_lit.cli import run
        from landslide_lit.encoders import EncoderWeightsError
        from landslide_lit.runs import latest_best_checkpoint

        resume = last_checkpoint(folder) is not None
        say("resuming the fit from last.ckpt" if resume else "fitting")
        started = time.perf_counter()
        args = ["fit", *spec.fit_args, *(["--ckpt_path", "last"] if resume else [])]
        try:
            run(args)
        except EncoderWeightsError as error:
            raise EncoderWeightsError(
                f"{error}\nFinished runs are kept: rerun the same command to continue."
            ) from None
        best = latest_best_checkpoint(folder)
        write_json(
            folder / "fit.json",
            {
                "best_checkpoint": str(best.resolve().relative_to(folder.resolve())),
                "seconds": round(time.perf_counter() - started, 1),
                "resumed": resume,
            },
        )

    def _evaluate(
        self, checkpoint: Path, evaluation: EvaluationSpec, folder: Path
    ) -> dict[str, Any]:
        from landslide_lit.cli import run

        output = folder / "evaluation" / evaluation.key
        (output / "metrics.json").unlink(missing_ok=True)
        run(
            [
                evaluation.command,
                "--ckpt_path",
                str(checkpoint),
                "--region",
                evaluation.region,
                *self.evaluation_args,
                "--trainer.logger",
                "false",
                "--trainer.default_root_dir",
                str(folder),
            ]
        )
        if not (output / "metrics.json").exists():
            raise RuntimeError(
                f"{evaluation.command} on {evaluation.region} wrote no {output}/metrics.json; "
                "is the EvaluationWriter callback among --trainer.callbacks?"
            )
        metrics = json.loads((output / "metrics.json").read_text())
        metrics["folder"] = str(output.relative_to(folder))
        return metrics

    def _clock(self, remaining: int) -> str:
        elapsed = time.perf_counter() - self._started
        text = f"(elapsed {_duration(elapsed)}"
        if self._work_done:
            text += f", ETA {_duration(self._work_seconds / self._work_done * remaining)}"
        return text + ")"


@contextlib.contextmanager
def working_directory(folder: Path) -> Iterator[None]:
    """Run inside ``folder``: fits find and resume their runs relative to it."""
    previous = Path.cwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(previous)


def _progress(line: str) -> None:
    print(f"[landslide-lit] {line}", file=sys.stderr, flush=True)


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


# -- shared command-line handling ---------------------------------------------------------


def _common_parser(prog: str, description: str) -> argparse.ArgumentParser:
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
    return parser


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


def _setup(options: argparse.Namespace, extra: list[str], default_name: str) -> Setup:
    from landslide_lit.cli import option_value, resolve_bundled_configs

    if options.seeds < 1:
        raise ConfigError(f"--seeds {options.seeds}: must be at least 1")
    for arg in extra:
        option = arg.split("=", 1)[0]
        if option in RESERVED:
            raise ConfigError(f"{option} is set by the runner; use {RESERVED[option]}")
    extra = _absolute_paths(resolve_bundled_configs(["fit", *extra])[1:])
    name = options.name or default_name + ("_synthetic" if options.synthetic else "")
    folder = (Path(options.output) / name).resolve()
    weights = option_value(extra, "--model.encoder_weights")
    return Setup(
        folder=folder,
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


def _require_cubes(regions: Sequence[str], setup: Setup) -> None:
    """Every region needs its cube: a missing synthetic one is generated here (only `fit`
    generates, and a transfer evaluates regions its fit did not use); a missing real one
    is one error naming all missing."""
    from landslide_lit.data.cube import existing_cube

    if setup.synthetic:
        from landslide_lit.data.synthetic import write_synthetic_cube

        for region in regions:
            if existing_cube(get_region(region), setup.root, synthetic=True) is None:
                _progress(f"generating a synthetic {region} cube under {setup.root}")
                write_synthetic_cube(region, root=setup.root)
        return

    missing = [
        get_region(r).cube_path(setup.root)
        for r in regions
        if existing_cube(get_region(r), setup.root) is None
    ]
    if missing:
        from landslide_lit.regions import ZENODO_DOI

        raise ConfigError(
            "real datacubes not found: "
            + ", ".join(str(p) for p in missing)
            + f". Download them from Zenodo (DOI {ZENODO_DOI}) and unzip them into "
            f"{setup.root} (or pass --root DIR), or pass --synthetic to run on synthetic "
            "cubes (generated when missing; the tables are then marked synthetic)."
        )


def _fit_args(config: str, setup: Setup, seed: int, train: str, test: str) -> tuple[str, ...]:
    from landslide_lit.cli import resolve_bundled_configs

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


def _check_settings(setup: Setup, settings: dict[str, Any]) -> None:
    """Refuse to mix runs made with other settings into one experiment folder."""
    path = setup.folder / "settings.json"
    if path.exists():
        before = json.loads(path.read_text())
        changed = [k for k in settings if k in before and before[k] != settings[k]]
        if changed:
            details = "; ".join(f"{k}: {before[k]} -> {settings[k]}" for k in changed)
            raise ConfigError(
                f"{setup.folder} holds runs made with other settings ({details}). "
                "Use another --name, or delete that folder to start over."
            )
    write_json(path, settings)


def _pooled(
    results: Sequence[dict[str, Any]],
    key: str,
    folders: Sequence[Path],
    options: argparse.Namespace,
) -> dict[str, Any]:
    """Seeds of one cell: mean +- std, and the chip bootstrap of the seed-mean."""
    metrics = [r["evaluations"][key] for r in results]
    values = [m["auprc"] for m in metrics]
    scores = [
        Scores.load(f / m["folder"] / "scores.npz") for f, m in zip(folders, metrics, strict=True)
    ]
    target = scores[0].target
    for other in scores[1:]:
        if other.target.shape != target.shape or not np.array_equal(other.target, target):
            raise ValueError(f"{key}: the seeds were evaluated on different chips")
    ignore_invalid = bool(metrics[0].get("ignore_invalid"))
    interval = chip_bootstrap(
        [s.probability for s in scores],
        target,
        scores[0].weights(ignore_invalid),
        replicates=options.bootstrap,
        seed=options.bootstrap_seed,
        method=options.bootstrap_method,
    )
    return {
        "mean": float(np.mean(values)),
        "std": float(np.std(values, ddof=1)) if len(values) > 1 else float("nan"),
        "low": interval.low,
        "high": interval.high,
        "per_seed": values,
        "no_skill": metrics[0]["no_skill"],
        "chips": metrics[0]["chips"],
        "pixels": metrics[0]["pixels"],
        "scores": scores,
        "ignore_invalid": ignore_invalid,
    }


def _seeds(setup: Setup) -> str:
    seeds = ", ".join(map(str, setup.seeds))
    return f"{len(setup.seeds)} seed{'s' if len(setup.seeds) > 1 else ''} ({seeds})"


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


def _mean_std(cell: dict[str, Any]) -> str:
    text = _fmt(cell["mean"])
    return text if not np.isfinite(cell["std"]) else f"{text} ± {_fmt(cell['std'])}"


def _interval(cell: dict[str, Any]) -> str:
    if not np.isfinite([cell["low"], cell["high"]]).all():
        return "-"
    return f"[{_fmt(cell['low'])}, {_fmt(cell['high'])}]"


def _banner(synthetic: bool, published: bool = False) -> list[str]:
    if not synthetic:
        return []
    return [
        "> **SYNTHETIC CUBES.** These runs used synthetic datacubes in the real schema, "
        "not Sentinel-1 data: the numbers test the pipeline, they do not reproduce the "
        "paper." + (" The published values are shown for layout only." if published else ""),
        "",
    ]


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with temporary.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _csv_value(v) for k, v in row.items()})
    os.replace(temporary, path)
    return path


def _csv_value(value: Any) -> Any:
    if isinstance(value, float):
        return "" if not np.isfinite(value) else f"{value:.6g}"
    if isinstance(value, (list, tuple)):
        return " ".join(_csv_value(float(v)) if isinstance(v, float) else str(v) for v in value)
    return value


# -- reproduce ------------------------------------------------------------------------------


def reproduce_main(args: list[str]) -> Path:
    """`landslide-lit reproduce`: Table 1 over seeds with chip-bootstrap intervals."""
    parser = _common_parser(
        "landslide-lit reproduce",
        "Reproduce Table 1 of Prapas et al.: the four configs (SAR, SAR & DEM, each with "
        "and without augmentations) over K seeds, trained on one region; AUPRC on its "
        "validation chips (the paper's column) and on the test region's chips, as mean +- "
        "std over seeds with a 95%% chip-bootstrap interval, beside the no-skill baseline "
        "and the published values. Writes OUTPUT/NAME/table.md, table.csv, "
        "differences.csv and figures.",
    )
    parser.add_argument(
        "--configs",
        nargs="+",
        default=list(TABLE1_CONFIGS),
        metavar="CONFIG",
        help=f"configs to run (default: {' '.join(TABLE1_CONFIGS)}; any bundled or YAML file)",
    )
    parser.add_argument("--train-region", "--train_region", default="hokkaido")
    parser.add_argument("--test-region", "--test_region", default="talakmau")
    options, extra = parser.parse_known_args(args)
    for region in (options.train_region, options.test_region):
        get_region(region)  # an unknown name: the registry's error lists the known ones
    train, test = options.train_region, options.test_region
    setup = _setup(options, extra, f"table1_{train}_{test}")
    _require_cubes([train, test], setup)
    configs = [c.removesuffix(".yaml") for c in options.configs]
    _check_settings(
        setup,
        {
            "command": "reproduce",
            "train_region": train,
            "test_region": test,
            "synthetic": setup.synthetic,
            "fit_extra": setup.fit_extra,
        },
    )
    _offline_note(setup)
    evaluations = (EvaluationSpec("validate", train), EvaluationSpec("test", test))
    specs = [
        RunSpec(
            folder=f"{config}/seed_{seed}",
            label=f"{config} seed {seed}",
            fit_args=_fit_args(config, setup, seed, train, test),
            evaluations=evaluations,
            info={"config": config, "seed": seed},
        )
        for config in configs
        for seed in setup.seeds
    ]
    runner = Runner(setup.folder, setup.evaluation_extra)
    results = runner.run_all(specs)
    table = write_table1(setup, options, configs, specs, results, train, test)
    print(table.read_text())
    return table


def _offline_note(setup: Setup) -> None:
    from landslide_lit.cli import option_value

    if option_value(setup.fit_extra, "--model.encoder_weights") is None:
        _progress(
            "the Table 1 configs start from ImageNet encoder weights, downloaded from the "
            "Hugging Face hub (network needed once). Offline, add --model.encoder_weights null "
            "(from scratch, not the published setting) or a local file."
        )


def write_table1(
    setup: Setup,
    options: argparse.Namespace,
    configs: Sequence[str],
    specs: Sequence[RunSpec],
    results: Sequence[dict[str, Any]],
    train: str,
    test: str,
) -> Path:
    """table.md, table.csv, differences.csv, table.png and pr_<column>.png."""
    from landslide_lit import figures

    columns = [("val", train, "validation (train region)"), ("test", test, "test (other region)")]
    if train == test:
        columns[1] = ("test", test, "held-out test (train region)")
    paper = (train, test) == PAPER_PAIR
    cells: dict[tuple[str, str], dict[str, Any]] = {}
    for config in configs:
        chosen = [(s, r) for s, r in zip(specs, results, strict=True) if r["config"] == config]
        folders = [setup.folder / s.folder for s, _ in chosen]
        for prefix, region, _ in columns:
            cells[config, f"{prefix}_{region}"] = _pooled(
                [r for _, r in chosen],
                f"{prefix}_{region}",
                folders,
                options,
            )
    keys = [f"{p}_{r}" for p, r, _ in columns]
    no_skill = {k: cells[configs[0], k]["no_skill"] for k in keys}
    for config in configs:
        for k in keys:
            if abs(cells[config, k]["no_skill"] - no_skill[k]) > 1e-12:
                raise ValueError(f"{k}: the configs were evaluated on different chips")

    def published(config: str, region: str) -> float | None:
        return PAPER_TABLE1.get(config, {}).get(region) if paper else None

    header = ["inputs"]
    align = ["---"]
    for _, region, split in columns:
        header += [f"{region} {split}", "95% CI", "published"]
        align += ["---:", "---", "---:"]
    lines = [
        f"# Table 1 over seeds: train on {train}, test on {test}",
        "",
        *_banner(setup.synthetic, paper),
        f"AUPRC (pixel-level average precision), mean ± std over {_seeds(setup)}. "
        f"95% CI: {METHOD_NAMES[options.bootstrap_method]} interval of the seed-mean AUPRC over "
        f"{options.bootstrap} bootstrap resamples of the chips (drawn jointly for all seeds, "
        f"seed {options.bootstrap_seed}). Published: the paper's single run"
        + ("." if paper else " (only for hokkaido -> talakmau; '-' here)."),
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join(align) + "|",
    ]
    csv_rows = []
    for config in configs:
        row = [INPUTS.get(config, config)]
        for prefix, region, split in columns:
            cell = cells[config, f"{prefix}_{region}"]
            row += [_mean_std(cell), _interval(cell), _fmt(published(config, region))]
            csv_rows.append(
                _csv_row(
                    config,
                    INPUTS.get(config, config),
                    region,
                    split,
                    setup,
                    cell,
                    published(config, region),
                )
            )
        lines.append("| " + " | ".join(row) + " |")
    row = ["no skill"]
    for prefix, region, split in columns:
        k = f"{prefix}_{region}"
        paper_no_skill = PAPER_NO_SKILL.get(region) if paper else None
        row += [_fmt(no_skill[k]), "", _fmt(paper_no_skill)]
        csv_rows.append(
            _csv_row(
                "no_skill",
                "no skill",
                region,
                split,
                setup,
                {
                    **cells[configs[0], k],
                    "mean": no_skill[k],
                    "std": float("nan"),
                    "low": float("nan"),
                    "high": float("nan"),
                    "per_seed": [],
                },
                paper_no_skill,
            )
        )
    lines.append("| " + " | ".join(row) + " |")
    first = cells[configs[0], keys[0]]
    lines += [
        "",
        "Chips: "
        + "; ".join(
            f"{region} {split} {cells[configs[0], f'{p}_{region}']['chips']} chips, "
            f"{cells[configs[0], f'{p}_{region}']['pixels']:,} px"
            for p, region, split in columns
        )
        + (
            ". Pixels without SAR data left out (ignore_invalid)."
            if first["ignore_invalid"]
            else ". Pixels without SAR data count as background, as published."
        ),
    ]
    data = (
        f"synthetic cubes under {setup.root / 'synthetic'}"
        if setup.synthetic
        else f"real cubes under {setup.root}"
    )
    differences = _differences(cells, configs, columns, options)
    if differences:
        lines += [
            "",
            "## Differences (paired: both configs on the same resampled chips)",
            "",
            "Seed-mean AUPRC of A minus B with a 95% paired chip-bootstrap "
            f"{METHOD_NAMES[options.bootstrap_method]} interval; an "
            "interval excluding 0 is a difference these chips support. Seed-to-seed "
            "variation enters through the seed means only: with few seeds, read the ± std "
            "above too.",
            "",
            "| effect (A - B) | " + " | ".join(f"{r} {s}" for _, r, s in columns) + " |",
            "|---|" + "---:|" * len(columns),
        ]
        for label, a, b, values in differences:
            text = [
                f"{v[0]:+.3f} [{v[1]:+.3f}, {v[2]:+.3f}]" + (" *" if v[1] > 0 or v[2] < 0 else "")
                for v in values
            ]
            lines.append(
                f"| {label} ({INPUTS.get(a, a)} - {INPUTS.get(b, b)}) | " + " | ".join(text) + " |"
            )
        lines += ["", "\\* the interval excludes 0."]
    lines += [
        "",
        f"Runs: `{setup.folder}/<config>/seed_<seed>/` (checkpoints, logs, per-region "
        "metrics.json, PR curves, panels, scores.npz). Encoder weights: "
        f"{setup.encoder_weights}. Extra options: `{' '.join(setup.fit_extra) or 'none'}`.",
        f"Data: {data}.",
        "",
    ]
    folder = setup.folder
    table = folder / "table.md"
    temporary = table.with_name(".table.md.tmp")
    temporary.write_text("\n".join(lines))
    os.replace(temporary, table)
    _write_csv(folder / "table.csv", csv_rows)
    if differences:
        _write_csv(
            folder / "differences.csv",
            [
                {
                    "effect": label,
                    "a": a,
                    "b": b,
                    "region": region,
                    "split": split,
                    "difference": v[0],
                    "ci95_low": v[1],
                    "ci95_high": v[2],
                    "synthetic": setup.synthetic,
                }
                for label, a, b, values in differences
                for (_, region, split), v in zip(columns, values, strict=True)
            ],
        )
    groups = [f"{region} {split.split(' (')[0]}" for _, region, split in columns]
    bars = {
        (INPUTS.get(config, config), group): {
            **{k: cells[config, key][k] for k in ("mean", "low", "high", "per_seed")},
            "paper": published(config, region),
        }
        for config in configs
        for group, key, (_, region, _) in zip(groups, keys, columns, strict=True)
    }
    figures.plot_table_bars(
        groups,
        [INPUTS.get(c, c) for c in configs],
        bars,
        dict(zip(groups, (no_skill[k] for k in keys), strict=True)),
        folder / "table.png",
        title=f"Table 1 over {len(setup.seeds)} seeds: train {train}, test {test}",
        banner="SYNTHETIC CUBES" if setup.synthetic else None,
    )
    for group, key in zip(groups, keys, strict=True):
        curves, baselines = {}, {}
        for config in configs:
            cell = cells[config, key]
            scores = cell["scores"][0]
            precision, recall, _ = precision_recall_points(
                scores.probability, scores.target, scores.weights(cell["ignore_invalid"])
            )
            label = f"{INPUTS.get(config, config)} (seed {setup.seeds[0]})"
            curves[label] = (precision, recall, cell["per_seed"][0], None)
        baselines[next(iter(curves))] = no_skill[key]
        figures.plot_pr_curves(
            curves,
            baselines,
            folder / f"pr_{key}.png",
            title=f"{group}" + (" (SYNTHETIC)" if setup.synthetic else ""),
        )
    _progress(f"wrote {table}, table.csv and figures in {folder}")
    return table


def _csv_row(config, inputs, region, split, setup, cell, paper) -> dict[str, Any]:
    return {
        "config": config,
        "inputs": inputs,
        "region": region,
        "split": split,
        "n_seeds": len(cell["per_seed"]),
        "seeds": " ".join(map(str, setup.seeds)) if cell["per_seed"] else "",
        "auprc_mean": cell["mean"],
        "auprc_std": cell["std"],
        "ci95_low": cell["low"],
        "ci95_high": cell["high"],
        "auprc_per_seed": list(cell["per_seed"]),
        "no_skill": cell["no_skill"],
        "paper_auprc": paper if paper is not None else float("nan"),
        "chips": cell["chips"],
        "pixels": cell["pixels"],
        "synthetic": setup.synthetic,
    }


def _differences(cells, configs, columns, options) -> list[tuple[str, str, str, list]]:
    out = []
    for a, b, label in COMPARISONS:
        if a not in configs or b not in configs:
            continue
        values = []
        for prefix, region, _ in columns:
            key = f"{prefix}_{region}"
            ca, cb = cells[a, key], cells[b, key]
            values.append(
                paired_difference(
                    [s.probability for s in ca["scores"]],
                    [s.probability for s in cb["scores"]],
                    ca["scores"][0].target,
                    ca["scores"][0].weights(ca["ignore_invalid"]),
                    replicates=options.bootstrap,
                    seed=options.bootstrap_seed,
                    method=options.bootstrap_method,
                )
            )
        out.append((label, a, b, values))
    return out


# -- transfer ---------------------------------------------------------------------------


def transfer_main(args: list[str]) -> Path:
    """`landslide-lit transfer`: train on each region, test on every region."""
    parser = _common_parser(
        "landslide-lit transfer",
        "Cross-region transfer: train one config on each region and test it on every "
        "region (the diagonal is the train region's held-out test split). Writes "
        "OUTPUT/NAME/matrix.md, matrix.csv and matrix.png (AUPRC / no skill).",
    )
    parser.add_argument(
        "--regions",
        nargs="+",
        default=None,
        metavar="REGION",
        help="regions (default: every built-in region whose cube is present; with "
        f"--synthetic all of {', '.join(REGIONS)})",
    )
    parser.add_argument(
        "--config",
        dest="transfer_config",
        default="sar_aug",
        help="config trained on each region (default sar_aug: SAR (AUG), the paper's best "
        "transfer)",
    )
    options, extra = parser.parse_known_args(args)
    setup = _setup(options, extra, "transfer")
    if options.regions is None:
        regions = list(REGIONS)
        if not setup.synthetic:
            from landslide_lit.data.cube import existing_cube

            present = [r for r in regions if existing_cube(get_region(r), setup.root)]
            regions = present if len(present) >= 2 else regions
            if len(present) >= 2 and len(present) < len(REGIONS):
                _progress(f"regions with a cube under {setup.root}: {', '.join(present)}")
    else:
        regions = list(dict.fromkeys(options.regions))
        for region in regions:
            get_region(region)
    _require_cubes(regions, setup)
    config = options.transfer_config.removesuffix(".yaml")
    _check_settings(
        setup,
        {
            "command": "transfer",
            "config": config,
            "synthetic": setup.synthetic,
            "fit_extra": setup.fit_extra,
        },
    )
    _offline_note(setup)
    specs = [
        RunSpec(
            folder=f"train_{train}/seed_{seed}",
            label=f"train {train} seed {seed}",
            fit_args=_fit_args(config, setup, seed, train, train),
            evaluations=tuple(EvaluationSpec("test", test) for test in regions),
            info={"train_region": train, "seed": seed, "config": config},
        )
        for train in regions
        for seed in setup.seeds
    ]
    runner = Runner(setup.folder, setup.evaluation_extra)
    results = runner.run_all(specs)
    table = write_transfer(setup, options, config, regions, specs, results)
    print(table.read_text())
    return table


def write_transfer(
    setup: Setup,
    options: argparse.Namespace,
    config: str,
    regions: Sequence[str],
    specs: Sequence[RunSpec],
    results: Sequence[dict[str, Any]],
) -> Path:
    """matrix.md, matrix.csv and matrix.png."""
    from landslide_lit import figures

    cells = {}
    for train in regions:
        chosen = [(s, r) for s, r in zip(specs, results, strict=True) if r["train_region"] == train]
        folders = [setup.folder / s.folder for s, _ in chosen]
        for test in regions:
            cells[train, test] = _pooled(
                [r for _, r in chosen],
                f"test_{test}",
                folders,
                options,
            )
    # a test region's whole-region no skill: from any model trained elsewhere
    region_no_skill = {
        test: next((cells[t, test]["no_skill"] for t in regions if t != test), float("nan"))
        for test in regions
    }
    lines = [
        f"# Cross-region transfer: {INPUTS.get(config, config)} ({config})",
        "",
        *_banner(setup.synthetic),
        f"Rows: train region; columns: test region. AUPRC mean ± std over {_seeds(setup)}, "
        f"95% chip-bootstrap {METHOD_NAMES[options.bootstrap_method]} "
        f"interval of the seed-mean ({options.bootstrap} replicates), and AUPRC / no skill "
        "of that test set. Off the diagonal the test set is every positive chip of the test "
        "region; on the diagonal (bold) it is the train region's held-out test split, "
        "whose no-skill rate differs a little.",
        "",
        "| train \\ test | " + " | ".join(regions) + " |",
        "|---|" + "---:|" * len(regions),
    ]
    csv_rows = []
    for train in regions:
        row = [train]
        for test in regions:
            cell = cells[train, test]
            lift = cell["mean"] / cell["no_skill"] if cell["no_skill"] else float("nan")
            text = f"{_mean_std(cell)} {_interval(cell)} {lift:.1f}x"
            row.append(f"**{text}**" if train == test else text)
            csv_rows.append(
                {
                    "config": config,
                    "train_region": train,
                    "test_region": test,
                    "split": "held-out test" if train == test else "all chips",
                    "n_seeds": len(cell["per_seed"]),
                    "seeds": " ".join(map(str, setup.seeds)),
                    "auprc_mean": cell["mean"],
                    "auprc_std": cell["std"],
                    "ci95_low": cell["low"],
                    "ci95_high": cell["high"],
                    "auprc_per_seed": list(cell["per_seed"]),
                    "no_skill": cell["no_skill"],
                    "auprc_over_no_skill": lift,
                    "chips": cell["chips"],
                    "pixels": cell["pixels"],
                    "synthetic": setup.synthetic,
                }
            )
        lines.append("| " + " | ".join(row) + " |")
    lines.append(
        "| no skill (all chips) | " + " | ".join(_fmt(region_no_skill[t]) for t in regions) + " |"
    )
    lines += [
        "",
        "Chips per test set: "
        + "; ".join(
            f"{test} {cells[regions[(i + 1) % len(regions)], test]['chips']} "
            f"(held-out {cells[test, test]['chips']})"
            for i, test in enumerate(regions)
        )
        + ".",
        f"Runs: `{setup.folder}/train_<region>/seed_<seed>/`. Encoder weights: "
        f"{setup.encoder_weights}. Extra options: `{' '.join(setup.fit_extra) or 'none'}`.",
        "",
    ]
    folder = setup.folder
    table = folder / "matrix.md"
    temporary = table.with_name(".matrix.md.tmp")
    temporary.write_text("\n".join(lines))
    os.replace(temporary, table)
    _write_csv(folder / "matrix.csv", csv_rows)
    figures.plot_transfer_heatmap(
        regions,
        regions,
        cells,
        folder / "matrix.png",
        title=f"Transfer, {INPUTS.get(config, config)}: AUPRC"
        + (" ± std" if len(setup.seeds) > 1 else "")
        + ", x no skill"
        + (" (SYNTHETIC CUBES)" if setup.synthetic else ""),
    )
    _progress(f"wrote {table}, matrix.csv and matrix.png in {folder}")
    return table
