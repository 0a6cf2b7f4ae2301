"""Whole-region prediction: the window plan, its blending weights and a band reader.

Windows cover the whole region, edges included. Along each axis the plan takes few windows
of at most ``size`` pixels that overlap by at least ``overlap``, as small as they can be,
with sides and starts multiples of :data:`MULTIPLE` (the network's downsampling, to which
its predictions are equivariant), every ``side - overlap`` pixels from the region's first
pixel; the last one reaches past the region's far edge by less than :data:`MULTIPLE`
pixels, padded with NaN (no data), as is a region smaller than a window. Windows are
rectangular when the two axes need different sides. Each window's probabilities are
weighted by a raised-cosine ramp over ``overlap`` pixels at its sides, positive
everywhere, divided by the summed weights of every window covering a pixel, so the
weights of a pixel add up to one: a constant model gives a constant map, and where one
window covers a pixel it is that window's prediction.

The statistics pass (:meth:`WindowDataset.moments`) composites the region tile by tile
(:data:`BAND_ROWS` x :data:`TILE_COLUMNS`) with :func:`build_composite` from lazy slices of
the cube, and keeps it on disk in a :class:`~landslide_lit.data.store.CompositeStore`, from
which each window is read alone: memory holds a tile or a window, whatever the region's
size. Without that store (no room in ``TMPDIR``), windows are read in bands: runs of
consecutive window rows composited at once from the cube, one band (its rows x the region's
width) in memory.
"""

from __future__ import annotations

import logging
import math
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr
from torch.utils.data import Dataset

from landslide_lit.data import acquisitions
from landslide_lit.data.composite import CompositeSettings, build_composite, composite_attrs
from landslide_lit.data.cube import CubeError, open_cube
from landslide_lit.data.settings import sar_channel_indices
from landslide_lit.data.stats import RunningMoments
from landslide_lit.data.store import CompositeStore, remove_stale_composites
from landslide_lit.errors import ConfigError
from landslide_lit.regions import Region

__all__ = [
    "BAND_ROWS",
    "MULTIPLE",
    "TILE_COLUMNS",
    "WindowDataset",
    "WindowPlan",
    "axis_windows",
    "check_overlap",
    "check_window",
    "default_overlap",
    "ramp",
]

log = logging.getLogger(__name__)

BAND_ROWS = 512
"""Rows a band of windows aims at (one zarr chunk row of the published and synthetic
cubes); a band is never shorter than one window."""

TILE_COLUMNS = 512
"""Columns of a tile of the statistics pass and of a strip of the kept composite (one zarr
chunk column of the published and synthetic cubes): memory does not grow with the width."""


MULTIPLE = 32
"""Window sides and starts are multiples of this: smp's encoders (depth 5) halve the image
five times (output stride 32). The U-Net needs sides divisible by it, and it is
translation-equivariant only for shifts by multiples of it: a window shifted by another
amount sees the pixels at another phase of its downsampling grid and predicts differently
(by up to 0.75 in probability for a 1-pixel shift, on the demo model)."""


