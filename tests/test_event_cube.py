"""`landslide-lit cube`: a synthetic cube written out as RTC GeoTIFFs and built back."""

from __future__ import annotations

import csv
import datetime as dt
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

rasterio = pytest.importorskip("rasterio")
gpd = pytest.importorskip("geopandas")

from rasterio.transform import from_origin  # noqa: E402
from rasterio.warp import Resampling, calculate_default_transform, reproject  # noqa: E402
from shapely.geometry import box  # noqa: E402

from landslide_lit.data.composite import build_composite  # noqa: E402
from landslide_lit.data.cube import open_cube  # noqa: E402
from landslide_lit.data.synthetic import make_synthetic_cube  # noqa: E402
from landslide_lit.data.terrain import terrain_features  # noqa: E402
from landslide_lit.event import build  # noqa: E402
from landslide_lit.event.geotiff import parse_name  # noqa: E402
from landslide_lit.main import main  # noqa: E402
from landslide_lit.regions import REGIONS, load_region_file  # noqa: E402

SIZE = (64, 64)
EVENT = ["--event-start", "2018-09-05", "--event-end", "2018-09-07"]
WINDOW = ["--before-days", "100", "--after-days", "40"]  # every synthetic acquisition
CRS = "EPSG:32654"
TRACKS = {"a": 68, "d": 46}


@pytest.fixture(scope="module")
def source() -> xr.Dataset:
    return make_synthetic_cube("hokkaido", size=SIZE, seed=1)


def _origin(ds: xr.Dataset) -> tuple[float, float]:
    return float(ds.x[0]) - 5.0, float(ds.y[0]) + 5.0


def _write(path: Path, values: np.ndarray, crs: str, transform, tags=None, bands=None) -> Path:
    values = values if values.ndim == 3 else values[None]
    profile = dict(driver="GTiff", dtype="float32", nodata=np.nan, crs=crs, transform=transform)
    with rasterio.open(
        path, "w", height=values.shape[1], width=values.shape[2], count=len(values), **profile
    ) as dst:
        dst.write(values.astype(np.float32))
        dst.update_tags(**(tags or {}))
        for i, name in enumerate(bands or (), start=1):
            dst.set_band_description(i, name)
    return path


def _finer(values: np.ndarray, factor: int = 2) -> np.ndarray:
    """Each pixel as factor x factor pixels: averaging them back gives the values again."""
    return np.repeat(np.repeat(values, factor, axis=-2), factor, axis=-1)


