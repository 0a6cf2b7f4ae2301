"""Table 1's files from the runs' results: table.md, table.csv, differences.csv, figures.

:func:`table_cells` pools each (config, column) into a
:class:`~landslide_lit.experiments.cells.Cell`; a :class:`Table1` holds them, and each
part of the write-up (a row, the CSV rows, the paired differences, the figures) is a
function of it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from landslide_lit import figures
from landslide_lit.bootstrap import paired_difference
from landslide_lit.experiments.cells import Bootstrap, Cell, fmt, pool_cell
from landslide_lit.experiments.paper import COMPARISONS, PAPER_NO_SKILL, PAPER_PAIR, PAPER_TABLE1
from landslide_lit.experiments.runner import RunSpec
from landslide_lit.experiments.study import Setup, banner, inputs, seeds_text
from landslide_lit.precision import precision_recall_points

__all__ = [
    "Column",
    "Difference",
    "Table1",
    "columns",
    "config_row",
    "csv_rows",
    "difference_text",
    "differences",
    "differences_rows",
    "differences_section",
    "draw_figures",
    "markdown",
    "no_skill_row",
    "table_cells",
]


class Column(NamedTuple):
    """One evaluation of the table: its key prefix, its region and how its split is named."""

    prefix: str
    region: str
    split: str

    @property
    def key(self) -> str:
        """The evaluation's key in the runs' results (``val_hokkaido``)."""
        return f"{self.prefix}_{self.region}"

    @property
    def group(self) -> str:
        """The column in the figures (``hokkaido validation``)."""
        return f"{self.region} {self.split.split(' (')[0]}"


def columns(train: str, test: str) -> tuple[Column, Column]:
    """The train region's validation chips, then the test region's test chips."""
    split = "held-out test (train region)" if train == test else "test (other region)"
    return Column("val", train, "validation (train region)"), Column("test", test, split)


@dataclass(frozen=True)
class Difference:
    """A paired difference A - B: (difference, low, high) per column."""

    label: str
    a: str
    b: str
    values: tuple[tuple[float, float, float], ...]


@dataclass(frozen=True)
class Table1:
    """The pooled cells of every (config, column) and what the table says about them."""

    setup: Setup
    bootstrap: Bootstrap
    configs: tuple[str, ...]
    columns: tuple[Column, ...]
    cells: dict[tuple[str, str], Cell]
    train: str
    test: str

    @property
    def paper(self) -> bool:
        """Whether the paper has this table (its train and test regions)."""
        return (self.train, self.test) == PAPER_PAIR

    def published(self, config: str, region: str) -> float | None:
        return PAPER_TABLE1.get(config, {}).get(region) if self.paper else None

    def paper_no_skill(self, region: str) -> float | None:
        return PAPER_NO_SKILL.get(region) if self.paper else None

    def reference(self, column: Column) -> Cell:
        """The first config's cell of ``column``: chips and no skill are every config's."""
        return self.cells[self.configs[0], column.key]


def table_cells(
    setup: Setup,
    bootstrap: Bootstrap,
    configs: Sequence[str],
    table_columns: Sequence[Column],
    specs: Sequence[RunSpec],
    results: Sequence[dict[str, Any]],
) -> dict[tuple[str, str], Cell]:
    """Pool the seeds of each (config, column).

    Raises:
        ValueError: seeds or configs were evaluated on different chips.
    """
    cells = {}
    for config in configs:
        chosen = [(s, r) for s, r in zip(specs, results, strict=True) if r["config"] == config]
        folders = [setup.folder / s.folder for s, _ in chosen]
        for column in table_columns:
            key = column.key
            cells[config, key] = pool_cell([r for _, r in chosen], key, folders, bootstrap)
    for column in table_columns:
        no_skill = cells[configs[0], column.key].no_skill
        if any(abs(cells[c, column.key].no_skill - no_skill) > 1e-12 for c in configs):
            raise ValueError(f"{column.key}: the configs were evaluated on different chips")
    return cells


def markdown_row(texts: Sequence[str]) -> str:
    return "| " + " | ".join(texts) + " |"


def config_row(table: Table1, config: str) -> str:
    """A config's row: per column mean ± std, interval and published value."""
    texts = [inputs(config)]
    for column in table.columns:
        cell = table.cells[config, column.key]
        texts += [cell.mean_std(), cell.interval(), fmt(table.published(config, column.region))]
    return markdown_row(texts)