def _round_up(length: int, unit: int) -> int:
    return -(-length // unit) * unit


def axis_windows(length: int, size: int, overlap: int) -> tuple[np.ndarray, int]:
    """Starts and side of the windows along an axis of ``length`` px.

    Few windows of at most ``size`` px overlapping by at least ``overlap``, as small as
    they can be; sides and starts multiples of :data:`MULTIPLE` (of the largest power of
    two dividing ``size`` when it is not one; starts anywhere when the overlap leaves
    less than that between them). They start every ``side - overlap`` px (rounded down
    to that multiple) from 0, and the last one at the first multiple at or after
    ``length - side``: so that each pixel is predicted at the same phase in every
    window, it reaches past the region's end (padded) by less than a multiple instead of
    being shifted to end on it. 128-pixel windows on a region whose sides are multiples
    of 32 are those of the chip-size windows of earlier versions.
    """
    unit = math.gcd(size, MULTIPLE)
    align = unit if size - overlap >= unit else 1  # else no two windows keep one phase
    if length <= size:
        return np.zeros(1, np.int64), _round_up(length, unit)
    count = math.ceil((length - overlap) / (size - overlap))
    while True:
        fewest = _round_up(math.ceil((length + (count - 1) * overlap) / count), unit)
        for side in range(fewest, size + 1, unit):
            step = (side - overlap) // align * align
            last = _round_up(length - side, align)
            if (count - 1) * step >= last:
                return np.minimum(np.arange(count, dtype=np.int64) * step, last), side
        count += 1


def ramp(size: int, overlap: int) -> np.ndarray:
    """A window's weight profile: 1 inside, a raised cosine over ``overlap`` px at each end.

    Positive everywhere (the cosine is sampled at pixel centres), so every pixel of the
    region gets a weight; where the two ends' ramps meet (a window shorter than twice the
    overlap), the lower one.
    """
    if not overlap:
        return np.ones(size)
    index = np.arange(size)
    distance = np.minimum(index, size - 1 - index)  # to the nearer end
    edge = 0.5 - 0.5 * np.cos(np.pi * (distance + 0.5) / overlap)
    return np.where(distance < overlap, edge, 1.0)


def _normalised(starts: np.ndarray, length: int, profile: np.ndarray) -> dict[int, np.ndarray]:
    """Per start, the profile (cut to the region) divided by the summed profiles of all."""
    total = np.zeros(length)
    for start in starts:
        total[start : start + len(profile)] += profile[: length - start]
    return {
        int(s): (profile[: length - s] / total[s : s + len(profile)]).astype(np.float32)
        for s in starts
    }


def default_overlap(window: int) -> int:
    """The overlap of windows of ``window`` px unless one is given: 64 px, a quarter of
    smaller windows (32 for 128, as in earlier versions).

    A prediction changes near a window's border (the convolutions' zero padding there):
    on the demo model by up to 0.4-0.7 in probability within 32 px of it, 0.4 % on average
    32-64 px from it, nothing beyond 128 px. Blending over 64 px gives the region AUPRC of
    a single window over the whole region (0.447 vs 0.448) whatever the placement of the
    windows (standard deviation 0.0007 over 6 placements, 0.003 with 32 px).
    """
    return min(64, window // 4)


def check_window(window: int) -> None:
    """Raise a clear error unless ``window`` is a positive multiple of :data:`MULTIPLE`."""
    whole = isinstance(window, int) and not isinstance(window, bool)
    if not whole or window < MULTIPLE or window % MULTIPLE:
        raise ConfigError(
            f"--data.predict_window={window!r}: must be a multiple of {MULTIPLE} (the "
            f"U-Net's encoder downsamples {MULTIPLE}x), e.g. 128 (the chip size), 512 or 1024; "
            "it is the largest side in pixels of the windows predict runs the network on"
        )


def check_overlap(overlap: int, size: int) -> None:
    """Raise a clear error unless 0 <= ``overlap`` < ``size`` (the prediction window)."""
    if not 0 <= overlap < size:
        raise ConfigError(
            f"--data.predict_overlap={overlap}: must be in [0, predict_window) = [0, {size}); "
            "it is the number of pixels neighbouring prediction windows share"
        )


class WindowPlan:
    """Windows of at most ``size`` px a side over a ``height`` x ``width`` region, row by row.

    Args:
        overlap: pixels neighbouring windows share at least, in [0, size).

    Attributes:
        shape: (rows, columns) of every window (see :func:`axis_windows`).
        size: the longer side of a window (at most the ``size`` asked for).
        rows, cols: the windows' starts along y and x.
    """

    def __init__(self, height: int, width: int, size: int, overlap: int) -> None:
        check_overlap(overlap, size)
        self.height, self.width, self.overlap = height, width, overlap
        self.rows, rows = axis_windows(height, size, overlap)
        self.cols, cols = axis_windows(width, size, overlap)
        self.shape = (rows, cols)
        self.size = max(self.shape)
        self._row_weights = _normalised(self.rows, height, ramp(rows, overlap))
        self._col_weights = _normalised(self.cols, width, ramp(cols, overlap))
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
        height = self.shape[0]
        for i, start in enumerate(self.rows):
            if start + height - self.rows[first] > max(BAND_ROWS, height):
                bands.append((int(self.rows[first]), int(self.rows[i - 1]) + height))
                first = i
            band_of_row.append(len(bands))
        bands.append((int(self.rows[first]), int(self.rows[-1]) + height))
        self._band_of_row = np.array(band_of_row)
        return [(y0, min(y1, self.height)) for y0, y1 in bands]


@contextmanager
def _quiet() -> Iterator[None]:
    """Silence the composite's warnings (too few acquisitions): said once, by the dataset."""
    logger = logging.getLogger(acquisitions.__name__)
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

    Items are dicts of ``image`` (C, H, W) float32 composite values (NaN where there is
    no data or beyond the region; (H, W) is the plan's window ``shape``), ``origin`` (2,)
    long and, when the cube has labels, ``target`` (H, W) uint8 (``landslides > 0``).
    Windows are meant to be read in order (as an evaluation shard does): one band is held
    at a time.

    Attributes:
        plan: the windows.
        grid: the cube's coordinates without time or pair dimensions (y/x, CRS), lazy.
        attrs: the composite's attributes (the cube's, and the dates used).
        store: the composite held by :meth:`moments` (``store_composite=True``), or None:
            bands are then composited from the cube.
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
        self.sar_channels = sar_channel_indices(channels)
        self.store: CompositeStore | None = None
        self._band: tuple[int, np.ndarray, np.ndarray | None] | None = None
        # The composite's warnings (too few acquisitions) are said here, once.
        self.attrs: dict[str, Any] = composite_attrs(cube, region, channels, settings)

    def _open(self) -> xr.Dataset:
        if getattr(self, "_cube", None) is None:
            self._cube = open_cube(self.path, self.region.names)
        return self._cube

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_cube": None, "_band": None}

    def __len__(self) -> int:
        return len(self.plan)

    def read_rows(self, y0: int, y1: int) -> tuple[np.ndarray, np.ndarray | None]:
        """The composite (C, y1 - y0, W) of rows [y0, y1) and ``landslides > 0`` (or None).

        An acquisition without data in these rows (outside its footprint) leaves NaN
        there; :meth:`moments` checks that the region as a whole has SAR data.
        """
        if self.store is not None:
            return self.store.read(y0, y1)
        return self._composite(slice(y0, y1), slice(None))

    def _composite(self, rows: slice, columns: slice) -> tuple[np.ndarray, np.ndarray | None]:
        """The composite and labels of a slice of the cube (per-pixel: the same values as
        those of any larger slice)."""
        names = self.region.names
        cube = self._open().isel({names.y: rows, names.x: columns})
        with _quiet():
            composite = build_composite(cube, self.region, self.channels, self.settings, "allow")
        label = None
        if "label" in composite:
            label = (composite["label"].values > 0).view(np.uint8)  # NaN: no landslide
        return composite["image"].values, label

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        y, x = self.plan.origin(index)
        h, w = self.plan.shape
        if self.store is not None:  # the window alone
            y1, x1 = min(y + h, self.plan.height), min(x + w, self.plan.width)
            image, label = self.store.read(y, y1, x, x1)
            top, x = 0, 0
        else:
            band = self.plan.band_of(index)
            if self._band is None or self._band[0] != band:
                self._band = None  # one band in memory at a time
                self._band = (band, *self.read_rows(*self.plan.bands[band]))
            _, image, label = self._band
            top = y - self.plan.bands[band][0]
        window = np.full((image.shape[0], h, w), np.nan, np.float32)
        crop = image[:, top : top + h, x : x + w]
        window[:, : crop.shape[1], : crop.shape[2]] = crop
        item = {"image": torch.from_numpy(window), "origin": torch.tensor(self.plan.origin(index))}
        if label is not None:
            target = np.zeros((h, w), np.uint8)
            cut = label[top : top + h, x : x + w]
            target[: cut.shape[0], : cut.shape[1]] = cut
            item["target"] = torch.from_numpy(target)
        return item

    def moments(self, store_composite: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Per-channel mean and standard deviation over the region's finite pixels.

        Streamed over blocks of rows (:class:`RunningMoments`), equal to
        ``np.nanmean``/``np.nanstd`` of the whole composite to ~1e-12. NaN for a channel
        without data; a SAR channel without any is an error.

        Args:
            store_composite: hold the composite on disk (:attr:`store`), so that the
                windows are read back instead of composited a second time.
        """
        moments = RunningMoments(len(self.channels))
        self.release()
        store = self._new_store() if store_composite else None
        height, width = self.plan.height, self.plan.width
        for y0 in range(0, height, BAND_ROWS):
            for x0 in range(0, width, TILE_COLUMNS):
                rows = slice(y0, min(y0 + BAND_ROWS, height))
                image, label = self._composite(rows, slice(x0, min(x0 + TILE_COLUMNS, width)))
                store = self._append(store, x0, image, label)
                moments.add(image)
        empty = [self.channels[c] for c in self.sar_channels if moments.count[c] == 0]
        if empty:
            if store is not None:
                store.remove()
            raise CubeError(
                f"{self.path}: no data in {', '.join(empty)} anywhere in {self.region.name} "
                "(every chosen acquisition is NaN over the region); pick other acquisitions "
                "with the composite settings"
            )
        self.store = store
        return moments.mean_std()

    def release(self) -> None:
        """Remove the held composite (bands are composited from the cube again)."""
        if self.store is not None:
            self.store.remove()
        self.store, self._band = None, None

    def _new_store(self) -> CompositeStore | None:
        """A store for the whole region, or None (and a warning) without room for it."""
        plan, channels = self.plan, len(self.channels)
        need = CompositeStore.bytes_needed(channels, plan.height, plan.width, self.has_labels)
        folder = tempfile.gettempdir()
        remove_stale_composites()  # their room counts
        free = shutil.disk_usage(folder).free
        if need + 2**30 > free:
            log.warning(
                "%s: keeping the composite needs %.1f GiB in %s, which has %.1f GiB free; "
                "the cube is composited a second time instead (slower). Set TMPDIR to a "
                "folder with more room to avoid this",
                self.region.name,
                need / 2**30,
                folder,
                free / 2**30,
            )
            return None
        return CompositeStore(self.region.name, channels, plan.width, self.has_labels, TILE_COLUMNS)

    def _append(
        self, store: CompositeStore | None, x0: int, image: np.ndarray, label: np.ndarray | None
    ) -> CompositeStore | None:
        """``store`` with the tile at column ``x0`` added, or None (and a warning) when
        writing fails."""
        if store is None:
            return None
        try:
            store.append(x0, image, label)
        except OSError as error:
            store.remove()
            log.warning(
                "%s: could not keep the composite in %s (%s); the cube is composited a "
                "second time instead (slower). Set TMPDIR to a folder with more room",
                self.region.name,
                store.folder,
                error,
            )
            return None
        return store


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
