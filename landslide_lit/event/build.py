"""Write a new event's datacube in the published schema, block by block, atomically.

:func:`build_cube` takes :class:`~.scenes.Scene` objects (from GeoTIFFs or STAC), a target
:class:`~.grid.Grid`, an optional DEM source and landslide inventory, and writes

- ``OUT.zarr`` (Zarr v2, consolidated): ``vv``/``vh`` (timestep, y, x) linear power sorted
  by time; coordinates ``timestep`` (UTC), ``sat:orbit_state`` ('a'/'d'), ``platform`` and,
  when every scene has one, ``sat:relative_orbit``; ``dem`` and its terrain derivatives
  (:mod:`landslide_lit.data.terrain`); ``landslides`` from the inventory; ``spatial_ref``;
  provenance attributes;
- ``OUT.yaml``: the region mapping for ``--region OUT.yaml`` / ``--data.test_region``.

At most three blocks of ``BLOCK`` x ``BLOCK`` pixels are in memory at a time, whatever the
number of scenes: the one read, one waiting and the one a background thread compresses
and writes (:class:`_ArrayWriter`).
Every band is checked to cover the area and to hold plausible linear power
(:func:`check_power`): before anything is written, on a coarse version of the grid, where
its source previews cheaply (overviews, remote COGs); else (GeoTIFFs without overviews,
such as ASF HyP3's, where a preview decodes every pixel) on the values read for the cube,
as its last block is written, before the next band. The cube is filled in a hidden
folder beside ``OUT`` and renamed into place when complete, so a failure never leaves a
cube that looks finished.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import datetime as dt
import functools
import itertools
import logging
import os
import queue
import threading
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr
import yaml

from landslide_lit.atomic import move_into_place, remove, write_text_atomically
from landslide_lit.data.terrain import TERRAIN_ATTRS, TERRAIN_VARIABLES, terrain_features
from landslide_lit.errors import OutputError
from landslide_lit.event.grid import Grid
from landslide_lit.event.scenes import POLARISATIONS, EventInputError, Scene, Source, to_power
from landslide_lit.regions import Region

__all__ = [
    "BLOCK",
    "CHUNK",
    "DEFAULT_AFTER_DAYS",
    "DEFAULT_BEFORE_DAYS",
    "MEDIAN_DB_RANGE",
    "NEGATIVE_LIMIT",
    "Inventory",
    "build_cube",
    "check_power",
    "choose_orbit",
    "select_scenes",
]

log = logging.getLogger(__name__)

CHUNK = 512
"""Zarr chunks: one timestep by CHUNK x CHUNK pixels, as the synthetic cubes."""
BLOCK = 2048
"""Pixels a side read and written at once (a multiple of CHUNK)."""
PREVIEW = 256
"""Pixels a side of the coarse grid each band is checked on before writing."""
DEFAULT_BEFORE_DAYS = 90
"""Default pre-event window: 7 passes of one relative orbit at 12-day repeat, enough for
the default 4-acquisition before composite with some to spare."""
DEFAULT_AFTER_DAYS = 30
"""Default post-event window: 2 passes of one relative orbit (the paper's composite uses
the first one)."""
NEGATIVE_LIMIT = 0.01
"""Share of negative values above which 'linear' values are taken for decibels."""
MEDIAN_DB_RANGE = (-40.0, 0.0)
"""Plausible median backscatter of a scene, dB: Sentinel-1 land medians lie near -7 (VV)
to -25 (VH). A median of 0 dB or more means linear values declared as dB (they would all
become >= 1) or uncalibrated numbers; below -40 dB, dB read twice or a wrong scale."""


@dataclasses.dataclass(frozen=True)
class Inventory:
    """Landslide polygons (shapely geometries) in the grid's CRS, and where they came from."""

    geometries: Sequence[object]
    source: str


