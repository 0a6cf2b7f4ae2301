"""`landslide-lit transfer`: train one config on each region, test it on every region.

One run per (train region, seed), in ``OUTPUT/NAME/train_<region>/seed_<seed>/`` (see
:mod:`~landslide_lit.experiments.runner`), tested on every region: off the diagonal on all
positive chips of the test region, on the diagonal on the train region's held-out test
split. Writes ``matrix.md``, ``matrix.csv`` and ``matrix.png`` (AUPRC / no skill).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from landslide_lit import figures
from landslide_lit.atomic import write_text_atomically
from landslide_lit.data.cube import existing_cube
from landslide_lit.experiments.cells import Bootstrap, Cell, fmt, pool_cell, write_csv
from landslide_lit.experiments.runner import EvaluationSpec, RunSpec, progress
from landslide_lit.experiments.study import (
    Setup,
    banner,
    common_parser,
    fit_args,
    inputs,
    run_grid,
    seeds_text,
    setup_study,
)
from landslide_lit.regions import REGIONS, get_region

__all__ = ["Matrix", "grid", "main", "matrix_cells", "write_transfer"]


def main(args: list[str]) -> Path | None:
    """`landslide-lit transfer`; the matrix written (None with ``--only`` or ``--list``)."""
    options, extra = _parser().parse_known_args(args)
    setup = setup_study(options, extra, "transfer")
    regions = _regions(options.regions, setup)
    config = options.transfer_config.removesuffix(".yaml")

    settings = {"command": "transfer", "config": config}
    ran = run_grid(setup, options, lambda: grid(config, setup, regions), regions, settings)
    if ran is None:
        return None
    bootstrap = Bootstrap.from_options(options)
    table = write_transfer(setup, bootstrap, config, regions, *ran)
    print(table.read_text())
    return table


def _parser() -> argparse.ArgumentParser:
    parser = common_parser(
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
    return parser


def _regions(chosen: Sequence[str] | None, setup: Setup) -> list[str]:
    """``--regions`` (checked, once each), else those with a real cube (all when < 2)."""
    if chosen is not None:
        regions = list(dict.fromkeys(chosen))
        for region in regions:
            get_region(region)
        return regions
    if setup.synthetic:
        return list(REGIONS)
    present = [r for r in REGIONS if existing_cube(get_region(r), setup.root)]
    if len(present) < 2:
        return list(REGIONS)
    if len(present) < len(REGIONS):
        progress(f"regions with a cube under {setup.root}: {', '.join(present)}")
    return present


def grid(config: str, setup: Setup, regions: Sequence[str]) -> list[RunSpec]:
    """The runs, train region by train region and seed by seed (as ``--only K`` counts)."""
    return [
        RunSpec(
            folder=f"train_{train}/seed_{seed}",
            label=f"train {train} seed {seed}",
            fit_args=fit_args(config, setup, seed, train, train),
            evaluations=tuple(EvaluationSpec("test", test) for test in regions),
            info={"train_region": train, "seed": seed, "config": config},
        )
        for train in regions
        for seed in setup.seeds
    ]


@dataclass(frozen=True)
class Matrix:
    """The pooled cells of every (train region, test region)."""

    setup: Setup
    bootstrap: Bootstrap
    config: str
    regions: tuple[str, ...]
    cells: dict[tuple[str, str], Cell]

    def region_no_skill(self, test: str) -> float:
        """A test region's whole-region no skill: from any model trained elsewhere."""
        others = (self.cells[t, test].no_skill for t in self.regions if t != test)
        return next(others, float("nan"))


def matrix_cells(
    setup: Setup,
    bootstrap: Bootstrap,
    regions: Sequence[str],
    specs: Sequence[RunSpec],
    results: Sequence[dict[str, Any]],
) -> dict[tuple[str, str], Cell]:
    """Pool the seeds of each (train region, test region)."""
    cells = {}
    for train in regions:
        chosen = [(s, r) for s, r in zip(specs, results, strict=True) if r["train_region"] == train]
        folders = [setup.folder / s.folder for s, _ in chosen]
        for test in regions:
            key = f"test_{test}"
            cells[train, test] = pool_cell([r for _, r in chosen], key, folders, bootstrap)
    return cells


