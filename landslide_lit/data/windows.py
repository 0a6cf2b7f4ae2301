"""Whole-region prediction: the window plan, its blending weights and a band reader.

Windows of ``size`` pixels cover the whole region, edges included: they start every
``size - overlap`` pixels from the top-left corner, the last one of a row or column is
clamped to the region's edge, and a region smaller than a window is padded with NaN (no
data). Each window's probabilities are weighted by a raised-cosine ramp over the overlap,
positive everywhere, divided by the summed weights of every window covering a pixel, so
the weights of a pixel add up to one: a constant model gives a constant map, and with no
overlap each pixel is its one window's prediction.

Windows are read in bands: runs of consecutive window rows whose composite is built at once
by :func:`build_composite` from a lazy row slice of the cube. Memory holds one band (its
rows x the region's width), never the whole region.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr
from torch.utils.data import Dataset

from landslide_lit.data.composite import (
    SAR_CHANNELS,
    CompositeSettings,
    build_composite,
)
from landslide_lit.data.cube import open_cube
from landslide_lit.regions import Region

log = logging.getLogger(__name__)

BAND_ROWS = 512
"""Rows a band of windows aims at (one zarr chunk row of the published and synthetic
cubes); a band is never shorter than one window."""


def window_starts(length: int, size: int, step: int) -> np.ndarray:
    """Starts of the windows along one axis: every ``step``, the last clamped to the edge."""
    if length <= size:
        return np.zeros(1, np.int64)
    starts = np.arange(0, length - size, step)
    return np.append(starts, length - size).astype(np.int64)


def ramp(size: int, overlap: int) -> np.ndarray:
    """A window's weight profile: 1 inside, a raised cosine over ``overlap`` px at each end.

    Positive everywhere (the cosine is sampled at pixel centres), so every pixel of the
    region gets a weight.
    """
    profile = np.ones(size)
    if overlap:
        edge = 0.5 - 0.5 * np.cos(np.pi * (np.arange(overlap) + 0.5) / overlap)
        profile[:overlap] = np.minimum(profile[:overlap], edge)
        profile[size - overlap :] = np.minimum(profile[size - overlap :], edge[::-1])
    return profile


def _normalised(starts: np.ndarray, length: int, profile: np.ndarray) -> dict[int, np.ndarray]:
    """Per start, the profile (cut to the region) divided by the summed profiles of all."""
    total = np.zeros(length)
    for start in starts:
        total[start : start + len(profile)] += profile[: length - start]
    return {
        int(s): (profile[: length - s] / total[s : s + len(profile)]).astype(np.float32)
        for s in starts
    }


def check_overlap(overlap: int, size: int) -> None:
    """Raise a clear error unless 0 <= ``overlap`` < ``size``."""
    if not 0 <= overlap < size:
        raise ValueError(
            f"predict_overlap={overlap}: must be in [0, chip_size) = [0, {size}); "
            "it is the number of pixels neighbouring prediction windows share"
        )


class WindowPlan:
    """Windows of ``size`` px over a ``height`` x ``width`` region, row by row.

    Args:
        overlap: pixels shared by neighbouring windows, in [0, size).
    """

    def __init__(self, height: int, width: int, size: int, overlap: int) -> None:
        check_overlap(overlap, size)
        self.height, self.width, self.size, self.overlap = height, width, size, overlap
        self.rows = window_starts(height, size, size - overlap)
        self.cols = window_starts(width, size, size - overlap)
        profile = ramp(size, overlap)
        self._row_weights = _normalised(self.rows, height, profile)
        self._col_weights = _normalised(self.cols, width, profile)
        self.bands = self._group_rows()

    def __len__(self) -> int:
        return len(self.rows) * len(self.cols)

    def origin(self, index: int) -> tuple[int, int]:
        """(row, column) of window ``index``'s top-left pixel."""
        row, col = divmod(index, len(self.cols))
        return int(self.rows[row]), int(self.cols[col])

    def weight(self, y: int, x: int) -> np.ndarray:
        """Blending weights of the window at (y, x), cut to the region: (h, w) float32."""
        return np.outer(self._row_weights[y], self._col_weights[x])

    def band_of(self, index: int) -> int:
        """The band holding window ``index``."""
        return int(self._band_of_row[index // len(self.cols)])

    def _group_rows(self) -> list[tuple[int, int]]:
        """Row extents (y0, y1) of bands of consecutive window rows, ~BAND_ROWS each."""
        bands, band_of_row, first = [], [], 0
        for i, start in enumerate(self.rows):
            if start + self.size - self.rows[first] > max(BAND_ROWS, self.size):
                bands.append((int(self.rows[first]), int(self.rows[i - 1]) + self.size))
                first = i
            band_of_row.append(len(bands))
        bands.append((int(self.rows[first]), int(self.rows[-1]) + self.size))
        self._band_of_row = np.array(band_of_row)
        return [(y0, min(y1, self.height)) for y0, y1 in bands]


@contextmanager
def _quiet() -> Iterator[None]:
    """Silence the composite's warnings (short windows): said once, on the first band."""
    logger = logging.getLogger("landslide_lit.data.composite")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            yield
    finally:
        logger.setLevel(level)


class WindowDataset(Dataset):
    """The windows of a whole region, read band by band from its cube.

    Items are dicts of ``image`` (C, S, S) float32 composite values (NaN where there is
    no data or beyond the region), ``origin`` (2,) long and, when the cube has labels,
    ``target`` (S, S) uint8 (``landslides > 0``). Windows are meant to be read in order
    (as an evaluation shard does): one band is kept at a time.

    Attributes:
        plan: the windows.
        grid: the cube's coordinates without time or pair dimensions (y/x, CRS), lazy.
        attrs: the composite's attributes (the cube's, and the dates used), after a read.
    """

    def __init__(
        self,
        path: Path,
        region: Region,
        channels: Sequence[str],
        settings: CompositeSettings,
        size: int,
        overlap: int,
    ) -> None:
        self.path, self.region, self.channels, self.settings = path, region, channels, settings
        names = region.names
        cube = self._open()
        self.dims = (names.y, names.x)
        self.plan = WindowPlan(cube.sizes[names.y], cube.sizes[names.x], size, overlap)
        self.has_labels = names.landslides in cube.variables
        spatial = [
            k
            for k, v in cube.coords.items()
            if names.time not in v.dims and names.pair not in v.dims
        ]
        self.grid = cube.drop_vars([k for k in cube.variables if k not in spatial])
        self.grid_mapping = _grid_mapping(cube, names.vv)
        self.attrs: dict[str, Any] = {}
        self.sar_channels = [i for i, c in enumerate(channels) if c in SAR_CHANNELS]
        self._band: tuple[int, np.ndarray, np.ndarray | None] | None = None
        self._reads = 0

    def _open(self) -> xr.Dataset:
        if getattr(self, "_cube", None) is None:
            self._cube = open_cube(self.path, self.region.names)
        return self._cube

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_cube": None, "_band": None}

    def __len__(self) -> int:
        return len(self.plan)

    def read_rows(self, y0: int, y1: int) -> tuple[np.ndarray, np.ndarray | None]:
        """The composite (C, y1 - y0, W) of rows [y0, y1) and its raw labels (or None)."""
        cube = self._open().isel({self.region.names.y: slice(y0, y1)})
        with _quiet() if self._reads else nullcontext():
            composite = build_composite(cube, self.region, self.channels, self.settings)
        self._reads += 1
        self.attrs = dict(composite.attrs)
        label = composite["label"].values if "label" in composite else None
        return composite["image"].values, label

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        band = self.plan.band_of(index)
        if self._band is None or self._band[0] != band:
            self._band = None  # one band in memory at a time
            self._band = (band, *self.read_rows(*self.plan.bands[band]))
        _, image, label = self._band
        y, x = self.plan.origin(index)
        top = y - self.plan.bands[band][0]
        size = self.plan.size
        window = np.full((image.shape[0], size, size), np.nan, np.float32)
        crop = image[:, top : top + size, x : x + size]
        window[:, : crop.shape[1], : crop.shape[2]] = crop
        item = {"image": torch.from_numpy(window), "origin": torch.tensor([y, x])}
        if label is not None:
            target = np.zeros((size, size), np.uint8)
            cut = label[top : top + size, x : x + size]
            target[: cut.shape[0], : cut.shape[1]] = cut > 0  # NaN: no landslide
            item["target"] = torch.from_numpy(target)
        return item

    def moments(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-channel mean and standard deviation over the region's finite pixels.

        Streamed over blocks of rows and combined exactly (Chan et al.'s pairwise update,
        float64), equal to ``np.nanmean``/``np.nanstd`` of the whole composite to ~1e-12.
        NaN for a channel without data.
        """
        n_channels = len(self.channels)
        count, mean, m2 = np.zeros(n_channels), np.zeros(n_channels), np.zeros(n_channels)
        for y0 in range(0, self.plan.height, BAND_ROWS):
            image, _ = self.read_rows(y0, min(y0 + BAND_ROWS, self.plan.height))
            for c, plane in enumerate(image):
                values = plane[np.isfinite(plane)].astype(np.float64)
                if values.size == 0:
                    continue
                n_b, mean_b = values.size, values.mean()
                m2_b = np.square(values - mean_b).sum()
                n = count[c] + n_b
                delta = mean_b - mean[c]
                mean[c] += delta * n_b / n
                m2[c] += m2_b + delta**2 * count[c] * n_b / n
                count[c] = n
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(count > 0, mean, np.nan), np.sqrt(m2 / count)


def _grid_mapping(cube: xr.Dataset, variable: str) -> str | None:
    """The name of the cube's CF grid-mapping variable (CRS), if it has one."""
    var = cube.get(variable)
    if var is not None:
        name = var.attrs.get("grid_mapping") or var.encoding.get("grid_mapping")
        if name:
            return str(name)
    for name, coord in cube.coords.items():
        if coord.ndim == 0 and {"crs_wkt", "spatial_ref", "grid_mapping_name"} & set(coord.attrs):
            return str(name)
    return None