def select_scenes(
    scenes: Sequence[Scene],
    event_start: dt.date,
    event_end: dt.date,
    before_days: int,
    after_days: int,
) -> list[Scene]:
    """The scenes from ``before_days`` before ``event_start`` to ``after_days`` after
    ``event_end`` (whole UTC days, inclusive) sorted by time; one error when either period
    has none (listing what exists) or one time appears twice."""
    first = event_start - dt.timedelta(days=before_days)
    last = event_end + dt.timedelta(days=after_days)
    chosen = sorted(
        (s for s in scenes if first <= s.time.date() <= last), key=lambda s: (s.time, s.name)
    )
    periods = {
        "before": [s for s in chosen if s.time.date() <= event_start],
        "after": [s for s in chosen if s.time.date() >= event_end],
    }
    for period, found in periods.items():
        if not found:
            window = (
                f"{first} to {event_start} (--before-days {before_days} before --event-start)"
                if period == "before"
                else f"{event_end} to {last} (--after-days {after_days} after --event-end)"
            )
            raise EventInputError(
                f"no acquisitions {period} the event: none from {window}. Acquisitions "
                f"found: {_list_times(scenes)}. Add acquisitions of that period, widen "
                f"--{period}-days, or check --event-start/--event-end"
            )
    times = [(s.time, s.platform) for s in chosen]
    twice = sorted({s.name for s in chosen if times.count((s.time, s.platform)) > 1})
    if twice:
        raise EventInputError(
            f"acquisitions given twice (same time and platform): {', '.join(twice)}; keep "
            "one file (or item) per acquisition and polarisation"
        )
    return chosen


def choose_orbit(scenes: Sequence[Scene], event_start: dt.date, event_end: dt.date) -> str:
    """The region's orbit: of the pass directions with acquisitions both before and after
    the event, the one with most before (descending, as published, on a tie)."""
    counts = {}
    for state in ("d", "a"):
        days = [s.time.date() for s in scenes if s.orbit_state == state]
        if any(d >= event_end for d in days):
            counts[state] = sum(d <= event_start for d in days)
    if not counts or max(counts.values()) == 0:
        raise EventInputError(
            "no pass direction (ascending or descending) has acquisitions both before and "
            f"after the event; acquisitions: {_list_times(scenes)}. A composite from one "
            "direction needs both: add acquisitions or widen --before-days/--after-days"
        )
    return max(counts, key=lambda state: counts[state])  # 'd' first: wins a tie


def check_power(values: np.ndarray, scene: Scene, pol: str) -> None:
    """One error if ``values`` (linear power on a coarse grid) have no data or are
    implausible for the scale ``scene`` declares (see NEGATIVE_LIMIT, MEDIAN_DB_RANGE)."""
    sample = _PowerSample(1)
    sample.add(values)
    sample.check(scene, pol)


class _PowerSample:
    """What :func:`check_power` judges, gathered block by block: counts of finite and of
    negative finite values, and the finite positive values of every ``step``-th row and
    column (all of them for ``step`` 1)."""

    def __init__(self, step: int) -> None:
        self.step = step
        self.valid = self.negative = 0
        self.positive: list[np.ndarray] = []

    def add(self, values: np.ndarray) -> None:
        finite = np.isfinite(values)
        self.valid += int(np.count_nonzero(finite))
        self.negative += int(np.count_nonzero((values < 0) & finite))
        self.positive.append(_positive(values[:: self.step, :: self.step]))
        if self.positive[-1].size == 0 and self.step > 1:  # data between the sampled pixels
            self.positive[-1] = _positive(values)[:: self.step**2]

    def check(self, scene: Scene, pol: str) -> None:
        """One error if the values have no data or are implausible (see check_power)."""
        where = f"{pol.upper()} of {scene.name} ({', '.join(scene.sources) or scene.scale})"
        if self.valid == 0:
            raise EventInputError(
                f"{where} has no data on the area; check --bbox/--aoi (or that the files "
                "overlap each other) and leave out acquisitions outside it"
            )
        negative = self.negative / self.valid
        if negative > NEGATIVE_LIMIT:
            raise EventInputError(
                f"{where}: {negative:.0%} of the values are negative, impossible for linear "
                "power or amplitude: they look like decibels. Declare the scale (--scale db, "
                "or the manifest's scale column)"
            )
        positive = np.concatenate(self.positive)
        median_db = 10 * np.log10(np.median(positive)) if positive.size else -np.inf
        low, high = MEDIAN_DB_RANGE
        if not low < median_db < high:
            raise EventInputError(
                f"{where}: converted to linear power from the scale given, the median "
                f"backscatter is {median_db:.1f} dB, outside the plausible {low:.0f} to "
                f"{high:.0f} dB of Sentinel-1 land: the scale given is probably wrong. "
                "Declare the right one (--scale power|amplitude|db, or the manifest's scale "
                "column)"
            )


