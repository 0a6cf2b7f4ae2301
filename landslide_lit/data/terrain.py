"""Slope, aspect and curvature of a DEM: the one terrain code of synthetic and built cubes.

Conventions (those of the published cubes as far as known, see datacube.md):

- ``dem_slope_radians``: arctan of the gradient's magnitude, in [0, pi/2);
- ``dem_aspect``: downslope azimuth, degrees clockwise from north, in [0, 360), 0 on flat
  ground;
- ``dem_curvature``: richdem's convention, -100 x the Laplacian of elevation, in
  1/(100 m): convex (hilltops) > 0.

Gradients are central differences (one-sided on the grid's edges, ``numpy.gradient``), the
Laplacian the 5-point stencil with the edge pixel repeated beyond the grid. Both need only
the 1-pixel neighbourhood, so a window read with a 1-pixel halo (none on the grid's edges)
gives exactly the values of the whole grid inside it. Rows run north to south (north-up).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["TERRAIN_ATTRS", "TERRAIN_VARIABLES", "aspect", "gradients", "slope", "terrain_features"]

TERRAIN_VARIABLES = ("dem_slope_radians", "dem_aspect", "dem_curvature")
TERRAIN_ATTRS: dict[str, dict[str, str]] = {
    "dem": {"long_name": "elevation; <= 0 is sea", "units": "m"},
    "dem_slope_radians": {"long_name": "slope", "units": "rad"},
    "dem_aspect": {
        "long_name": "aspect: downslope azimuth clockwise from north",
        "units": "degree",
    },
    "dem_curvature": {
        "long_name": "curvature: -100 x Laplacian of elevation, convex > 0",
        "units": "1/(100 m)",
    },
}
"""The attributes of the DEM and its derivatives in a cube (synthetic or built)."""


def gradients(
    dem: np.ndarray, pixel_size_x: float, pixel_size_y: float
) -> tuple[np.ndarray, np.ndarray]:
    """Elevation rise per metre towards the east and towards the north (float64)."""
    d_row, d_col = np.gradient(np.asarray(dem, dtype=np.float64), pixel_size_y, pixel_size_x)
    return d_col, -d_row


def slope(dz_east: np.ndarray, dz_north: np.ndarray) -> np.ndarray:
    """Slope in radians (float64, not clipped below pi/2)."""
    return np.arctan(np.hypot(dz_east, dz_north))


def aspect(dz_east: np.ndarray, dz_north: np.ndarray) -> np.ndarray:
    """Downslope azimuth, degrees clockwise from north, in [0, 360); 0 on flat ground."""
    out = (np.degrees(np.arctan2(-dz_east, -dz_north)) % 360.0).astype(np.float32)
    out[(out >= 360.0) | ((dz_east == 0) & (dz_north == 0))] = 0.0
    return out


def terrain_features(
    dem: np.ndarray, pixel_size_x: float, pixel_size_y: float
) -> dict[str, np.ndarray]:
    """``dem_slope_radians``, ``dem_aspect`` and ``dem_curvature`` (float32) of ``dem``
    (metres, north-up), with pixel sizes in metres (positive)."""
    dem = np.asarray(dem, dtype=np.float64)
    dz_east, dz_north = gradients(dem, pixel_size_x, pixel_size_y)
    # d2/dy2 + d2/dx2 (py/px)^2, over py^2: with square pixels exactly ndimage.laplace / p^2
    d2_rows = ndimage.correlate1d(dem, [1.0, -2.0, 1.0], axis=0, mode="nearest")
    d2_cols = ndimage.correlate1d(dem, [1.0, -2.0, 1.0], axis=1, mode="nearest")
    laplacian = (d2_rows + d2_cols * (pixel_size_y / pixel_size_x) ** 2) / pixel_size_y**2
    return {
        "dem_slope_radians": np.minimum(
            slope(dz_east, dz_north), np.nextafter(np.pi / 2, 0)
        ).astype(np.float32),
        "dem_aspect": aspect(dz_east, dz_north),
        "dem_curvature": (-100.0 * laplacian).astype(np.float32),
    }
