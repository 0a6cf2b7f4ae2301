"""Scenes from Sentinel-1 RTC GeoTIFFs: ASF HyP3, OPERA RTC-S1, or any file a manifest describes.

What each file holds comes from up to four places, which must agree (a contradiction is an
error, never a choice):

1. the file name: ASF HyP3 RTC ``S1A_IW_20180128T161201_DVP_RTC10_G_gpuned_FD6A_VV.tif``
   (time, platform, scale letter p/a/d, gamma0/sigma0, polarisation) or OPERA RTC-S1
   ``OPERA_L2_RTC-S1_T020-041121-IW1_20231101T013115Z_20231104T041913Z_S1A_30_v1.0_VV.tif``
   (burst id with the track = relative orbit, time, platform; gamma0 in linear power);
2. GeoTIFF tags: ``ORBIT_PASS_DIRECTION`` and ``TRACK_NUMBER`` (OPERA), band descriptions
   ``VV``/``VH`` for multi-band files;
3. ``--manifest FILE.csv``: columns ``path`` (relative to the manifest's folder) and any of
   ``time, polarisation, orbit_state, relative_orbit, scale, platform``;
4. ``--orbit-state`` and ``--scale`` for every file.

Files of one platform within ``SCENE_GAP`` of each other (the frames or bursts of one pass)
make one scene; their values are mosaicked (mean where they overlap). Values are
converted to linear power on the files' own grid and then resampled.
"""

from __future__ import annotations

import csv
import datetime as dt
import functools
import glob
import math
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from landslide_lit.event.grid import Bounds, Grid
from landslide_lit.event.scenes import (
    POLARISATIONS,
    SCALES,
    EventInputError,
    Scale,
    Scene,
    to_power,
)

__all__ = [
    "SCENE_GAP",
    "RasterBand",
    "RasterSource",
    "SarFile",
    "describe_files",
    "parse_name",
    "read_manifest",
    "resample_onto",
    "scenes_from_files",
]

SCENE_GAP = dt.timedelta(minutes=5)
"""Files of one platform closer in time than this are one pass (frames, bursts): one scene.
Two passes of one satellite are at least ~100 minutes (one orbit) apart."""
# downsampling by more than this averages the source pixels instead of interpolating
AVERAGE_ABOVE = 1.5
WARP_THREADS = (
    len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
)
"""Threads of GDAL's warp onto the cube's grid (the same values with any number): one per
core this process may use."""

_HYP3 = re.compile(
    r"(?P<platform>S1[A-D])_(?P<beam>[A-Z]{2})_(?P<time>\d{8}T\d{6})_(?P<pols>[DS][VH])"
    r"(?P<orbit_file>[PRO])_RTC(?P<spacing>\d+)_(?P<software>[A-Z])_(?P<radiometry>[gs])"
    r"(?P<scale>[pad])[uw][nf][ec][dm]_(?P<id>[0-9A-F]{4})(?:_(?P<pol>VV|VH|HH|HV))?",
    re.IGNORECASE,
)
_OPERA = re.compile(
    r"OPERA_L2_RTC-S1_(?P<burst>T(?P<track>\d{3})-\d{6}-IW[1-3])_(?P<time>\d{8}T\d{6})Z_"
    r"\d{8}T\d{6}Z_(?P<platform>S1[A-D])_(?P<spacing>\d+)_v[\d.]+(?:_(?P<pol>VV|VH|HH|HV))?",
    re.IGNORECASE,
)
_HYP3_SCALES = {"p": "power", "a": "amplitude", "d": "db"}
_ORBIT_WORDS = {"a": "a", "ascending": "a", "d": "d", "descending": "d"}
_ORBIT_TAGS = ("ORBIT_PASS_DIRECTION", "RTC_ORBIT_PASS_DIRECTION", "SAT:ORBIT_STATE")
_TRACK_TAGS = ("TRACK_NUMBER", "RTC_TRACK_NUMBER", "SAT:RELATIVE_ORBIT", "RELATIVE_ORBIT")
MANIFEST_COLUMNS = ("path", "time", "polarisation", "orbit_state", "relative_orbit", "scale")