def _positive(values: np.ndarray) -> np.ndarray:
    return values[(values > 0) & np.isfinite(values)]


def build_cube(
    scenes: Sequence[Scene],
    grid: Grid,
    out: str | os.PathLike,
    *,
    event_start: dt.date,
    event_end: dt.date,
    before_days: int = DEFAULT_BEFORE_DAYS,
    after_days: int = DEFAULT_AFTER_DAYS,
    dem: Source | None = None,
    inventory: Inventory | None = None,
    name: str | None = None,
    overwrite: bool = False,
    attrs: dict[str, object] | None = None,
    progress: bool = True,
) -> Path:
    """Write the event's cube to ``out`` (a ``.zarr`` path) and its region to ``out.yaml``.

    ``dem`` reads elevation (metres) onto a grid; ``attrs`` are added to the cube's
    provenance attributes (e.g. the command line). Returns ``out``.
    """
    out = Path(out).expanduser()
    region_file = out.with_suffix(".yaml")
    _check_outputs(out, region_file, overwrite)
    name = name or out.stem
    chosen = select_scenes(scenes, event_start, event_end, before_days, after_days)
    _check_scenes(chosen)
    orbit = choose_orbit(chosen, event_start, event_end)
    region = Region(name, out.name, event_start.isoformat(), event_end.isoformat(), orbit)
    preview = grid.coarsened(PREVIEW)
    preview_step = round(preview.resolution / grid.resolution)
    if dem is not None:
        _check_dem(dem.read(preview), dem, grid)
    for scene in _progress(chosen, progress, "checking acquisitions"):
        for pol in POLARISATIONS:
            if _previews_cheaply(scene.bands[pol]):
                check_power(to_power(scene.bands[pol].read(preview), scene.scale), scene, pol)

    partial = out.with_name(f".{out.name}.partial-{uuid.uuid4().hex[:8]}")
    try:
        template = _template(chosen, grid, dem is not None, inventory is not None)
        template.attrs.update(_provenance(chosen, grid, region, dem, inventory, attrs))
        template.to_zarr(
            partial,
            mode="w-",
            compute=False,
            zarr_format=2,
            consolidated=True,
            encoding=_encoding(template),
            write_empty_chunks=True,
        )
        with _ArrayWriter(partial) as arrays:
            nonpositive = 0
            for t, scene in enumerate(_progress(chosen, progress, "writing acquisitions")):
                for pol in POLARISATIONS:
                    nonpositive += _write_band(scene, pol, grid, preview_step, arrays, t)
            if dem is not None:
                _write_terrain(dem, grid, arrays)
            if inventory is not None:
                _write_inventory(inventory, grid, arrays)
            arrays.finish({"nonpositive_power_set_to_nan": nonpositive})
        move_into_place(partial, out)
    finally:
        remove(partial)
    _write_region(region_file, region)  # after the cube: a region file means a whole cube
    log.info("wrote %s (%d acquisitions, orbit %s) and %s", out, len(chosen), orbit, region_file)
    return out


