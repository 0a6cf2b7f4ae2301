"""The STAC route of ``landslide-lit cube``, offline: static catalogs of small local GeoTIFFs."""

from __future__ import annotations

import datetime as dt
import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

pystac = pytest.importorskip("pystac")
rasterio = pytest.importorskip("rasterio")
pytest.importorskip("odc.stac")

import xarray as xr  # noqa: E402
from affine import Affine  # noqa: E402
from pystac.extensions.projection import ProjectionExtension  # noqa: E402
from pystac.extensions.raster import RasterBand, RasterExtension  # noqa: E402
from pystac.extensions.sat import OrbitState, SatExtension  # noqa: E402

from landslide_lit.event import stac as stac_module  # noqa: E402
from landslide_lit.event.build import build_cube  # noqa: E402
from landslide_lit.event.grid import Grid  # noqa: E402
from landslide_lit.event.scenes import EventInputError  # noqa: E402
from landslide_lit.event.stac import stac_scenes  # noqa: E402

UTC = dt.timezone.utc
EVENT = {"event_start": dt.date(2018, 9, 5), "event_end": dt.date(2018, 9, 7)}
WINDOW = {"first": dt.date(2018, 6, 7), "last": dt.date(2018, 10, 7)}  # 90 before, 30 after
CRS = "EPSG:32654"
# The source rasters: 40 x 48 pixels of 10 m near Hokkaido.
SOURCE = Grid(CRS, Affine(10.0, 0.0, 400000.0, 0.0, -10.0, 4730400.0), 48, 40)
NODATA = -32768.0


@dataclass(frozen=True)
class Pass:
    """One acquisition of the test catalog."""

    time: dt.datetime
    state: str
    relative_orbit: int
    platform: str = "SENTINEL-1A"


PASSES = [
    Pass(dt.datetime(2018, 8, 10, 20, 40, 5, tzinfo=UTC), "descending", 46),
    Pass(dt.datetime(2018, 8, 22, 20, 40, 6, tzinfo=UTC), "descending", 46, "SENTINEL-1B"),
    Pass(dt.datetime(2018, 8, 25, 8, 30, 1, tzinfo=UTC), "ascending", 119),
    Pass(dt.datetime(2018, 9, 3, 20, 40, 7, tzinfo=UTC), "descending", 46),
    Pass(dt.datetime(2018, 9, 9, 20, 40, 8, tzinfo=UTC), "descending", 46),
    Pass(dt.datetime(2018, 9, 13, 8, 30, 2, tzinfo=UTC), "ascending", 119),
]


def power(index: int, pol: str) -> np.ndarray:
    """Plausible gamma0 power (VV about -8 dB, VH about -15 dB), different per pass."""
    rng = np.random.default_rng(10 * index + (pol == "vh"))
    mean = 0.16 if pol == "vv" else 0.03
    return (mean * rng.gamma(4.0, 0.25, SOURCE.shape)).astype(np.float32)


def write_tif(path: Path, values: np.ndarray, grid: Grid, nodata: float | None = NODATA) -> None:
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=grid.width,
        height=grid.height,
        count=1,
        dtype="float32",
        crs=CRS,
        transform=grid.transform,
        nodata=nodata,
    ) as file:
        file.write(values, 1)


