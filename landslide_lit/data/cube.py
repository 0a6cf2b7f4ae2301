"""Open a region's datacube lazily (Zarr v2/v3 or netCDF), read-only, and check its schema.

Nothing here loads SAR arrays: the dataset comes back backed by lazy indexing, so
later stages read only the timesteps and variables they need. Every problem with
a cube is raised as one :class:`CubeError` naming the file, the variable or the
option, and the fix.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from landslide_lit.errors import LandslideLitError
from landslide_lit.regions import DATA_ROOT_ENV, ZENODO_DOI, CubeNames, Region, data_root

log = logging.getLogger(__name__)

ZARR_SUFFIXES = (".zarr",)
NETCDF_SUFFIXES = (".nc", ".nc4", ".netcdf", ".cdf")


class CubeError(LandslideLitError, ValueError):
    """A datacube that cannot be used as it is; the message says why and how to fix it."""


def open_region_cube(
    region: Region, root: str | os.PathLike | None = None, synthetic: bool = False
) -> xr.Dataset:
    """Open ``region``'s cube under the data root (or its synthetic twin)."""
    return open_cube(region_cube_path(region, root, synthetic), region.names)


def region_cube_path(
    region: Region, root: str | os.PathLike | None = None, synthetic: bool = False
) -> Path:
    """The existing cube of ``region``, or one clear error saying where to get it."""
    path = existing_cube(region, root, synthetic)
    if path is None:
        expected = region.cube_path(root, synthetic=synthetic)
        raise CubeError(_missing_cube_message(region, expected, root, synthetic))
    return path


def existing_cube(
    region: Region, root: str | os.PathLike | None = None, synthetic: bool = False
) -> Path | None:
    """``region``'s cube if it exists (a synthetic one as Zarr or netCDF), else None."""
    path = region.cube_path(root, synthetic=synthetic)
    candidates = (path, path.with_suffix(".nc")) if synthetic else (path,)
    return next((c for c in candidates if c.exists()), None)


def _missing_cube_message(
    region: Region, path: Path, root: str | os.PathLike | None, synthetic: bool
) -> str:
    where = f"data root {data_root(root)} (from --data.root, ${DATA_ROOT_ENV} or ./data)"
    if synthetic:
        return (
            f"no synthetic cube for region {region.name!r} at {path}. Generate it with "
            f"`landslide-lit synth --region {region.name} --root {data_root(root)}`, "
            "or let the data module do it (--data.synthetic true generates missing cubes)."
        )
    archive = Path(region.cube).with_suffix(".zip").name
    return (
        f"datacube for region {region.name!r} not found: {path}. The real cube is "
        f"'{Path(region.cube).name}' from the Zenodo record DOI {ZENODO_DOI} (download "
        f"{archive} and unzip it into the {where}). To work without it, use a synthetic "
        f"cube in the same schema: `landslide-lit synth --region {region.name}` or "
        "--data.synthetic true."
    )


def open_cube(path: str | os.PathLike, names: CubeNames | None = None) -> xr.Dataset:
    """Open a datacube lazily and read-only, then validate its core schema.

    Zarr stores (format v2 or v3, consolidated or not) and netCDF files are
    accepted. Timesteps stored as ``YYYYMMDD`` strings are left as they are;
    :func:`acquisition_times` parses either form.
    """
    names = names or CubeNames()
    path = Path(path)
    if not path.exists():
        raise CubeError(f"datacube not found: {path}; check the path or the data root")
    ds = _open_dataset(path)
    ds.encoding.setdefault("source", str(path))
    check_schema(ds, names, path)
    if int(ds.attrs.get("synthetic", 0)):
        log.info(
            "%s is a SYNTHETIC cube (preset %s, seed %s), not real Sentinel-1 data",
            path,
            ds.attrs.get("synthetic_preset", "?"),
            ds.attrs.get("synthetic_seed", "?"),
        )
    return ds


