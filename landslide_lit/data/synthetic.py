"""Synthetic Sentinel-1 landslide datacubes in the schema of the published cubes.

The real cubes (Boehm et al. 2022) cannot be downloaded here, so tests and the demo use cubes
made on the fly with the same dimensions, variable names, dtypes and coordinates:

- dims ``timestep``, ``timepair``, ``y``, ``x``;
- ``vv``, ``vh`` (timestep, y, x): linear power, float32, NaN in radar layover and shadow;
- ``dem`` (metres, ``dem <= 0`` is sea), ``dem_slope_radians`` [0, pi/2), ``dem_aspect``
  (downslope azimuth, degrees clockwise from north, [0, 360), 0 on flat ground),
  ``dem_curvature`` (richdem convention: -100 x Laplacian, in 1/(100 m), convex > 0),
  ``landslides`` (1 landslide, 0 not, NaN over the sea, which no inventory maps);
- ``topophase.cor_1`` (coherence), ``phsig.cor`` (phase-sigma coherence), ``los.rdr_0``
  (incidence, degrees from vertical) and ``los.rdr_1`` (azimuth of the target-to-satellite
  vector, degrees anticlockwise from north, the ISCE convention) along (timepair, y, x);
- ``timestep`` (datetime64[ns], or 'YYYYMMDD' strings with ``timestep_format="yyyymmdd"``),
  ``sat:orbit_state`` along ``timestep`` with the real region's sequence ('a'/'d';
  'ascending' for Kaikoura; absent for Puerto Rico), projected ``y``/``x`` pixel centres
  (10 m, north up) and a scalar ``spatial_ref`` with the UTM CRS as WKT.

Synthetic choices, where the real encoding is unknown:

- ``timepair`` holds consecutive pairs within each orbit, labelled
  ``'YYYYMMDD_YYYYMMDD'`` (reference_secondary), sorted by reference date.
- Cubes without an orbit coordinate are imaged from ascending passes.
- A :class:`Region` that is not built in takes the preset of its name, else Hokkaido's,
  with the acquisitions shifted to its event dates, no orbit coordinate if its orbit is
  'none', and its own variable names (``Region.names``).
- Acquisitions are spaced evenly, a few days apart: the first after the event is on
  ``event_end`` (after the trigger's hour), the one before it falls before ``event_start``
  and none between the event days, so day-based selection ('before' = day <= start,
  'after' = day >= end) is unambiguous.

The scene is physical, not noise with a square in it: a spectral (power-law) DEM with
volcano cone or coast per region; slope, aspect and curvature derived from it; forest, open
land, bare rock and field parcels; landslides on steep slopes as teardrops pointing
downslope, clustered around an epicentre or storm core; backscatter from land cover, local
incidence for the pass's look direction (ascending looks east, descending west), per-date
soil moisture and crop cycles, and gamma speckle with the GRD's ENL of 4.4, correlated
between neighbouring 10 m pixels as the ~20 m resolution cell implies (per-pixel ENL ~8.6:
the real Hokkaido log10 std of 0.21 is below the 0.22 that independent ENL-4.4 speckle alone
would give). After the event, landslides lose their vegetation (VH drops, VV changes with
scarp/deposit and local geometry) and pairs spanning the event decorrelate, most on the
landslides. Land backscatter is calibrated to each region's log10 mean and std.
"""

from __future__ import annotations

import datetime as dt
import functools
import itertools
import math
import os
import uuid
import zlib
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Literal

import numpy as np
import xarray as xr
from scipy import ndimage

from landslide_lit.atomic import move_into_place, remove
from landslide_lit.data.terrain import TERRAIN_ATTRS, gradients, slope, terrain_features
from landslide_lit.errors import ConfigError
from landslide_lit.regions import REGIONS, CubeNames, Region, get_region

__all__ = [
    "PRESETS",
    "Cover",
    "Radar",
    "Slides",
    "SyntheticPreset",
    "Terrain",
    "make_synthetic_cube",
    "synthetic_landslides",
    "write_synthetic_cube",
]

PIXEL_M = 10.0
GRD_ENL = 4.4
CHUNK = 512
# speckle correlation between neighbours: centre and 4-neighbour weights (sum 1)
_SPECKLE_CENTRE, _SPECKLE_SIDE = 0.7, 0.075
# incidence change across range, degrees per metre (about 17 deg over a 250 km IW swath)
_INCIDENCE_RATE = 0.065e-3
# ISCE azimuth of the target-to-satellite vector (anticlockwise from north)
_LOS_AZIMUTH = {True: 102.0, False: -102.0}
_COHERENCE_LOOKS = 20
# coherence at zero lag; it decays to the long-term value in a few days (forest) to weeks
_COHERENCE_START = 0.85
_DECAY_DAYS = (2.0, 12.0)  # forest, open ground
# DEM blur, metres: 10 m DEMs are resampled from coarser ones and smooth at the pixel scale
_DEM_SMOOTH_M = 20.0
_LN10_OVER_10 = math.log(10.0) / 10.0


@dataclass(frozen=True)
class Terrain:
    """Relief of the synthetic DEM.

    Attributes:
        base_m: lowest inland elevation.
        rms_slope_deg: RMS slope of the fractal relief.
        exponent: power-spectrum exponent of the relief (larger is smoother).
        corner_m: wavelength above which the spectrum flattens (largest hills).
        cone_m, cone_radius_m: height and e-folding radius of a volcano cone (0: none),
            centred on ``cone_centre`` (row, col as fractions of the cube).
        sea_side: edge beyond the coastline, or None for an inland cube.
        sea_fraction: share of the cube beyond the coastline on that side.
        coast_rise: mean rise inland of the coastline, metres per metre.
    """

    base_m: float
    rms_slope_deg: float
    exponent: float = 3.6
    corner_m: float = 3000.0
    cone_m: float = 0.0
    cone_radius_m: float = 3000.0
    cone_centre: tuple[float, float] = (0.5, 0.5)
    sea_side: Literal["north", "south", "east", "west"] | None = None
    sea_fraction: float = 0.0
    coast_rise: float = 0.1


@dataclass(frozen=True)
class Cover:
    """Land cover and the land backscatter it is calibrated to.

    Attributes:
        forest: share of land under forest (the rest is open land, fields, bare rock).
        treeline_m: elevation above which the ground is bare rock.
        fields: share of flat open land in crop parcels (with harvests).
        vv_log10, vh_log10: target (mean, std) of log10 backscatter on land.
    """

    forest: float
    vv_log10: tuple[float, float]
    vh_log10: tuple[float, float]
    treeline_m: float = math.inf
    fields: float = 0.5