def _write_band(
    scene: Scene, pol: str, grid: Grid, preview_step: int, arrays: _ArrayWriter, t: int
) -> int:
    """Write timestep ``t`` of ``pol`` block by block; the number of values <= 0 (NaN now)."""
    source = scene.bands[pol]
    # checked here, on the values written, when not on a preview before
    sample = None if _previews_cheaply(source) else _PowerSample(preview_step)
    nonpositive = 0
    for rows, cols in grid.blocks(BLOCK):
        values = to_power(source.read(grid.subgrid(rows, cols)), scene.scale)
        if sample is not None:
            sample.add(values)
        bad = values <= 0  # log composites need positive power: no data
        nonpositive += int(np.count_nonzero(bad))
        values[bad] = np.nan
        arrays.write(pol, (t, rows, cols), values)
    if sample is not None:
        sample.check(scene, pol)
    return nonpositive


def _previews_cheaply(source: Source) -> bool:
    """Whether ``source`` reads a coarse preview cheaply (its ``previews_cheaply``; True
    for sources without one): else a preview costs as much as reading it for the cube."""
    return bool(getattr(source, "previews_cheaply", True))


def _check_outputs(out: Path, region_file: Path, overwrite: bool) -> None:
    if out.suffix != ".zarr":
        raise EventInputError(f"{out}: the cube is a Zarr store; give a name ending in .zarr")
    for path in (out, region_file):
        if path.exists() and not overwrite:
            raise OutputError(f"{path} exists; pass --overwrite to replace it, or another OUT")
    if not out.parent.is_dir():
        raise OutputError(f"{out.parent} is no folder; create it first or choose another OUT")


def _check_scenes(scenes: Sequence[Scene]) -> None:
    """Both polarisations, an orbit direction, and relative orbits for all or none."""
    for pol in POLARISATIONS:
        lacking = [s for s in scenes if pol not in s.bands]
        if lacking:
            raise EventInputError(
                f"{pol.upper()} missing for {len(lacking)} acquisition(s): "
                f"{_list_times(lacking)}; every acquisition needs VV and VH (add the files, "
                "or leave those acquisitions out)"
            )
    unknown = [s for s in scenes if s.orbit_state is None]
    if unknown:
        raise EventInputError(
            f"orbit direction unknown for {len(unknown)} acquisition(s): "
            f"{_list_times(unknown)}. Declare it with --orbit-state ascending|descending "
            "(all files) or per file in --manifest FILE.csv (column orbit_state)"
        )
    known = [s.relative_orbit is not None for s in scenes]
    if any(known) and not all(known):
        lacking = [s for s in scenes if s.relative_orbit is None]
        raise EventInputError(
            f"relative orbit known for some acquisitions but not for {_list_times(lacking)}; "
            "give it for all of them in --manifest FILE.csv (column relative_orbit), or for "
            "none"
        )


def _list_times(scenes: Sequence[Scene]) -> str:
    if not scenes:
        return "none"
    return ", ".join(
        f"{s.time:%Y-%m-%dT%H:%M}({s.orbit_state or '?'}"
        f"{'' if s.relative_orbit is None else s.relative_orbit})"
        for s in sorted(scenes, key=lambda s: s.time)
    )


def _template(scenes: Sequence[Scene], grid: Grid, dem: bool, inventory: bool) -> xr.Dataset:
    """The cube's variables as lazy NaN arrays and its coordinates: written as metadata."""
    import dask.array as da

    shape3 = (len(scenes), *grid.shape)
    nan3 = da.full(shape3, np.nan, dtype=np.float32, chunks=(1, CHUNK, CHUNK))
    nan2 = da.full(grid.shape, np.nan, dtype=np.float32, chunks=(CHUNK, CHUNK))
    data = {pol: (("timestep", "y", "x"), nan3, _ATTRS[pol]) for pol in POLARISATIONS}
    if dem:
        data |= {v: (("y", "x"), nan2, _ATTRS[v]) for v in ("dem", *TERRAIN_VARIABLES)}
    if inventory:
        data["landslides"] = (("y", "x"), nan2, _ATTRS["landslides"])
    times = pd.DatetimeIndex([s.time for s in scenes]).tz_convert("UTC").tz_localize(None)
    coords: dict[str, object] = {
        "timestep": np.asarray(times, dtype="datetime64[ns]"),
        "sat:orbit_state": ("timestep", np.array([s.orbit_state for s in scenes])),
        "platform": ("timestep", np.array([s.platform for s in scenes])),
        "y": ("y", grid.y, {"units": "m", "long_name": "northing of pixel centre"}),
        "x": ("x", grid.x, {"units": "m", "long_name": "easting of pixel centre"}),
        "spatial_ref": xr.Variable((), np.int32(0), attrs=_crs_attrs(grid)),
    }
    if all(s.relative_orbit is not None for s in scenes):
        orbits = np.array([s.relative_orbit for s in scenes], dtype=np.int32)
        coords["sat:relative_orbit"] = ("timestep", orbits)
    return xr.Dataset(data, coords=coords)


