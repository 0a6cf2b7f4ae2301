"""Evaluation outputs: the per-pixel scores of ``validate`` and ``test``, their summary
(exact AUPRC with a chip-bootstrap interval) and the callback that writes them.

:class:`EvaluationWriter` collects the per-pixel probabilities of ``validate``/``test``
(gathered to rank 0 under DDP) and writes, per region, ``metrics.json``, a
precision-recall curve, predicted-vs-true panels and ``scores.npz``. The AUPRC is exact
(:mod:`landslide_lit.precision`), its interval a chip bootstrap
(:mod:`landslide_lit.bootstrap`).

Memory: everything here holds the per-pixel probabilities of the evaluated chips only
(4 + 1 + 1 bytes a pixel, about 6 MB for 61 chips of 128 x 128 px; the bootstrap adds
a few times that), which is small for test sets of landslide chips but grows with
``--data.keep valid`` over a whole large region.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch.distributed as dist
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.trainer.states import TrainerFn

from landslide_lit import figures
from landslide_lit.atomic import write_atomically, write_json_atomically
from landslide_lit.bootstrap import (
    DEFAULT_BOOTSTRAP_SEED,
    DEFAULT_METHOD,
    DEFAULT_REPLICATES,
    METHOD_NAMES,
    Method,
    chip_bootstrap,
    chip_draws,
)
from landslide_lit.errors import ConfigError
from landslide_lit.metrics import dataloader_regions
from landslide_lit.precision import no_skill, precision_recall_points
from landslide_lit.stages import EVALUATED_BY, METRIC_SPLIT, Command
from landslide_lit.thresholds import MAX_F1, summarise_thresholds

__all__ = ["EvaluationWriter", "Scores", "summarise", "write_json"]

log = logging.getLogger(__name__)


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
        """Write the arrays to a compressed ``.npz``, atomically."""
        return write_atomically(
            path, lambda temporary: np.savez_compressed(temporary, **asdict(self))
        )

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
    """Exact AUPRC, its chip-bootstrap interval, the no-skill baseline, counts and thresholds.

    ``thresholds`` holds the operating points (:mod:`landslide_lit.thresholds`) with
    percentile intervals over the same chip draws as the AUPRC's.
    """
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
        "thresholds": summarise_thresholds(
            scores.probability,
            scores.target,
            weights,
            chip_draws(len(scores.target), max(replicates, 0), seed),
            interval.level,
        ),
    }


WRITTEN_AFTER: tuple[Command, ...] = ("validate", "test")
"""The commands whose evaluations are written (validation inside ``fit`` is left alone)."""


class EvaluationWriter(Callback):
    """After ``validate`` and ``test``: per region, metrics with intervals and figures.

    Writes to ``OUTPUT/<stage>_<region>/`` (``val_hokkaido``, ``test_talakmau``...):

    * ``metrics.json``: exact AUPRC, its 95 % chip-bootstrap interval (BCa unless
      ``bootstrap_method`` says ``percentile``; ``bootstrap`` records the method, and a
      ``note`` where no interval could be made), the no-skill baseline, chips, pixels, the
      checkpoint evaluated; ``thresholds``: the operating points of these chips (max F1,
      precision 0.5/0.7/0.9; :mod:`landslide_lit.thresholds`) with percentile intervals
      over the same chip draws, and ``checkpoint_thresholds``, those chosen on validation
      during ``fit`` that maps apply;
    * ``pr_curve.png``: the precision-recall curve with the no-skill line and the
      operating points;
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
        if trainer.state.fn not in WRITTEN_AFTER or not isinstance(outputs, dict):
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
    def output_folder(self, trainer: L.Trainer) -> Path:
        """Where the per-region folders go (``trainer.log_dir`` is a collective: all ranks)."""
        if self.output_dir is not None:
            return Path(self.output_dir)
        return Path(trainer.log_dir or trainer.default_root_dir) / "evaluation"

    def _write(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        command = trainer.state.fn.value
        prefix = METRIC_SPLIT[command]
        folder = self.output_folder(trainer)
        regions = dataloader_regions(trainer, EVALUATED_BY[command])
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
                    # what predict applies: chosen on validation during fit
                    "checkpoint_thresholds": getattr(pl_module, "thresholds", None),
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
        if stage == "test":
            metrics["thresholds"]["note"] = (
                "chosen on these test chips, to describe them; maps use thresholds chosen "
                "on validation (checkpoint_thresholds)"
            )
        files = {"metrics": "metrics.json", **self._write_files(folder, scores, metrics)}
        metrics["files"] = files
        write_json(folder / "metrics.json", metrics)
        low, high = metrics["auprc_ci95"]
        best = metrics["thresholds"]["operating_points"][MAX_F1]
        log.info(
            "%s %s: AUPRC %.3f (95%% %s CI %.3f-%.3f over %d chips), no skill %.3f, %s; wrote %s",
            stage,
            region,
            metrics["auprc"],
            metrics["bootstrap"]["method"],
            low,
            high,
            metrics["chips"],
            metrics["no_skill"],
            (
                f"max F1 {best['f1']:.3f} at probability >= {best['threshold']:.3g}"
                if best["reachable"]
                else "no landslide pixel"
            ),
            folder,
        )
        return folder

    def _write_files(self, folder: Path, scores: Scores, metrics: dict[str, Any]) -> dict[str, str]:
        """Write the PR curve, the panels and scores.npz as configured; their names."""
        weights = scores.weights(metrics["ignore_invalid"])
        precision, recall, _ = precision_recall_points(scores.probability, scores.target, weights)
        label = f"{metrics['region']} {metrics['split']}"
        points = metrics["thresholds"]["operating_points"]
        figures.plot_pr_curves(
            {label: (precision, recall, metrics["auprc"], metrics["auprc_ci95"])},
            {label: metrics["no_skill"]},
            folder / "pr_curve.png",
            title=f"Precision-recall, {label}",
            operating_points={label: {r: p for r, p in points.items() if p["reachable"]}},
        )
        files = {"pr_curve": "pr_curve.png"}
        if self.panels > 0:
            chosen = scores.most_affected(self.panels)
            figures.plot_prediction_panels(
                {label: (scores.probability[chosen], scores.target[chosen])},
                folder / "predictions.png",
            )
            files["panels"] = "predictions.png"
        if self.save_scores:
            scores.save(folder / "scores.npz")
            files["scores"] = "scores.npz"
        return files


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
    """Write JSON atomically; numpy values and paths become plain JSON."""
    return write_json_atomically(path, data, default=_json_default)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