@dataclass(frozen=True)
class Slides:
    """Where landslides fall and how big they are.

    Attributes:
        density_km2: landslides per square kilometre of cube.
        length_m, length_sigma: median length and lognormal spread.
        width_ratio: width / length.
        cores: epicentres or storm cores (row, col as fractions of the cube).
        spread: standard deviation of the cluster around a core, as a fraction of the cube.
        background: share of landslides scattered uniformly instead.
        slope_deg: hillslopes (smoothed over ~40 m) below the first value never fail;
            the chance of failing grows to its full value at the second.
    """

    density_km2: float
    length_m: float
    cores: tuple[tuple[float, float], ...]
    spread: float
    length_sigma: float = 0.5
    width_ratio: float = 0.45
    background: float = 0.15
    slope_deg: tuple[float, float] = (10.0, 32.0)


@dataclass(frozen=True)
class Radar:
    """Imaging geometry, event change and coherence.

    Attributes:
        incidence_deg: incidence at the cube centre for (ascending, descending) passes.
        vh_drop_db: VH change on landslides after the event (vegetation stripped).
        vv_scarp_db, vv_deposit_db: VV change at the head and the toe of a landslide.
        vv_geometry: extra VV change per dB of local-incidence brightening (bare soil
            follows the geometry more than vegetation does).
        regional_db: (VV, VH) change of forest everywhere after the event (defoliation).
        flood_db: change of low flat land on the first acquisition after the event.
        coherence: long-term coherence of (forest, open land, bare rock).
        event_decorrelation: coherence factor on land for pairs spanning the event.
    """

    incidence_deg: tuple[float, float]
    vh_drop_db: float
    vv_scarp_db: float
    vv_deposit_db: float
    vv_geometry: float = 0.5
    regional_db: tuple[float, float] = (0.0, 0.0)
    flood_db: float = 0.0
    coherence: tuple[float, float, float] = (0.12, 0.4, 0.55)
    event_decorrelation: float = 0.85


@dataclass(frozen=True)
class SyntheticPreset:
    """Everything that makes one region's synthetic cube.

    Attributes:
        name: the region (a key of ``REGIONS``).
        size: default (rows, cols).
        times: acquisition datetimes (UTC), ascending.
        orbits: ``sat:orbit_state`` values per acquisition, or None for no coordinate.
        epsg: projected CRS (UTM zone).
        origin: (x, y) of the top-left corner of the cube, metres.
    """

    name: str
    size: tuple[int, int]
    times: tuple[np.datetime64, ...]
    orbits: tuple[str, ...] | None
    epsg: int
    origin: tuple[float, float]
    terrain: Terrain
    cover: Cover
    slides: Slides
    radar: Radar

    @property
    def ascending(self) -> np.ndarray:
        """Per acquisition: imaged from an ascending pass (always, without orbits)."""
        if self.orbits is None:
            return np.ones(len(self.times), dtype=bool)
        return np.array([o.startswith("a") for o in self.orbits])


def _schedule(
    region: str, orbits: str, n_before: int, step_days: int, hours: dict[str, float]
) -> tuple[np.datetime64, ...]:
    """Acquisitions every ``step_days``, the first after the event on ``event_end``.

    ``orbits`` is one letter per acquisition ('a' or 'd'), ``hours`` the UTC hour of each;
    ``step_days`` must exceed the event's length so that the last before-pass falls before
    ``event_start``.
    """
    reg = REGIONS[region]
    days = [reg.end_day + dt.timedelta(days=step_days * (i - n_before)) for i in range(len(orbits))]
    if days[n_before - 1] >= reg.start_day:
        raise ValueError(f"{region}: step_days={step_days} is too short for the event")
    return tuple(
        np.datetime64(dt.datetime.combine(day, dt.time()) + dt.timedelta(hours=hours[o]), "ns")
        for day, o in zip(days, orbits, strict=True)
    )


_HOKKAIDO_ORBITS = "ddadddaddaddaddaddadaddadd"
_TALAKMAU_ORBITS = "adadadadadadadaaaaaa"

PRESETS: dict[str, SyntheticPreset] = {
    "hokkaido": SyntheticPreset(
        name="hokkaido",
        size=(1536, 1536),
        times=_schedule("hokkaido", _HOKKAIDO_ORBITS, 18, 4, {"a": 8.6, "d": 20.7}),
        orbits=tuple(_HOKKAIDO_ORBITS),
        epsg=32654,
        origin=(566000.0, 4736000.0),
        terrain=Terrain(base_m=40.0, rms_slope_deg=17.0, exponent=3.6, corner_m=2500.0),
        cover=Cover(forest=0.7, vv_log10=(-0.73, 0.21), vh_log10=(-1.32, 0.19), fields=0.7),
        slides=Slides(
            density_km2=24.0,
            length_m=90.0,
            cores=((0.5, 0.55),),
            spread=0.1,
            background=0.005,
            width_ratio=0.5,
        ),
        radar=Radar(
            incidence_deg=(34.0, 36.5),
            vh_drop_db=-3.0,
            vv_scarp_db=-1.5,
            vv_deposit_db=0.5,
            coherence=(0.1, 0.3, 0.5),
        ),
    ),
    "talakmau": SyntheticPreset(
        name="talakmau",
        size=(1024, 1024),
        times=_schedule("talakmau", _TALAKMAU_ORBITS, 10, 6, {"a": 11.7, "d": 23.3}),
        orbits=tuple(_TALAKMAU_ORBITS),
        epsg=32647,
        origin=(600000.0, 21000.0),
        terrain=Terrain(
            base_m=300.0,
            rms_slope_deg=14.0,
            exponent=3.4,
            cone_m=2400.0,
            cone_radius_m=3000.0,
            cone_centre=(0.4, 0.5),
        ),
        cover=Cover(
            forest=0.85,
            vv_log10=(-0.70, 0.23),
            vh_log10=(-1.27, 0.20),
            treeline_m=2400.0,
            fields=0.3,
        ),
        slides=Slides(
            density_km2=4.5,
            length_m=150.0,
            length_sigma=0.6,
            width_ratio=0.3,
            cores=((0.4, 0.5),),
            spread=0.21,
            background=0.01,
            slope_deg=(15.0, 35.0),
        ),
        radar=Radar(
            incidence_deg=(37.0, 39.0), vh_drop_db=-2.5, vv_scarp_db=-1.0, vv_deposit_db=1.0
        ),
    ),
    "kaikoura": SyntheticPreset(
        name="kaikoura",
        size=(1024, 1024),
        times=_schedule("kaikoura", "aaaaa", 3, 12, {"a": 7.5}),
        orbits=("ascending",) * 5,
        epsg=32759,
        origin=(700000.0, 5316000.0),
        terrain=Terrain(
            base_m=0.0,
            rms_slope_deg=24.0,
            exponent=3.4,
            sea_side="east",
            sea_fraction=0.15,
            coast_rise=0.2,
        ),
        cover=Cover(
            forest=0.25,
            vv_log10=(-0.99, 0.27),
            vh_log10=(-1.61, 0.24),
            treeline_m=1100.0,
        ),
        slides=Slides(
            density_km2=2.2,
            length_m=200.0,
            length_sigma=0.7,
            width_ratio=0.5,
            cores=((0.3, 0.55), (0.7, 0.45)),
            spread=0.15,
            background=0.02,
            slope_deg=(20.0, 40.0),
        ),
        radar=Radar(
            incidence_deg=(39.0, 39.0),
            vh_drop_db=-2.0,
            vv_scarp_db=1.0,
            vv_deposit_db=2.5,
            vv_geometry=1.0,
            coherence=(0.2, 0.45, 0.6),
        ),
    ),
    "puerto_rico": SyntheticPreset(
        name="puerto_rico",
        size=(1024, 1024),
        times=_schedule("puerto_rico", "a" * 12, 8, 6, {"a": 22.5}),
        orbits=None,
        epsg=32619,
        origin=(740000.0, 2026000.0),
        terrain=Terrain(
            base_m=0.0,
            rms_slope_deg=18.0,
            exponent=3.5,
            sea_side="north",
            sea_fraction=0.08,
            coast_rise=0.08,
        ),
        cover=Cover(forest=0.8, vv_log10=(-0.74, 0.22), vh_log10=(-1.30, 0.20), fields=0.4),
        slides=Slides(
            density_km2=35.0,
            length_m=80.0,
            length_sigma=0.6,
            width_ratio=0.25,
            cores=((0.55, 0.5),),
            spread=0.13,
            background=0.01,
            slope_deg=(12.0, 30.0),
        ),
        radar=Radar(
            incidence_deg=(36.0, 36.0),
            vh_drop_db=-3.5,
            vv_scarp_db=-1.0,
            vv_deposit_db=0.5,
            regional_db=(-0.4, -1.0),
            flood_db=-6.0,
            event_decorrelation=0.6,
        ),
    ),
}