_ATTRS = {
    "vv": {"long_name": "VV backscatter (gamma0 RTC, linear power)", "units": "1"},
    "vh": {"long_name": "VH backscatter (gamma0 RTC, linear power)", "units": "1"},
    **TERRAIN_ATTRS,
    "landslides": {
        "long_name": "1 inside an inventory polygon (pixel centre inside), else 0",
        "units": "1",
    },
}


def _crs_attrs(grid: Grid) -> dict[str, object]:
    """CF grid mapping plus the GDAL attributes rioxarray reads."""
    wkt = grid.crs.to_wkt()
    t = grid.transform
    return {
        **grid.crs.to_cf(),
        "crs_wkt": wkt,
        "spatial_ref": wkt,
        "GeoTransform": f"{t.c} {t.a} {t.b} {t.f} {t.d} {t.e}",
    }


def _encoding(ds: xr.Dataset) -> dict[str, dict]:
    return {
        name: {"chunks": (1, CHUNK, CHUNK)[-var.ndim :], "_FillValue": np.float32(np.nan)}
        for name, var in ds.data_vars.items()
    }


def _provenance(
    scenes: Sequence[Scene],
    grid: Grid,
    region: Region,
    dem: Source | None,
    inventory: Inventory | None,
    extra: dict[str, object] | None,
) -> dict[str, object]:
    """Where every value came from, as netCDF-safe attributes."""
    sources = [f"{s.time:%Y-%m-%dT%H:%M:%SZ} {s.name}: {' '.join(s.sources)}" for s in scenes]
    scales = sorted({s.scale for s in scenes})
    return {
        "title": f"Sentinel-1 landslide datacube: {region.name}",
        "source": "landslide-lit cube (Sentinel-1 RTC gamma0)",
        "event_start": region.event_start,
        "event_end": region.event_end,
        "crs": grid.crs.to_string(),
        "grid": f"{grid.width}x{grid.height} px of {grid.resolution} m, bounds "
        f"{' '.join(f'{v:.3f}' for v in grid.bounds)}",
        "sar_sources": "\n".join(sources),
        "sar_scale_conversion": (
            f"source values in {', '.join(scales)} converted to linear power (amplitude "
            "squared, 10^(dB/10)) before resampling; power <= 0 and nodata set to NaN"
        ),
        "resampling": "bilinear in linear power (average where the grid is coarser than the "
        "source by more than 1.5x); DEM bilinear; inventory: pixels whose centre is inside",
        "dem_source": getattr(dem, "path", repr(dem)) if dem is not None else "none",
        "inventory_source": inventory.source if inventory is not None else "none",
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        **(extra or {}),
    }