def make_item(
    folder: Path,
    name: str,
    acquisition: Pass,
    bands: dict[str, np.ndarray],
    grid: Grid = SOURCE,
    unit: str | None = None,
) -> pystac.Item:
    """An item with the sat, proj and raster extensions whose assets are GeoTIFFs in
    ``folder``, named ``<name>_<POL>.tif`` (asset keys upper case, as some catalogs)."""
    west, south, east, north = grid.lonlat_bounds()
    geometry = {
        "type": "Polygon",
        "coordinates": [
            [[west, south], [east, south], [east, north], [west, north], [west, south]]
        ],
    }
    item = pystac.Item(
        name,
        geometry,
        [west, south, east, north],
        acquisition.time,
        {"platform": acquisition.platform, "constellation": "Sentinel-1"},
        collection="sentinel-1-rtc",
    )
    sat = SatExtension.ext(item, add_if_missing=True)
    sat.orbit_state = OrbitState(acquisition.state)
    sat.relative_orbit = acquisition.relative_orbit
    proj = ProjectionExtension.ext(item, add_if_missing=True)
    proj.epsg, proj.shape, proj.transform = 32654, list(grid.shape), list(grid.transform)[:6]
    for pol, values in bands.items():
        path = folder / f"{name}_{pol.upper()}.tif"
        write_tif(path, values, grid)
        asset = pystac.Asset(path.name, media_type=pystac.MediaType.COG, roles=["data"])
        item.add_asset(pol.upper(), asset)
        band = RasterBand.create(nodata=NODATA, data_type="float32", unit=unit)
        RasterExtension.ext(asset, add_if_missing=True).bands = [band]
    return item


def source_items(folder: Path, split_last_before: bool = True) -> list[pystac.Item]:
    """The passes as items; the last pre-event pass as two slices 25 s apart (north, south)."""
    folder.mkdir(parents=True, exist_ok=True)
    items = []
    for i, acquisition in enumerate(PASSES):
        bands = {pol: power(i, pol) for pol in ("vv", "vh")}
        if split_last_before and i == 3:
            north, south = (
                SOURCE.subgrid(slice(0, 22), slice(None)),
                SOURCE.subgrid(slice(18, None), slice(None)),
            )
            items.append(
                make_item(folder, "s3n", acquisition, {p: v[:22] for p, v in bands.items()}, north)
            )
            later = Pass(acquisition.time + dt.timedelta(seconds=25), "descending", 46)
            items.append(
                make_item(folder, "s3s", later, {p: v[18:] for p, v in bands.items()}, south)
            )
            continue
        items.append(make_item(folder, f"s{i}", acquisition, bands))
    return items


def write_catalog(folder: Path, items: list[pystac.Item]) -> Path:
    """A self-contained static catalog (relative hrefs) of ``items`` in ``folder``."""
    catalog = pystac.Catalog("event", "test event")
    for item in items:
        catalog.add_item(item)
    catalog.normalize_hrefs(str(folder))
    # assets are beside the catalog: after normalising, items live in subfolders
    for item in items:
        for asset in item.assets.values():
            asset.href = str(folder / Path(asset.href).name)
    catalog.save(pystac.CatalogType.SELF_CONTAINED)
    return folder / "catalog.json"


