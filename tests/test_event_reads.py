"""How `landslide-lit cube` reads GeoTIFFs: each pixel decoded once where it can be, same values."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pytest

rasterio = pytest.importorskip("rasterio")

from rasterio.transform import from_origin  # noqa: E402

from landslide_lit.event import build, geotiff  # noqa: E402
from landslide_lit.event.command import main  # noqa: E402
from landslide_lit.event.geotiff import RasterBand, RasterSource  # noqa: E402
from landslide_lit.event.grid import Grid  # noqa: E402
from landslide_lit.event.scenes import EventInputError  # noqa: E402

CRS = "EPSG:32654"
ORIGIN = (500_000.0, 4_800_000.0)
FIRST = dt.datetime(2024, 1, 2, 17, 30, 5)


def _tif(path: Path, values: np.ndarray, nodata: float | None, overviews: bool = False) -> Path:
    profile = {
        "driver": "GTiff",
        "width": values.shape[1],
        "height": values.shape[0],
        "count": 1,
        "dtype": values.dtype.name,
        "crs": CRS,
        "transform": from_origin(*ORIGIN, 10.0, 10.0),
        "nodata": nodata,
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(values, 1)
        if overviews:
            dst.build_overviews([2, 4])
    return path


def _power(shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    values = np.random.default_rng(seed).gamma(4.0, 0.025, shape).astype(np.float32)
    values[:5, :7] = np.nan
    return values


@pytest.mark.parametrize(
    ("dtype", "nodata", "hole"),
    [
        ("float32", np.nan, np.nan),
        ("float32", -9999.0, -9999.0),
        ("float32", None, 0.0),
        ("int16", 0, 0),
    ],
)
def test_reads_on_the_grids_own_pixels_are_the_resampled_values(
    tmp_path, monkeypatch, dtype, nodata, hole
):
    values = (_power((40, 50)) * 1000).astype(dtype) if dtype == "int16" else _power((40, 50))
    values[np.isnan(values) if dtype != "int16" else values == 0] = hole
    values[10:12, 20:30] = hole
    path = _tif(tmp_path / "a.tif", values, nodata)
    whole = Grid(CRS, from_origin(*ORIGIN, 10.0, 10.0), 50, 40)
    grids = [whole, whole.subgrid(slice(3, 30), slice(7, 45))]
    grids.append(Grid(CRS, from_origin(ORIGIN[0] - 100, ORIGIN[1] + 50, 10.0, 10.0), 30, 20))
    band = RasterBand(path, 1, "amplitude")
    for grid in grids:  # the whole file, a part, a grid reaching beyond the file
        direct = geotiff._read_band(band, grid)
        with monkeypatch.context() as patch:
            patch.setattr(geotiff, "_same_pixels", lambda *args: False)
            resampled = geotiff._read_band(band, grid)
        assert np.array_equal(direct.view(np.uint32), resampled.view(np.uint32))
        assert np.isfinite(direct).any()


def _scenes(folder: Path, count: int, overviews: bool, db_scene: int | None = None) -> Path:
    """HyP3-named power files, 12 days apart; ``db_scene`` holds decibels declared power."""
    folder.mkdir()
    for index in range(count):
        stamp = (FIRST + dt.timedelta(days=12 * index)).strftime("%Y%m%dT%H%M%S")
        for pol in ("VV", "VH"):
            values = _power((32, 32), index)
            if index == db_scene:
                values = 10 * np.log10(values)
            name = f"S1A_IW_{stamp}_DVP_RTC10_G_gpuned_{index:04X}_{pol}.tif"
            _tif(folder / name, values, np.nan, overviews)
    return folder


def _build(folder: Path, out: Path) -> None:
    sar = ["--sar", str(folder / "*.tif"), "--orbit-state", "descending"]
    main([str(out), *sar, "--event-start", "2024-01-20", "--event-end", "2024-01-21"])


def _grids_read(monkeypatch) -> list[tuple[int, int]]:
    shapes: list[tuple[int, int]] = []
    read = RasterSource.read

    def counting(self, grid):
        shapes.append(grid.shape)
        return read(self, grid)

    monkeypatch.setattr(RasterSource, "read", counting)
    return shapes


@pytest.mark.parametrize("overviews", [False, True])
def test_bands_are_previewed_only_where_a_preview_is_cheap(tmp_path, monkeypatch, overviews):
    folder = _scenes(tmp_path / "sar", 3, overviews)
    monkeypatch.setattr(build, "PREVIEW", 8)
    shapes = _grids_read(monkeypatch)
    _build(folder, tmp_path / "cube.zarr")
    previews = 6 if overviews else 0  # 3 acquisitions x VV/VH on the 8 x 8 grid
    assert shapes.count((8, 8)) == previews and shapes.count((32, 32)) == 6


def test_bands_without_overviews_are_checked_on_the_values_written(tmp_path, monkeypatch):
    folder = _scenes(tmp_path / "sar", 3, overviews=False, db_scene=1)
    monkeypatch.setattr(build, "PREVIEW", 8)
    shapes = _grids_read(monkeypatch)
    with pytest.raises(EventInputError, match=r"VV of sentinel-1a 2024-01-14.*look like decibels"):
        _build(folder, tmp_path / "cube.zarr")
    assert shapes == [(32, 32)] * 3  # no previews; scene 0 VV, VH, scene 1 VV: it stops there
    assert list(tmp_path.iterdir()) == [tmp_path / "sar"]  # nothing left behind


def test_each_file_is_opened_three_times_per_build(tmp_path, monkeypatch):
    """Its tags, descriptions and overviews once, its bounds once (for both the UTM zone
    and the grid), its values once (one block): every open costs ~1 ms, 5 % of a band."""
    import collections

    import rasterio

    folder = _scenes(tmp_path / "sar", 3, overviews=False)
    opened: collections.Counter[str] = collections.Counter()
    real_open = rasterio.open

    def counting(path, *args, **kwargs):
        opened[Path(path).name] += 1
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(rasterio, "open", counting)
    _build(folder, tmp_path / "cube.zarr")
    assert len(opened) == 6 and set(opened.values()) == {3}, opened


@pytest.mark.parametrize("ratio", [1.0, 2.0])  # bilinear, and averaging (above AVERAGE_ABOVE)
def test_the_warp_gives_the_same_values_on_any_number_of_threads(monkeypatch, ratio):
    """GDAL warps lon/lat values onto the cube's grid on every core: each thread takes
    rows of the output, so the values are those of one thread, bit for bit."""
    from pyproj import Transformer

    lon, lat = Transformer.from_crs(CRS, "EPSG:4326", always_xy=True).transform(*ORIGIN)
    shape = (round(600 * ratio), round(560 * ratio))  # about the same area
    source = np.random.default_rng(1).random(shape, dtype=np.float32)
    source[40:90, 10:200] = np.nan
    transform = from_origin(lon - 0.002, lat + 0.002, 1.2e-4 / ratio, 0.9e-4 / ratio)
    grid = Grid(CRS, from_origin(*ORIGIN, 10.0, 10.0), 400, 380)
    warped = []
    for threads in (1, 3):
        monkeypatch.setattr(geotiff, "WARP_THREADS", threads)
        out = np.full((grid.height, grid.width), np.nan, np.float32)
        warped.append(geotiff.resample_onto(grid, source, transform, "EPSG:4326", ratio, out))
    assert np.isfinite(warped[0]).mean() > 0.5
    np.testing.assert_array_equal(warped[1], warped[0])
