"""Open a region's datacube lazily (Zarr v2/v3 or netCDF), read-only, and check its schema.

Nothing here loads SAR arrays: the dataset comes back backed by lazy indexing, so
later stages read only the timesteps and variables they need. Every problem with
a cube is raised as one :class:`CubeError` naming the file, the variable or the
option, and the fix.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from landslide_lit.data.chunks import (
    MISSING_CHUNKS_CAUSE,
    MISSING_CHUNKS_FIX,
    ChunkDamage,
    chunk_layouts,
    present_chunks,
)
from landslide_lit.distributed import on_rank_zero
from landslide_lit.errors import LandslideLitError
from landslide_lit.regions import (
    DATA_ROOT_ENV,
    REGIONS,
    ZARR_MARKERS,
    ZENODO_DOI,
    CubeNames,
    Region,
    data_root,
)

__all__ = [
    "NETCDF_LOCK",
    "NETCDF_SUFFIXES",
    "ZARR_SUFFIXES",
    "CubeError",
    "acquisition_times",
    "check_schema",
    "chunk_damage",
    "existing_cube",
    "open_cube",
    "open_region_cube",
    "orbit_states",
    "region_cube_path",
    "require_variables",
    "store_positions",
]

log = logging.getLogger(__name__)

ZARR_SUFFIXES = (".zarr",)
NETCDF_SUFFIXES = (".nc", ".nc4", ".netcdf", ".cdf")
NETCDF_LOCK = threading.RLock()
"""Held by every netCDF-C call of this process that may run beside another: xarray's reads
of a netCDF cube (given it by :func:`open_cube`) and the netCDF map writer's calls
(:class:`~landslide_lit.map_files.NetCDFFile`). netCDF-C is not thread-safe, and
netCDF4-python releases the GIL in its calls."""


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
            f"`landslide-lit synth --region {region.name} --root {data_root(root)}`, or "
            "train with `landslide-lit fit --data.synthetic true`, which generates missing "
            "synthetic cubes (validate, test and predict never do)."
        )
    if REGIONS.get(region.name) != region:  # a region of the user's own: no Zenodo advice
        return (
            f"datacube for region {region.name!r} not found: {path}. Check the region's "
            f"`cube` (absolute, or relative to the {where})."
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
    accepted. Timesteps are left as stored; :func:`acquisition_times` reads them exactly
    (an error now if it cannot). A local Zarr store is scanned once for missing chunk
    files (no data read): see :func:`chunk_damage`.
    """
    names = names or CubeNames()
    path = Path(path)
    if not path.exists():
        raise CubeError(f"datacube not found: {path}; check the path or the data root")
    ds = _open_dataset(path)
    ds.encoding.setdefault("source", str(path))
    check_schema(ds, names, path)
    _record_chunk_damage(ds, path, names)
    if int(ds.attrs.get("synthetic", 0)) and on_rank_zero():  # every rank opens it
        log.info(
            "%s is a SYNTHETIC cube (preset %s, seed %s), not real Sentinel-1 data",
            path,
            ds.attrs.get("synthetic_preset", "?"),
            ds.attrs.get("synthetic_seed", "?"),
        )
    return ds


def _record_chunk_damage(ds: xr.Dataset, path: Path, names: CubeNames) -> None:
    """Scan a local Zarr store for missing chunk files and keep what is found on ``ds``.

    A damaged coordinate this package reads (time, y, x, pair, orbit) is an error now;
    a damaged data variable is reported here and judged by the composite that reads it
    (see ``CompositeSettings.missing_chunks``); other coordinates (e.g. a scalar
    ``spatial_ref``, whose value is never used) are only logged. The store's index along
    each dimension is kept too, so a row slice of ``ds`` can be located in its chunk grid.
    """
    ds.encoding["store_index"] = {dim: (ds.indexes.get(dim), ds.sizes[dim]) for dim in ds.dims}
    damage = chunk_damage(ds, path)
    read = {names.time, names.y, names.x, names.pair, names.orbit}
    coords = [d.describe() for name, d in damage.items() if name in read]
    if coords:
        raise CubeError(
            f"{path}: chunk files of coordinates missing ({'; '.join(coords)}). "
            f"{MISSING_CHUNKS_CAUSE}"
        )
    for name in [n for n in damage if n in ds.coords]:
        log.info("%s: %s (a coordinate not used)", path, damage.pop(name).describe())
    if damage:
        log.warning(
            "%s: %s. %s",
            path,
            "; ".join(d.describe() for d in damage.values()),
            MISSING_CHUNKS_FIX,
        )
        ds.encoding["chunk_damage"] = damage


def chunk_damage(ds: xr.Dataset, path: Path) -> dict[str, ChunkDamage]:
    """The arrays of the local Zarr store ``path`` (opened as ``ds``) that lack chunk files."""
    if not path.is_dir():
        return {}
    try:
        layouts = chunk_layouts(path)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CubeError(
            f"cannot read the array metadata of {path}: {type(exc).__name__}: {exc}. "
            "The store may be corrupt or partially copied; download or unzip it again"
        ) from exc
    damage = {}
    for name, layout in layouts.items():
        if name not in ds.variables:
            continue
        present = present_chunks(layout)
        if not present.all():
            damage[name] = ChunkDamage(layout, tuple(map(str, ds[name].dims)), present)
    return damage