@pytest.fixture(scope="module")
def catalog(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("stac")
    return write_catalog(folder, source_items(folder))


def build(scenes, grid, out: Path) -> xr.Dataset:
    build_cube(scenes, grid, out, **EVENT, progress=False)
    return xr.open_zarr(out)


# -- the same cube as the source ------------------------------------------------------------


def test_static_catalog_gives_the_sources_values_on_their_own_grid(catalog, tmp_path):
    scenes = stac_scenes(str(catalog), SOURCE, **WINDOW, collection="sentinel-1-rtc")
    assert [s.name for s in scenes] == ["s0", "s1", "s2", "s3n+s3s", "s4", "s5"]
    assert [s.relative_orbit for s in scenes] == [46, 46, 119, 46, 46, 119]
    assert [s.orbit_state for s in scenes] == ["d", "d", "a", "d", "d", "a"]
    assert scenes[1].platform == "sentinel-1b" and scenes[0].bands["vv"].scale == "power"
    cube = build(scenes, SOURCE, tmp_path / "event.zarr")
    assert list(cube["sat:relative_orbit"].values) == [46, 46, 119, 46, 46, 119]
    assert list(cube["sat:orbit_state"].values) == ["d", "d", "a", "d", "d", "a"]
    assert cube["timestep"].values[3] == np.datetime64("2018-09-03T20:40:07")
    for t in range(len(PASSES)):
        for pol in ("vv", "vh"):
            # the slices of pass 3 mosaic back into the whole scene
            np.testing.assert_allclose(cube[pol].values[t], power(t, pol), rtol=1e-6)


def test_the_command_gives_the_same_cube_from_stac_as_from_the_geotiffs(tmp_path):
    """``landslide-lit cube --stac`` and ``--sar`` over the same files, on a 20 m grid
    (averaged): the same values, timesteps, orbits, relative orbits and region file."""
    import csv

    from landslide_lit.main import main

    folder = tmp_path / "stac"
    catalog = write_catalog(folder, source_items(folder, split_last_before=False))
    with (folder / "manifest.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            ["path", "time", "polarisation", "orbit_state", "relative_orbit", "scale", "platform"]
        )
        for i, p in enumerate(PASSES):
            for pol in ("VV", "VH"):
                when = p.time.isoformat()
                writer.writerow(
                    [f"s{i}_{pol}.tif", when, pol, p.state, p.relative_orbit, "power", p.platform]
                )
    west, south, east, north = SOURCE.lonlat_bounds()
    bbox = [str(v) for v in (west + 0.0012, south + 0.001, east - 0.0011, north - 0.0013)]
    common = ["--event-start", "2018-09-05", "--event-end", "2018-09-07", "--bbox", *bbox]
    common += ["--resolution", "20"]
    main(
        [
            "cube",
            str(tmp_path / "tif.zarr"),
            *common,
            "--sar",
            str(folder / "*.tif"),
            "--manifest",
            str(folder / "manifest.csv"),
        ]
    )
    main(
        [
            "cube",
            str(tmp_path / "stac.zarr"),
            *common,
            "--stac",
            str(catalog),
            "--collection",
            "sentinel-1-rtc",
        ]
    )
    tif, stac = xr.open_zarr(tmp_path / "tif.zarr"), xr.open_zarr(tmp_path / "stac.zarr")
    for name in ("timestep", "sat:orbit_state", "sat:relative_orbit", "x", "y"):
        np.testing.assert_array_equal(stac[name].values, tif[name].values)
    for pol in ("vv", "vh"):
        assert np.isfinite(stac[pol].values).all()
        np.testing.assert_allclose(stac[pol].values, tif[pol].values, rtol=1e-6)
    region = (tmp_path / "stac.yaml").read_text()
    assert region.replace("stac", "tif") == (tmp_path / "tif.yaml").read_text()


def test_on_another_grid_values_are_a_bilinear_resampling(catalog, tmp_path):
    from rasterio.warp import Resampling, reproject

    grid = Grid(CRS, Affine(20.0, 0.0, 400035.0, 0.0, -20.0, 4730365.0), 20, 15)
    scenes = stac_scenes(str(catalog), grid, **WINDOW)
    cube = build(scenes, grid, tmp_path / "event.zarr")
    expected = np.full(grid.shape, np.nan, np.float32)
    reproject(
        power(0, "vv"),
        expected,
        src_transform=SOURCE.transform,
        src_crs=CRS,
        dst_transform=grid.transform,
        dst_crs=CRS,
        resampling=Resampling.bilinear,
    )
    inner = (slice(1, -1), slice(1, -1))  # edge pixels: how each fills beyond the footprint
    np.testing.assert_allclose(cube["vv"].values[0][inner], expected[inner], rtol=1e-5)
    assert np.isfinite(cube["vv"].values).all()


def test_item_collection_and_single_item_files_work(catalog, tmp_path):
    from_catalog = stac_scenes(str(catalog), SOURCE, **WINDOW)
    items = pystac.ItemCollection(pystac.Catalog.from_file(str(catalog)).get_items(recursive=True))
    for item in items:
        item.make_asset_hrefs_absolute()
    items.save_object(str(tmp_path / "items.json"))
    from_file = stac_scenes(str(tmp_path / "items.json"), SOURCE, **WINDOW)
    assert [s.name for s in from_file] == [s.name for s in from_catalog]
    single = next(i for i in items if i.id == "s0")
    single.save_object(dest_href=str(tmp_path / "s0.json"), include_self_link=False)
    (scene,) = stac_scenes(str(tmp_path / "s0.json"), SOURCE, **WINDOW)
    np.testing.assert_allclose(scene.bands["vh"].read(SOURCE), power(0, "vh"), rtol=1e-6)


def test_a_stale_proj_transform_does_not_move_the_data(tmp_path):
    item = make_item(tmp_path, "s0", PASSES[0], {p: power(0, p) for p in ("vv", "vh")})
    ProjectionExtension.ext(item).transform = [10.0, 0.0, 0.0, 0.0, -10.0, 0.0]  # wrong
    catalog = write_catalog(tmp_path, [item])
    (scene,) = stac_scenes(str(catalog), SOURCE, **WINDOW)
    np.testing.assert_allclose(scene.bands["vv"].read(SOURCE), power(0, "vv"), rtol=1e-6)


def test_nodata_and_outside_the_footprint_are_nan(tmp_path):
    values = power(0, "vv")
    values[:4, :5] = NODATA
    item = make_item(tmp_path, "s0", PASSES[0], {"vv": values, "vh": power(0, "vh")})
    (scene,) = stac_scenes(str(write_catalog(tmp_path, [item])), SOURCE, **WINDOW)
    wider = Grid(CRS, SOURCE.transform, SOURCE.width + 6, SOURCE.height)
    read = scene.bands["vv"].read(wider)
    assert read.dtype == np.float32 and read.shape == wider.shape
    assert np.isnan(read[:4, :5]).all() and np.isnan(read[:, -6:]).all()
    np.testing.assert_allclose(read[4:, 5:48], values[4:, 5:], rtol=1e-6)


def test_decibel_unit_is_read_as_decibels(tmp_path):
    db = {p: (10 * np.log10(power(0, p))).astype(np.float32) for p in ("vv", "vh")}
    item = make_item(tmp_path, "s0", PASSES[0], db, unit="dB")
    (scene,) = stac_scenes(str(write_catalog(tmp_path, [item])), SOURCE, **WINDOW)
    assert scene.bands["vv"].scale == "db" and scene.scale == "power"  # converted on reading
    np.testing.assert_allclose(scene.bands["vv"].read(SOURCE), power(0, "vv"), rtol=1e-5)
    (declared,) = stac_scenes(str(tmp_path / "catalog.json"), SOURCE, **WINDOW, scale="power")
    assert declared.bands["vh"].scale == "power"


def test_packed_values_are_an_error(tmp_path):
    item = make_item(tmp_path, "s0", PASSES[0], {p: power(0, p) for p in ("vv", "vh")})
    RasterExtension.ext(item.assets["VV"]).bands = [RasterBand.create(scale=0.001, offset=0)]
    catalog = write_catalog(tmp_path, [item])
    with pytest.raises(EventInputError, match=r"s0: asset vv declares raster:bands scale 0.001"):
        stac_scenes(str(catalog), SOURCE, **WINDOW)


# -- searching an API (no network) ------------------------------------------------------


class FakeSearch:
    def __init__(self, items):
        self._items = items

    def items(self):
        return iter(self._items)


class FakeClient:
    """What ``pystac_client.Client.open`` returns, serving local items."""

    calls: ClassVar[list] = []

    def __init__(self, items):
        self._items = items

    def conforms_to(self, conformance) -> bool:
        return True

    def search(self, **query):
        FakeClient.calls.append(query)
        return FakeSearch(self._items)


def test_a_url_is_searched_by_collection_area_and_days(catalog, monkeypatch):
    import pystac_client

    items = list(pystac.Catalog.from_file(str(catalog)).get_items(recursive=True))
    for item in items:
        item.make_asset_hrefs_absolute()
    opened = []

    def fake_open(url, *args, **kwargs):
        opened.append(url)
        return FakeClient(items)

    FakeClient.calls = []
    monkeypatch.setattr(pystac_client.Client, "open", staticmethod(fake_open))
    url = "https://planetarycomputer.microsoft.com/api/stac/v1"
    scenes = stac_scenes(url, SOURCE, **WINDOW, collection="sentinel-1-rtc")
    assert opened == [url] and len(scenes) == 6
    (query,) = FakeClient.calls
    assert query["collections"] == ["sentinel-1-rtc"]
    assert query["datetime"] == "2018-06-07/2018-10-07"
    np.testing.assert_allclose(query["bbox"], SOURCE.lonlat_bounds())
    with pytest.raises(EventInputError, match="name the collection to search with --collection"):
        stac_scenes(url, SOURCE, **WINDOW)
    monkeypatch.setattr(pystac_client.Client, "open", staticmethod(lambda *a, **k: FakeClient([])))
    with pytest.raises(EventInputError, match="no items of collection 'sentinel-1-rtc' intersect"):
        stac_scenes(url, SOURCE, **WINDOW, collection="sentinel-1-rtc")


def test_an_unreachable_url_is_one_clear_error():
    with pytest.raises(EventInputError, match=r"--stac http://127.0.0.1:9/api: cannot search it"):
        stac_scenes("http://127.0.0.1:9/api", SOURCE, **WINDOW, collection="sentinel-1-rtc")


def test_planetary_computer_assets_are_signed_when_the_package_is_there(monkeypatch):
    fake = types.ModuleType("planetary_computer")
    fake.sign = lambda href: href + "?signed"
    monkeypatch.setitem(sys.modules, "planetary_computer", fake)
    opened = []

    def refuse(href, *args, **kwargs):
        opened.append(href)
        raise rasterio.errors.RasterioIOError("HTTP response code: 403")

    monkeypatch.setattr(rasterio, "open", refuse)
    href = "https://sentinel1euwestrtc.blob.core.windows.net/s1/vv.tif"
    item = pystac.Item("pc", None, None, PASSES[0].time, {})
    item.add_asset("vv", pystac.Asset(href))
    with pytest.raises(EventInputError, match=r"cannot read VV of STAC item\(s\) pc .*403"):
        stac_module.StacSource((item,), "vv").read(SOURCE)
    monkeypatch.setitem(sys.modules, "planetary_computer", None)  # not installed
    with pytest.raises(EventInputError, match="pip install planetary-computer"):
        stac_module.StacSource((item,), "vv").read(SOURCE)
    assert opened == [href + "?signed", href]


# -- bad input ------------------------------------------------------------------------------


def test_no_items_over_the_area_and_days_lists_what_exists(catalog):
    elsewhere = Grid(CRS, Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 4730400.0), 8, 8)
    with pytest.raises(
        EventInputError,
        match=r"none of its 7 items is of collection 'sentinel-1-rtc', over the area .* from "
        r"2018-06-07 to 2018-10-07. Its items: s0 \(2018-08-10, collection sentinel-1-rtc",
    ):
        stac_scenes(str(catalog), elsewhere, **WINDOW, collection="sentinel-1-rtc")
    with pytest.raises(EventInputError, match="none of its 7 items"):
        stac_scenes(str(catalog), SOURCE, first=dt.date(2020, 1, 1), last=dt.date(2020, 2, 1))
    with pytest.raises(EventInputError, match="none of its 7 items is of collection 'other'"):
        stac_scenes(str(catalog), SOURCE, **WINDOW, collection="other")