def _open_dataset(path: Path) -> xr.Dataset:
    is_zarr = path.suffix in ZARR_SUFFIXES or (
        path.is_dir() and any((path / f).exists() for f in (".zgroup", ".zmetadata", "zarr.json"))
    )
    try:
        if is_zarr:
            with warnings.catch_warnings():
                # Unconsolidated stores are fine; xarray warns when it falls back.
                warnings.simplefilter("ignore", RuntimeWarning)
                return xr.open_dataset(path, engine="zarr", chunks=None, consolidated=None)
        if path.is_dir():
            raise CubeError(
                f"{path} is a folder but not a Zarr store (no .zgroup, .zmetadata or "
                "zarr.json inside); point to the .zarr store itself or a netCDF file"
            )
        return xr.open_dataset(path, engine="netcdf4", chunks=None)
    except CubeError:
        raise
    except Exception as exc:  # the backends raise many types for unreadable files
        kind = "Zarr store" if is_zarr else "netCDF file"
        raise CubeError(
            f"cannot read {path} as a {kind}: {type(exc).__name__}: {exc}. The file may be "
            "corrupt or partially copied; download or unzip it again (a datacube is a "
            f".zarr store or a netCDF file with suffix {', '.join(NETCDF_SUFFIXES)})"
        ) from exc


def check_schema(ds: xr.Dataset, names: CubeNames, path: str | os.PathLike) -> None:
    """Check the dimensions and the SAR variables every use of a cube needs."""
    missing_dims = [d for d in (names.time, names.y, names.x) if d not in ds.dims]
    if missing_dims:
        raise CubeError(
            f"{path}: dimension(s) {missing_dims} missing; the cube has {sorted(ds.dims)}. "
            "If the cube names them differently, remap them in the region's `names` "
            "(e.g. names: {time: time})"
        )
    require_variables(ds, (names.vv, names.vh), names, path, dims=(names.time, names.y, names.x))
    acquisition_times(ds, names, path)


def require_variables(
    ds: xr.Dataset,
    variables: Iterable[str],
    names: CubeNames,
    path: str | os.PathLike,
    dims: tuple[str, ...] | None = None,
) -> None:
    """Raise one clear error if a variable is missing or has the wrong dimensions."""
    for var in variables:
        if var not in ds.variables:
            field = next((f for f, v in vars(names).items() if v == var), None)
            remap = (
                f" If the cube calls it differently, set names.{field} in the region config."
                if field
                else ""
            )
            raise CubeError(
                f"{path}: variable {var!r} missing. Variables present: "
                f"{sorted(map(str, ds.data_vars))}.{remap}"
            )
        if dims is not None and set(ds[var].dims) != set(dims):
            raise CubeError(
                f"{path}: variable {var!r} has dimensions {ds[var].dims}, expected {dims}"
            )


def acquisition_times(
    ds: xr.Dataset, names: CubeNames, path: str | os.PathLike | None = None
) -> pd.DatetimeIndex:
    """Acquisition times of the cube, from datetime64 or ``YYYYMMDD`` string timesteps."""
    values = ds[names.time].values
    if np.issubdtype(values.dtype, np.datetime64):
        return pd.DatetimeIndex(values)
    try:
        return pd.DatetimeIndex(pd.to_datetime([str(v) for v in values], format="mixed"))
    except (ValueError, TypeError) as exc:
        raise CubeError(
            f"{path or 'cube'}: coordinate {names.time!r} holds {values[:3].tolist()}..., "
            "which are neither datetimes nor 'YYYYMMDD' dates"
        ) from exc


def orbit_states(ds: xr.Dataset, names: CubeNames) -> np.ndarray | None:
    """Per-timestep orbit as 'a' or 'd' ('ascending' -> 'a'), or None without the coordinate."""
    if names.orbit not in ds.variables:
        return None
    raw = ds[names.orbit].values
    return np.array([str(v).strip().lower()[:1] for v in raw])