def no_skill_row(table: Table1) -> str:
    texts = ["no skill"]
    for column in table.columns:
        paper = table.paper_no_skill(column.region)
        texts += [fmt(table.reference(column).no_skill), "", fmt(paper)]
    return markdown_row(texts)


def _head(table: Table1) -> list[str]:
    header, align = ["inputs"], ["---"]
    for column in table.columns:
        header += [f"{column.region} {column.split}", "95% CI", "published"]
        align += ["---:", "---", "---:"]
    bootstrap = table.bootstrap
    return [
        f"# Table 1 over seeds: train on {table.train}, test on {table.test}",
        "",
        *banner(table.setup.synthetic, table.paper),
        f"AUPRC (pixel-level average precision), mean ± std over {seeds_text(table.setup)}. "
        f"95% CI: {bootstrap.method_name} interval of the seed-mean AUPRC over "
        f"{bootstrap.replicates} bootstrap resamples of the chips (drawn jointly for all "
        f"seeds, seed {bootstrap.seed}). Published: the paper's single run"
        + ("." if table.paper else " (only for hokkaido -> talakmau; '-' here)."),
        "",
        markdown_row(header),
        "|" + "|".join(align) + "|",
    ]


def _chips(table: Table1) -> str:
    sizes = "; ".join(
        f"{c.region} {c.split} {table.reference(c).chips} chips, {table.reference(c).pixels:,} px"
        for c in table.columns
    )
    if table.reference(table.columns[0]).ignore_invalid:
        return f"Chips: {sizes}. Pixels without SAR data left out (ignore_invalid)."
    return f"Chips: {sizes}. Pixels without SAR data count as background, as published."


def _foot(setup: Setup) -> list[str]:
    data = (
        f"synthetic cubes under {setup.root / 'synthetic'}"
        if setup.synthetic
        else f"real cubes under {setup.root}"
    )
    return [
        "",
        f"Runs: `{setup.folder}/<config>/seed_<seed>/` (checkpoints, logs, per-region "
        "metrics.json, PR curves, panels, scores.npz). Encoder weights: "
        f"{setup.encoder_weights}. Extra options: `{' '.join(setup.fit_extra) or 'none'}`.",
        f"Data: {data}.",
        "",
    ]


def markdown(table: Table1, differences: Sequence[Difference]) -> str:
    """table.md."""
    lines = [*_head(table), *(config_row(table, c) for c in table.configs), no_skill_row(table)]
    lines += ["", _chips(table), *differences_section(table, differences), *_foot(table.setup)]
    return "\n".join(lines)


def csv_row(
    table: Table1, config: str, label: str, column: Column, cell: Cell, paper: float | None
) -> dict[str, Any]:
    """A row of table.csv."""
    return {
        "config": config,
        "inputs": label,
        "region": column.region,
        "split": column.split,
        **cell.csv_columns(table.setup.seeds),
        "paper_auprc": paper if paper is not None else float("nan"),
        "chips": cell.chips,
        "pixels": cell.pixels,
        "synthetic": table.setup.synthetic,
    }


def csv_rows(table: Table1) -> list[dict[str, Any]]:
    """table.csv: every (config, column), then the no-skill rows."""
    rows = [
        csv_row(
            table,
            config,
            inputs(config),
            column,
            table.cells[config, column.key],
            table.published(config, column.region),
        )
        for config in table.configs
        for column in table.columns
    ]
    for column in table.columns:
        cell, paper = table.reference(column).no_skill_cell(), table.paper_no_skill(column.region)
        rows.append(csv_row(table, "no_skill", "no skill", column, cell, paper))
    return rows


