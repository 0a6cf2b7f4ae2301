"""Tiny probability maps made by code, written by predict's own map writers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import xarray as xr
from scipy import ndimage

from landslide_lit.map_files import CHUNK, Block, MapFiles
from landslide_lit.rasters import Grid

CRS = "EPSG:32654"
PIXEL = 10.0
X0, Y0 = 300000.0, 5000.0  # top-left corner of the top-left pixel


def probability_field(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Smooth blobs of probability in [0, 1], NaN (no SAR data) in a corner."""
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.normal(size=(height, width)), 3)
    field = (field - field.min()) / (field.max() - field.min())
    field[: height // 5, : width // 4] = np.nan
    return field.astype(np.float32)


def blocks_of(
    probability: np.ndarray, rows: int = CHUNK, columns: int | None = None, std: bool = False
) -> Iterator[Block]:
    """The map in blocks of ``rows`` rows and ``columns`` columns (default: the whole width),
    as predict hands them to its writers; ``std``: an ensemble's, with a standard deviation."""
    columns = columns or probability.shape[1]
    for y0 in range(0, probability.shape[0], rows):
        for x0 in range(0, probability.shape[1], columns):
            part = probability[y0 : y0 + rows, x0 : x0 + columns]
            valid = np.isfinite(part)
            spread = part / 4 if std else None
            yield Block(y0, x0, part, valid, np.zeros(part.shape, bool), spread)


def grid(height: int, width: int, crs: str | None = CRS) -> Grid:
    """The grid of :func:`fake_windows` (rasterio's affine: the responder extra)."""
    from affine import Affine

    return Grid(height, width, Affine(PIXEL, 0, X0, 0, -PIXEL, Y0), crs)


def fake_windows(height: int, width: int, region: str = "testland", crs: bool = True):
    """What the map writers read of a WindowDataset: the cube's grid, dims, region."""
    coords = {
        "y": Y0 - PIXEL / 2 - PIXEL * np.arange(height),
        "x": X0 + PIXEL / 2 + PIXEL * np.arange(width),
    }
    if crs:
        coords["spatial_ref"] = ((), 0, {"crs_wkt": CRS})
    return SimpleNamespace(
        region=SimpleNamespace(name=region),
        path=Path(f"{region}.zarr"),
        plan=SimpleNamespace(height=height, width=width),
        dims=("y", "x"),
        grid=xr.Dataset(coords=coords),
        grid_mapping="spatial_ref" if crs else None,
        has_labels=False,
    )


def write_map(
    folder: Path,
    probability: np.ndarray,
    formats=("netcdf", "geotiff"),
    attrs: dict | None = None,
    crs: bool = True,
    region: str = "testland",
) -> Path:
    """``probability`` as predict's ``<region>_landslide_probability.*``; the stem."""
    windows = fake_windows(*probability.shape, region=region, crs=crs)
    attrs = {"crs": CRS, **(attrs or {})} if crs else dict(attrs or {})
    files = MapFiles(folder, windows, attrs, list(formats), quicklook=False)
    for block in blocks_of(probability):
        files.add(block)
    files.close(None)
    return folder / f"{region}_landslide_probability"
