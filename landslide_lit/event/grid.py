"""The target grid of a new event's cube: a north-up raster in a projected CRS."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from affine import Affine
from pyproj import CRS, Transformer

from landslide_lit.errors import ConfigError

__all__ = ["Grid", "utm_crs"]

Bounds = tuple[float, float, float, float]
"""(left, bottom, right, top) in a grid's CRS; (west, south, east, north) in lon/lat."""

# Bounds are snapped outwards to whole pixels; this much of a pixel is a rounding error.
_SNAP_TOLERANCE = 1e-6


@dataclass(frozen=True)
class Grid:
    """A north-up grid of square pixels: ``crs``, ``transform`` (of pixel corners), size.

    Attributes:
        crs: anything :class:`pyproj.CRS` accepts ("EPSG:32654", WKT); kept as a CRS.
        transform: affine transform from (col, row) of pixel corners to (x, y).
        width, height: columns and rows.
    """

    crs: CRS
    transform: Affine
    width: int
    height: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "crs", CRS.from_user_input(self.crs))
        t = self.transform
        if t.b != 0 or t.d != 0 or t.e != -t.a or t.a <= 0:
            raise ValueError(f"a grid is north up with square pixels, got transform {t}")
        if self.width < 1 or self.height < 1:
            raise ValueError(f"a grid needs at least one pixel, got {self.width}x{self.height}")

    @classmethod
    def from_bounds(cls, bounds: Bounds, crs: CRS | str, resolution: float) -> Grid:
        """The grid of ``resolution`` pixels covering ``bounds`` (in ``crs``), snapped outwards
        to whole multiples of ``resolution`` so grids of one event line up pixel for pixel."""
        if not resolution > 0:
            raise ConfigError(f"--resolution {resolution}: give a positive pixel size")
        left, bottom, right, top = (v / resolution for v in bounds)
        left, bottom = (math.floor(v + _SNAP_TOLERANCE) for v in (left, bottom))
        right, top = (math.ceil(v - _SNAP_TOLERANCE) for v in (right, top))
        if right <= left or top <= bottom:
            raise ConfigError(f"the area {bounds} is empty")
        transform = Affine(resolution, 0.0, left * resolution, 0.0, -resolution, top * resolution)
        return cls(CRS.from_user_input(crs), transform, right - left, top - bottom)

    @classmethod
    def from_lonlat(cls, bbox: Bounds, resolution: float, crs: CRS | str | None = None) -> Grid:
        """The grid over ``bbox`` (west, south, east, north in degrees) in ``crs`` (default:
        the UTM zone of the bbox's centre), snapped to whole pixels."""
        west, south, east, north = bbox
        if not (-180 <= west < east <= 180 and -90 <= south < north <= 90):
            raise ConfigError(
                f"--bbox {west} {south} {east} {north}: give WEST SOUTH EAST NORTH in degrees "
                "(west < east, south < north)"
            )
        target = CRS.from_user_input(crs) if crs is not None else utm_crs(bbox)
        to_target = Transformer.from_crs("EPSG:4326", target, always_xy=True)
        bounds = to_target.transform_bounds(west, south, east, north, densify_pts=21)
        return cls.from_bounds(bounds, target, resolution)

    @property
    def resolution(self) -> float:
        """The pixel size, in CRS units (metres for a projected CRS)."""
        return float(self.transform.a)

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width)."""
        return self.height, self.width

    @property
    def bounds(self) -> Bounds:
        """(left, bottom, right, top) of the pixel corners."""
        left, top = self.transform.c, self.transform.f
        return left, top - self.height * self.resolution, left + self.width * self.resolution, top

    @property
    def x(self) -> np.ndarray:
        """Easting of each column's pixel centres."""
        return self.transform.c + (np.arange(self.width) + 0.5) * self.resolution

    @property
    def y(self) -> np.ndarray:
        """Northing of each row's pixel centres (north to south)."""
        return self.transform.f - (np.arange(self.height) + 0.5) * self.resolution

    def lonlat_bounds(self) -> Bounds:
        """(west, south, east, north) in degrees of a box holding the grid."""
        to_lonlat = Transformer.from_crs(self.crs, "EPSG:4326", always_xy=True)
        return to_lonlat.transform_bounds(*self.bounds, densify_pts=21)

    def subgrid(self, rows: slice, cols: slice) -> Grid:
        """The part of the grid at ``rows`` x ``cols`` (steps of 1), same CRS and pixels."""
        r0, r1, _ = rows.indices(self.height)
        c0, c1, _ = cols.indices(self.width)
        return Grid(self.crs, self.transform @ Affine.translation(c0, r0), c1 - c0, r1 - r0)

    def coarsened(self, max_size: int) -> Grid:
        """A grid over (at least) the same area with at most ``max_size`` pixels a side:
        for cheap previews of a scene (scale checks, coverage)."""
        factor = max(1, math.ceil(max(self.shape) / max_size))
        size = self.resolution * factor
        transform = Affine(size, 0.0, self.transform.c, 0.0, -size, self.transform.f)
        width, height = (math.ceil(n / factor) for n in (self.width, self.height))
        return Grid(self.crs, transform, width, height)

    def blocks(self, size: int) -> list[tuple[slice, slice]]:
        """(rows, cols) windows of at most ``size`` x ``size`` pixels tiling the grid."""
        return [
            (slice(r, min(r + size, self.height)), slice(c, min(c + size, self.width)))
            for r in range(0, self.height, size)
            for c in range(0, self.width, size)
        ]


def utm_crs(bbox: Bounds) -> CRS:
    """The WGS 84 / UTM zone (north or south) of the centre of ``bbox`` in lon/lat."""
    west, south, east, north = bbox
    lon, lat = (west + east) / 2, (south + north) / 2
    zone = min(int((lon + 180) // 6) + 1, 60)
    return CRS.from_epsg((32600 if lat >= 0 else 32700) + zone)
