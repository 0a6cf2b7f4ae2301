"""`landslide-lit reproduce`: Table 1 of Prapas et al. over seeds, with chip-bootstrap intervals.

The four configs (SAR, SAR & DEM, each with and without augmentations) are trained for K
seeds on one region (one run per (config, seed), in ``OUTPUT/NAME/<config>/seed_<seed>/``,
see :mod:`~landslide_lit.experiments.runner`) and scored on the train region's validation
chips (the paper's column) and on the test region's chips. The tables pool the seeds into
:class:`~landslide_lit.experiments.cells.Cell` s and compare configs by paired differences.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from landslide_lit.atomic import write_text_atomically
from landslide_lit.experiments.cells import Bootstrap, write_csv
from landslide_lit.experiments.paper import TABLE1_CONFIGS
from landslide_lit.experiments.runner import EvaluationSpec, RunSpec, progress
from landslide_lit.experiments.study import (
    Setup,
    common_parser,
    fit_args,
    run_grid,
    setup_study,
)
from landslide_lit.experiments.table1_report import (
    Table1,
    columns,
    csv_rows,
    differences,
    differences_rows,
    draw_figures,
    markdown,
    table_cells,
)
from landslide_lit.regions import get_region

__all__ = ["grid", "main", "write_table1"]


def main(args: list[str]) -> Path | None:
    """`landslide-lit reproduce`; the table written (None with ``--only`` or ``--list``)."""
    options, extra = _parser().parse_known_args(args)
    for region in (options.train_region, options.test_region):
        get_region(region)  # an unknown name: the registry's error lists the known ones
    train, test = options.train_region, options.test_region
    setup = setup_study(options, extra, f"table1_{train}_{test}")
    configs = [c.removesuffix(".yaml") for c in options.configs]

    settings = {"command": "reproduce", "train_region": train, "test_region": test}
    ran = run_grid(
        setup, options, lambda: grid(configs, setup, train, test), [train, test], settings
    )
    if ran is None:
        return None
    bootstrap = Bootstrap.from_options(options)
    table = write_table1(setup, bootstrap, configs, *ran, train, test)
    print(table.read_text())
    return table


def _parser() -> argparse.ArgumentParser:
    parser = common_parser(
        "landslide-lit reproduce",
        "Reproduce Table 1 of Prapas et al.: the four configs (SAR, SAR & DEM, each with "
        "and without augmentations) over K seeds, trained on one region; AUPRC on its "
        "validation chips (the paper's column) and on the test region's chips, as mean +- "
        "std over seeds with a 95 % chip-bootstrap interval, beside the no-skill baseline "
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
    return parser


def grid(configs: Sequence[str], setup: Setup, train: str, test: str) -> list[RunSpec]:
    """The runs, config by config and seed by seed (the order ``--only K`` counts in)."""
    evaluations = (EvaluationSpec("validate", train), EvaluationSpec("test", test))
    return [
        RunSpec(
            folder=f"{config}/seed_{seed}",
            label=f"{config} seed {seed}",
            fit_args=fit_args(config, setup, seed, train, test),
            evaluations=evaluations,
            info={"config": config, "seed": seed},
        )
        for config in configs
        for seed in setup.seeds
    ]


def write_table1(
    setup: Setup,
    bootstrap: Bootstrap,
    configs: Sequence[str],
    specs: Sequence[RunSpec],
    results: Sequence[dict[str, Any]],
    train: str,
    test: str,
) -> Path:
    """table.md, table.csv, differences.csv, table.png and pr_<column>.png; table.md."""
    table_columns = columns(train, test)
    cells = table_cells(setup, bootstrap, configs, table_columns, specs, results)
    table = Table1(setup, bootstrap, tuple(configs), table_columns, cells, train, test)
    found = differences(table)
    path = write_text_atomically(setup.folder / "table.md", markdown(table, found))
    write_csv(setup.folder / "table.csv", csv_rows(table))
    if found:
        write_csv(setup.folder / "differences.csv", differences_rows(table, found))
    draw_figures(table)
    progress(f"wrote {path}, table.csv and figures in {setup.folder}")
    return path