def test_items_without_vv_or_vh_are_listed(tmp_path):
    item = make_item(tmp_path, "s0", PASSES[0], {"vv": power(0, "vv")})
    catalog = write_catalog(tmp_path, [item])
    with pytest.raises(
        EventInputError,
        match=r"1 STAC item\(s\) lack a VV or VH asset: s0 \(2018-08-10; assets: VV\)",
    ):
        stac_scenes(str(catalog), SOURCE, **WINDOW)


def test_a_file_that_is_not_stac_is_one_clear_error(tmp_path):
    (tmp_path / "x.json").write_text('{"type": "Topology"}')
    with pytest.raises(EventInputError, match="not a STAC catalog"):
        stac_scenes(str(tmp_path / "x.json"), SOURCE, **WINDOW)
    with pytest.raises(EventInputError, match="cannot read it as STAC JSON"):
        stac_scenes(str(tmp_path / "missing.json"), SOURCE, **WINDOW)


# -- a DEM from STAC --------------------------------------------------------------------------


def dem_tile(folder: Path, name: str, bounds: tuple[float, float, float, float]) -> pystac.Item:
    """A Copernicus-DEM-like tile in lon/lat: elevation = 2e4 (lon - 139) + 1e4 (lat - 42)."""
    west, south, east, north = bounds
    step = 0.0001
    lon = west + step * (np.arange(round((east - west) / step)) + 0.5)
    lat = north - step * (np.arange(round((north - south) / step)) + 0.5)
    values = (2e4 * (lon[None, :] - 139) + 1e4 * (lat[:, None] - 42)).astype(np.float32)
    path = folder / f"{name}.tif"
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=len(lon),
        height=len(lat),
        count=1,
        dtype="float32",
        crs="EPSG:4326",
        transform=Affine(step, 0, west, 0, -step, north),
    ) as file:
        file.write(values, 1)
    geometry = {
        "type": "Polygon",
        "coordinates": [
            [[west, south], [east, south], [east, north], [west, north], [west, south]]
        ],
    }
    item = pystac.Item(
        name, geometry, list(bounds), dt.datetime(2021, 4, 22, tzinfo=UTC), {}, collection="dem"
    )
    item.add_asset("data", pystac.Asset(str(path), roles=["data"]))
    return item