@dataclass(frozen=True)
class SarFile:
    """What is known of one GeoTIFF (None: not known yet); ``descriptions`` and
    ``overviews`` (whether each band has them) are read once, by :func:`describe_files`."""

    path: Path
    time: dt.datetime | None = None
    platform: str | None = None
    polarisation: str | None = None
    scale: str | None = None
    orbit_state: str | None = None
    relative_orbit: int | None = None
    radiometry: str | None = None
    product: str = "GeoTIFF"
    descriptions: tuple[str, ...] = ()
    overviews: tuple[bool, ...] = ()


def parse_name(path: Path) -> SarFile:
    """What a HyP3 or OPERA file name says; only the path for any other name."""
    stem = path.name
    if match := _OPERA.search(stem):
        return SarFile(
            path,
            time=_utc(match["time"]),
            platform=_platform(match["platform"]),
            polarisation=_pol(match["pol"]),
            scale="power",
            relative_orbit=int(match["track"]),
            radiometry="gamma0",
            product="OPERA RTC-S1",
        )
    if match := _HYP3.search(stem):
        return SarFile(
            path,
            time=_utc(match["time"]),
            platform=_platform(match["platform"]),
            polarisation=_pol(match["pol"]),
            scale=_HYP3_SCALES[match["scale"].lower()],
            radiometry="gamma0" if match["radiometry"].lower() == "g" else "sigma0",
            product="ASF HyP3 RTC",
        )
    return SarFile(path)


def _utc(text: str) -> dt.datetime:
    return dt.datetime.strptime(text.upper(), "%Y%m%dT%H%M%S").replace(tzinfo=dt.timezone.utc)


def _platform(code: str) -> str:
    return f"sentinel-1{code[-1].lower()}"


def _pol(text: str | None) -> str | None:
    return text.lower() if text else None