def make_synthetic_cube(
    region: str | Region,
    size: tuple[int, int] | None = None,
    seed: int = 0,
    timestep_format: Literal["datetime", "yyyymmdd"] = "datetime",
) -> xr.Dataset:
    """Make a synthetic cube of ``region`` in the schema of the published cubes.

    A built-in region uses its preset. Any other :class:`Region` uses the parameters of the
    preset of the same name if there is one, else Hokkaido's, with the acquisitions moved to
    its own event dates, no orbit coordinate if its ``orbit`` is 'none', and the names of its
    ``names``. The same region, size and seed give identical arrays.

    Args:
        region: a region name or :class:`Region`.
        size: (rows, cols); the preset's size if None.
        seed: any non-negative integer.
        timestep_format: 'datetime' for datetime64[ns] timesteps, 'yyyymmdd' for strings.
    """
    reg, preset = _preset_for(region)
    shape = preset.size if size is None else (int(size[0]), int(size[1]))
    if min(shape) < 16:
        raise ConfigError(f"--size {shape[0]} {shape[1]} is too small; give at least 16 16")
    if seed < 0:
        raise ConfigError(f"--seed {seed}: give a non-negative integer")
    if timestep_format not in ("datetime", "yyyymmdd"):
        raise ValueError(
            f"timestep_format must be 'datetime' or 'yyyymmdd', got {timestep_format!r}"
        )
    rngs = _streams(reg.name, seed)
    scene = _make_scene(preset, shape, rngs)
    weather = _make_weather(rngs["temporal"], scene, preset.times)
    pairs = _pairs(preset.ascending)
    data = {
        pol: (("timestep", "y", "x"), _backscatter(scene, weather, preset, reg, pol, rngs[pol]))
        for pol in ("vv", "vh")
    }
    data |= _static_variables(scene)
    data |= _interferometric(scene, preset, reg, pairs, rngs["coherence"])
    ds = xr.Dataset(data, coords=_coordinates(preset, shape, pairs, timestep_format))
    for name, attrs in _ATTRS.items():
        ds[name].attrs.update(attrs)
    ds.attrs.update(_global_attrs(reg, preset, seed))
    return _rename(ds, reg)


def synthetic_landslides(
    region: str | Region, size: tuple[int, int] | None = None, seed: int = 0
) -> np.ndarray:
    """Where the landslides of :func:`make_synthetic_cube`'s cube (same arguments) lie.

    Only the static scene is made, not the radar time series, so this is quick.
    """
    reg, preset = _preset_for(region)
    shape = preset.size if size is None else (int(size[0]), int(size[1]))
    return _make_scene(preset, shape, _streams(reg.name, seed)).slides


def write_synthetic_cube(
    region: str | Region,
    root: str | os.PathLike | None = None,
    size: tuple[int, int] | None = None,
    seed: int = 0,
    fmt: Literal["zarr", "netcdf"] = "zarr",
    overwrite: bool = False,
    timestep_format: Literal["datetime", "yyyymmdd"] = "datetime",
) -> Path:
    """Write a synthetic cube where the region's cube goes: ``ROOT/synthetic/<cube>``.

    Zarr stores are format v2 with consolidated metadata, chunked one timestep by
    512 x 512, with every chunk file present (none left out for equalling the fill
    value); netCDF files are netCDF4 with zlib compression and the suffix ``.nc``. The
    cube is written to a hidden sibling and renamed into place, so an interrupted write
    never leaves a partial cube under the final name. ``size``, ``seed`` and
    ``timestep_format`` are passed to :func:`make_synthetic_cube`.

    Returns:
        the path of the written cube.

    Raises:
        FileExistsError: the cube exists and ``overwrite`` is False.
    """
    if fmt not in ("zarr", "netcdf"):
        raise ValueError(f"fmt must be 'zarr' or 'netcdf', got {fmt!r}")
    reg = get_region(region)
    path = reg.cube_path(root, synthetic=True).with_suffix(".zarr" if fmt == "zarr" else ".nc")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    ds = make_synthetic_cube(reg, size=size, seed=seed, timestep_format=timestep_format)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial-{uuid.uuid4().hex[:8]}")
    try:
        if fmt == "zarr":
            # Every chunk written, even those equal to the fill value: a missing chunk file
            # then always means a damaged store (see cube.chunk_damage).
            ds.to_zarr(
                tmp,
                mode="w-",
                zarr_format=2,
                consolidated=True,
                encoding=_encoding(ds),
                write_empty_chunks=True,
            )
        else:
            ds.to_netcdf(tmp, engine="netcdf4", encoding=_encoding(ds, netcdf=True))
        move_into_place(tmp, path)
    finally:
        remove(tmp)
    return path


