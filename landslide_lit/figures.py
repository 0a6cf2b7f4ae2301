"""Figures: predicted vs true landslides on chips (like Fig. 1 of the seed paper),
precision-recall curves, Table 1 bars with intervals and the cross-region heatmap."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from landslide_lit.atomic import write_atomically

__all__ = [
    "plot_pr_curves",
    "plot_prediction_panels",
    "plot_table_bars",
    "plot_transfer_heatmap",
]


def plot_prediction_panels(
    panels: dict[str, tuple[np.ndarray, np.ndarray]], path: str | Path
) -> Path:
    """Predicted probability (top row) over true landslides (bottom row), per region.

    ``panels`` maps a title (e.g. the region) to (probability, target) stacks
    of shape (N, H, W). Colours follow the seed paper: background purple,
    landslides yellow.
    """
    columns = [
        (title, p, t)
        for title, (probability, target) in panels.items()
        for p, t in zip(probability, target, strict=True)
    ]
    fig, axes = plt.subplots(2, len(columns), figsize=(2.2 * len(columns), 4.8), squeeze=False)
    for j, (title, probability, target) in enumerate(columns):
        for i, (image, row) in enumerate(((probability, "predicted"), (target, "true"))):
            ax = axes[i, j]
            ax.imshow(image, cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(row)
        axes[0, j].set_title(title, fontsize=9)
    fig.suptitle("Landslide probability (top) vs mapped landslides (bottom)")
    return _save(fig, path)


RULE_MARKERS = {"max_f1": "*", "precision@0.5": "o", "precision@0.7": "s", "precision@0.9": "^"}
"""Marker of each operating point on a PR curve (other rules: diamonds)."""


def plot_pr_curves(
    curves: dict[str, tuple[np.ndarray, np.ndarray, float, Sequence[float] | None]],
    no_skill: dict[str, float],
    path: str | Path,
    title: str = "Precision-recall",
    operating_points: dict[str, dict[str, dict[str, float]]] | None = None,
) -> Path:
    """Precision-recall curves, one per label, each with its no-skill line.

    ``curves`` maps a label to (precision, recall, AUPRC, 95 % interval or None);
    ``no_skill`` maps the same labels to the fraction of landslide pixels, drawn as a
    dashed horizontal line in the curve's colour. ``operating_points`` maps a label to
    its points by rule (``max_f1``, ``precision@0.7``...), each a dict with
    ``threshold``, ``precision``, ``recall`` and ``f1``: marked on the curve and named,
    with their threshold, in the legend.
    """
    fig, ax = plt.subplots(figsize=(4.8, 4.2))
    for i, (label, (precision, recall, auprc, interval)) in enumerate(curves.items()):
        colour = f"C{i}"
        text = f"{label}: AUPRC {auprc:.3f}"
        if interval is not None and np.all(np.isfinite(interval)):
            text += f" [{interval[0]:.3f}, {interval[1]:.3f}]"
        ax.step(recall, precision, where="post", color=colour, label=text)
        if label in no_skill:
            ax.axhline(
                no_skill[label],
                color=colour,
                linestyle="--",
                linewidth=1,
                label=f"no skill {no_skill[label]:.3f}",
            )
        for rule, point in (operating_points or {}).get(label, {}).items():
            name = f"max F1 {point['f1']:.2f}" if rule == "max_f1" else rule
            ax.plot(
                point["recall"],
                point["precision"],
                linestyle="none",
                marker=RULE_MARKERS.get(rule, "D"),
                markersize=9 if rule == "max_f1" else 6,
                markerfacecolor=colour,
                markeredgecolor="black",
                zorder=3,
                label=f"{name} at p >= {point['threshold']:.3g}",
            )
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title(title)
    ax.legend(fontsize=7, loc="best")  # the curve and its points decide where
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_table_bars(
    groups: Sequence[str],
    rows: Sequence[str],
    values: dict[tuple[str, str], dict[str, Any]],
    no_skill: dict[str, float],
    path: str | Path,
    title: str = "AUPRC",
    banner: str | None = None,
) -> Path:
    """Grouped bars (one group per evaluated region, one bar per config) with intervals.

    ``values[(row, group)]`` holds ``mean``, optional ``low``/``high`` (drawn as error
    bars), ``per_seed`` (dots) and ``paper`` (a black diamond); ``no_skill[group]`` is
    drawn as a dashed line across its group.
    """
    fig, ax = plt.subplots(figsize=(1.6 + 1.9 * len(groups), 4.2))
    width = 0.8 / max(len(rows), 1)
    paper_labelled = False
    for i, row in enumerate(rows):
        for g, group in enumerate(groups):
            cell = values.get((row, group))
            if cell is None or not np.isfinite(cell.get("mean", np.nan)):
                continue
            x = g + (i - (len(rows) - 1) / 2) * width
            low, high = cell.get("low"), cell.get("high")
            error = None
            if low is not None and high is not None and np.isfinite([low, high]).all():
                error = [[max(cell["mean"] - low, 0)], [max(high - cell["mean"], 0)]]
            ax.bar(
                x,
                cell["mean"],
                width * 0.9,
                color=f"C{i}",
                yerr=error,
                capsize=3,
                label=row if g == 0 else None,
            )
            seeds = cell.get("per_seed") or []
            ax.scatter([x] * len(seeds), seeds, s=8, color="black", alpha=0.6, zorder=3)
            if cell.get("paper") is not None:
                ax.scatter(
                    x,
                    cell["paper"],
                    marker="D",
                    s=22,
                    facecolor="white",
                    edgecolor="black",
                    zorder=4,
                    label=None if paper_labelled else "published (single run)",
                )
                paper_labelled = True
    for g, group in enumerate(groups):
        if group in no_skill and np.isfinite(no_skill[group]):
            ax.hlines(
                no_skill[group],
                g - 0.45,
                g + 0.45,
                colors="grey",
                linestyles="--",
                label="no skill" if g == 0 else None,
            )
    ax.set_xticks(range(len(groups)), groups)
    ax.set_ylabel("AUPRC (bars: seed mean; whiskers: 95 % chip bootstrap)")
    ax.yaxis.label.set_fontsize(8)
    ax.set_ylim(0, 1)
    ax.set_title(title if banner is None else f"{title}\n{banner}", fontsize=9)
    ax.legend(fontsize=7, loc="upper right")
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def plot_transfer_heatmap(
    train_regions: Sequence[str],
    test_regions: Sequence[str],
    cells: dict[tuple[str, str], dict[str, Any]],
    path: str | Path,
    title: str = "Cross-region transfer",
) -> Path:
    """Train region (rows) x test region (columns), coloured by AUPRC / no skill.

    ``cells[(train, test)]`` holds ``mean``, ``std`` and ``no_skill``; each cell is
    annotated with AUPRC +- std and the ratio to its test set's no-skill baseline.
    """
    lift = np.full((len(train_regions), len(test_regions)), np.nan)
    for i, train in enumerate(train_regions):
        for j, test in enumerate(test_regions):
            cell = cells.get((train, test))
            if cell is not None and cell.get("no_skill"):
                lift[i, j] = cell["mean"] / cell["no_skill"]
    fig, ax = plt.subplots(figsize=(1.8 + 1.5 * len(test_regions), 1.4 + 1.0 * len(train_regions)))
    low = min(1.0, np.nanmin(lift)) if np.isfinite(lift).any() else 1.0
    high = max(np.nanmax(lift), low + 0.01) if np.isfinite(lift).any() else 2.0
    image = ax.imshow(lift, cmap="viridis", vmin=low, vmax=high)
    for i, train in enumerate(train_regions):
        for j, test in enumerate(test_regions):
            cell = cells.get((train, test))
            if cell is None:
                continue
            text = f"{cell['mean']:.3f}"
            if np.isfinite(cell.get("std", np.nan)):
                text += f"\n±{cell['std']:.3f}"
            text += f"\n{lift[i, j]:.1f}x"
            bright = np.isfinite(lift[i, j]) and lift[i, j] > np.nanmean(lift)
            ax.text(
                j,
                i,
                text,
                ha="center",
                va="center",
                fontsize=7,
                color="black" if bright else "white",
                fontweight="bold" if train == test else "normal",
            )
    ax.set_xticks(range(len(test_regions)), test_regions)
    ax.set_yticks(range(len(train_regions)), train_regions)
    ax.set_xlabel("test region (diagonal: held-out split of the train region)")
    ax.set_ylabel("train region")
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, label="AUPRC / no skill")
    return _save(fig, path)


def _save(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` atomically (its format from the suffix) and close it."""
    fig.tight_layout()
    try:
        return write_atomically(path, lambda temporary: fig.savefig(temporary, dpi=120))
    finally:
        plt.close(fig)
