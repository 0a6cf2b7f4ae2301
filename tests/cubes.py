"""Tiny hand-built cubes in the real schema, with values known exactly."""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

# Six acquisitions around a 2018-09-05 / 2018-09-07 event (the Hokkaido dates):
# four before, one on 09-06 that belongs to neither window, two after.
TIMES = pd.to_datetime(
    [
        "2018-08-10",
        "2018-08-22",
        "2018-08-28",
        "2018-09-03",
        "2018-09-06",
        "2018-09-09",
        "2018-09-15",
    ]
)
ORBITS = ["d", "a", "d", "d", "d", "a", "d"]


def hand_cube(height: int = 8, width: int = 8, times=TIMES, orbits=ORBITS) -> xr.Dataset:
    """vv[t] = t + 1 and vh[t] = 2 (t + 1) everywhere; terrain and labels are simple ramps."""
    n = len(times)
    level = np.arange(1, n + 1, dtype=np.float32)[:, None, None] * np.ones(
        (n, height, width), np.float32
    )
    labels = np.zeros((height, width), np.float32)
    labels[:2, :3] = 1
    labels[7 % height, 7 % width] = np.nan
    ds = xr.Dataset(
        {
            "vv": (("timestep", "y", "x"), level),
            "vh": (("timestep", "y", "x"), 2 * level),
            "dem": (("y", "x"), np.full((height, width), 100.0, np.float32)),
            "dem_aspect": (("y", "x"), np.full((height, width), 90.0, np.float32)),
            "dem_slope_radians": (("y", "x"), np.full((height, width), 0.3, np.float32)),
            "dem_curvature": (("y", "x"), np.zeros((height, width), np.float32)),
            "landslides": (("y", "x"), labels),
            "topophase.cor_1": (
                ("timepair", "y", "x"),
                np.full((2, height, width), 0.4, np.float32),
            ),
        },
        coords={
            "timestep": times,
            "y": 5000.0 - 10.0 * np.arange(height),
            "x": 300000.0 + 10.0 * np.arange(width),
            "spatial_ref": ((), 0, {"crs_wkt": "EPSG:32654"}),
        },
        attrs={"crs": "EPSG:32654", "title": "hand-built test cube"},
    )
    if orbits is not None:
        ds = ds.assign_coords({"sat:orbit_state": ("timestep", np.array(orbits))})
    return ds


def textured_cube(height: int = 8, width: int = 8, seed: int = 0) -> xr.Dataset:
    """:func:`hand_cube` with every variable random, so any transposition or shuffle shows."""
    rng = np.random.default_rng(seed)
    ds = hand_cube(height, width)
    for name, var in ds.data_vars.items():
        values = rng.gamma(2.0, 0.1, var.shape).astype(np.float32)
        if name == "landslides":
            values = (values > 0.25).astype(np.float32)
            values[0, -1] = np.nan
        ds[name] = var.copy(data=values)
    return ds
