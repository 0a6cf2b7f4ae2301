"""Landslide probability maps: predicted chips stitched back into the cube's grid."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.distributed as dist
import xarray as xr
from lightning.pytorch.callbacks import BasePredictionWriter

log = logging.getLogger(__name__)


class ProbabilityMapWriter(BasePredictionWriter):
    """Writes ``predict`` output as one netCDF map per region, in the cube's coordinates.

    Each chip's probabilities are pasted at its origin; pixels no chip covers are
    NaN. The map keeps the cube's y/x coordinates and attributes (CRS included).

    Args:
        output_dir: folder for ``<region>_landslide_probability.nc`` (default: the
            run's log folder, ``predictions/`` inside it).
    """

    def __init__(self, output_dir: str | None = None) -> None:
        super().__init__(write_interval="batch")
        self.output_dir = output_dir
        self._maps: dict[str, np.ndarray] = {}

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._maps = {}

    def write_on_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        prediction: dict[str, torch.Tensor],
        batch_indices: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        region = trainer.datamodule.dataloader_regions("predict")[dataloader_idx]
        if region not in self._maps:
            grid = trainer.datamodule.grids[region]
            self._maps[region] = np.full(grid.attrs["shape"], np.nan, np.float32)
        probability = prediction["probability"][:, 0].cpu().numpy()
        size = probability.shape[-1]
        for (y, x), chip in zip(prediction["origin"].tolist(), probability, strict=True):
            self._maps[region][y : y + size, x : x + size] = chip

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        maps = {region: _merge_ranks(p, pl_module.device) for region, p in self._maps.items()}
        # trainer.log_dir is a collective under DDP: every rank asks, rank 0 writes
        folder = Path(self.output_dir or Path(trainer.log_dir or ".") / "predictions")
        if not trainer.is_global_zero:
            return
        folder.mkdir(parents=True, exist_ok=True)
        for region, probability in maps.items():
            path = folder / f"{region}_landslide_probability.nc"
            probability_map(probability, trainer.datamodule.grids[region]).to_netcdf(path)
            log.info("wrote the %s landslide probability map to %s", region, path)


def _merge_ranks(probability: np.ndarray, device: torch.device) -> np.ndarray:
    """Under DDP each process predicted some chips: combine them (others' pixels are NaN)."""
    if not (dist.is_available() and dist.is_initialized()):
        return probability
    merged = torch.from_numpy(np.nan_to_num(probability, nan=-1.0)).to(device)
    dist.all_reduce(merged, op=dist.ReduceOp.MAX)  # probabilities >= 0 beat the -1 fill
    out = merged.cpu().numpy()
    out[out < 0] = np.nan
    return out


def probability_map(probability: np.ndarray, grid: xr.Dataset) -> xr.Dataset:
    """A probability array on ``grid`` (a composite's coordinates and attributes)."""
    y, x = grid.attrs["dims"]
    data = xr.DataArray(
        probability,
        dims=(y, x),
        attrs={
            "long_name": "landslide probability",
            "units": "1",
            "valid_range": [0.0, 1.0],
        },
    )
    attrs = {k: v for k, v in grid.attrs.items() if k not in ("shape", "dims")}
    return xr.Dataset({"landslide_probability": data}, coords=grid.coords, attrs=attrs)