def store_positions(ds: xr.Dataset, dim: str) -> np.ndarray:
    """Indices in the opened store of ``ds``'s elements along ``dim`` (``ds`` may be a slice).

    Located by the dimension's coordinate; without one, only an unsliced dimension can be.
    """
    index, size = ds.encoding.get("store_index", {}).get(dim, (None, ds.sizes[dim]))
    if index is not None and dim in ds.indexes:
        if index.equals(ds.indexes[dim]):
            return np.arange(size)
        if index.is_unique:
            found = index.get_indexer(ds.indexes[dim])
            if (found >= 0).all():
                return found
    elif ds.sizes[dim] == size:
        return np.arange(size)
    raise CubeError(
        f"{ds.encoding.get('source', 'cube')}: cannot locate this part of the cube along "
        f"{dim!r} in its store (no unique coordinate), so its missing chunks cannot be "
        "placed; restore the store's missing chunk files (download or unzip it again)"
    )


def _open_dataset(path: Path) -> xr.Dataset:
    is_zarr = path.suffix in ZARR_SUFFIXES or (
        path.is_dir() and any((path / marker).exists() for marker in ZARR_MARKERS)
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
        # the lock of every netCDF call of this process: the map writer's thread writes
        # netCDF while predict reads the cube (netCDF-C is not thread-safe)
        return xr.open_dataset(path, engine="netcdf4", chunks=None, lock=NETCDF_LOCK)
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
            extra = [d for d in ds[var].dims if d not in dims]
            missing = [d for d in dims if d not in ds[var].dims]
            raise CubeError(
                f"{path}: variable {var!r} has dimensions {ds[var].dims}, expected {dims} "
                f"(in any order); extra: {extra}, missing: {missing}. Select the one layer "
                "wanted along an extra dimension (e.g. ds.isel(band=0)) and save the cube "
                "again; if a dimension is named differently, remap it in the region's names "
                "(e.g. names: {y: lat, x: lon})"
            )


def acquisition_times(
    ds: xr.Dataset, names: CubeNames, path: str | os.PathLike | None = None
) -> pd.DatetimeIndex:
    """Acquisition times of the cube in UTC (naive), read exactly or not at all.

    Accepted: datetime64; Python, pandas or cftime datetimes (standard calendars); ISO 8601
    strings or bytes (``2018-09-05``, ``2018-09-05T23:00:00+09:00``, ``...Z``) and
    ``YYYYMMDD`` strings, bytes or integers. Times with a zone are converted to UTC;
    naive ones are taken as UTC, so a cube may not mix the two. Anything else is one
    :class:`CubeError` naming the coordinate, example values and the fix.
    """
    values = ds[names.time].values
    if np.issubdtype(values.dtype, np.datetime64):
        times = pd.DatetimeIndex(values)
    else:
        parsed = [_parse_time(v, names.time, values, path) for v in values]
        if len({t.tzinfo is None for t in parsed}) > 1:
            raise CubeError(
                _time_message(
                    names.time,
                    values,
                    path,
                    "mixes times with a time zone and times without one, whose zone is unknown",
                )
            )
        times = pd.DatetimeIndex(parsed)
        if times.tz is not None:
            times = times.tz_localize(None)  # every time is in UTC already
    if times.isna().any():
        raise CubeError(_time_message(names.time, values, path, "has missing times (NaT)"))
    return times


def _parse_time(value: object, coord: str, values: np.ndarray, path: object) -> pd.Timestamp:
    """One timestep value as a Timestamp (aware ones in UTC), or a CubeError."""
    if isinstance(value, bytes | np.bytes_):
        value = value.decode("ascii", "replace")
    if isinstance(value, str | np.str_):
        text = str(value).strip()
        try:
            if len(text) == 8 and text.isdigit():
                return pd.Timestamp(dt.datetime.strptime(text, "%Y%m%d"))
            if len(text) >= 10 and text[4] == "-" and text[7] == "-":  # ISO 8601, extended
                parsed = pd.Timestamp(dt.datetime.fromisoformat(text))
                return parsed.tz_convert("UTC") if parsed.tzinfo else parsed
        except ValueError:
            pass
    elif isinstance(value, int | np.integer) and not isinstance(value, bool):
        try:
            if 10_000_000 <= value <= 99_999_999:
                return pd.Timestamp(dt.datetime.strptime(str(value), "%Y%m%d"))
        except ValueError:
            pass
    elif isinstance(value, dt.datetime | np.datetime64):  # pandas Timestamps too
        parsed = pd.Timestamp(value)
        return parsed.tz_convert("UTC") if parsed.tzinfo else parsed
    elif type(value).__module__.startswith("cftime"):
        calendar = getattr(value, "calendar", "")
        if calendar in ("standard", "gregorian", "proleptic_gregorian"):
            fields = ("year", "month", "day", "hour", "minute", "second", "microsecond")
            return pd.Timestamp(*(getattr(value, f) for f in fields))
        raise CubeError(
            _time_message(
                coord,
                values,
                path,
                f"uses the {calendar!r} calendar, whose dates are not real acquisition dates",
            )
        )
    raise CubeError(_time_message(coord, values, path, f"holds {value!r}, not a date"))


def _time_message(coord: str, values: np.ndarray, path: object, problem: str) -> str:
    examples = ", ".join(repr(v) for v in list(values[:3]))
    return (
        f"{path or 'cube'}: coordinate {coord!r} {problem} (values: {examples}"
        f"{', ...' if len(values) > 3 else ''}). Store acquisition times as datetime64 "
        "(CF-encoded), as ISO 8601 strings with a time zone ('2018-09-05T01:30:00Z') or "
        "all without one (read as UTC), or as 'YYYYMMDD' dates; if another coordinate holds "
        "the times, remap it in the region's names (names: {time: ...})"
    )


def orbit_states(ds: xr.Dataset, names: CubeNames) -> np.ndarray | None:
    """Per-timestep orbit as 'a' or 'd' ('ascending' -> 'a'), or None without the coordinate."""
    if names.orbit not in ds.variables:
        return None
    raw = ds[names.orbit].values
    return np.array([str(v).strip().lower()[:1] for v in raw])