def _encoding(ds: xr.Dataset, netcdf: bool = False) -> dict[str, dict]:
    """Chunk every data variable by one timestep (or pair) and 512 x 512 pixels."""
    encoding = {}
    for name, var in ds.data_vars.items():
        chunks = tuple(1 if i < var.ndim - 2 else min(CHUNK, n) for i, n in enumerate(var.shape))
        encoding[name] = (
            {"zlib": True, "complevel": 1, "chunksizes": chunks} if netcdf else {"chunks": chunks}
        )
    return encoding


def _preset_for(region: str | Region) -> tuple[Region, SyntheticPreset]:
    """The region and its preset, moved to the region's event dates and orbit."""
    reg = get_region(region)
    preset = PRESETS.get(reg.name, PRESETS["hokkaido"])
    source = REGIONS[preset.name]
    shift_before = np.timedelta64((reg.start_day - source.start_day).days, "D")
    shift_after = np.timedelta64((reg.end_day - source.end_day).days, "D")
    times = tuple(
        t + (shift_before if _day(t) <= source.start_day else shift_after) for t in preset.times
    )
    orbits = None if reg.orbit == "none" else preset.orbits
    return reg, replace(preset, times=times, orbits=orbits)


def _day(t: np.datetime64) -> dt.date:
    return t.astype("datetime64[D]").item()


def _streams(name: str, seed: int) -> dict[str, np.random.Generator]:
    """Independent random streams per component, fixed by the region name and the seed."""
    keys = ("dem", "cover", "slides", "temporal", "vv", "vh", "coherence")
    children = np.random.SeedSequence([seed, zlib.crc32(name.encode())]).spawn(len(keys))
    return {key: np.random.default_rng(child) for key, child in zip(keys, children, strict=True)}


@dataclass(frozen=True)
class _Geometry:
    """One pass direction's view of the terrain."""

    incidence: np.ndarray  # ellipsoid incidence, degrees
    azimuth: float  # ISCE azimuth of the target-to-satellite vector, degrees
    brightening_db: np.ndarray  # pixel-area (foreshortening) brightening
    cos_db: np.ndarray  # local-incidence term, 10 log10(cos(local) / cos(incidence))
    invalid: np.ndarray  # layover or shadow


@dataclass(frozen=True)
class _Scene:
    """The static scene: terrain, cover, landslides and both imaging geometries."""

    dem: np.ndarray
    slope: np.ndarray
    aspect: np.ndarray
    curvature: np.ndarray
    land: np.ndarray
    forest: np.ndarray
    bare: np.ndarray
    field_pixels: np.ndarray  # flat indices of crop-parcel pixels
    parcel: np.ndarray
    lowland: np.ndarray
    texture: np.ndarray
    bright: np.ndarray  # dB brightening of point targets
    slides: np.ndarray
    along: np.ndarray  # 0 at a landslide's head, 1 at its toe
    strength: np.ndarray  # how much of its vegetation a landslide lost
    geometry: dict[bool, _Geometry]  # keyed by 'ascending'


def _make_scene(
    preset: SyntheticPreset, shape: tuple[int, int], rngs: dict[str, np.random.Generator]
) -> _Scene:
    dem = _make_dem(rngs["dem"], shape, preset.terrain)
    dz_east, dz_north = gradients(dem, PIXEL_M, PIXEL_M)
    slope_deg = np.degrees(slope(dz_east, dz_north))
    land = dem > 0
    cover = _make_cover(rngs["cover"], dem, slope_deg, land, preset.cover)
    slides, along, strength = _place_landslides(rngs["slides"], dem, land, preset.slides)
    x_m = (np.arange(shape[1]) + 0.5) * PIXEL_M
    geometry = {
        asc: _geometry(dz_east, dz_north, x_m, asc, preset.radar.incidence_deg[0 if asc else 1])
        for asc in (True, False)
    }
    features = terrain_features(dem, PIXEL_M, PIXEL_M)
    return _Scene(
        dem=dem.astype(np.float32),
        slope=features["dem_slope_radians"],
        aspect=features["dem_aspect"],
        curvature=features["dem_curvature"],
        land=land,
        slides=slides,
        along=along,
        strength=strength,
        geometry=geometry,
        **cover,
    )


def _fractal(
    rng: np.random.Generator,
    shape: tuple[int, int],
    exponent: float,
    corner_m: float,
    smooth_m: float = 0.0,
) -> np.ndarray:
    """Gaussian field (mean 0, std 1) with power spectrum (k^2 + k_corner^2)^(-exponent/2).

    ``smooth_m`` is the width of a Gaussian blur applied on top. The field is made on a
    padded grid and cropped, so that it does not wrap around at the edges.
    """
    rows, cols = shape
    pad_rows, pad_cols = rows + rows // 4 + 8, cols + cols // 4 + 8
    ky = np.fft.fftfreq(pad_rows, d=PIXEL_M)[:, None]
    kx = np.fft.rfftfreq(pad_cols, d=PIXEL_M)[None, :]
    k2 = ky**2 + kx**2
    amplitude = (k2 + corner_m**-2) ** (-exponent / 4) * np.exp(-2 * (np.pi * smooth_m) ** 2 * k2)
    noise = rng.standard_normal((2, *amplitude.shape))
    field = np.fft.irfft2(amplitude * (noise[0] + 1j * noise[1]), s=(pad_rows, pad_cols))
    field = field[:rows, :cols]
    return (field - field.mean()) / field.std()


def _make_dem(rng: np.random.Generator, shape: tuple[int, int], terrain: Terrain) -> np.ndarray:
    """Fractal relief scaled to the RMS slope, plus a volcano cone or a coast; sea is 0."""
    relief = _fractal(rng, shape, terrain.exponent, terrain.corner_m, _DEM_SMOOTH_M)
    d_row, d_col = np.gradient(relief, PIXEL_M)
    relief *= math.tan(math.radians(terrain.rms_slope_deg)) / np.sqrt(np.mean(d_row**2 + d_col**2))
    rows = (np.arange(shape[0])[:, None] + 0.5) * PIXEL_M
    cols = (np.arange(shape[1])[None, :] + 0.5) * PIXEL_M
    if terrain.cone_m:
        centre_row, centre_col = (
            f * n * PIXEL_M for f, n in zip(terrain.cone_centre, shape, strict=True)
        )
        distance = np.hypot(rows - centre_row, cols - centre_col)
        relief = relief + terrain.cone_m * np.exp(-distance / terrain.cone_radius_m)
    if terrain.sea_side is None:
        return terrain.base_m + relief - relief.min()
    inland = _inland_m(rows, cols, shape, terrain)
    dem = (
        terrain.base_m
        + terrain.coast_rise * inland
        + relief * np.clip(0.2 + inland / 3000.0, 0.0, 1.0)
    )
    return np.maximum(dem, 0.0)


