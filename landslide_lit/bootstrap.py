"""Chip bootstrap intervals of the AUPRC, for one model, a seed mean or a paired difference.

:func:`chip_bootstrap` resamples *chips* with replacement (pixels of one chip are strongly
correlated, so they are not the independent unit) and returns a BCa (bias-corrected and
accelerated) or percentile interval. Pixels are sorted once; each replicate only
reweights them (weighted cumulative sums), so 1000 replicates over a million pixels take
seconds, and BCa's jackknife (each chip left out once) costs as many more rows as there
are chips. Given the scores of several seeds (or models) on the same chips, the chips are
resampled jointly and the interval is that of the seed-mean AUPRC. BCa adjusts the
percentile interval for the bias and skew of the bootstrap distribution. Neither method
reaches its nominal coverage with few chips: in ``bench/bootstrap_coverage.py``'s
simulations 95 % intervals cover 83-89 % of the time with 10 chips and 85-94 % with 30
to 60, BCa no better than percentile there.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from types import SimpleNamespace
from typing import Any, Literal

import numpy as np
import scipy.stats

from landslide_lit.precision import SortedPixels

__all__ = [
    "DEFAULT_BOOTSTRAP_SEED",
    "DEFAULT_METHOD",
    "DEFAULT_REPLICATES",
    "METHOD_NAMES",
    "Interval",
    "Method",
    "bootstrap_replicates",
    "chip_bootstrap",
    "chip_draws",
    "paired_difference",
]

DEFAULT_REPLICATES = 1000
DEFAULT_BOOTSTRAP_SEED = 0

Method = Literal["bca", "percentile"]
# How metrics.json and the tables name each method (scipy.stats.bootstrap takes either case).
METHOD_NAMES: dict[str, str] = {"bca": "BCa", "percentile": "percentile"}
DEFAULT_METHOD: Method = "bca"


@dataclass(frozen=True)
class Interval:
    """A point estimate with a bootstrap interval over chips.

    ``estimate`` is the AUPRC on all chips (the mean over seeds when several were given),
    ``per_seed`` the AUPRC of each; ``low``/``high`` bound the ``level`` interval of
    ``method`` (``bca`` or ``percentile``); ``failed`` counts replicates without a
    positive pixel (left out). ``note`` says why the interval is NaN or the point itself
    (too few chips, no landslide pixel, replicates that do not vary); None otherwise.
    """

    estimate: float
    low: float
    high: float
    per_seed: tuple[float, ...]
    level: float
    replicates: int
    seed: int
    chips: int
    failed: int = 0
    method: Method = DEFAULT_METHOD
    note: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class _ChipStatistic:
    """The seed-mean AUPRC of chips drawn with given multiplicities (counts per chip).

    With ``minus``, the seed-mean AUPRC of those scores is subtracted (a paired
    difference: both on the same draws). Every pixel is sorted once; a row of chip counts
    then costs one weighted pass over the curve (:class:`SortedPixels`).
    """

    def __init__(
        self,
        scores: np.ndarray | Sequence[np.ndarray],
        labels: np.ndarray,
        weights: np.ndarray | None = None,
        minus: np.ndarray | Sequence[np.ndarray] | None = None,
        block_bytes: int = 64 * 2**20,
    ) -> None:
        labels = np.asarray(labels)
        if weights is not None and np.shape(weights) != labels.shape:
            raise ValueError(f"weights {np.shape(weights)} and labels {labels.shape} differ")
        self.n = labels.shape[0]

        def curves(seeds: np.ndarray | Sequence[np.ndarray]) -> list[SortedPixels]:
            arrays = [seeds] if isinstance(seeds, np.ndarray) else list(seeds)
            for s in map(np.asarray, arrays):
                if s.shape != labels.shape:
                    raise ValueError(f"scores {s.shape} and labels {labels.shape} differ in shape")
            return [SortedPixels.of_chips(s, labels, weights) for s in arrays]

        self.curves = curves(scores)
        self.minus = [] if minus is None else curves(minus)
        entries = max(
            c.pos.size if c.dense is None else c.dense[0].shape[0] for c in self.curves + self.minus
        )
        # rows of counts per pass: a pass holds about 6 float64 (rows x entries) temporaries
        self.block = max(1, int(block_bytes // (8 * 6 * max(entries, 1))))

    def per_seed(self) -> tuple[float, ...]:
        return tuple(float(c.average_precision()[0]) for c in self.curves)

    def of_counts(self, counts: np.ndarray) -> np.ndarray:
        """The statistic for each row of chip ``counts`` (B, chips); NaN: no positive drawn."""
        values = np.empty(len(counts))
        for start in range(0, len(counts), self.block):
            rows = counts[start : start + self.block]
            value = np.mean([c.average_precision(rows) for c in self.curves], 0)
            if self.minus:
                value -= np.mean([c.average_precision(rows) for c in self.minus], 0)
            values[start : start + self.block] = value
        return values

    def of_indices(self, indices: np.ndarray, axis: int = -1) -> np.ndarray:
        """The statistic of chip-index samples along the last axis (scipy's signature).

        scipy.stats.bootstrap calls it with every chip (the estimate) and with the
        jackknife samples (each chip left out once): each sample becomes chip counts.
        """
        rows = np.atleast_2d(indices)
        offsets = self.n * np.arange(len(rows))[:, None]
        counts = np.bincount((rows + offsets).ravel(), minlength=rows.shape[0] * self.n)
        values = self.of_counts(counts.reshape(len(rows), self.n).astype(np.float64))
        return values.reshape(np.shape(indices)[:-1])


def chip_draws(n: int, replicates: int, seed: int) -> np.ndarray:
    """Chip counts (replicates, n) of ``replicates`` draws of n chips with replacement.

    The same ``seed`` and ``n`` give the same draws whatever the scores, so the replicates
    of two models on the same chips pair up.
    """
    rng = np.random.default_rng(seed)
    return rng.multinomial(n, np.full(n, 1.0 / n), size=replicates).astype(np.float64)


def chip_bootstrap(
    scores: np.ndarray | Sequence[np.ndarray],
    labels: np.ndarray,
    weights: np.ndarray | None = None,
    *,
    replicates: int = DEFAULT_REPLICATES,
    seed: int = DEFAULT_BOOTSTRAP_SEED,
    level: float = 0.95,
    method: Method = DEFAULT_METHOD,
) -> Interval:
    """AUPRC with a bootstrap interval, resampling chips with replacement.

    Args:
        scores: probabilities (N, ...) of N chips, or a sequence of such arrays (one per
            seed or model, the same chips in the same order): the chips are then drawn
            jointly and the interval is that of the mean AUPRC over seeds.
        labels: 0/1 targets (N, ...).
        weights: optional per-pixel weights (N, ...), e.g. a valid-pixel mask.
        replicates: bootstrap replicates (0: no interval, low = high = NaN).
        seed: seed of the chip draws (fixed: the same chips give the same interval).
        level: coverage of the interval.
        method: ``bca`` (bias-corrected and accelerated; its acceleration comes from the
            jackknife, each chip left out once) or ``percentile``.
    """
    statistic = _ChipStatistic(scores, labels, weights)
    per_seed = statistic.per_seed()
    estimate = float(np.mean(per_seed))
    values = statistic.of_counts(chip_draws(statistic.n, max(replicates, 0), seed))
    low, high, note = _interval(statistic, estimate, values, level, method)
    return Interval(
        estimate,
        low,
        high,
        per_seed,
        level,
        max(replicates, 0),
        seed,
        statistic.n,
        int(np.isnan(values).sum()),
        method,
        note,
    )


def bootstrap_replicates(
    scores: np.ndarray | Sequence[np.ndarray],
    labels: np.ndarray,
    weights: np.ndarray | None = None,
    *,
    replicates: int = DEFAULT_REPLICATES,
    seed: int = DEFAULT_BOOTSTRAP_SEED,
    block_bytes: int = 64 * 2**20,
) -> tuple[tuple[float, ...], np.ndarray]:
    """The AUPRC of each seed on all chips, and the seed-mean AUPRC of every replicate.

    Replicate ``b`` draws the same chips for any scores given the same ``seed`` and chip
    count, so the replicates of two models on the same chips can be subtracted.
    """
    statistic = _ChipStatistic(scores, labels, weights, block_bytes=block_bytes)
    values = statistic.of_counts(chip_draws(statistic.n, max(replicates, 0), seed))
    return statistic.per_seed(), values


def paired_difference(
    scores_a: np.ndarray | Sequence[np.ndarray],
    scores_b: np.ndarray | Sequence[np.ndarray],
    labels: np.ndarray,
    weights: np.ndarray | None = None,
    *,
    replicates: int = DEFAULT_REPLICATES,
    seed: int = DEFAULT_BOOTSTRAP_SEED,
    level: float = 0.95,
    method: Method = DEFAULT_METHOD,
) -> tuple[float, float, float]:
    """Seed-mean AUPRC of A minus B on the same chips, with a paired chip-bootstrap interval.

    Both are scored on the same resampled chips in every replicate (and, for BCa, the
    same jackknife samples), so chip difficulty, shared by the two, cancels: an interval
    that excludes 0 is a difference the test chips support (seed variation enters only
    through the seeds given). Where no interval can be made, low and high are NaN.
    """
    statistic = _ChipStatistic(scores_a, labels, weights, minus=scores_b)
    estimate = float(statistic.of_counts(np.ones((1, statistic.n)))[0])
    values = statistic.of_counts(chip_draws(statistic.n, max(replicates, 0), seed))
    low, high, _ = _interval(statistic, estimate, values, level, method)
    return estimate, low, high


def _interval(
    statistic: _ChipStatistic, estimate: float, values: np.ndarray, level: float, method: Method
) -> tuple[float, float, str | None]:
    """The ``level`` interval of ``method`` from the replicate ``values``, and a note.

    Replicates that drew no landslide pixel (NaN) are left out: the interval is that of
    the AUPRC given at least one landslide pixel, which is where it is defined. The
    arithmetic is scipy.stats.bootstrap's, fed with these replicates (``n_resamples=0``
    and ``bootstrap_result``): its own draws would turn one such replicate into a NaN
    interval, and ours are the same for every model (paired differences). Cases without
    an interval get NaN, or the estimate itself where every replicate equals it (one
    chip, identical chips), and a note instead of a warning.
    """
    nan = float("nan")
    finite = values[np.isfinite(values)]
    if not np.isfinite(estimate):
        return nan, nan, "no landslide pixel in these chips: the AUPRC is undefined"
    if values.size == 0:
        return nan, nan, "no bootstrap replicates"
    if statistic.n < 2:
        return estimate, estimate, "one chip: every replicate is that chip, no interval"
    if finite.size == 0:
        return nan, nan, "no replicate drew a chip with a landslide pixel"
    if np.allclose(finite, estimate, rtol=0, atol=1e-12):
        return estimate, estimate, "every replicate equals the estimate: the chips do not vary"
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        # undefined cases come back as NaN and are explained below, once
        warnings.simplefilter("ignore")
        result = scipy.stats.bootstrap(
            (np.arange(statistic.n),),
            statistic.of_indices,
            n_resamples=0,
            bootstrap_result=SimpleNamespace(bootstrap_distribution=finite),
            confidence_level=level,
            method=METHOD_NAMES[method],
            batch=statistic.block,
            vectorized=True,
        )
    low, high = (float(v) for v in result.confidence_interval)
    if not (np.isfinite(low) and np.isfinite(high)):
        return (
            nan,
            nan,
            (
                "BCa is undefined here (every landslide pixel in one chip, or the estimate "
                "outside all replicates); the percentile method gives an interval"
            ),
        )
    return low, high, None