def read_manifest(path: Path) -> dict[Path, dict[str, str]]:
    """The manifest's rows by resolved file path (empty cells dropped)."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = [c.strip() for c in reader.fieldnames or []]
            rows = [{k.strip(): (v or "").strip() for k, v in row.items() if k} for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise EventInputError(f"--manifest {path}: cannot be read as CSV: {error}") from None
    unknown = sorted(set(columns) - {*MANIFEST_COLUMNS, "platform"})
    if "path" not in columns or unknown:
        raise EventInputError(
            f"--manifest {path}: columns {columns}; it needs 'path' and may have "
            f"{', '.join(MANIFEST_COLUMNS[1:])}, platform"
            + (f" (unknown: {', '.join(unknown)})" if unknown else "")
        )
    out = {}
    for number, row in enumerate(rows, start=2):
        if not row.get("path"):
            raise EventInputError(f"--manifest {path}, line {number}: empty path")
        out[(path.parent / row["path"]).expanduser().resolve()] = {
            k: v for k, v in row.items() if v and k != "path"
        }
    return out


def find_files(patterns: Sequence[str], manifest: dict[Path, dict[str, str]]) -> list[Path]:
    """Files matching ``patterns`` (globs, ``**`` recursive) and those the manifest lists."""
    files = {Path(p).resolve() for pattern in patterns for p in glob.glob(pattern, recursive=True)}
    empty = [p for p in patterns if not glob.glob(p, recursive=True)]
    if empty:
        raise EventInputError(
            f"--sar {' '.join(empty)}: no files match; quote the pattern so the shell "
            "passes it as it is ('rtc/*.tif'), and check the folder"
        )
    missing = [str(p) for p in manifest if not p.is_file()]
    if missing:
        raise EventInputError(f"--manifest lists files that do not exist: {', '.join(missing)}")
    files |= set(manifest)
    return sorted(p for p in files if p.is_file())


def describe_files(
    paths: Iterable[Path],
    manifest: dict[Path, dict[str, str]],
    orbit_state: str | None,
    scale: str | None,
) -> list[SarFile]:
    """Everything known of each file, from its name, tags, the manifest and the options."""
    import rasterio

    described = []
    for path in paths:
        info = parse_name(path)
        with rasterio.open(path) as src:
            tags = {k.upper(): v for k, v in src.tags().items()}
            descriptions = [(d or "").strip().lower() for d in src.descriptions]
            overviews = tuple(bool(src.overviews(i)) for i in src.indexes)
        for key in _ORBIT_TAGS:
            if key in tags:
                info = _merge(info, "orbit_state", _orbit(tags[key], f"tag {key}"), "its tags")
        for key in _TRACK_TAGS:
            if key in tags:
                info = _merge(info, "relative_orbit", _int(tags[key], key), "its tags")
        row = manifest.get(path.resolve(), {})
        for key, value in row.items():
            field, parsed = _manifest_value(key, value, path)
            info = _merge(info, field, parsed, "--manifest")
        if orbit_state is not None:
            info = _merge(info, "orbit_state", _ORBIT_WORDS[orbit_state], "--orbit-state")
        if scale is not None:
            info = _merge(info, "scale", scale, "--scale")
        described.append(replace(info, descriptions=tuple(descriptions), overviews=overviews))
    return [_with_bands(info) for info in described]


def _merge(info: SarFile, field: str, value: object, origin: str) -> SarFile:
    known = getattr(info, field)
    if known is not None and known != value:
        raise EventInputError(
            f"{info.path.name}: {field} is {known!r} from its name or tags but {value!r} "
            f"from {origin}; correct the one that is wrong"
        )
    return replace(info, **{field: value})


def _manifest_value(key: str, value: str, path: Path) -> tuple[str, object]:
    where = f"--manifest, {path.name}"
    if key == "time":
        try:
            time = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise EventInputError(f"{where}: time {value!r} is not ISO 8601") from None
        return key, time if time.tzinfo else time.replace(tzinfo=dt.timezone.utc)
    if key == "polarisation":
        if value.lower() not in POLARISATIONS:
            raise EventInputError(f"{where}: polarisation {value!r}; use VV or VH")
        return key, value.lower()
    if key == "orbit_state":
        return key, _orbit(value, where)
    if key == "relative_orbit":
        return key, _int(value, where)
    if key == "scale":
        if value.lower() not in SCALES:
            raise EventInputError(f"{where}: scale {value!r}; use one of {', '.join(SCALES)}")
        return key, value.lower()
    return "platform", value.lower()


def _orbit(value: str, where: str) -> str:
    state = _ORBIT_WORDS.get(str(value).strip().lower())
    if state is None:
        raise EventInputError(f"{where}: orbit {value!r}; use ascending or descending")
    return state


def _int(value: str, where: str) -> int:
    try:
        number = int(str(value).strip())
    except ValueError:
        number = 0
    if not 1 <= number <= 175:
        raise EventInputError(f"{where}: relative orbit {value!r}; a whole number 1-175")
    return number


def _with_bands(info: SarFile) -> SarFile:
    """Check the polarisation: from the name or manifest (one band), else band descriptions."""
    descriptions = info.descriptions
    if info.polarisation is not None:
        if len(descriptions) != 1 and info.polarisation in descriptions:
            return info  # a multi-band file named for one of its bands: that band
        if len(descriptions) != 1:
            raise EventInputError(
                f"{info.path}: {len(descriptions)} bands; name a multi-band file's bands VV "
                "and VH (band descriptions), or give one file per polarisation"
            )
    elif not set(descriptions) & set(POLARISATIONS):
        raise EventInputError(
            f"{info.path}: polarisation unknown: no _VV/_VH in its name and no band "
            f"described VV or VH (bands: {descriptions}); give it in --manifest (column "
            "polarisation)"
        )
    return info


@dataclass(frozen=True)
class RasterBand:
    """One band of a file, the scale of its values (None: use them as they are) and
    whether it has overviews (None: not known, the file is opened to see)."""

    path: Path
    band: int
    scale: Scale | None
    overviews: bool | None = None


class RasterSource:
    """Reads bands of GeoTIFFs onto a grid: linear power first, then resampled, then the
    mean of the files where they overlap (bursts, frames)."""

    def __init__(self, bands: Sequence[RasterBand]) -> None:
        self.bands = tuple(bands)
        self.path = " ".join(f"{b.path}" for b in self.bands)

    @functools.cached_property
    def previews_cheaply(self) -> bool:
        """Whether every file has overviews: without them a coarse preview decodes every
        pixel, as much as reading the band for the cube (ASF HyP3 RTC files have none)."""
        import rasterio

        for band in self.bands:
            if band.overviews is None:
                with rasterio.open(band.path) as src:
                    if not src.overviews(band.band):
                        return False
            elif not band.overviews:
                return False
        return True

    def read(self, grid: Grid) -> np.ndarray:
        if len(self.bands) == 1:  # the mean of one file: its values, no data as NaN
            values = _read_band(self.bands[0], grid)
            values[np.isinf(values)] = np.nan  # NaN already is
            return np.add(values, np.float32(0), out=values)  # -0.0 -> 0.0, as the sum below
        total = np.zeros(grid.shape, np.float64)
        count = np.zeros(grid.shape, np.int32)
        for band in self.bands:
            values = _read_band(band, grid)
            valid = np.isfinite(values)
            total[valid] += values[valid]
            count += valid
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(count > 0, total / count, np.nan).astype(np.float32)

    def __repr__(self) -> str:
        return f"RasterSource({self.path})"


def _read_band(band: RasterBand, grid: Grid) -> np.ndarray:
    """``band`` resampled onto ``grid``; NaN outside the file and where it has no data."""
    import rasterio
    from rasterio.errors import WindowError
    from rasterio.warp import transform_bounds
    from rasterio.windows import Window, from_bounds

    with rasterio.open(band.path) as src:
        if _same_pixels(src, grid):
            return _read_aligned(src, band, grid)
        out = np.full(grid.shape, np.nan, np.float32)
        bounds = transform_bounds(grid.crs.to_wkt(), src.crs, *grid.bounds, densify_pts=21)
        window = from_bounds(*bounds, transform=src.transform)
        ratio = max(window.width / grid.width, window.height / grid.height)
        margin = 2 + math.ceil(ratio)  # the interpolation kernel's reach beyond the grid
        window = Window(
            math.floor(window.col_off) - margin,
            math.floor(window.row_off) - margin,
            math.ceil(window.width) + 2 * margin,
            math.ceil(window.height) + 2 * margin,
        )
        try:
            window = window.intersection(Window(0, 0, src.width, src.height))
        except WindowError:
            return out  # the file does not reach this part of the grid
        # previews of a large file: read a decimated copy (overviews when the file has them)
        step = max(1, int(ratio // 4))
        shape = (max(1, int(window.height) // step), max(1, int(window.width) // step))
        values = _read_values(src, band.band, window=window, out_shape=shape)
        transform = src.window_transform(window) @ rasterio.Affine.scale(
            window.width / shape[1], window.height / shape[0]
        )
        if band.scale is not None:
            values = to_power(values, band.scale)
        resample_onto(grid, values, transform, src.crs, ratio, out)
    return out


def _read_values(src: Any, index: int, **read: Any) -> np.ndarray:
    """Band ``index`` as float32, NaN where the file's mask says no data: what a masked
    read filled with NaN gives, without building the mask where the nodata value is NaN
    or there is none (twice as fast as the plain read, which is most of a build)."""
    from rasterio.enums import MaskFlags

    flags, nodata = src.mask_flag_enums[index - 1], src.nodatavals[index - 1]
    if list(flags) not in ([MaskFlags.all_valid], [MaskFlags.nodata]):  # alpha, mask band
        return src.read(index, masked=True, **read).astype(np.float32).filled(np.nan)
    raw = src.read(index, **read)
    values = raw.astype(np.float32, copy=False)
    if nodata is not None and not np.isnan(nodata):
        values[raw == nodata] = np.nan
    return values


def _same_pixels(src: Any, grid: Grid) -> bool:
    """Whether the file's pixels are the grid's: same CRS and pixel size, whole-pixel offset."""
    t, g = src.transform, grid.transform
    if (t.a, t.b, t.d, t.e) != (g.a, g.b, g.d, g.e) or src.crs is None:
        return False
    if not (((g.c - t.c) / t.a).is_integer() and ((g.f - t.f) / t.e).is_integer()):
        return False
    return src.crs == type(src.crs).from_wkt(grid.crs.to_wkt())


def _read_aligned(src: Any, band: RasterBand, grid: Grid) -> np.ndarray:
    """The grid's part of a file on the grid's own pixels, NaN where the file does not
    reach: what resampling gives there (each grid pixel centre is a file pixel centre),
    without it. The values read are returned as they are when the file covers the grid
    (no NaN-filled copy, the usual case)."""
    from rasterio.errors import WindowError
    from rasterio.windows import Window

    col = round((grid.transform.c - src.transform.c) / src.transform.a)
    row = round((grid.transform.f - src.transform.f) / src.transform.e)
    try:
        window = Window(col, row, grid.width, grid.height).intersection(
            Window(0, 0, src.width, src.height)
        )
    except WindowError:
        return np.full(grid.shape, np.nan, np.float32)  # the file does not reach here
    values = _read_values(src, band.band, window=window)
    if band.scale is not None:
        values = to_power(values, band.scale)
    if values.shape == grid.shape:
        return values
    out = np.full(grid.shape, np.nan, np.float32)
    rows = slice(int(window.row_off) - row, int(window.row_off) - row + int(window.height))
    cols = slice(int(window.col_off) - col, int(window.col_off) - col + int(window.width))
    out[rows, cols] = values
    return out


def resample_onto(
    grid: Grid, values: np.ndarray, transform: Any, crs: Any, ratio: float, out: np.ndarray
) -> np.ndarray:
    """Resample linear-power ``values`` (NaN: no data) into ``out`` on ``grid``.

    Bilinear, or the average of the source pixels when ``ratio`` (source pixels per grid
    pixel) exceeds AVERAGE_ABOVE; pixels the source does not reach keep their value in ``out``.
    """
    from rasterio.enums import Resampling
    from rasterio.warp import reproject

    reproject(
        values,
        out,
        src_transform=transform,
        src_crs=crs,
        src_nodata=np.nan,
        dst_transform=grid.transform,
        dst_crs=grid.crs.to_wkt(),
        dst_nodata=np.nan,
        resampling=Resampling.average if ratio > AVERAGE_ABOVE else Resampling.bilinear,
        num_threads=WARP_THREADS,
    )
    return out


def scenes_from_files(files: Sequence[SarFile]) -> list[Scene]:
    """One scene per pass: files of one platform within SCENE_GAP, VV and VH grouped."""
    lacking = [f for f in files if f.time is None]
    if lacking:
        raise EventInputError(
            f"acquisition time unknown for {', '.join(str(f.path) for f in lacking)}: the "
            "name is neither ASF HyP3 nor OPERA RTC-S1; give it in --manifest FILE.csv "
            "(column time, ISO 8601 UTC)"
        )
    lacking = [f for f in files if f.scale is None]
    if lacking:
        raise EventInputError(
            f"value scale unknown for {', '.join(str(f.path) for f in lacking)}; declare it "
            "with --scale power|amplitude|db or in --manifest (column scale)"
        )
    radiometry = {f.radiometry for f in files} - {None}
    if len(radiometry) > 1:
        raise EventInputError(
            "the files mix gamma0 and sigma0 backscatter, which differ by the terrain's "
            "illumination: use one (gamma0, as OPERA and the default HyP3 RTC)"
        )
    groups: list[list[SarFile]] = []
    for info in sorted(files, key=lambda f: (f.platform or "", f.time)):
        group = groups[-1] if groups else None
        if group and group[0].platform == info.platform and info.time - group[0].time < SCENE_GAP:
            group.append(info)
        else:
            groups.append([info])
    return [_scene(group) for group in groups]


def _scene(group: list[SarFile]) -> Scene:
    first = group[0]
    name = f"{first.platform or 'sentinel-1'} {first.time:%Y-%m-%dT%H:%M:%SZ}"
    for field in ("orbit_state", "relative_orbit"):
        values = {getattr(f, field) for f in group}
        if len(values) > 1:
            raise EventInputError(
                f"{name}: files of one pass disagree on {field} ({sorted(map(str, values))}): "
                f"{', '.join(f.path.name for f in group)}"
            )
    bands = {}
    for pol in POLARISATIONS:
        chosen = [_band(f, pol) for f in group if _has(f, pol)]
        if chosen:
            bands[pol] = RasterSource(chosen)
    return Scene(
        time=first.time,
        platform=first.platform or "sentinel-1",
        orbit_state=first.orbit_state,
        relative_orbit=first.relative_orbit,
        name=name,
        bands=bands,
        scale="power",  # RasterSource converts to power before resampling
        sources=tuple(f"{f.path} ({f.product}, {f.scale})" for f in group),
    )


def _has(info: SarFile, pol: str) -> bool:
    return info.polarisation == pol if info.polarisation else pol in info.descriptions


def _band(info: SarFile, pol: str) -> RasterBand:
    """The band of ``info`` holding ``pol``: the one described so, else the first."""
    index = info.descriptions.index(pol) + 1 if pol in info.descriptions else 1
    return RasterBand(info.path, index, info.scale, info.overviews[index - 1])


def file_footprint(path: Path) -> tuple[Any, Bounds]:
    """The CRS and bounds of ``path``, for :func:`rasterio.warp.transform_bounds`."""
    import rasterio

    with rasterio.open(path) as src:
        return src.crs, tuple(src.bounds)
