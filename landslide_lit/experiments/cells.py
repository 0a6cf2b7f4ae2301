"""Typed table cells: the seeds of one (config or train region, evaluation) pooled.

A :class:`Cell` holds the AUPRC mean +- std over seeds, the chip-bootstrap interval of the
seed-mean (chips resampled jointly over seeds, from the saved per-pixel scores; see
:mod:`landslide_lit.evaluation`), the no-skill rate and the size of the evaluation;
:func:`pool_cell` makes one from the runs' results. The text and CSV forms of its numbers
live here too, so Table 1 and the transfer matrix print them alike.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from landslide_lit.atomic import write_atomically
from landslide_lit.bootstrap import METHOD_NAMES, Method, chip_bootstrap
from landslide_lit.evaluation import Scores

__all__ = ["Bootstrap", "Cell", "csv_value", "fmt", "pool_cell", "write_csv"]

NAN = float("nan")


@dataclass(frozen=True)
class Bootstrap:
    """How chips are resampled: ``--bootstrap``, ``--bootstrap-seed``, ``--bootstrap-method``."""

    replicates: int
    seed: int
    method: Method

    @classmethod
    def from_options(cls, options: argparse.Namespace) -> Bootstrap:
        return cls(options.bootstrap, options.bootstrap_seed, options.bootstrap_method)

    @property
    def method_name(self) -> str:
        """The method as the tables name it (``BCa``, ``percentile``)."""
        return METHOD_NAMES[self.method]

    def options(self) -> dict[str, Any]:
        """Keyword arguments of :func:`chip_bootstrap` and :func:`paired_difference`."""
        return {"replicates": self.replicates, "seed": self.seed, "method": self.method}


@dataclass(frozen=True)
class Cell:
    """AUPRC over seeds on one evaluation's chips: mean, std, 95 % interval, per seed.

    ``std`` is NaN for one seed; ``low``/``high`` are NaN where the bootstrap gives no
    interval. ``scores`` (one per seed, same chips) feed the paired differences and the
    PR curves.
    """

    mean: float
    std: float
    low: float
    high: float
    per_seed: tuple[float, ...]
    no_skill: float
    chips: int
    pixels: int
    ignore_invalid: bool = False
    scores: tuple[Scores, ...] = field(default=(), repr=False, compare=False)

    @property
    def lift(self) -> float:
        """AUPRC / no skill (NaN without a no-skill rate)."""
        return self.mean / self.no_skill if self.no_skill else NAN

    def mean_std(self) -> str:
        """``0.612 ± 0.010``, or ``0.612`` for one seed."""
        text = fmt(self.mean)
        return text if not np.isfinite(self.std) else f"{text} ± {fmt(self.std)}"

    def interval(self) -> str:
        """``[0.600, 0.630]``, or ``-`` without an interval."""
        if not np.isfinite([self.low, self.high]).all():
            return "-"
        return f"[{fmt(self.low)}, {fmt(self.high)}]"

    def no_skill_cell(self) -> Cell:
        """The no-skill baseline on the same chips, as a cell without seeds or interval."""
        return dataclasses.replace(
            self, mean=self.no_skill, std=NAN, low=NAN, high=NAN, per_seed=(), scores=()
        )

    def weights(self) -> np.ndarray | None:
        """The pixel weights of the evaluation (pixels without SAR data left out or not)."""
        return self.scores[0].weights(self.ignore_invalid)

    def csv_columns(self, seeds: Sequence[int]) -> dict[str, Any]:
        """The columns every results CSV gives a cell, in their order (seeds: the run's)."""
        return {
            "n_seeds": len(self.per_seed),
            "seeds": " ".join(map(str, seeds)) if self.per_seed else "",
            "auprc_mean": self.mean,
            "auprc_std": self.std,
            "ci95_low": self.low,
            "ci95_high": self.high,
            "auprc_per_seed": list(self.per_seed),
            "no_skill": self.no_skill,
        }

    def summary(self) -> dict[str, Any]:
        """The numbers as a mapping, as :mod:`landslide_lit.figures` takes them."""
        names = ("mean", "std", "low", "high", "no_skill", "chips", "pixels")
        return {**{k: getattr(self, k) for k in names}, "per_seed": list(self.per_seed)}


def pool_cell(
    results: Sequence[dict[str, Any]],
    key: str,
    folders: Sequence[Path],
    bootstrap: Bootstrap,
) -> Cell:
    """The seeds of one cell: evaluation ``key`` of each run's result (run folders given).

    Raises:
        ValueError: the seeds were evaluated on different chips.
    """
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
        **bootstrap.options(),
    )
    return Cell(
        mean=float(np.mean(values)),
        std=float(np.std(values, ddof=1)) if len(values) > 1 else NAN,
        low=interval.low,
        high=interval.high,
        per_seed=tuple(values),
        no_skill=metrics[0]["no_skill"],
        chips=metrics[0]["chips"],
        pixels=metrics[0]["pixels"],
        ignore_invalid=ignore_invalid,
        scores=tuple(scores),
    )


def fmt(value: float | None, digits: int = 3) -> str:
    """A number in a table; ``-`` for none or NaN."""
    return "-" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


def write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> Path:
    """Write ``rows`` (the first one's keys are the header) atomically; ``path``."""

    def write(temporary: Path) -> None:
        with temporary.open("w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=list(rows[0]))
            writer.writeheader()
            for row in rows:
                writer.writerow({k: csv_value(v) for k, v in row.items()})

    return write_atomically(path, write)


def csv_value(value: Any) -> Any:
    """A value in a CSV: 6 significant digits, empty for NaN, lists space-separated."""
    if isinstance(value, float):
        return "" if not np.isfinite(value) else f"{value:.6g}"
    if isinstance(value, (list, tuple)):
        return " ".join(csv_value(float(v)) if isinstance(v, float) else str(v) for v in value)
    return value