def test_a_dem_from_stac_is_the_mosaic_of_its_tiles(tmp_path):
    from pyproj import Transformer

    # tiles on one pixel grid, abutting in the middle of the area, as Copernicus DEM's
    west, south, east, north = (round(v, 3) for v in SOURCE.lonlat_bounds())
    middle = round((west + east) / 2, 4)
    tiles = [
        dem_tile(tmp_path, "west", (west - 0.001, south - 0.001, middle, north + 0.002)),
        dem_tile(tmp_path, "east", (middle, south - 0.001, east + 0.002, north + 0.002)),
    ]
    whole = dem_tile(tmp_path, "whole", (west - 0.001, south - 0.001, east + 0.002, north + 0.002))
    whole.collection_id = "whole"
    items = [make_item(tmp_path, "s0", PASSES[0], {p: power(0, p) for p in ("vv", "vh")})]
    catalog = write_catalog(tmp_path, [*items, *tiles, whole])
    dem = stac_module.stac_dem(str(catalog), "dem", SOURCE)
    assert dem.band == "data" and "west.tif" in dem.path and "east.tif" in dem.path
    mosaic = dem.read(SOURCE)
    one_tile = stac_module.stac_dem(str(catalog), "whole", SOURCE).read(SOURCE)
    np.testing.assert_allclose(mosaic, one_tile, atol=0.01)  # no seam
    to_lonlat = Transformer.from_crs(CRS, "EPSG:4326", always_xy=True)
    lon, lat = to_lonlat.transform(*np.meshgrid(SOURCE.x, SOURCE.y))
    # GDAL's approximate transformer: within 1/8 pixel of the exact position (0.24 m per m)
    np.testing.assert_allclose(one_tile, 2e4 * (lon - 139) + 1e4 * (lat - 42), atol=0.25)
    with pytest.raises(EventInputError, match="none of its 4 items is of collection 'cop-dem'"):
        stac_module.stac_dem(str(catalog), "cop-dem", SOURCE)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--stac", "c.json"], r"--stac needs the area: --bbox W S E N or --aoi"),
        (["--stac", "c.json", "--sar", "x.tif"], r"--stac with --sar: give the SAR either"),
        (["--stac", "c.json", "--dem", "d.tif", "--dem-stac", "dem"], "--dem and --dem-stac"),
        (["--sar", "x.tif", "--collection", "c"], r"--collection and --dem-stac name collections"),
    ],
)
def test_stac_options_that_do_not_fit_are_one_error(tmp_path, extra, message):
    from landslide_lit.errors import ConfigError
    from landslide_lit.event.command import main as cube

    out = str(tmp_path / "o.zarr")
    with pytest.raises(ConfigError, match=message):
        cube([out, "--event-start", "2018-09-05", "--event-end", "2018-09-07", *extra])