def differences(table: Table1) -> list[Difference]:
    """The paired differences of :data:`COMPARISONS` whose configs both ran."""
    out = []
    for a, b, label in COMPARISONS:
        if a not in table.configs or b not in table.configs:
            continue
        values = []
        for column in table.columns:
            cell_a, cell_b = table.cells[a, column.key], table.cells[b, column.key]
            values.append(
                paired_difference(
                    [s.probability for s in cell_a.scores],
                    [s.probability for s in cell_b.scores],
                    cell_a.scores[0].target,
                    cell_a.weights(),
                    **table.bootstrap.options(),
                )
            )
        out.append(Difference(label, a, b, tuple(values)))
    return out


def difference_text(value: tuple[float, float, float]) -> str:
    """``+0.012 [-0.003, +0.027]``, starred when the interval excludes 0."""
    difference, low, high = value
    star = " *" if low > 0 or high < 0 else ""
    return f"{difference:+.3f} [{low:+.3f}, {high:+.3f}]{star}"


def differences_section(table: Table1, differences: Sequence[Difference]) -> list[str]:
    """The markdown section of the paired differences (none without differences)."""
    if not differences:
        return []
    lines = [
        "",
        "## Differences (paired: both configs on the same resampled chips)",
        "",
        "Seed-mean AUPRC of A minus B with a 95% paired chip-bootstrap "
        f"{table.bootstrap.method_name} interval; an "
        "interval excluding 0 is a difference these chips support. Seed-to-seed "
        "variation enters through the seed means only: with few seeds, read the ± std "
        "above too.",
        "",
        "| effect (A - B) | " + " | ".join(f"{c.region} {c.split}" for c in table.columns) + " |",
        "|---|" + "---:|" * len(table.columns),
    ]
    for d in differences:
        effect = f"{d.label} ({inputs(d.a)} - {inputs(d.b)})"
        lines.append(markdown_row([effect, *map(difference_text, d.values)]))
    return [*lines, "", "\\* the interval excludes 0."]


def differences_rows(table: Table1, differences: Sequence[Difference]) -> list[dict[str, Any]]:
    """differences.csv: one row per (comparison, column)."""
    return [
        {
            "effect": d.label,
            "a": d.a,
            "b": d.b,
            "region": column.region,
            "split": column.split,
            "difference": value[0],
            "ci95_low": value[1],
            "ci95_high": value[2],
            "synthetic": table.setup.synthetic,
        }
        for d in differences
        for column, value in zip(table.columns, d.values, strict=True)
    ]


def _bar(table: Table1, config: str, column: Column) -> dict[str, Any]:
    """A bar of table.png: the cell's seed-mean, interval and seeds, and the paper's value."""
    cell = table.cells[config, column.key]
    return {
        "mean": cell.mean,
        "low": cell.low,
        "high": cell.high,
        "per_seed": list(cell.per_seed),
        "paper": table.published(config, column.region),
    }


def draw_figures(table: Table1) -> None:
    """table.png (bars with intervals) and pr_<column>.png (each config's first seed)."""
    setup, groups = table.setup, [c.group for c in table.columns]
    bars = {
        (inputs(config), column.group): _bar(table, config, column)
        for config in table.configs
        for column in table.columns
    }
    figures.plot_table_bars(
        groups,
        [inputs(c) for c in table.configs],
        bars,
        {c.group: table.reference(c).no_skill for c in table.columns},
        setup.folder / "table.png",
        title=f"Table 1 over {len(setup.seeds)} seeds: train {table.train}, test {table.test}",
        banner="SYNTHETIC CUBES" if setup.synthetic else None,
    )
    for column in table.columns:
        curves = {}
        for config in table.configs:
            cell = table.cells[config, column.key]
            scores = cell.scores[0]
            precision, recall, _ = precision_recall_points(
                scores.probability, scores.target, cell.weights()
            )
            label = f"{inputs(config)} (seed {setup.seeds[0]})"
            curves[label] = (precision, recall, cell.per_seed[0], None)
        figures.plot_pr_curves(
            curves,
            {next(iter(curves)): table.reference(column).no_skill},
            setup.folder / f"pr_{column.key}.png",
            title=column.group + (" (SYNTHETIC)" if setup.synthetic else ""),
        )
