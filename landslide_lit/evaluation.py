"""Evaluation: exact AUPRC, precision-recall curves, chip bootstrap intervals, and the
callback that writes them (with figures) after ``validate`` and ``test``.

* :func:`average_precision` is scikit-learn's ``average_precision_score`` (ties form one
  threshold, zero-weight pixels are dropped), with optional per-pixel weights.
* :func:`chip_bootstrap` resamples *chips* with replacement (pixels of one chip are
  strongly correlated, so they are not the independent unit) and returns a BCa
  (bias-corrected and accelerated) or percentile interval. Pixels are sorted once; each
  replicate only reweights them (weighted cumulative sums), so 1000 replicates over a
  million pixels take seconds, and BCa's jackknife (each chip left out once) costs as
  many more rows as there are chips. Given the scores of several seeds (or models) on the
  same chips, the chips are resampled jointly and the interval is that of the seed-mean
  AUPRC. BCa adjusts the percentile interval for the bias and skew of the bootstrap
  distribution. Neither method reaches its nominal coverage with few chips: in
  ``bench/bootstrap_coverage.py``'s simulations 95 % intervals cover 83-89 % of the time
  with 10 chips and 85-94 % with 30 to 60, BCa no better than percentile there.
* :class:`EvaluationWriter` collects the per-pixel probabilities of ``validate``/``test``
  (gathered to rank 0 under DDP) and writes, per region, ``metrics.json``, a
  precision-recall curve, predicted-vs-true panels and ``scores.npz``.

Memory: everything here holds the per-pixel probabilities of the evaluated chips only
(4 + 1 + 1 bytes a pixel, about 6 MB for 61 chips of 128 x 128 px; the bootstrap adds
a few times that), which is small for test sets of landslide chips but grows with
``--data.keep valid`` over a whole large region.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Literal

import lightning as L
import numpy as np
import scipy.stats
import torch.distributed as dist
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.trainer.states import TrainerFn

from landslide_lit.errors import ConfigError

log = logging.getLogger("landslide_lit")

DEFAULT_REPLICATES = 1000
DEFAULT_BOOTSTRAP_SEED = 0
# Largest (groups with a positive pixel) x chips matrices for the matrix-product bootstrap
# (two float64 matrices: 2 x 8 B x 8M = 128 MB); beyond it, cumulative sums per replicate.
_DENSE_ENTRIES = 8 * 2**20


# -- exact average precision ------------------------------------------------------------


class _SortedPixels:
    """Pixels sorted once by decreasing score, ties merged, positives/negatives per chip.

    ``pos[k]``/``neg[k]`` are the (weighted) positive/negative pixels of chip ``chip[k]``
    whose score is the ``group[k]``-th largest distinct score; entries are ordered by
    group. ``ends`` indexes the last entry of each group, where the curve has a point.
    """

    def __init__(
        self,
        scores: np.ndarray,
        labels: np.ndarray,
        weights: np.ndarray | None = None,
        chips: np.ndarray | None = None,
        n_chips: int = 1,
    ) -> None:
        scores = np.asarray(scores, dtype=np.float64).ravel()
        labels = np.asarray(labels).ravel().astype(bool)
        if scores.shape != labels.shape:
            raise ValueError(f"scores {scores.shape} and labels {labels.shape} differ in size")
        chips = np.zeros(scores.shape, np.int64) if chips is None else np.asarray(chips).ravel()
        if weights is None:
            weights = np.ones(scores.shape)
        else:
            weights = np.asarray(weights, dtype=np.float64).ravel()
            if weights.shape != scores.shape:
                raise ValueError(f"weights {weights.shape} and scores {scores.shape} differ")
            if (weights < 0).any():
                raise ValueError("weights must be >= 0")
            keep = weights > 0  # as scikit-learn: zero-weight pixels make no threshold
            scores, labels, weights, chips = scores[keep], labels[keep], weights[keep], chips[keep]
        if np.isnan(scores).any():
            raise ValueError("scores contain NaN")
        order = np.argsort(-scores, kind="stable")
        scores, labels, weights, chips = scores[order], labels[order], weights[order], chips[order]
        group = np.concatenate([[0], np.cumsum(scores[1:] != scores[:-1])]) if scores.size else []
        group = np.asarray(group, dtype=np.int64)
        pairs, inverse = np.unique(group * n_chips + chips, return_inverse=True)
        self.pos = np.bincount(inverse, weights * labels, minlength=pairs.size)
        self.neg = np.bincount(inverse, weights * ~labels, minlength=pairs.size)
        self.chip = pairs % n_chips
        pair_group = pairs // n_chips
        self.ends = np.flatnonzero(np.diff(pair_group, append=pair_group[-1:] + 1))
        self.thresholds = scores[np.searchsorted(group, pair_group[self.ends])]
        self.n_chips = n_chips

        # Recall only grows at groups with a positive pixel: the curve's terms need tp and
        # fp there only. Per chip, cumulative positives/negatives at those groups form two
        # (groups x chips) matrices; a replicate's tp and fp are then one matrix product
        # with its chip counts (BLAS), instead of cumulative sums over every pixel.
        self.dense = None
        positive_groups = np.unique(pair_group[self.pos > 0])
        if positive_groups.size * n_chips <= _DENSE_ENTRIES:
            row = np.searchsorted(positive_groups, pair_group)
            keep = row < positive_groups.size  # after the last positive: no recall gained
            index = row[keep] * n_chips + self.chip[keep]
            shape = (positive_groups.size, n_chips)
            size = positive_groups.size * n_chips
            self.dense = tuple(
                np.bincount(index, values[keep], minlength=size).reshape(shape).cumsum(0)
                for values in (self.pos, self.neg)
            )

    def cumulative(self, counts: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """True and false positives above each threshold, per row of chip ``counts`` (B, chips)."""
        if counts is None:
            counts = np.ones((1, self.n_chips))
        factor = counts[:, self.chip]
        tp = np.cumsum(self.pos * factor, axis=1)[:, self.ends]
        fp = np.cumsum(self.neg * factor, axis=1)[:, self.ends]
        return tp, fp

    def average_precision(self, counts: np.ndarray | None = None) -> np.ndarray:
        """AP per row of chip ``counts`` (B, chips) (NaN where no positive pixel is drawn)."""
        if counts is None:
            counts = np.ones((1, self.n_chips))
        if self.dense is not None:
            tp, fp = (counts @ matrix.T for matrix in self.dense)
        else:
            tp, fp = self.cumulative(counts)
        if tp.shape[1] == 0:
            return np.full(tp.shape[0], np.nan)
        total = tp[:, -1]
        # In place, with one (B, thresholds) temporary: these arrays are the bootstrap's
        # memory traffic. Where nothing is predicted tp is 0, and so is the recall gained.
        predicted = np.add(tp, fp, out=fp)
        np.maximum(predicted, np.finfo(np.float64).tiny, out=predicted)
        precision = np.divide(tp, predicted, out=predicted)
        gained = np.diff(tp, axis=1)
        area = precision[:, 0] * tp[:, 0] + np.einsum("ij,ij->i", precision[:, 1:], gained)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(total > 0, area / total, np.nan)


def average_precision(
    scores: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None
) -> float:
    """Exact average precision: sum over thresholds of precision x recall gained there.

    Equal to scikit-learn's ``average_precision_score(labels, scores, sample_weight=weights)``:
    pixels with equal scores form one threshold; zero-weight pixels are ignored. NaN when
    there is no positive pixel.
    """
    return float(_SortedPixels(scores, labels, weights).average_precision()[0])


def precision_recall_points(
    scores: np.ndarray,
    labels: np.ndarray,
    weights: np.ndarray | None = None,
    max_points: int | None = 2000,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision, recall and threshold at every distinct score, by decreasing threshold.

    With ``max_points`` the curve is thinned to about that many points (evenly in
    recall and in threshold rank, always keeping both ends) for plotting; the AUPRC
    comes from the full curve, not from these points.
    """
    curve = _SortedPixels(scores, labels, weights)
    tp, fp = (a[0] for a in curve.cumulative())
    precision = np.divide(tp, tp + fp, out=np.ones_like(tp), where=(tp + fp) > 0)
    recall = tp / tp[-1] if tp.size and tp[-1] > 0 else np.zeros_like(tp)
    thresholds = curve.thresholds
    if max_points is not None and tp.size > max_points:
        by_rank = np.linspace(0, tp.size - 1, max_points // 2).round().astype(int)
        by_recall = np.searchsorted(recall, np.linspace(0, 1, max_points // 2))
        keep = np.unique(np.clip(np.concatenate([by_rank, by_recall]), 0, tp.size - 1))
        precision, recall, thresholds = precision[keep], recall[keep], thresholds[keep]
    return precision, recall, thresholds


def no_skill(labels: np.ndarray, weights: np.ndarray | None = None) -> float:
    """The AUPRC of a classifier without skill: the (weighted) fraction of positive pixels."""
    labels = np.asarray(labels).ravel().astype(bool)
    if weights is None:
        return float(labels.mean()) if labels.size else float("nan")
    weights = np.asarray(weights, dtype=np.float64).ravel()
    return float((weights * labels).sum() / weights.sum()) if weights.sum() > 0 else float("nan")


# -- chip bootstrap -----------------------------------------------------------------------

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
    then costs one weighted pass over the curve (:class:`_SortedPixels`).
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
        chip_of_pixel = np.broadcast_to(
            np.arange(self.n).reshape(-1, *([1] * (labels.ndim - 1))), labels.shape
        )

        def curves(seeds: np.ndarray | Sequence[np.ndarray]) -> list[_SortedPixels]:
            arrays = [seeds] if isinstance(seeds, np.ndarray) else list(seeds)
            for s in map(np.asarray, arrays):
                if s.shape != labels.shape:
                    raise ValueError(f"scores {s.shape} and labels {labels.shape} differ in shape")
            return [_SortedPixels(s, labels, weights, chip_of_pixel, self.n) for s in arrays]

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


def _draws(n: int, replicates: int, seed: int) -> np.ndarray:
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
    values = statistic.of_counts(_draws(statistic.n, max(replicates, 0), seed))
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
    values = statistic.of_counts(_draws(statistic.n, max(replicates, 0), seed))
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
    values = statistic.of_counts(_draws(statistic.n, max(replicates, 0), seed))
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


# -- scores of an evaluation --------------------------------------------------------------


@dataclass
class Scores:
    """Per-pixel probabilities of the chips of one evaluation, in chip-origin order."""

    probability: np.ndarray  # (N, H, W) float32
    target: np.ndarray  # (N, H, W) bool
    valid: np.ndarray  # (N, H, W) bool: pixels with SAR data
    origin: np.ndarray  # (N, 2) int64, (y, x) of each chip

    def weights(self, ignore_invalid: bool) -> np.ndarray | None:
        return self.valid.astype(np.float64) if ignore_invalid else None

    def save(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp.npz")
        np.savez_compressed(temporary, **asdict(self))
        os.replace(temporary, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> Scores:
        with np.load(path) as data:
            return cls(**{k: data[k] for k in ("probability", "target", "valid", "origin")})

    @classmethod
    def concatenate(cls, parts: Sequence[Scores]) -> Scores:
        """Join the parts (e.g. of several ranks) and order the chips by origin (y, x)."""
        joined = cls(
            *(np.concatenate([getattr(p, k) for p in parts]) for k in cls.__dataclass_fields__)
        )
        order = np.lexsort((joined.origin[:, 1], joined.origin[:, 0]))
        return cls(*(getattr(joined, k)[order] for k in cls.__dataclass_fields__))

    def most_affected(self, count: int) -> np.ndarray:
        """Indices of the ``count`` chips with the most landslide pixels, largest first."""
        area = self.target.reshape(len(self.target), -1).sum(1)
        return np.argsort(-area, kind="stable")[:count]


def _empty_scores() -> Scores:
    return Scores(
        np.zeros((0, 0, 0), np.float32),
        np.zeros((0, 0, 0), bool),
        np.zeros((0, 0, 0), bool),
        np.zeros((0, 2), np.int64),
    )


def summarise(
    scores: Scores,
    ignore_invalid: bool = False,
    replicates: int = DEFAULT_REPLICATES,
    seed: int = DEFAULT_BOOTSTRAP_SEED,
    method: Method = DEFAULT_METHOD,
) -> dict[str, Any]:
    """Exact AUPRC, its chip-bootstrap interval, the no-skill baseline and counts."""
    weights = scores.weights(ignore_invalid)
    interval = chip_bootstrap(
        scores.probability,
        scores.target,
        weights,
        replicates=replicates,
        seed=seed,
        method=method,
    )
    counted = scores.valid if ignore_invalid else np.ones_like(scores.target)
    return {
        "auprc": interval.estimate,
        "auprc_ci95": [interval.low, interval.high],
        "no_skill": no_skill(scores.target, weights),
        "chips": len(scores.target),
        "pixels": int(counted.sum()),
        "landslide_pixels": int((scores.target & counted).sum()),
        "bootstrap": {
            "unit": "chip",
            "replicates": interval.replicates,
            "seed": interval.seed,
            "level": interval.level,
            "method": METHOD_NAMES[interval.method],
            "failed_replicates": interval.failed,
            "note": interval.note,
        },
    }


# -- the callback ---------------------------------------------------------------------------

_STAGES = {TrainerFn.VALIDATING: ("val", "validate"), TrainerFn.TESTING: ("test", "test")}


class EvaluationWriter(Callback):
    """After ``validate`` and ``test``: per region, metrics with intervals and figures.

    Writes to ``OUTPUT/<stage>_<region>/`` (``val_hokkaido``, ``test_talakmau``...):

    * ``metrics.json``: exact AUPRC, its 95 % chip-bootstrap interval (BCa unless
      ``bootstrap_method`` says ``percentile``; ``bootstrap`` records the method, and a
      ``note`` where no interval could be made), the no-skill baseline, chips, pixels, the
      checkpoint evaluated;
    * ``pr_curve.png``: the precision-recall curve with the no-skill line;
    * ``predictions.png``: predicted vs true landslides on the most affected chips;
    * ``scores.npz``: per-pixel probabilities, targets, valid masks and chip origins (to
      recompute intervals or combine seeds, as ``landslide-lit reproduce`` does).

    ``OUTPUT`` is ``output_dir``, else ``evaluation/`` in the run's log folder
    (``runs/landslide/version_N/``), else, with ``--trainer.logger false``, in
    ``--trainer.default_root_dir`` (the working directory unless set). Validation inside
    ``fit`` is left alone. Under DDP every rank's chips are gathered to rank 0, which
    writes; chips are ordered by origin, so the files do not depend on the world size.

    Args:
        output_dir: folder for the per-region folders (default: see above).
        bootstrap: bootstrap replicates (0: no interval).
        bootstrap_seed: seed of the chip draws.
        bootstrap_method: ``bca`` (bias-corrected and accelerated, the default) or
            ``percentile`` interval.
        panels: chips shown in ``predictions.png`` (0: no figure).
        save_scores: write ``scores.npz``.
    """

    def __init__(
        self,
        output_dir: str | None = None,
        bootstrap: int = DEFAULT_REPLICATES,
        bootstrap_seed: int = DEFAULT_BOOTSTRAP_SEED,
        bootstrap_method: Method = DEFAULT_METHOD,
        panels: int = 4,
        save_scores: bool = True,
    ) -> None:
        if bootstrap_method not in METHOD_NAMES:
            raise ConfigError(
                f"bootstrap_method={bootstrap_method!r}: use 'bca' or 'percentile' "
                "(EvaluationWriter init_args in the trainer.callbacks of a config)"
            )
        self.output_dir = output_dir
        self.bootstrap = bootstrap
        self.bootstrap_seed = bootstrap_seed
        self.bootstrap_method = bootstrap_method
        self.panels = panels
        self.save_scores = save_scores
        self._parts: dict[int, list[Scores]] = {}
        self.written: dict[str, Path] = {}

    # collection
    def _start(self, trainer: L.Trainer) -> None:
        self._parts = {}

    def _collect(self, trainer: L.Trainer, outputs: Any, dataloader_idx: int) -> None:
        if trainer.state.fn not in _STAGES or not isinstance(outputs, dict):
            return
        if "probability" not in outputs:
            return
        part = Scores(
            outputs["probability"].detach().float().cpu().numpy(),
            outputs["target"].detach().bool().cpu().numpy(),
            outputs["valid"].detach().bool().cpu().numpy(),
            outputs["origin"].detach().long().cpu().numpy(),
        )
        self._parts.setdefault(dataloader_idx, []).append(part)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start(trainer)

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start(trainer)

    def on_validation_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0
    ) -> None:
        self._collect(trainer, outputs, dataloader_idx)

    def on_test_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0
    ) -> None:
        self._collect(trainer, outputs, dataloader_idx)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == TrainerFn.VALIDATING:
            self._write(trainer, pl_module)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._write(trainer, pl_module)

    # writing
    def _regions(self, trainer: L.Trainer, stage: str) -> list[str]:
        datamodule = trainer.datamodule
        if datamodule is None or not hasattr(datamodule, "dataloader_regions"):
            return ["all"]
        return list(datamodule.dataloader_regions(stage))

    def output_folder(self, trainer: L.Trainer) -> Path:
        """Where the per-region folders go (``trainer.log_dir`` is a collective: all ranks)."""
        if self.output_dir is not None:
            return Path(self.output_dir)
        return Path(trainer.log_dir or trainer.default_root_dir) / "evaluation"

    def _write(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        prefix, stage = _STAGES[trainer.state.fn]
        folder = self.output_folder(trainer)
        regions = self._regions(trainer, stage)
        gathered = {i: _gather(self._parts.get(i, []), trainer) for i in range(len(regions))}
        self._parts = {}
        if not trainer.is_global_zero:
            return
        ignore_invalid = bool(getattr(pl_module.hparams, "ignore_invalid", False))
        datamodule = trainer.datamodule
        train_region = getattr(getattr(datamodule, "train_region", None), "name", None)
        for index, region in enumerate(regions):
            parts = [p for p in gathered[index] if len(p.target)]
            if not parts:
                continue
            scores = Scores.concatenate(parts)
            self.written[f"{prefix}_{region}"] = self.write_region(
                folder / f"{prefix}_{region}",
                scores,
                region=region,
                stage=prefix,
                split=_split_name(prefix, region, train_region),
                ignore_invalid=ignore_invalid,
                extra={
                    "checkpoint": _path_or_none(trainer.ckpt_path),
                    "train_region": train_region,
                    "synthetic": getattr(datamodule, "synthetic", None),
                },
            )

    def write_region(
        self,
        folder: Path,
        scores: Scores,
        *,
        region: str,
        stage: str,
        split: str,
        ignore_invalid: bool,
        extra: dict[str, Any] | None = None,
    ) -> Path:
        """Write metrics.json, the figures and scores.npz of one region into ``folder``."""
        from landslide_lit import figures

        folder.mkdir(parents=True, exist_ok=True)
        metrics = {
            "region": region,
            "stage": stage,
            "split": split,
            **summarise(
                scores, ignore_invalid, self.bootstrap, self.bootstrap_seed, self.bootstrap_method
            ),
            "ignore_invalid": ignore_invalid,
            **(extra or {}),
        }
        weights = scores.weights(ignore_invalid)
        precision, recall, _ = precision_recall_points(scores.probability, scores.target, weights)
        label = f"{region} {split}"
        figures.plot_pr_curves(
            {label: (precision, recall, metrics["auprc"], metrics["auprc_ci95"])},
            {label: metrics["no_skill"]},
            folder / "pr_curve.png",
            title=f"Precision-recall, {label}",
        )
        files = {"metrics": "metrics.json", "pr_curve": "pr_curve.png"}
        if self.panels > 0:
            chosen = scores.most_affected(self.panels)
            figures.plot_prediction_panels(
                {
                    label: (
                        scores.probability[chosen],
                        scores.target[chosen],
                    )
                },
                folder / "predictions.png",
            )
            files["panels"] = "predictions.png"
        if self.save_scores:
            scores.save(folder / "scores.npz")
            files["scores"] = "scores.npz"
        metrics["files"] = files
        write_json(folder / "metrics.json", metrics)
        low, high = metrics["auprc_ci95"]
        log.info(
            "%s %s: AUPRC %.3f (95%% %s CI %.3f-%.3f over %d chips), no skill %.3f; wrote %s",
            stage,
            region,
            metrics["auprc"],
            metrics["bootstrap"]["method"],
            low,
            high,
            metrics["chips"],
            metrics["no_skill"],
            folder,
        )
        return folder


def _split_name(prefix: str, region: str, train_region: str | None) -> str:
    if prefix == "val":
        return "validation" if region == train_region or train_region is None else "all chips"
    return "held-out test" if region == train_region else "test"


def _path_or_none(path: Any) -> str | None:
    return None if path is None else str(Path(path).resolve())


def _gather(parts: list[Scores], trainer: L.Trainer) -> list[Scores]:
    """Every rank's parts on rank 0 (other ranks get an empty list)."""
    if trainer.world_size <= 1 or not (dist.is_available() and dist.is_initialized()):
        return parts
    local = Scores.concatenate(parts) if parts else _empty_scores()
    received: list[Any] | None = [None] * trainer.world_size if trainer.is_global_zero else None
    dist.gather_object(local, received, dst=0)
    return list(received) if received is not None else []


def write_json(path: str | os.PathLike, data: Any) -> Path:
    """Write JSON atomically (a temporary file renamed into place)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(data, indent=2, default=_json_default) + "\n")
    os.replace(temporary, path)
    return path


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