class _ArrayWriter:
    """Writes blocks into the Zarr arrays the template created, in a background thread.

    Compressing and storing one block (Blosc and the file writes release the GIL) overlaps
    reading and decoding the next one (GDAL releases it too). Blocks made of whole chunks
    (all but those of grids smaller than a chunk) are written chunk by chunk as zarr
    writes them, with the array's own compressor, but without zarr's event loop and
    thread pool: they took twice the CPU of the compression and writes themselves, and
    the pool threads' malloc arenas each kept up to 32 MiB of freed memory, so the peak
    grew with the scenes written. At most ``QUEUED`` blocks
    wait, so memory is bounded by a few blocks (the one read, those queued, the one being
    written), never by the stack. Blocks handed to :meth:`write` must not change afterwards.
    A failed write is raised by the next :meth:`write` or by :meth:`finish`; leaving the
    ``with`` block stops the thread (dropping what waits after an error) before the
    caller removes the partial store.
    """

    QUEUED = 1

    def __init__(self, path: Path) -> None:
        import zarr

        self._path = path
        self._group = zarr.open_group(path, mode="r+", zarr_format=2)
        self._arrays: dict[str, object] = {}
        self._queue: queue.Queue[tuple[str, tuple, np.ndarray] | None] = queue.Queue(self.QUEUED)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="cube-writer", daemon=True)
        self._thread.start()

    def __enter__(self) -> _ArrayWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if exc_info[0] is not None and self._error is None:
            self._error = exc_info[1]  # type: ignore[assignment]  # drop what still waits
        self._stop()

    def write(self, name: str, index: tuple, values: np.ndarray) -> None:
        """Queue ``values`` for ``name[index]`` (waits while the queue is full)."""
        self._raise()
        self._queue.put((name, index, values))

    def finish(self, attrs: dict[str, object]) -> None:
        """Wait for every block, then add ``attrs`` to the group and consolidate its
        metadata again."""
        import zarr

        self._stop()
        self._raise()
        self._group.attrs.update(attrs)
        zarr.consolidate_metadata(self._path, zarr_format=2)

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self._store(*item)
                except BaseException as error:  # raised in the building thread
                    self._error = error
            del item  # the block is freed before the heap is trimmed
            _trim_heap()

    def _store(self, name: str, index: tuple, values: np.ndarray) -> None:
        if name not in self._arrays:
            import zarr

            self._arrays[name] = zarr.open_array(
                self._path / name, mode="r+", config={"write_empty_chunks": True}
            )
        array = self._arrays[name]
        chunks = _whole_chunks(array.metadata, index, values)
        if chunks is None:  # part of a chunk: zarr merges it with what the chunk holds
            array[index] = values
            return
        meta = array.metadata
        dtype = meta.dtype.to_native_dtype()
        for coords, part in chunks:
            if part.shape != meta.chunks:  # an edge chunk, padded with the fill value as zarr
                padded = np.full(meta.chunks, meta.fill_value, dtype, order=meta.order)
                padded[tuple(slice(0, n) for n in part.shape)] = part
                part = padded
            chunk = np.asarray(part, dtype=dtype, order=meta.order)
            encoded = meta.compressor.encode(chunk) if meta.compressor else chunk.tobytes()
            (self._path / name / meta.encode_chunk_key(coords)).write_bytes(encoded)

    def _stop(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``; None for other C libraries."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def _trim_heap() -> None:
    """Give the C heap's freed pages back to the system (glibc; nothing elsewhere).

    After freeing its first block-sized array glibc serves arrays up to that size from
    its heap instead of mappings of their own and keeps what is freed for reuse; the
    blocks and masks of each band left holes whose pages stayed resident, and the peak
    crept up with the bands written (by ~15 MiB now and then over 40 bands of 2048 px).
    ``malloc_trim`` returns free pages of every arena; done once per block in the writer
    thread (~2 ms, beside ~20 ms of compressing and writing a 2048 px block).
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def _whole_chunks(
    meta: object, index: tuple, values: np.ndarray
) -> list[tuple[tuple[int, ...], np.ndarray]] | None:
    """(chunk coordinates, the part of ``values`` it holds) for each chunk that ``index``
    (integers and slices with bounds) covers of a Zarr v2 array without filters; None
    when it covers part of one (the part of an edge chunk inside the array is whole), or
    the array is of another kind."""
    if getattr(meta, "zarr_format", None) != 2 or meta.filters or meta.fill_value is None:
        return None
    index = tuple(slice(i, i + 1) if isinstance(i, int) else i for i in index)
    block = values.reshape([s.stop - s.start for s in index])  # integers: length-1 axes
    axes = tuple(zip(index, meta.chunks, meta.shape, strict=True))
    if any(s.start % size or (s.stop % size and s.stop != length) for s, size, length in axes):
        return None
    ranges = [range(s.start // size, -(-s.stop // size)) for s, size, _ in axes]
    return [(coords, block[_chunk_part(coords, axes)]) for coords in itertools.product(*ranges)]


def _chunk_part(coords: tuple[int, ...], axes: tuple) -> tuple[slice, ...]:
    """Where chunk ``coords`` lies in a block: ``axes`` are (block slice, chunk size, -)."""
    return tuple(
        slice(c * size - s.start, min((c + 1) * size, s.stop) - s.start)
        for c, (s, size, _) in zip(coords, axes, strict=True)
    )


def _write_terrain(dem: Source, grid: Grid, arrays: _ArrayWriter) -> None:
    """Elevation and its derivatives block by block, each read with a 1-pixel halo (none at
    the grid's edges) so the derivatives equal those of the whole grid."""
    for rows, cols in grid.blocks(BLOCK):
        halo_rows = slice(max(rows.start - 1, 0), min(rows.stop + 1, grid.height))
        halo_cols = slice(max(cols.start - 1, 0), min(cols.stop + 1, grid.width))
        elevation = np.asarray(dem.read(grid.subgrid(halo_rows, halo_cols)), dtype=np.float32)
        _check_dem(elevation, dem, grid)
        inner = (
            slice(rows.start - halo_rows.start, rows.stop - halo_rows.start),
            slice(cols.start - halo_cols.start, cols.stop - halo_cols.start),
        )
        arrays.write("dem", (rows, cols), elevation[inner])
        features = terrain_features(elevation, grid.resolution, grid.resolution)
        for name, values in features.items():
            arrays.write(name, (rows, cols), values[inner])


def _check_dem(elevation: np.ndarray, dem: Source, grid: Grid) -> None:
    missing = int(np.isnan(elevation).sum())
    if missing:
        raise EventInputError(
            f"the DEM {getattr(dem, 'path', dem)} has no data at {missing} of "
            f"{elevation.size} pixels read: it must cover the whole area "
            f"({_describe_grid(grid)}); give a DEM that does, or a smaller --bbox/--aoi"
        )


def _describe_grid(grid: Grid) -> str:
    west, south, east, north = grid.lonlat_bounds()
    return f"lon {west:.4f} to {east:.4f}, lat {south:.4f} to {north:.4f}"


def _write_inventory(inventory: Inventory, grid: Grid, arrays: _ArrayWriter) -> None:
    """Rasterise the polygons: 1 where a pixel's centre is inside one (GDAL's default,
    all_touched=False: a pixel is not a landslide for grazing one), else 0."""
    from rasterio.features import rasterize

    for rows, cols in grid.blocks(BLOCK):
        block = grid.subgrid(rows, cols)
        burnt = rasterize(
            ((g, 1) for g in inventory.geometries),
            out_shape=block.shape,
            transform=block.transform,
            fill=0,
            all_touched=False,
            dtype="uint8",
        )
        arrays.write("landslides", (rows, cols), burnt.astype(np.float32))


def _write_region(path: Path, region: Region) -> None:
    """The region mapping, with the cube relative to the file's folder (they travel together)."""
    mapping = {
        "name": region.name,
        "cube": region.cube,
        "event_start": region.event_start,
        "event_end": region.event_end,
        "orbit": region.orbit,
    }
    header = "# written by `landslide-lit cube`; use with --region or --data.test_region\n"
    write_text_atomically(path, header + yaml.safe_dump(mapping, sort_keys=False))


def _progress(items: Sequence[Scene], show: bool, label: str) -> Sequence[Scene]:
    if not show:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=label, unit="acquisition")
