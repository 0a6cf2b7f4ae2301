"""Operating points chosen on a precision-recall curve, and the threshold a map applies.

Convention, everywhere in landslide-lit: a threshold ``t`` marks a pixel as landslide
where its probability is ``>= t`` (0 marks every pixel, 1 only probabilities of 1).

The operating points (rules):

* ``max_f1``: the threshold of highest F1 (the highest such threshold on ties);
* ``precision@P`` for P in :data:`PRECISION_TARGETS`: among the thresholds whose
  precision is at least P, the one of highest recall (the lowest threshold reaching P,
  less any background-only scores below it); absent where no threshold reaches P.

Both lie at the probability of a landslide pixel: lowering a threshold past background
pixels only adds false positives. They are exact when computed from the pixels
(:func:`operating_points`, used by ``validate`` and ``test``). During ``fit`` they come
from the module's :class:`~landslide_lit.metrics.ProbabilityHistogram`
(:func:`histogram_operating_points`): the thresholds are then bin lower edges and the
points those of the probabilities rounded down to an edge, so a threshold is within one
bin of the exact one (65536 logit bins: 1.2e-4 wide in probability at 0.5, 4.9e-4 x
p(1 - p) elsewhere). :func:`operating_point_intervals` gives chip-bootstrap intervals of
the points chosen anew in each replicate; :func:`resolve_threshold` turns an option such
as ``--maps.threshold precision@0.7`` and a checkpoint's stored points into one value.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from landslide_lit.errors import ConfigError
from landslide_lit.precision import SortedPixels

__all__ = [
    "CONVENTION",
    "MAX_F1",
    "PRECISION_TARGETS",
    "ChosenThreshold",
    "OperatingPoint",
    "OperatingPoints",
    "histogram_operating_points",
    "operating_point_intervals",
    "operating_points",
    "precision_rule",
    "resolve_threshold",
    "stored_thresholds",
    "summarise_thresholds",
]

CONVENTION = "landslide where probability >= threshold"
MAX_F1 = "max_f1"
PRECISION_TARGETS = (0.5, 0.7, 0.9)
FIELDS = ("threshold", "precision", "recall", "f1")


def precision_rule(target: float) -> str:
    """The rule name of a precision target: ``precision@0.7``."""
    return f"precision@{target:g}"


RULES = (MAX_F1, *map(precision_rule, PRECISION_TARGETS))

FORMS = (
    "max_f1, precision@P (P one of {targets}, chosen on validation), a probability in "
    "[0, 1] (landslide where probability >= it), or none (no mask)"
).format(targets=", ".join(f"{t:g}" for t in PRECISION_TARGETS))


@dataclass(frozen=True)
class OperatingPoint:
    """A threshold and the precision, recall and F1 of ``probability >= threshold``."""

    threshold: float
    precision: float
    recall: float
    f1: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True)
class OperatingPoints:
    """The points of the rules reached (by rule name), and the highest precision reached.

    ``max_precision`` is NaN without a landslide pixel (and ``points`` then empty).
    """

    points: dict[str, OperatingPoint]
    max_precision: float


def _choose(tp: np.ndarray, fp: np.ndarray) -> dict[str, Any]:
    """Each rule's column per row of (B, K) curves (-1: none), and the curves' rates.

    ``tp``/``fp`` are true/false positives at K decreasing thresholds, each with a
    positive pixel, so the last column's ``tp`` is every positive pixel.
    """
    rows, columns = tp.shape
    none = np.full(rows, -1)
    if columns == 0:
        empty = np.full((rows, 0), np.nan)
        return {
            "chosen": dict.fromkeys(RULES, none),
            **dict.fromkeys(("precision", "recall", "f1"), empty),
            "max": np.full(rows, np.nan),
        }
    positives = tp[:, -1:]
    found = tp > 0  # where nothing is found, precision is no achievement: count it 0
    predicted = tp + fp
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=found)
    recall = np.divide(tp, positives, out=np.zeros_like(tp), where=found)
    f1 = np.divide(2 * tp, predicted + positives, out=np.zeros_like(tp), where=found)
    any_positive = positives[:, 0] > 0
    chosen = {MAX_F1: np.where(any_positive, f1.argmax(1), none)}
    for target in PRECISION_TARGETS:
        reach = precision >= target
        best = np.where(reach, tp, -1.0).max(1, keepdims=True)
        # the highest recall reaching the target; on equal recall the highest threshold
        column = (reach & (tp == best)).argmax(1)
        chosen[precision_rule(target)] = np.where(reach.any(1), column, none)
    maximum = np.where(any_positive, precision.max(1), np.nan)
    return {"chosen": chosen, "precision": precision, "recall": recall, "f1": f1, "max": maximum}


def _points(tp: np.ndarray, fp: np.ndarray, thresholds: np.ndarray) -> OperatingPoints:
    """The operating points of one curve (1-D ``tp``/``fp`` at ``thresholds``)."""
    rates = _choose(tp[None].astype(np.float64), fp[None].astype(np.float64))
    points = {}
    for rule, column in rates["chosen"].items():
        k = int(column[0])
        if k >= 0:
            values = (rates[name][0, k] for name in ("precision", "recall", "f1"))
            points[rule] = OperatingPoint(float(thresholds[k]), *map(float, values))
    return OperatingPoints(points, float(rates["max"][0]))


def _positive_thresholds(curve: SortedPixels) -> np.ndarray:
    """The thresholds of :meth:`SortedPixels.at_positives`, decreasing."""
    return curve.thresholds[curve.positive_groups]


def operating_points(
    scores: np.ndarray | SortedPixels,
    labels: np.ndarray | None = None,
    weights: np.ndarray | None = None,
) -> OperatingPoints:
    """Exact operating points of probabilities ``scores`` and 0/1 ``labels`` (or sorted pixels).

    ``weights`` (e.g. the pixels with SAR data) weigh pixels as in the AUPRC.
    """
    curve = scores if isinstance(scores, SortedPixels) else SortedPixels(scores, labels, weights)
    tp, fp = curve.at_positives()
    return _points(tp[0], fp[0], _positive_thresholds(curve))


def histogram_operating_points(counts: np.ndarray, lower_edges: np.ndarray) -> OperatingPoints:
    """Operating points from pixel counts per bin (2, bins: background, landslide).

    A bin's threshold is its lower edge (``lower_edges``, increasing; 0 for the first bin,
    which takes the low tail): ``>= edge`` takes that bin and every bin above.
    """
    negatives, positives = (np.asarray(row, dtype=np.float64)[::-1] for row in counts)
    keep = positives > 0
    tp, fp = np.cumsum(positives)[keep], np.cumsum(negatives)[keep]
    return _points(tp, fp, np.asarray(lower_edges, dtype=np.float64)[::-1][keep])


def operating_point_intervals(
    curve: SortedPixels,
    draws: np.ndarray,
    level: float = 0.95,
    block_bytes: int = 64 * 2**20,
) -> dict[str, dict[str, Any]]:
    """Percentile intervals of each rule's point chosen anew on resampled chips.

    ``draws`` (replicates, chips) counts how often each chip of ``curve`` is drawn in each
    replicate (the AUPRC interval's draws). Per rule: ``[low, high]`` of the threshold,
    precision, recall and F1, over the replicates where the rule is reached
    (``replicates_reaching``); NaN where none is.
    """
    thresholds = _positive_thresholds(curve)
    columns = max(thresholds.size, 1)
    block = max(1, block_bytes // (8 * 8 * columns))  # ~8 float64 (rows x columns) arrays
    values = {rule: np.full((len(draws), len(FIELDS)), np.nan) for rule in RULES}
    for start in range(0, len(draws), block):
        rates = _choose(*curve.at_positives(draws[start : start + block]))
        rows = np.arange(len(rates["precision"]))
        for rule, column in rates["chosen"].items():
            reached = column >= 0
            k, r = column[reached], rows[reached]
            chosen = [thresholds[k]] + [rates[name][r, k] for name in FIELDS[1:]]
            values[rule][start + r] = np.stack(chosen, axis=1)
    tail = (1 - level) / 2
    intervals = {}
    for rule, table in values.items():
        reached = table[np.isfinite(table[:, 0])]
        bounds = (
            np.quantile(reached, [tail, 1 - tail], axis=0)
            if len(reached)
            else np.full((2, len(FIELDS)), np.nan)
        )
        intervals[rule] = {
            **{name: [float(bounds[0, i]), float(bounds[1, i])] for i, name in enumerate(FIELDS)},
            "replicates_reaching": len(reached),
        }
    return intervals


def summarise_thresholds(
    scores: np.ndarray,
    labels: np.ndarray,
    weights: np.ndarray | None,
    draws: np.ndarray,
    level: float = 0.95,
) -> dict[str, Any]:
    """The ``thresholds`` entry of metrics.json: operating points of chips (N, H, W) with intervals.

    Pixels are sorted once, per chip, for the points and every replicate of ``draws``.
    """
    curve = SortedPixels.of_chips(scores, labels, weights)
    found = operating_points(curve)
    intervals = operating_point_intervals(curve, draws, level)
    points: dict[str, Any] = {}
    for rule in RULES:
        if rule in found.points:
            point = found.points[rule]
            ci = {name: intervals[rule][name] for name in FIELDS}
            points[rule] = {
                "reachable": True,
                **point.as_dict(),
                f"ci{round(level * 100)}": ci,
                "replicates_reaching": intervals[rule]["replicates_reaching"],
            }
        else:
            points[rule] = {"reachable": False, "max_precision": found.max_precision}
    return {
        "convention": CONVENTION,
        "operating_points": points,
        "max_precision": found.max_precision,
        "interval": {
            "of": (
                "threshold, precision, recall and F1 of the operating point chosen anew on "
                "each bootstrap replicate (the chips drawn for auprc_ci95), over the "
                "replicates that reach it"
            ),
            "method": "percentile",
            "level": level,
            "replicates": len(draws),
        },
    }


def stored_thresholds(
    found: OperatingPoints, *, region: str, split: str, epoch: int, source: str
) -> dict[str, Any]:
    """The JSON-able thresholds a checkpoint keeps (``checkpoint["thresholds"]``)."""
    return {
        "region": region,
        "split": split,
        "epoch": epoch,
        "source": source,
        "convention": CONVENTION,
        "operating_points": {rule: point.as_dict() for rule, point in found.points.items()},
        "max_precision": found.max_precision,
    }


@dataclass(frozen=True)
class ChosenThreshold:
    """The threshold a map applies (``probability >= value``), its rule and where it came from."""

    value: float
    rule: str
    source: str


def resolve_threshold(
    spec: str | float | None,
    stored: dict[str, Any] | None,
    *,
    option: str = "--maps.threshold",
    checkpoint: str = "",
) -> ChosenThreshold | None:
    """The threshold ``spec`` asks for, from the ``stored`` validation thresholds if a rule.

    ``spec`` is ``max_f1``, ``precision@P`` (P one of the stored targets, 0.5, 0.7 or
    0.9), a probability in [0, 1] (``"fixed"``), or ``none``/None: no threshold (None).
    Errors name ``option`` and, for stored rules, ``checkpoint``.
    """
    if spec is None or (isinstance(spec, str) and spec.strip().lower() == "none"):
        return None
    value = _number(spec, option)
    if value is not None:
        return ChosenThreshold(value, "fixed", f"fixed threshold given by {option}")
    rule = _rule(spec.strip(), option)
    return _stored(rule, stored, option, checkpoint)


def _number(spec: str | float, option: str) -> float | None:
    """``spec`` as a probability, None if it is not a number; an error outside [0, 1]."""
    if isinstance(spec, bool):
        raise ConfigError(f"{option} {spec}: not a threshold; use {FORMS}")
    try:
        value = float(spec)
    except ValueError:
        return None
    if not 0 <= value <= 1:  # NaN too
        raise ConfigError(
            f"{option} {spec}: a threshold is a probability in [0, 1] ({CONVENTION}); "
            "e.g. 0.5, or a rule: max_f1, precision@0.7"
        )
    return value


def _rule(spec: str, option: str) -> str:
    """The stored rule name that ``spec`` names (``precision@.7`` -> ``precision@0.7``)."""
    if spec.lower() == MAX_F1:
        return MAX_F1
    name, at, target = spec.partition("@")
    if name.lower() != "precision" or not at:
        raise ConfigError(f"{option} {spec}: unknown threshold; use {FORMS}")
    try:
        value = float(target)
    except ValueError:
        value = math.nan
    if not 0 < value <= 1:
        raise ConfigError(
            f"{option} {spec}: the precision target must be a number in (0, 1], "
            f"e.g. {precision_rule(0.7)}"
        )
    return precision_rule(value)


def _stored(
    rule: str, stored: dict[str, Any] | None, option: str, checkpoint: str
) -> ChosenThreshold:
    """The stored point of ``rule``, with a sentence saying where it came from."""
    where = Path(checkpoint).name if checkpoint else "the checkpoint"
    if not stored:
        raise ConfigError(
            f"{option} {rule}: {where} holds no thresholds chosen on validation (trained "
            "by a landslide-lit without them, or fit never validated). Give a probability, "
            f"e.g. `{option} 0.5` (`validate` writes the operating points into its "
            f"metrics.json), or `{option} none` for no mask, or train again with this version"
        )
    points = stored.get("operating_points", {})
    region, epoch = stored.get("region", "?"), stored.get("epoch", "?")
    if rule not in points:
        highest = stored.get("max_precision", math.nan)
        if rule not in RULES:
            reason = "validation stores the precision targets " + ", ".join(RULES[1:])
        elif rule == MAX_F1 or not math.isfinite(highest):
            reason = "validation had no landslide pixel"
        else:
            reason = f"validation never reached it (highest precision {highest:.3f})"
        raise ConfigError(
            f"{option} {rule}: not available in {where} ({region}, epoch {epoch}): {reason}. "
            f"Stored: {', '.join(points) or 'none'}; or give a probability, e.g. `{option} 0.5`"
        )
    point = points[rule]
    name = "max-F1" if rule == MAX_F1 else rule
    source = (
        f"{name} threshold of {region} validation, epoch {epoch}, stored in {where} "
        f"(precision {point['precision']:.2f}, recall {point['recall']:.2f})"
    )
    return ChosenThreshold(float(point["threshold"]), rule, source)