def cell_text(cell: Cell, diagonal: bool) -> str:
    """``0.456 ± 0.010 [0.400, 0.500] 5.1x``, bold on the diagonal."""
    text = f"{cell.mean_std()} {cell.interval()} {cell.lift:.1f}x"
    return f"**{text}**" if diagonal else text


def markdown(matrix: Matrix) -> str:
    """matrix.md."""
    setup, regions, config = matrix.setup, matrix.regions, matrix.config
    lines = [
        f"# Cross-region transfer: {inputs(config)} ({config})",
        "",
        *banner(setup.synthetic),
        f"Rows: train region; columns: test region. AUPRC mean ± std over {seeds_text(setup)}, "
        f"95% chip-bootstrap {matrix.bootstrap.method_name} "
        f"interval of the seed-mean ({matrix.bootstrap.replicates} replicates), and AUPRC / "
        "no skill of that test set. Off the diagonal the test set is every positive chip of "
        "the test region; on the diagonal (bold) it is the train region's held-out test "
        "split, whose no-skill rate differs a little.",
        "",
        "| train \\ test | " + " | ".join(regions) + " |",
        "|---|" + "---:|" * len(regions),
    ]
    for train in regions:
        texts = [cell_text(matrix.cells[train, test], train == test) for test in regions]
        lines.append("| " + " | ".join([train, *texts]) + " |")
    no_skill = [fmt(matrix.region_no_skill(t)) for t in regions]
    lines.append("| no skill (all chips) | " + " | ".join(no_skill) + " |")
    chips = "; ".join(
        f"{test} {matrix.cells[regions[(i + 1) % len(regions)], test].chips} "
        f"(held-out {matrix.cells[test, test].chips})"
        for i, test in enumerate(regions)
    )
    return "\n".join(
        [
            *lines,
            "",
            f"Chips per test set: {chips}.",
            f"Runs: `{setup.folder}/train_<region>/seed_<seed>/`. Encoder weights: "
            f"{setup.encoder_weights}. Extra options: `{' '.join(setup.fit_extra) or 'none'}`.",
            "",
        ]
    )


def csv_row(matrix: Matrix, train: str, test: str) -> dict[str, Any]:
    """A row of matrix.csv."""
    cell = matrix.cells[train, test]
    return {
        "config": matrix.config,
        "train_region": train,
        "test_region": test,
        "split": "held-out test" if train == test else "all chips",
        **cell.csv_columns(matrix.setup.seeds),
        "auprc_over_no_skill": cell.lift,
        "chips": cell.chips,
        "pixels": cell.pixels,
        "synthetic": matrix.setup.synthetic,
    }


def csv_rows(matrix: Matrix) -> list[dict[str, Any]]:
    """matrix.csv: one row per (train region, test region)."""
    return [csv_row(matrix, train, test) for train in matrix.regions for test in matrix.regions]


def draw_figure(matrix: Matrix) -> None:
    """matrix.png: AUPRC (± std) and AUPRC / no skill per cell."""
    setup, label = matrix.setup, inputs(matrix.config)
    figures.plot_transfer_heatmap(
        list(matrix.regions),
        list(matrix.regions),
        {pair: cell.summary() for pair, cell in matrix.cells.items()},
        setup.folder / "matrix.png",
        title=f"Transfer, {label}: AUPRC"
        + (" ± std" if len(setup.seeds) > 1 else "")
        + ", x no skill"
        + (" (SYNTHETIC CUBES)" if setup.synthetic else ""),
    )


def write_transfer(
    setup: Setup,
    bootstrap: Bootstrap,
    config: str,
    regions: Sequence[str],
    specs: Sequence[RunSpec],
    results: Sequence[dict[str, Any]],
) -> Path:
    """matrix.md, matrix.csv and matrix.png; matrix.md."""
    cells = matrix_cells(setup, bootstrap, regions, specs, results)
    matrix = Matrix(setup, bootstrap, config, tuple(regions), cells)
    path = write_text_atomically(setup.folder / "matrix.md", markdown(matrix))
    write_csv(setup.folder / "matrix.csv", csv_rows(matrix))
    draw_figure(matrix)
    progress(f"wrote {path}, matrix.csv and matrix.png in {setup.folder}")
    return path