def _inland_m(
    rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int], terrain: Terrain
) -> np.ndarray:
    """Distance inland of a straight coastline, metres (negative at sea)."""
    rows, cols = np.broadcast_arrays(rows, cols)
    height, width = shape[0] * PIXEL_M, shape[1] * PIXEL_M
    from_edge = {
        "north": rows,
        "south": height - rows,
        "west": cols,
        "east": width - cols,
    }[terrain.sea_side]
    extent = height if terrain.sea_side in ("north", "south") else width
    return from_edge - terrain.sea_fraction * extent


def _make_cover(
    rng: np.random.Generator,
    dem: np.ndarray,
    slope_deg: np.ndarray,
    land: np.ndarray,
    cover: Cover,
) -> dict[str, np.ndarray]:
    """Forest on slopes, open land and crop parcels on flats, bare rock above the treeline."""
    score = _fractal(rng, dem.shape, 3.0, 1500.0) + (slope_deg - 12.0) / 8.0
    threshold = np.quantile(score[land], 1.0 - cover.forest) if land.any() else 0.0
    bare = np.clip((dem - cover.treeline_m) / 200.0 + 0.5, 0.0, 1.0) * land
    forest = land * (1.0 - bare) / (1.0 + np.exp(-(score - threshold) / 0.3))
    flat = land & (slope_deg < 6.0) & (forest < 0.5) & (bare < 0.5)
    parcel = _parcels(rng, dem.shape)
    in_use = rng.random(parcel.max() + 1) < cover.fields
    low = np.quantile(dem[land], 0.2) if land.any() else 0.0
    return {
        "forest": forest.astype(np.float32),
        "bare": bare.astype(np.float32),
        "field_pixels": np.flatnonzero(flat & in_use[parcel]),
        "parcel": parcel,
        "lowland": flat & (dem <= low),
        "texture": _fractal(rng, dem.shape, 2.5, 500.0).astype(np.float32),
        "bright": np.where(
            land & (rng.random(dem.shape) < 5e-4), rng.uniform(10.0, 25.0, dem.shape), 0.0
        ).astype(np.float32),
    }


