"""Exact average precision over pixels sorted once, and precision-recall curves.

:func:`average_precision` is scikit-learn's ``average_precision_score`` (ties form one
threshold, zero-weight pixels are dropped), with optional per-pixel weights.
:class:`SortedPixels` keeps the sorted pixels per chip, so the chip bootstrap
(:mod:`landslide_lit.bootstrap`) reweights them instead of sorting again.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "DENSE_ENTRIES",
    "SortedPixels",
    "average_precision",
    "no_skill",
    "precision_recall_points",
]

DENSE_ENTRIES = 8 * 2**20
"""Largest (groups with a positive pixel) x chips matrices for the matrix-product bootstrap
(two float64 matrices: 2 x 8 B x 8M = 128 MB); beyond it, cumulative sums per replicate."""


class SortedPixels:
    """Pixels sorted once by decreasing score, ties merged, positives/negatives per chip.

    ``pos[k]``/``neg[k]`` are the (weighted) positive/negative pixels of chip ``chip[k]``
    whose score is the ``group[k]``-th largest distinct score; entries are ordered by
    group. ``ends`` indexes the last entry of each group, where the curve has a point;
    ``positive_groups`` are the groups with a positive pixel, where recall grows.
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
        self.positive_groups = positive_groups
        if positive_groups.size * n_chips <= DENSE_ENTRIES:
            row = np.searchsorted(positive_groups, pair_group)
            keep = row < positive_groups.size  # after the last positive: no recall gained
            index = row[keep] * n_chips + self.chip[keep]
            shape = (positive_groups.size, n_chips)
            size = positive_groups.size * n_chips
            self.dense = tuple(
                np.bincount(index, values[keep], minlength=size).reshape(shape).cumsum(0)
                for values in (self.pos, self.neg)
            )

    @classmethod
    def of_chips(
        cls, scores: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None
    ) -> SortedPixels:
        """Sorted pixels of N chips: ``scores``, ``labels`` (and ``weights``) of shape (N, ...)."""
        labels = np.asarray(labels)
        n = labels.shape[0]
        chip = np.arange(n).reshape(-1, *([1] * (labels.ndim - 1)))
        return cls(scores, labels, weights, np.broadcast_to(chip, labels.shape), n)

    def cumulative(self, counts: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """True and false positives above each threshold, per row of chip ``counts`` (B, chips)."""
        if counts is None:
            counts = np.ones((1, self.n_chips))
        factor = counts[:, self.chip]
        tp = np.cumsum(self.pos * factor, axis=1)[:, self.ends]
        fp = np.cumsum(self.neg * factor, axis=1)[:, self.ends]
        return tp, fp

    def at_positives(self, counts: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """True and false positives at each threshold with a positive pixel (B, groups).

        Per row of chip ``counts`` (B, chips); the thresholds are
        ``thresholds[positive_groups]``. The rest of the curve adds false positives only,
        so every average precision and best operating point lies at these thresholds.
        """
        if counts is None:
            counts = np.ones((1, self.n_chips))
        if self.dense is not None:
            return tuple(counts @ matrix.T for matrix in self.dense)
        tp, fp = self.cumulative(counts)
        return tp[:, self.positive_groups], fp[:, self.positive_groups]

    def average_precision(self, counts: np.ndarray | None = None) -> np.ndarray:
        """AP per row of chip ``counts`` (B, chips) (NaN where no positive pixel is drawn)."""
        tp, fp = self.at_positives(counts)
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
    return float(SortedPixels(scores, labels, weights).average_precision()[0])


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
    curve = SortedPixels(scores, labels, weights)
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