def write_products(ds: xr.Dataset, folder: Path, crs: str | None = None) -> Path:
    """Per acquisition, VV and VH as HyP3 amplitude, HyP3 dB or OPERA power (in turn),
    on a 5 m grid (``crs`` None) or reprojected to ``crs``; returns the manifest giving the
    HyP3 files' orbits (the OPERA files carry theirs in tags and names)."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    src_transform = from_origin(*_origin(ds), 10.0, 10.0)
    for t, time in enumerate(ds.timestep.values):
        stamp = f"{np.datetime64(time, 's').item():%Y%m%dT%H%M%S}"
        orbit = str(ds["sat:orbit_state"].values[t])
        kind = ("amplitude", "db", "power")[t % 3]
        for pol in ("vv", "vh"):
            power = ds[pol].values[t]
            if crs is None:
                values, transform, target = _finer(power), from_origin(*_origin(ds), 5, 5), CRS
            else:
                values, transform = _reprojected(power, src_transform, crs)
                target = crs
            if kind == "amplitude":
                name, values = (
                    f"S1A_IW_{stamp}_DVP_RTC10_G_gaufem_F00{t % 10}_{pol.upper()}",
                    (np.sqrt(values)),
                )
            elif kind == "db":
                name, values = (
                    f"S1A_IW_{stamp}_DVP_RTC10_G_gdufem_F01{t % 10}_{pol.upper()}",
                    (10 * np.log10(values)),
                )
            else:
                name = (
                    f"OPERA_L2_RTC-S1_T{TRACKS[orbit]:03d}-097000-IW2_{stamp}Z_20240101T000000Z"
                    f"_S1A_30_v1.0_{pol.upper()}"
                )
            tags = {"ORBIT_PASS_DIRECTION": "ascending" if orbit == "a" else "descending"}
            path = _write(
                folder / f"{name}.tif", values, target, transform, tags if kind == "power" else None
            )
            if kind != "power":
                rows.append(
                    {"path": path.name, "orbit_state": orbit, "relative_orbit": TRACKS[orbit]}
                )
    manifest = folder / "orbits.csv"
    with manifest.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["path", "orbit_state", "relative_orbit"])
        writer.writeheader()
        writer.writerows(rows)
    return manifest


def _reprojected(values: np.ndarray, transform, crs: str):
    height, width = values.shape
    dst_transform, w, h = calculate_default_transform(
        CRS, crs, width, height, *rasterio.transform.array_bounds(height, width, transform)
    )
    out = np.full((h, w), np.nan, np.float32)
    reproject(
        values,
        out,
        src_transform=transform,
        src_crs=CRS,
        src_nodata=np.nan,
        dst_transform=dst_transform,
        dst_crs=crs,
        dst_nodata=np.nan,
        resampling=Resampling.bilinear,
    )
    return out, dst_transform


def _cube(tmp_path: Path, folder: Path, manifest: Path, *extra: str) -> Path:
    out = tmp_path / "event.zarr"
    main(
        [
            "cube",
            str(out),
            *EVENT,
            *WINDOW,
            "--sar",
            str(folder / "*.tif"),
            "--manifest",
            str(manifest),
            *extra,
        ]
    )
    return out


def _composite(ds: xr.Dataset, region) -> np.ndarray:
    return build_composite(ds, region, "sar")["image"].values


def test_file_names_of_hyp3_and_opera_products_are_parsed():
    hyp3 = parse_name(Path("S1B_IW_20180128T161201_DVP_RTC30_G_gaufed_FD6A_VH.tif"))
    assert (hyp3.platform, hyp3.polarisation, hyp3.scale, hyp3.radiometry) == (
        "sentinel-1b",
        "vh",
        "amplitude",
        "gamma0",
    )
    assert hyp3.time == dt.datetime(2018, 1, 28, 16, 12, 1, tzinfo=dt.timezone.utc)
    opera = parse_name(
        Path("OPERA_L2_RTC-S1_T020-041121-IW1_20231101T013115Z_20231104T041913Z_S1A_30_v1.0_VV.tif")
    )
    assert (opera.platform, opera.polarisation, opera.scale, opera.relative_orbit) == (
        "sentinel-1a",
        "vv",
        "power",
        20,
    )
    assert opera.time == dt.datetime(2023, 11, 1, 1, 31, 15, tzinfo=dt.timezone.utc)
    assert parse_name(Path("scene.tif")).time is None


def test_products_on_a_finer_grid_give_back_the_cube(source, tmp_path):
    """HyP3 amplitude and dB and OPERA power on a 5 m grid, averaged back onto 10 m:
    the same values (to float32 rounding), timesteps, orbits and composites."""
    manifest = write_products(source, tmp_path / "rtc")
    out = _cube(tmp_path, tmp_path / "rtc", manifest)
    built = xr.open_zarr(out)
    np.testing.assert_array_equal(built.x, source.x)
    np.testing.assert_array_equal(built.y, source.y)
    np.testing.assert_array_equal(built.timestep, source.timestep)
    np.testing.assert_array_equal(built["sat:orbit_state"], source["sat:orbit_state"])
    tracks = [TRACKS[o] for o in source["sat:orbit_state"].values]
    np.testing.assert_array_equal(built["sat:relative_orbit"], tracks)
    assert set(built.platform.values) == {"sentinel-1a"}
    for pol in ("vv", "vh"):
        np.testing.assert_allclose(built[pol].values, source[pol].values, rtol=2e-5)
    region = load_region_file(out.with_suffix(".yaml"))
    assert (region.event_start, region.event_end, region.orbit) == ("2018-09-05", "2018-09-07", "d")
    expected = _composite(source, REGIONS["hokkaido"])
    np.testing.assert_allclose(_composite(open_cube(out), region), expected, rtol=2e-5)


def test_products_in_lon_lat_give_back_the_composites_within_resampling(source, tmp_path):
    """Resampled twice (to EPSG:4326 and back, bilinear), speckle is smoothed, which raises
    the mean of the logs: each composite keeps its mean linear power within 5%, and its log
    correlates with the source's above 0.85 with a median difference below 0.2 (measured:
    <= 3%, >= 0.89, <= 0.14)."""
    manifest = write_products(source, tmp_path / "rtc", crs="EPSG:4326")
    out = _cube(tmp_path, tmp_path / "rtc", manifest, "--crs", CRS)
    built = open_cube(out).sel(x=source.x[3:-3], y=source.y[3:-3])
    crop = source.isel(x=slice(3, -3), y=slice(3, -3))
    region = load_region_file(out.with_suffix(".yaml"))
    got, expected = _composite(built, region), _composite(crop, REGIONS["hokkaido"])
    valid = np.isfinite(got) & np.isfinite(expected)
    assert valid.mean() > 0.9
    for channel in range(4):
        a, b = got[channel][valid[channel]], expected[channel][valid[channel]]
        assert abs(np.exp(a).mean() / np.exp(b).mean() - 1) < 0.05
        assert np.corrcoef(a, b)[0, 1] > 0.85
        assert np.median(np.abs(a - b)) < 0.2


def test_terrain_is_the_synthetic_generators_on_the_same_dem(source, tmp_path, monkeypatch):
    monkeypatch.setattr(build, "BLOCK", 24)  # derivatives across block edges (1-pixel halo)
    manifest = write_products(source, tmp_path / "rtc")
    dem = _write(
        tmp_path / "dem.tif", source.dem.values, CRS, from_origin(*_origin(source), 10, 10)
    )
    built = xr.open_zarr(_cube(tmp_path, tmp_path / "rtc", manifest, "--dem", str(dem)))
    np.testing.assert_allclose(built.dem.values, source.dem.values, rtol=1e-6)
    features = terrain_features(built.dem.values, 10.0, 10.0)
    for name, values in features.items():
        np.testing.assert_array_equal(built[name].values, values)  # blocks = whole grid
    # the generator derives them from the float64 DEM before storing it as float32
    np.testing.assert_allclose(built.dem_slope_radians, source.dem_slope_radians, atol=1e-4)
    np.testing.assert_allclose(built.dem_curvature, source.dem_curvature, atol=1e-2)


def test_inventory_polygons_in_another_crs_burn_the_pixels_whose_centres_they_hold(
    source, tmp_path
):
    manifest = write_products(source, tmp_path / "rtc")
    x0, y0 = _origin(source)
    # rows 10-19 x cols 20-29 (edges half a pixel beyond the centres), and rows 40-41 x col 5
    squares = [
        box(x0 + 200, y0 - 200, x0 + 300, y0 - 100),
        box(x0 + 52, y0 - 420, x0 + 58, y0 - 400),
    ]
    inventory = tmp_path / "slides.geojson"
    gpd.GeoDataFrame(geometry=squares, crs=CRS).to_crs(4326).to_file(inventory)
    built = xr.open_zarr(_cube(tmp_path, tmp_path / "rtc", manifest, "--inventory", str(inventory)))
    expected = np.zeros(SIZE, np.float32)
    expected[10:20, 20:30] = 1
    expected[40:42, 5] = 1
    np.testing.assert_array_equal(built.landslides.values, expected)


def test_the_walkthrough_cube_then_predict_with_the_region_file(
    source, synthetic_root, tmp_path, monkeypatch
):
    from landslide_lit.cli import run
    from tests.conftest import TINY_MODEL

    manifest = write_products(source, tmp_path / "rtc")
    dem = _write(
        tmp_path / "dem.tif", source.dem.values, CRS, from_origin(*_origin(source), 10, 10)
    )
    out = _cube(tmp_path, tmp_path / "rtc", manifest, "--dem", str(dem))
    monkeypatch.chdir(tmp_path)
    quiet = ["--trainer.enable_progress_bar=false"]
    fit = run(
        [
            "fit",
            "--config",
            "demo.yaml",
            f"--data.root={synthetic_root}",
            "--trainer.max_epochs=1",
            "--trainer.limit_train_batches=1",
            "--trainer.limit_val_batches=1",
            *quiet,
            *TINY_MODEL,
        ]
    )
    checkpoint = fit.trainer.checkpoint_callback.best_model_path
    main(["predict", "--region", str(out.with_suffix(".yaml")), "--ckpt_path", checkpoint, *quiet])
    maps = list(tmp_path.rglob("event_landslide_probability.nc"))
    assert len(maps) == 1
    with xr.open_dataset(maps[0]) as written:
        probability = written["landslide_probability"].values
        np.testing.assert_array_equal(written["x"].values, source.x.values)
    assert np.isfinite(probability).any()


# --- bad input: one error line each, nothing left at OUT ---------------------------------


@pytest.fixture()
def products(source, tmp_path) -> tuple[Path, Path]:
    manifest = write_products(source, tmp_path / "rtc")
    return tmp_path / "rtc", manifest


def _fails(capsys, tmp_path: Path, args: list[str], *phrases: str) -> str:
    out = tmp_path / "bad.zarr"
    with pytest.raises(SystemExit) as exit_info:
        main(["cube", str(out), *args])
    assert exit_info.value.code == 2
    stderr = capsys.readouterr().err
    assert stderr.count("error: ") == 1, stderr
    err = stderr.strip().splitlines()[-1]  # after the progress bars
    assert err.startswith("error: "), stderr
    for phrase in phrases:
        assert phrase in err, err
    assert not out.exists() and not out.with_suffix(".yaml").exists()
    assert not list(tmp_path.glob(".bad.zarr*"))
    return err


def test_no_matching_files_is_one_error(tmp_path, capsys):
    _fails(capsys, tmp_path, [*EVENT, "--sar", str(tmp_path / "none/*.tif")], "no files match")


def test_a_missing_polarisation_lists_the_dates(products, tmp_path, capsys):
    folder, manifest = products
    gone = sorted(folder.glob("OPERA*_VH.tif"))[0]
    gone.unlink()
    day = parse_name(gone).time
    _fails(
        capsys,
        tmp_path,
        [*EVENT, *WINDOW, "--sar", str(folder / "*.tif"), "--manifest", str(manifest)],
        "VH missing for 1 acquisition",
        f"{day:%Y-%m-%dT%H:%M}",
    )


@pytest.mark.parametrize("period", ["before", "after"])
def test_no_acquisitions_in_a_period_lists_what_exists(products, tmp_path, capsys, period):
    folder, manifest = products
    dates = ["2018-06-01", "2018-06-02"] if period == "before" else ["2018-12-01", "2018-12-02"]
    event = ["--event-start", dates[0], "--event-end", dates[1]]
    _fails(
        capsys,
        tmp_path,
        [*event, "--sar", str(folder / "*.tif"), "--manifest", str(manifest)],
        f"no acquisitions {period} the event",
        "Acquisitions found: 2018-",
    )


def test_files_that_do_not_overlap_each_other_or_the_area_are_one_error(
    source, products, tmp_path, capsys
):
    folder, manifest = products
    far = next(folder.glob("S1A_*_VV.tif"))  # its orbit is in the manifest
    with rasterio.open(far) as src:
        values, profile = src.read(), src.profile
    profile["transform"] = from_origin(*_origin(source), 5, 5) @ rasterio.Affine.translation(
        0, 10000
    )
    for path in (far, Path(str(far).replace("_VV", "_VH"))):
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(values)
    args = [*EVENT, *WINDOW, "--sar", str(folder / "*.tif"), "--manifest", str(manifest)]
    _fails(capsys, tmp_path, args, "do not overlap each other")
    _fails(capsys, tmp_path, [*args, "--bbox", "0", "0", "0.01", "0.01"], "no data on the area")


def _generic_files(source, folder: Path, convert) -> list[str]:
    """Files with names that say nothing, described by a manifest; values via ``convert``."""
    folder.mkdir()
    rows = []
    for t, time in enumerate(source.timestep.values):
        for pol in ("vv", "vh"):
            path = _write(
                folder / f"scene{t:02d}_{pol}.tif",
                convert(source[pol].values[t]),
                CRS,
                from_origin(*_origin(source), 10, 10),
            )
            rows.append(
                {
                    "path": path.name,
                    "time": str(np.datetime64(time, "s")),
                    "polarisation": pol.upper(),
                    "orbit_state": source["sat:orbit_state"].values[t],
                }
            )
    manifest = folder / "manifest.csv"
    with manifest.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return [*EVENT, *WINDOW, "--manifest", str(manifest)]


def test_a_declared_scale_that_contradicts_the_values_is_one_error(source, tmp_path, capsys):
    decibels = _generic_files(source, tmp_path / "db", lambda p: 10 * np.log10(p))
    _fails(capsys, tmp_path, [*decibels, "--scale", "power"], "negative", "--scale db")
    power = _generic_files(source, tmp_path / "power", lambda p: p)
    _fails(capsys, tmp_path, [*power, "--scale", "db"], "median backscatter is 0.", "(GeoTIFF, db)")
    _fails(capsys, tmp_path, power, "value scale unknown", "--scale")


def test_a_scale_option_contradicting_the_file_name_is_one_error(products, tmp_path, capsys):
    folder, manifest = products
    _fails(
        capsys,
        tmp_path,
        [
            *EVENT,
            *WINDOW,
            "--sar",
            str(folder / "*.tif"),
            "--manifest",
            str(manifest),
            "--scale",
            "power",
        ],
        "from its name or tags but 'power' from --scale",
    )


def test_a_dem_that_does_not_cover_the_area_is_one_error(source, products, tmp_path, capsys):
    folder, manifest = products
    dem = _write(
        tmp_path / "dem.tif", source.dem.values[:40], CRS, from_origin(*_origin(source), 10, 10)
    )
    _fails(
        capsys,
        tmp_path,
        [
            *EVENT,
            *WINDOW,
            "--sar",
            str(folder / "*.tif"),
            "--manifest",
            str(manifest),
            "--dem",
            str(dem),
        ],
        "DEM",
        "no data at",
    )


def test_an_inventory_outside_the_grid_is_one_error(products, tmp_path, capsys):
    folder, manifest = products
    inventory = tmp_path / "elsewhere.gpkg"
    gpd.GeoDataFrame(geometry=[box(10, 10, 10.01, 10.01)], crs=4326).to_file(inventory)
    _fails(
        capsys,
        tmp_path,
        [
            *EVENT,
            *WINDOW,
            "--sar",
            str(folder / "*.tif"),
            "--manifest",
            str(manifest),
            "--inventory",
            str(inventory),
        ],
        "none of its 1 polygons",
    )


def test_an_existing_cube_needs_overwrite(products, tmp_path, capsys):
    folder, manifest = products
    args = [*EVENT, *WINDOW, "--sar", str(folder / "*.tif"), "--manifest", str(manifest)]
    out = tmp_path / "bad.zarr"
    out.mkdir()
    with pytest.raises(SystemExit):
        main(["cube", str(out), *args])
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert list(out.iterdir()) == []
    main(["cube", str(out), *args, "--overwrite"])
    assert (out / ".zmetadata").is_file() and out.with_suffix(".yaml").is_file()


def test_a_failed_chunk_write_stops_the_build_and_leaves_no_cube(products, tmp_path, monkeypatch):
    """Blocks are written in a background thread: its error still ends the build, the
    partial store is removed after the thread has stopped, and no thread is left."""
    import threading

    folder, manifest = products
    stored = []

    def failing(self, name, index, values):
        stored.append(name)
        if len(stored) == 3:
            raise OSError("No space left on device")

    monkeypatch.setattr(build._ArrayWriter, "_store", failing)
    out = tmp_path / "event.zarr"
    with pytest.raises(OSError, match="No space left"):
        _cube(tmp_path, folder, manifest)
    assert len(stored) <= 3 + build._ArrayWriter.QUEUED  # queued blocks are dropped
    assert not out.exists() and not out.with_suffix(".yaml").exists()
    assert not list(tmp_path.glob(".event.zarr*"))
    assert not [t for t in threading.enumerate() if t.name == "cube-writer"]


def test_blocks_are_written_chunk_by_chunk_as_zarr_writes_them(tmp_path, monkeypatch):
    """Whole chunks (edge chunks padded) are encoded and stored by the builder itself,
    parts of chunks by zarr: either way the store holds the bytes zarr's own writes give."""
    import zarr

    rng = np.random.default_rng(0)
    values = rng.gamma(4.0, 0.025, (2, 10, 9)).astype(np.float32)
    values[0, :3, :3] = np.nan
    blocks = [  # whole chunks of 4 x 4 (edge chunks of 2 rows, 1 column), then parts
        (0, slice(0, 8), slice(0, 8)),
        (0, slice(8, 10), slice(0, 9)),
        (0, slice(0, 8), slice(8, 9)),
        (1, slice(0, 3), slice(0, 9)),
        (1, slice(3, 10), slice(0, 9)),
    ]
    whole = []
    chunks_of = build._whole_chunks
    monkeypatch.setattr(build, "_whole_chunks", lambda *a: whole.append(chunks_of(*a)) or whole[-1])
    stores = {}
    for way in ("builder", "zarr"):
        store = stores[way] = tmp_path / f"{way}.zarr"
        group = zarr.open_group(store, mode="w", zarr_format=2)
        group.create_array(
            "vv",
            shape=values.shape,
            chunks=(1, 4, 4),
            dtype="float32",
            fill_value=np.nan,
            config={"write_empty_chunks": True},
        )
        if way == "builder":
            with build._ArrayWriter(store) as arrays:
                for index in blocks:
                    arrays.write("vv", index, values[index].copy())
                arrays.finish({})
        else:
            for index in blocks:
                group["vv"][index] = values[index]
    assert [len(c) if c else None for c in whole] == [4, 3, 2, None, None]
    files = sorted(p.name for p in (stores["zarr"] / "vv").iterdir())
    assert len(files) == 2 * 3 * 3 + 2  # every chunk, .zarray, .zattrs
    for name in files:
        assert (stores["builder"] / "vv" / name).read_bytes() == (
            stores["zarr"] / "vv" / name
        ).read_bytes(), name
    assert np.array_equal(zarr.open_array(stores["builder"] / "vv")[...], values, equal_nan=True)


def test_the_writer_gives_freed_heap_back_after_each_block(products, tmp_path, monkeypatch):
    """glibc keeps freed block-sized arrays resident (the peak crept up with the bands
    written): the writer trims the heap after each block, and nothing else without glibc."""
    folder, manifest = products
    trims, blocks = [], []
    store = build._ArrayWriter._store
    monkeypatch.setattr(build, "_trim_heap", lambda: trims.append(len(blocks)))
    monkeypatch.setattr(
        build._ArrayWriter, "_store", lambda self, *a: blocks.append(a[0]) or store(self, *a)
    )
    _cube(tmp_path, folder, manifest)
    assert trims == list(range(1, len(blocks) + 1)) and len(blocks) > 2
    build._malloc_trim.cache_clear()
    monkeypatch.setattr(build.ctypes, "CDLL", lambda name: object())  # no malloc_trim
    build._trim_heap()
    assert build._malloc_trim() is None
    build._malloc_trim.cache_clear()