def _parcels(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Parcel ids on a grid of rectangles 80-300 m a side."""
    ids = []
    for n in shape:
        sides = rng.integers(8, 30, size=n // 8 + 1)
        ids.append(np.repeat(np.arange(sides.size), sides)[:n])
    return ids[0][:, None] * (ids[1].max() + 1) + ids[1][None, :]


def _place_landslides(
    rng: np.random.Generator,
    dem: np.ndarray,
    land: np.ndarray,
    slides: Slides,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Teardrop landslides pointing downslope, on steep hillslopes around the cores.

    Steepness and direction are those of the terrain smoothed over ~40 m, the scale of a
    hillslope rather than of a pixel.

    Returns:
        the landslide mask, the position along each landslide (0 head, 1 toe) and the
        strength of its vegetation loss (0 outside landslides).
    """
    rows, cols = dem.shape
    n = rng.poisson(slides.density_km2 * rows * cols * PIXEL_M**2 / 1e6)
    m = 50 * n + 100
    cores = np.asarray(slides.cores)[rng.integers(len(slides.cores), size=m)]
    clustered = rng.random(m) >= slides.background
    r = np.where(clustered, rng.normal(cores[:, 0], slides.spread), rng.random(m)) * rows
    c = np.where(clustered, rng.normal(cores[:, 1], slides.spread), rng.random(m)) * cols
    ri, ci = np.clip(r.astype(int), 0, rows - 1), np.clip(c.astype(int), 0, cols - 1)
    g_row, g_col = np.gradient(ndimage.gaussian_filter(dem, 4.0), PIXEL_M)
    g_row, g_col = g_row[ri, ci], g_col[ri, ci]
    lo, hi = slides.slope_deg
    steepness = (np.degrees(np.arctan(np.hypot(g_row, g_col))) - lo) / (hi - lo)
    chance = np.clip(steepness, 0.0, 1.0) ** 2 * land[ri, ci]
    inside = (r >= 0) & (r < rows) & (c >= 0) & (c < cols)
    heads = np.flatnonzero(inside & (rng.random(m) < chance))[:n]
    # downslope direction in (row, col) steps
    down = -np.stack([g_row[heads], g_col[heads]], axis=1)
    down /= np.maximum(np.linalg.norm(down, axis=1, keepdims=True), 1e-12)
    lengths = (
        slides.length_m / PIXEL_M * np.exp(slides.length_sigma * rng.standard_normal(heads.size))
    )
    widths = lengths * slides.width_ratio * rng.uniform(0.7, 1.3, heads.size)
    strengths = rng.uniform(0.1, 1.0, heads.size)
    rough = _fractal(rng, dem.shape, 3.0, 100.0)
    mask = np.zeros(dem.shape, dtype=bool)
    along = np.zeros(dem.shape, dtype=np.float32)
    strength = np.zeros(dem.shape, dtype=np.float32)
    for r0, c0, (dr, dc), length, width, k in zip(
        r[heads], c[heads], down, lengths, widths, strengths, strict=True
    ):
        half = width / 2
        r_lo, r_hi = sorted((r0, r0 + dr * length))
        c_lo, c_hi = sorted((c0, c0 + dc * length))
        win = (
            slice(max(int(r_lo - half), 0), min(int(r_hi + half) + 2, rows)),
            slice(max(int(c_lo - half), 0), min(int(c_hi + half) + 2, cols)),
        )
        pr = np.arange(win[0].start, win[0].stop)[:, None] + 0.5 - r0
        pc = np.arange(win[1].start, win[1].stop)[None, :] + 0.5 - c0
        u = (pr * dr + pc * dc) / length
        v = np.abs(pc * dr - pr * dc)
        outline = half * np.sin(np.pi * np.clip(u, 0.0, 1.0) ** 0.6) * (1 + 0.15 * rough[win])
        hit = (u >= 0) & (u <= 1) & (v <= outline) & land[win]
        mask[win] |= hit
        along[win][hit] = u[hit]
        strength[win][hit] = k
    return mask, along, strength


def _geometry(
    dz_east: np.ndarray, dz_north: np.ndarray, x_m: np.ndarray, ascending: bool, centre: float
) -> _Geometry:
    """Incidence, brightening and layover/shadow for one pass direction.

    Ascending passes look east, descending west; incidence grows towards far range.
    """
    far = 1.0 if ascending else -1.0
    incidence = centre + far * (x_m - x_m.mean()) * _INCIDENCE_RATE
    theta = np.radians(np.broadcast_to(incidence, dz_east.shape))
    azimuth = _LOS_AZIMUTH[ascending]
    east, north = -math.sin(math.radians(azimuth)), math.cos(math.radians(azimuth))
    rise_to_sensor = dz_east * east + dz_north * north
    theta_range = theta + np.arctan(rise_to_sensor)  # local incidence in the range plane
    cos_local = (np.cos(theta) - np.sin(theta) * rise_to_sensor) / np.sqrt(
        1.0 + dz_east**2 + dz_north**2
    )
    clipped = np.clip(theta_range, np.radians(2.0), np.radians(88.0))
    return _Geometry(
        incidence=np.broadcast_to(incidence, dz_east.shape).astype(np.float32),
        azimuth=azimuth,
        brightening_db=(10 * np.log10(np.sin(theta) / np.sin(clipped))).astype(np.float32),
        cos_db=(10 * np.log10(np.clip(cos_local, 0.05, 1.0) / np.cos(theta))).astype(np.float32),
        invalid=(theta_range <= 0) | (theta_range >= np.pi / 2),
    )


# Per-polarisation constants are (VV, VH) pairs, indexed by _POLS.index(pol).
_POLS = ("vv", "vh")
# land backscatter before calibration, dB: forest, open land, bare rock; then sea
_COVER_DB = ((-7.0, -9.5, -11.0, -20.0), (-12.5, -17.0, -19.5, -28.0))
_LOCAL_INCIDENCE_WEIGHT = (1.0, 0.3)
# bright point targets (buildings, pylons): how much less they brighten each polarisation
_BRIGHT_LOSS_DB = (0.0, 6.0)
# sea: response to wind
_WIND_WEIGHT = (1.0, 0.5)
# soil moisture: response on open land, on forest
_MOISTURE_WEIGHT = ((1.0, 0.4), (0.5, 0.25))
# crops: seasonal amplitude and change at harvest, dB
_CROP_DB = ((0.8, -1.5), (1.5, -3.0))
# std of the per-date wet-canopy variation at the scale of landslides, dB
_CANOPY_DB = (0.7, 1.0)


@dataclass(frozen=True)
class _Weather:
    """What changes between acquisitions: moisture, wet canopy, crops, wind on the sea."""

    offset_db: np.ndarray  # (pol, timestep): per-date VV, VH offsets
    moisture: np.ndarray  # (timestep, K) weights of the soil-moisture patterns
    moisture_patterns: np.ndarray  # (K, y, x) km-scale patterns
    canopy: np.ndarray  # (pol, timestep, K) weights of the canopy patterns
    canopy_patterns: np.ndarray  # (K, y, x) patterns at the scale of landslides
    crop_db: np.ndarray  # (pol, timestep, parcel)
    wind_db: np.ndarray  # (timestep,) sea roughness


def _make_weather(
    rng: np.random.Generator, scene: _Scene, times: tuple[np.datetime64, ...]
) -> _Weather:
    n = len(times)
    days = np.array([(t - times[0]) / np.timedelta64(1, "D") for t in times])
    n_parcels = int(scene.parcel.max()) + 1
    phase = rng.uniform(0, 2 * np.pi, n_parcels)
    harvest = rng.uniform(-0.3, 1.3, n_parcels) * max(days[-1], 1.0)
    season = np.sin(2 * np.pi * days[:, None] / 100.0 + phase)
    harvested = days[:, None] >= harvest
    shape = scene.dem.shape
    canopy_sd = np.array(_CANOPY_DB)[:, None, None] / 2.0  # four patterns of unit std
    return _Weather(
        offset_db=rng.normal(0.0, 0.3, (2, n)),
        moisture=rng.normal(0.0, 0.6, (n, 3)).astype(np.float32),
        moisture_patterns=np.stack([_fractal(rng, shape, 4.0, 4000.0) for _ in range(3)]).astype(
            np.float32
        ),
        canopy=(rng.normal(0.0, 1.0, (2, n, 4)) * canopy_sd).astype(np.float32),
        canopy_patterns=np.stack([_fractal(rng, shape, 3.0, 300.0, 10.0) for _ in range(4)]).astype(
            np.float32
        ),
        crop_db=np.stack([amp * season + drop * harvested for amp, drop in _CROP_DB]).astype(
            np.float32
        ),
        wind_db=rng.normal(0.0, 2.0, n),
    )


def _backscatter(
    scene: _Scene,
    weather: _Weather,
    preset: SyntheticPreset,
    reg: Region,
    pol: Literal["vv", "vh"],
    rng: np.random.Generator,
) -> np.ndarray:
    """Linear backscatter (timestep, y, x), land calibrated to the preset's log10 stats."""
    p = _POLS.index(pol)
    ascending = preset.ascending
    static = {asc: _static_db(scene, geo, p) for asc, geo in scene.geometry.items()}
    open_w, forest_w = _MOISTURE_WEIGHT[p]
    sensitivity = open_w + (forest_w - open_w) * scene.forest
    out = np.empty((len(ascending), *scene.dem.shape), dtype=np.float32)
    for t, asc in enumerate(ascending):
        out[t] = _signal_db(static[asc], sensitivity, scene, weather, t, p)
    changes = _event_changes(scene, preset, reg, p)
    mean, std, change_mean = _land_stats(out, changes, scene, ascending)
    target_mean, target_std = (preset.cover.vv_log10, preset.cover.vh_log10)[p]
    speckle_mean, speckle_std = _speckle_log10_stats()
    gain = 10.0 * math.sqrt(max(target_std**2 - speckle_std**2, 0.25 * target_std**2)) / std
    level = 10.0 * (target_mean - speckle_mean) - change_mean
    sea = np.flatnonzero(~scene.land)
    sea_db = _COVER_DB[p][3] + _WIND_WEIGHT[p] * weather.wind_db
    for t, (db, asc, change) in enumerate(zip(out, ascending, changes, strict=True)):
        db -= mean
        db *= gain
        db += level
        if change is not None:
            db += change
        db.flat[sea] = sea_db[t]
        db *= _LN10_OVER_10
        np.exp(db, out=db)
        db *= _speckle(rng, scene.dem.shape)
        db[scene.geometry[asc].invalid] = np.nan
    return out


def _static_db(scene: _Scene, geo: _Geometry, p: int) -> np.ndarray:
    """Land backscatter from the cover and the pass's geometry, dB."""
    forest_db, open_db, bare_db, _ = _COVER_DB[p]
    open_land = 1.0 - scene.forest - scene.bare
    return (
        scene.forest * forest_db
        + open_land * open_db
        + scene.bare * bare_db
        + 0.5 * scene.texture
        + np.maximum(scene.bright - _BRIGHT_LOSS_DB[p], 0.0)
        + geo.brightening_db
        + _LOCAL_INCIDENCE_WEIGHT[p] * geo.cos_db
    ).astype(np.float32)


def _signal_db(
    static: np.ndarray,
    sensitivity: np.ndarray,
    scene: _Scene,
    weather: _Weather,
    t: int,
    p: int,
) -> np.ndarray:
    """Land backscatter of acquisition ``t``: static, date offset, moisture, canopy, crops (dB)."""
    moisture = np.tensordot(weather.moisture[t], weather.moisture_patterns, axes=1)
    canopy = np.tensordot(weather.canopy[p, t], weather.canopy_patterns, axes=1)
    db = static + np.float32(weather.offset_db[p, t]) + sensitivity * moisture + canopy
    pixels = scene.field_pixels
    db.flat[pixels] += weather.crop_db[p, t, scene.parcel.flat[pixels]]
    return db


def _land_stats(
    signals: np.ndarray, changes: list[np.ndarray | None], scene: _Scene, ascending: np.ndarray
) -> tuple[float, float, float]:
    """Over valid land pixels of all acquisitions: signal mean and std, change mean (dB)."""
    total = total_sq = total_change = count = 0.0
    valid = {asc: scene.land & ~geo.invalid for asc, geo in scene.geometry.items()}
    for db, change, asc in zip(signals, changes, ascending, strict=True):
        values = db[valid[asc]].astype(np.float64)
        total += values.sum()
        total_sq += np.square(values).sum()
        count += values.size
        if change is not None:
            total_change += change[valid[asc]].sum(dtype=np.float64)
    if count == 0:
        return 0.0, 1.0, 0.0
    mean = total / count
    std = math.sqrt(max(total_sq / count - mean**2, 0.0))
    return mean, max(std, 1e-6), total_change / count


def _event_changes(
    scene: _Scene, preset: SyntheticPreset, reg: Region, p: int
) -> list[np.ndarray | None]:
    """Per acquisition, the post-event change in dB (None before the event)."""
    change = {
        asc: _event_change(scene, preset.radar, geo, p) for asc, geo in scene.geometry.items()
    }
    after = [_day(t) >= reg.end_day for t in preset.times]
    changes = [change[asc] if a else None for a, asc in zip(after, preset.ascending, strict=True)]
    if any(after) and preset.radar.flood_db:
        first = after.index(True)
        changes[first] = changes[first] + preset.radar.flood_db * scene.lowland
    return changes


def _event_change(scene: _Scene, radar: Radar, geo: _Geometry, p: int) -> np.ndarray:
    """Post-event change, dB: stripped landslides and regional defoliation."""
    if p == 1:
        slide = radar.vh_drop_db * (1.0 - 0.3 * scene.along)
    else:
        slide = (
            radar.vv_scarp_db
            + (radar.vv_deposit_db - radar.vv_scarp_db) * scene.along
            + radar.vv_geometry * geo.cos_db
        )
    change = np.where(scene.slides, scene.strength * slide, 0.0)
    return (change + radar.regional_db[p] * scene.forest).astype(np.float32)


def _speckle(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Unit-mean gamma speckle (ENL 4.4), correlated with the four neighbours."""
    side = rng.standard_gamma(GRD_ENL, size=shape, dtype=np.float32)
    side *= np.float32(_SPECKLE_SIDE / GRD_ENL)
    out = side * np.float32(_SPECKLE_CENTRE / _SPECKLE_SIDE)
    out[1:] += side[:-1]
    out[:-1] += side[1:]
    out[:, 1:] += side[:, :-1]
    out[:, :-1] += side[:, 1:]
    # edges: the missing neighbour is the pixel itself
    out[0] += side[0]
    out[-1] += side[-1]
    out[:, 0] += side[:, 0]
    out[:, -1] += side[:, -1]
    return out


@functools.cache
def _speckle_log10_stats() -> tuple[float, float]:
    """Mean and std of log10 speckle, measured once on a fixed sample."""
    values = np.log10(_speckle(np.random.default_rng(0), (512, 512)))
    return float(values.mean()), float(values.std())


def _pairs(ascending: np.ndarray) -> list[tuple[int, int]]:
    """Consecutive acquisitions of the same pass direction, sorted by reference."""
    pairs = []
    for flag in (True, False):
        idx = np.flatnonzero(ascending == flag).tolist()
        pairs += list(itertools.pairwise(idx))
    return sorted(pairs)


def _interferometric(
    scene: _Scene,
    preset: SyntheticPreset,
    reg: Region,
    pairs: list[tuple[int, int]],
    rng: np.random.Generator,
) -> dict[str, tuple[tuple[str, ...], np.ndarray]]:
    """Coherence, phase-sigma coherence and line-of-sight angles per pair."""
    radar = preset.radar
    days = [_day(t) for t in preset.times]
    ascending = preset.ascending
    forest_g, open_g, bare_g = radar.coherence
    long_term = scene.forest * forest_g + (1 - scene.forest - scene.bare) * open_g
    long_term += scene.bare * bare_g
    tau = _DECAY_DAYS[1] + (_DECAY_DAYS[0] - _DECAY_DAYS[1]) * scene.forest
    weather = rng.uniform(0.8, 1.0, len(pairs))  # rain and wind on either date
    shape = (len(pairs), *scene.dem.shape)
    out = {name: np.empty(shape, dtype=np.float32) for name in _PAIR_VARIABLES}
    for p, (i, j) in enumerate(pairs):
        gap = (days[j] - days[i]).days
        gamma = long_term + (_COHERENCE_START - long_term) * np.exp(-gap / tau)
        if days[i] >= reg.end_day:  # fresh scars are bare ground
            scar = bare_g + (_COHERENCE_START - bare_g) * math.exp(-gap / _DECAY_DAYS[1])
            gamma = np.where(scene.slides, scar, gamma)
        if days[i] <= reg.start_day and days[j] >= reg.end_day:
            gamma = np.where(scene.slides, 0.05, gamma * radar.event_decorrelation)
        gamma = float(weather[p]) * gamma * scene.land
        spread = (1.0 - gamma**2) / math.sqrt(2 * _COHERENCE_LOOKS)
        noise = rng.standard_normal((2, *scene.dem.shape), dtype=np.float32)
        noise *= spread
        geo = scene.geometry[bool(ascending[i])]
        # phase-sigma coherence: the same interferogram over a 25 times larger window
        for name, scale in (("topophase.cor_1", 1.0), ("phsig.cor", 0.2)):
            estimate = np.minimum(np.hypot(gamma + scale * noise[0], scale * noise[1]), 1.0)
            out[name][p] = np.where(geo.invalid, np.nan, estimate)
        out["los.rdr_0"][p] = geo.incidence
        out["los.rdr_1"][p] = geo.azimuth
    return {name: (("timepair", "y", "x"), values) for name, values in out.items()}


def _static_variables(scene: _Scene) -> dict[str, tuple[tuple[str, ...], np.ndarray]]:
    landslides = np.where(scene.land, scene.slides, np.nan).astype(np.float32)
    return {
        name: (("y", "x"), values)
        for name, values in (
            ("dem", scene.dem),
            ("dem_slope_radians", scene.slope),
            ("dem_aspect", scene.aspect),
            ("dem_curvature", scene.curvature),
            ("landslides", landslides),
        )
    }


_PAIR_VARIABLES = ("topophase.cor_1", "phsig.cor", "los.rdr_0", "los.rdr_1")

_ATTRS: dict[str, dict[str, str]] = {
    "vv": {"long_name": "VV backscatter (sigma0, linear power)", "units": "1"},
    "vh": {"long_name": "VH backscatter (sigma0, linear power)", "units": "1"},
    **TERRAIN_ATTRS,
    "landslides": {"long_name": "landslide where > 0; NaN where not mapped", "units": "1"},
    "topophase.cor_1": {"long_name": "interferometric coherence", "units": "1"},
    "phsig.cor": {"long_name": "phase-sigma coherence", "units": "1"},
    "los.rdr_0": {"long_name": "incidence angle from vertical at the target", "units": "degree"},
    "los.rdr_1": {
        "long_name": "azimuth of the target-to-satellite vector, anticlockwise from north",
        "units": "degree",
    },
    "x": {"long_name": "easting of pixel centre", "units": "m"},
    "y": {"long_name": "northing of pixel centre", "units": "m"},
}


def _coordinates(
    preset: SyntheticPreset,
    shape: tuple[int, int],
    pairs: list[tuple[int, int]],
    timestep_format: str,
) -> dict[str, object]:
    days = [_day(t) for t in preset.times]
    if timestep_format == "yyyymmdd":
        timestep = np.array([f"{d:%Y%m%d}" for d in days])
    else:
        timestep = np.array(preset.times, dtype="datetime64[ns]")
    x0, y0 = preset.origin
    coords: dict[str, object] = {
        "timestep": timestep,
        "timepair": np.array([f"{days[i]:%Y%m%d}_{days[j]:%Y%m%d}" for i, j in pairs], dtype=str),
        "y": y0 - (np.arange(shape[0]) + 0.5) * PIXEL_M,
        "x": x0 + (np.arange(shape[1]) + 0.5) * PIXEL_M,
        "spatial_ref": xr.Variable((), np.int32(0), attrs=_crs_attrs(preset.epsg, preset.origin)),
    }
    if preset.orbits is not None:
        coords["sat:orbit_state"] = ("timestep", np.array(preset.orbits))
    return coords


def _crs_attrs(epsg: int, origin: tuple[float, float]) -> dict[str, object]:
    """CF and GDAL attributes of a WGS 84 / UTM CRS, written without pyproj."""
    zone, north = epsg % 100, epsg // 100 == 326
    if epsg // 100 not in (326, 327) or not 1 <= zone <= 60:
        raise ValueError(f"EPSG:{epsg} is not a WGS 84 / UTM zone")
    meridian = 6 * zone - 183
    false_northing = 0 if north else 10_000_000
    name = f"WGS 84 / UTM zone {zone}{'N' if north else 'S'}"
    wkt = (
        f'PROJCS["{name}",GEOGCS["WGS 84",DATUM["WGS_1984",SPHEROID["WGS 84",6378137,'
        '298.257223563,AUTHORITY["EPSG","7030"]],AUTHORITY["EPSG","6326"]],PRIMEM["Greenwich",'
        '0,AUTHORITY["EPSG","8901"]],UNIT["degree",0.0174532925199433,AUTHORITY["EPSG","9122"]],'
        'AUTHORITY["EPSG","4326"]],PROJECTION["Transverse_Mercator"],'
        f'PARAMETER["latitude_of_origin",0],PARAMETER["central_meridian",{meridian}],'
        'PARAMETER["scale_factor",0.9996],PARAMETER["false_easting",500000],'
        f'PARAMETER["false_northing",{false_northing}],UNIT["metre",1,AUTHORITY["EPSG","9001"]],'
        f'AXIS["Easting",EAST],AXIS["Northing",NORTH],AUTHORITY["EPSG","{epsg}"]]'
    )
    return {
        "crs_wkt": wkt,
        "spatial_ref": wkt,
        "grid_mapping_name": "transverse_mercator",
        "longitude_of_central_meridian": float(meridian),
        "latitude_of_projection_origin": 0.0,
        "scale_factor_at_central_meridian": 0.9996,
        "false_easting": 500000.0,
        "false_northing": float(false_northing),
        "GeoTransform": f"{origin[0]} {PIXEL_M} 0 {origin[1]} 0 {-PIXEL_M}",
    }


def _global_attrs(reg: Region, preset: SyntheticPreset, seed: int) -> dict[str, object]:
    return {
        "title": f"Synthetic Sentinel-1 landslide datacube: {reg.name}",
        "source": "landslide_lit.data.synthetic (simulated, not observed data)",
        "synthetic": 1,
        "synthetic_preset": preset.name,
        "synthetic_seed": seed,
        "crs": f"EPSG:{preset.epsg}",
    }


def _rename(ds: xr.Dataset, reg: Region) -> xr.Dataset:
    """Give the cube the region's own names where they differ from the defaults."""
    default = CubeNames()
    mapping = {
        getattr(default, f.name): getattr(reg.names, f.name)
        for f in fields(CubeNames)
        if getattr(default, f.name) != getattr(reg.names, f.name)
        and getattr(default, f.name) in ds.variables
    }
    return ds.rename(mapping) if mapping else ds
