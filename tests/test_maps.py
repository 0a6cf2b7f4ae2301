"""Whole-region maps: the window plan, blending, streamed statistics and the written files."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import threading
from argparse import Namespace
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import xarray as xr

from landslide_lit import map_files, maps
from landslide_lit.data import cube as cube_module
from landslide_lit.data import windows as windows_module
from landslide_lit.data.acquisitions import select_acquisitions
from landslide_lit.data.composite import CompositeSettings, build_composite
from landslide_lit.data.cube import CubeError, existing_cube, open_cube
from landslide_lit.data.datamodule import LandslideDataModule
from landslide_lit.data.stats import ChannelStats
from landslide_lit.data.store import CompositeStore
from landslide_lit.data.synthetic import write_synthetic_cube
from landslide_lit.data.windows import WindowPlan
from landslide_lit.maps import ProbabilityMapWriter
from landslide_lit.module import LandslideSegmenter
from landslide_lit.owners import owner_tag
from landslide_lit.regions import get_region

TINY = {
    "encoder_name": "tu-test_resnet",
    "model_kwargs": {"encoder_depth": 3, "decoder_channels": [16, 8, 4]},
    "predict_precision": "32-true",  # maps compared with float32 arithmetic
}


def blended_by_hand(
    plan: WindowPlan, placed: dict[tuple[int, int], np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """Sum of ramp-weighted windows over the sum of ramps, on full-size arrays; the number
    of windows covering each pixel."""
    ramp = windows_module.ramp(plan.size, plan.overlap)
    weights = np.outer(ramp, ramp)
    total = np.zeros((plan.height + plan.size, plan.width + plan.size))
    norm, count = np.zeros_like(total), np.zeros_like(total)
    for (y, x), window in placed.items():
        total[y : y + plan.size, x : x + plan.size] += weights * window
        norm[y : y + plan.size, x : x + plan.size] += weights
        count[y : y + plan.size, x : x + plan.size] += 1
    cut = (slice(plan.height), slice(plan.width))
    return (total[cut] / norm[cut]), count[cut]


@pytest.mark.parametrize("overlap", [-1, 512, 600])
def test_a_bad_overlap_is_one_clear_error(overlap):
    with pytest.raises(ValueError, match=r"predict_overlap=.*\[0, predict_window\) = \[0, 512\)"):
        LandslideDataModule(predict_overlap=overlap)


def test_the_geotiff_needs_rasterio_alone(monkeypatch):
    monkeypatch.setattr(maps, "find_spec", lambda name: None)
    with pytest.raises(
        ValueError, match=r"needs rasterio .*pip install 'landslide-lit\[responder\]'"
    ):
        ProbabilityMapWriter(formats=["netcdf", "geotiff"])
    assert ProbabilityMapWriter().formats == ["netcdf"]
    # the COG is written with rasterio: rioxarray is not needed
    monkeypatch.setattr(maps, "find_spec", lambda name: None if name == "rioxarray" else name)
    assert ProbabilityMapWriter().formats == ["netcdf", "geotiff"]
    assert ProbabilityMapWriter(formats=["geotiff"]).formats == ["geotiff"]


@pytest.fixture(scope="module")
def cube_root(tmp_path_factory) -> Path:
    """A small Talakmau cube (several bands once BAND_ROWS is lowered) and a tiny one."""
    root = tmp_path_factory.mktemp("maps")
    write_synthetic_cube("talakmau", root=root, size=(300, 292), seed=1)
    write_synthetic_cube("kaikoura", root=root, size=(70, 90), seed=2)  # smaller than a window
    return root


def datamodule(root: Path, region: str = "talakmau", **kwargs) -> LandslideDataModule:
    settings = {"channels": "sar_dem", "cache": False, "batch_size": 4, **kwargs}
    # train region = test region: prepare_data makes no other synthetic cube
    return LandslideDataModule(
        root=str(root), synthetic=True, train_region=region, test_region=region, **settings
    )


@pytest.fixture()
def small_bands(monkeypatch):
    """Bands of a few windows, tiles and strips of 128 columns (three: the last 36 wide)
    and merges of 256 rows: every streaming path runs."""
    monkeypatch.setattr(windows_module, "BAND_ROWS", 200)
    monkeypatch.setattr(windows_module, "TILE_COLUMNS", 128)
    monkeypatch.setattr(maps, "MERGE_PIXELS", 1)


def test_streamed_statistics_equal_those_of_the_whole_composite(cube_root, small_bands):
    dm = datamodule(cube_root)
    dm.setup("predict")
    region = dm.test_region
    composite = build_composite(open_cube(dm.cube_path(region)), region, dm.channel_names)
    expected = ChannelStats.of(composite["image"].values, dm.channel_names, region.name)
    streamed = dm.region_stats(region)
    np.testing.assert_allclose(streamed.mean, expected.mean, rtol=1e-6)
    np.testing.assert_allclose(streamed.std, expected.std, rtol=1e-6)


def constant_model(channels: tuple[str, ...], value: float = 0.0) -> LandslideSegmenter:
    model = LandslideSegmenter(channel_names=list(channels), **TINY)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.zero_()
        model.model.segmentation_head[0].bias.fill_(value)
    return model


def predict(model, dm, folder: Path, **writer) -> Path:
    writer.setdefault("threshold", "none")  # these models were never validated: no thresholds
    return write_map(model, dm, folder, **writer)


def write_map(model, dm, folder: Path, **writer) -> Path:
    """Predict ``dm``'s test region through ``ProbabilityMapWriter(**writer)`` into
    ``folder``; the map's path without its suffix."""
    trainer = L.Trainer(
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[ProbabilityMapWriter(output_dir=str(folder), **writer)],
    )
    trainer.predict(model, datamodule=dm)
    return folder / f"{dm.test_region.name}_landslide_probability"


def sar_has_data(dm: LandslideDataModule) -> np.ndarray:
    region = dm.test_region
    composite = build_composite(open_cube(dm.cube_path(region)), region, dm.channel_names)
    return np.isfinite(composite["image"].values[dm.sar_channel_indices]).all(0)


def test_a_constant_model_gives_a_constant_map_on_the_cubes_grid(cube_root, tmp_path, small_bands):
    dm = datamodule(cube_root)
    logit = 0.3
    stem = predict(constant_model(dm.channel_names, logit), dm, tmp_path, formats=None)
    cube = open_cube(dm.cube_path(dm.test_region))
    with xr.open_dataset(stem.with_suffix(".nc")) as written:
        probability = written["landslide_probability"]
        assert probability.dtype == np.float32 and probability.dims == ("y", "x")
        for name in ("y", "x", "spatial_ref"):
            assert written[name].dtype == cube[name].dtype, name
            assert written[name].attrs == cube[name].attrs, name
            np.testing.assert_array_equal(written[name].values, cube[name].values)
        assert written.attrs["crs"] == cube.attrs["crs"]
        assert probability.attrs["grid_mapping"] == "spatial_ref"
        assert written.attrs["window_overlap"] == 64 and written.attrs["before_acquisitions"]
        values = probability.values
        assert probability.encoding["zlib"] and probability.encoding["chunksizes"] == (256, 256)
    has_data = sar_has_data(dm)
    assert (~has_data).any() and has_data.any()
    assert np.isnan(values[~has_data]).all()
    np.testing.assert_allclose(values[has_data], 1 / (1 + np.exp(-logit)), rtol=1e-6)
    summary = json.loads(stem.with_suffix(".json").read_text())
    # one score for every pixel: the AUPRC of a classifier without skill
    assert summary["auprc"] == pytest.approx(summary["no_skill"], abs=1e-6)
    assert summary["valid_pixels"] == has_data.sum()
    with xr.open_dataset(stem.with_suffix(".nc")) as written:
        assert written.attrs["region_auprc"] == pytest.approx(summary["auprc"])
    assert stem.with_suffix(".png").stat().st_size > 0
    rasterio = pytest.importorskip("rasterio")
    with rasterio.open(stem.with_suffix(".tif")) as tif:
        assert tif.crs.to_epsg() == 32647 and tif.shape == values.shape
        assert tif.transform.c == pytest.approx(float(cube.x[0]) - 5)  # pixel edge, 10 m pixels
        np.testing.assert_array_equal(tif.read(1), values)


def test_blending_matches_the_full_size_computation(cube_root, tmp_path, small_bands):
    """Streamed in bands and spilled to disk, the map equals blending in memory; overlap 0
    reproduces plain window predictions exactly."""
    torch.manual_seed(0)
    model = LandslideSegmenter(channel_names=list(datamodule(cube_root).channel_names), **TINY)
    with torch.no_grad():
        model.model.segmentation_head[0].bias.fill_(-1.0)
    model.eval()
    for overlap in (0, 48):
        # one window a batch: a forward gives the same bits as the window's alone
        dm = datamodule(cube_root, predict_window=128, predict_overlap=overlap, batch_size=1)
        stem = predict(model, dm, tmp_path / str(overlap), formats=["netcdf", "zarr"])
        dataset = dm.datasets["predict"][0]
        plan, placed = dataset.plan, {}
        for i in range(len(dataset)):
            item = dataset[i]
            batch = dm.standardise({k: v[None] for k, v in item.items()}, dm.test_region)
            with torch.no_grad():
                placed[tuple(item["origin"].tolist())] = model(batch["image"])[0, 0].sigmoid()
        expected, count = blended_by_hand(plan, {k: v.numpy() for k, v in placed.items()})
        expected[~sar_has_data(dm)] = np.nan
        with xr.open_dataset(stem.with_suffix(".nc")) as written:
            got = written["landslide_probability"].values
        with xr.open_zarr(stem.with_suffix(".zarr")) as written:
            np.testing.assert_array_equal(written["landslide_probability"].values, got)
            assert "region_auprc" in written.attrs
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
        if overlap == 0:  # where one window covers a pixel (not the clamped last ones)
            single = count == 1
            assert single.mean() > 0.4
            np.testing.assert_array_equal(got[single], expected[single].astype(np.float32))


def test_a_region_smaller_than_a_window_is_padded(cube_root, tmp_path):
    dm = datamodule(cube_root, region="kaikoura")
    stem = predict(constant_model(dm.channel_names), dm, tmp_path, formats=["netcdf"])
    with xr.open_dataset(stem.with_suffix(".nc")) as written:
        values = written["landslide_probability"].values
    has_data = sar_has_data(dm)
    assert values.shape == (70, 90) and np.isnan(values[~has_data]).all()
    np.testing.assert_allclose(values[has_data], 0.5, rtol=1e-6)
    assert not list(tmp_path.glob(".*partial*"))  # spill files removed


@pytest.mark.parametrize("window", [512, 96])
def test_predict_reads_back_the_composite_of_its_statistics_pass(cube_root, small_bands, window):
    """The statistics pass composites tile by tile and keeps the composite on disk in strips
    of columns; the windows read from it (each alone, across strips) are the windows
    composited from the cube in full-width bands, bit for bit, and teardown removes it."""
    dm = datamodule(cube_root, predict_window=window)
    dm.setup("predict")
    windows = dm.datasets["predict"][0]
    folder = windows.store.folder
    assert sorted(p.name for p in folder.iterdir()) == [
        f"{kind}.{strip}.{suffix}"
        for kind, suffix in (("image", "f32"), ("label", "u8"))
        for strip in (0, 1, 2)
    ]
    kept = [windows[i] for i in range(len(windows))]
    windows.release()
    assert not folder.exists() and windows.store is None
    for i, item in enumerate(kept):
        fresh = windows[i]
        assert item.keys() == fresh.keys()
        for key in item:
            torch.testing.assert_close(item[key], fresh[key], rtol=0, atol=0, equal_nan=True)
    dm.stats.clear()  # else known: no statistics pass, nothing kept
    dm.setup("predict")
    folder = dm.datasets["predict"][0].store.folder
    dm.teardown("predict")
    assert not folder.exists()


def no_room(monkeypatch):
    monkeypatch.setattr(windows_module.shutil, "disk_usage", lambda path: Namespace(free=2**20))


def disk_full_while_writing(monkeypatch):
    def append(self, x0, image, label):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(CompositeStore, "append", append)


@pytest.mark.parametrize("trouble", [no_room, disk_full_while_writing])
def test_without_room_for_the_composite_predict_composites_twice(
    cube_root, tmp_path, monkeypatch, caplog, trouble
):
    trouble(monkeypatch)
    dm = datamodule(cube_root)
    with caplog.at_level("WARNING", logger="landslide_lit.data.windows"):
        stem = predict(constant_model(dm.channel_names, 0.3), dm, tmp_path, formats=["netcdf"])
    assert "Set TMPDIR to a folder with more room" in caplog.text
    assert dm.datasets["predict"][0].store is None
    with xr.open_dataset(stem.with_suffix(".nc")) as written:
        values = written["landslide_probability"].values
    np.testing.assert_allclose(values[sar_has_data(dm)], 1 / (1 + np.exp(-0.3)), rtol=1e-6)


def cube_with_after_image_missing(root: Path, tmp_path: Path, rows: slice) -> Path:
    """A copy of the Talakmau cube whose after acquisition has no data in ``rows``."""
    region = get_region("talakmau")
    names = region.names
    with open_cube(existing_cube(region, root, synthetic=True), names) as cube:
        cube = cube.load()
    after = select_acquisitions(cube, region, CompositeSettings()).after[0]
    for var in (names.vv, names.vh):
        values = cube[var].values.copy()
        values[after, rows] = np.nan
        cube[var] = cube[var].copy(data=values)
    out = tmp_path / "root"
    cube.drop_encoding().to_zarr(region.cube_path(out, synthetic=True), consolidated=True)
    return out


def test_a_band_outside_an_acquisitions_footprint_is_no_data(cube_root, tmp_path, small_bands):
    """An acquisition without data in a whole band of rows (outside its footprint) gives
    NaN there, as the composite of the whole region does, not an error."""
    root = cube_with_after_image_missing(cube_root, tmp_path, slice(0, 250))
    dm = datamodule(root)
    stem = predict(constant_model(dm.channel_names), dm, tmp_path / "maps", formats=["netcdf"])
    with xr.open_dataset(stem.with_suffix(".nc")) as written:
        values = written["landslide_probability"].values
    assert np.isnan(values[:250]).all()
    has_data = sar_has_data(dm)
    assert has_data[250:].any()
    np.testing.assert_allclose(values[has_data], 0.5, rtol=1e-6)


def test_a_region_without_sar_data_is_one_clear_error(cube_root, tmp_path):
    root = cube_with_after_image_missing(cube_root, tmp_path, slice(None))
    dm = datamodule(root)
    with pytest.raises(CubeError, match=r"no data in vv_after, vh_after anywhere in talakmau"):
        dm.setup("predict")


def test_the_maps_provenance_comes_with_loader_workers(cube_root, tmp_path):
    """The dates used reach the map when the windows are read in worker processes."""
    dm = datamodule(cube_root, num_workers=1)
    stem = predict(constant_model(dm.channel_names), dm, tmp_path, formats=["netcdf"])
    summary = json.loads(stem.with_suffix(".json").read_text())
    assert summary["before_acquisitions"] and summary["after_acquisitions"]


class FailingModel(LandslideSegmenter):
    """Stops predict at its third batch, as a crash would."""

    def predict_step(self, batch, batch_idx, dataloader_idx=0):
        if batch_idx == 2:
            raise RuntimeError("the node went away")
        return super().predict_step(batch, batch_idx, dataloader_idx)


def test_an_interrupted_predict_leaves_no_map_behind(cube_root, tmp_path, small_bands):
    """The map is written while predicting, under hidden names published at the end: an
    interrupted run leaves neither a map that looks finished nor temporary files."""
    dm = datamodule(cube_root, predict_window=128)  # 3 batches of 128-pixel windows
    model = FailingModel(channel_names=list(dm.channel_names), **TINY)
    with pytest.raises(RuntimeError, match="the node went away"):
        predict(model, dm, tmp_path, formats=["netcdf", "zarr"])
    assert list(tmp_path.iterdir()) == []


def test_a_failure_to_write_the_map_stops_predict(cube_root, tmp_path, small_bands, monkeypatch):
    def full_disk(self, band):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(map_files.NetCDFFile, "write", full_disk)
    dm = datamodule(cube_root)
    with pytest.raises(RuntimeError, match="writing the map of talakmau failed") as error:
        predict(constant_model(dm.channel_names), dm, tmp_path, formats=["netcdf"])
    assert isinstance(error.value.__cause__, OSError)
    assert list(tmp_path.iterdir()) == []


@pytest.fixture()
def dead_and_live_pids():
    """The id of a process that has ended and of one that is running."""
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    running = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    yield ended.pid, running.pid
    running.kill()
    running.wait()


def test_predict_removes_what_ended_processes_of_this_host_left(
    cube_root, tmp_path, monkeypatch, dead_and_live_pids
):
    """Partial maps, spill files and kept composites of a killed predict are removed by
    the next one; those of a running process, or of another host, stay."""
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temporary))
    folder = tmp_path / "maps"
    folder.mkdir()
    dead, live = dead_and_live_pids
    tags = {"dead": owner_tag(dead), "live": owner_tag(live), "other": f"pid{dead}-elsewhere"}
    made = {}
    for owner, tag in tags.items():
        made[owner] = [
            folder / f".talakmau_landslide_probability.{tag}.nc",
            folder / f".talakmau.rank1.{tag}.sum",
            folder / f".talakmau_landslide_probability.{tag}.zarr",
            temporary / f"landslide-lit-talakmau-composite-{tag}-x1y2z3",
        ]
        for path in made[owner]:
            if path.suffix == ".zarr" or path.parent == temporary:
                path.mkdir()
                (path / "data").write_bytes(b"partial")
            else:
                path.write_bytes(b"partial")
    dm = datamodule(cube_root)
    stem = predict(constant_model(dm.channel_names), dm, folder, formats=["netcdf"])
    assert stem.with_suffix(".nc").is_file()
    assert not any(path.exists() for path in made["dead"])
    assert all(path.exists() for path in made["live"] + made["other"])
    hidden = {p.name for p in folder.glob(".*")}
    assert hidden == {p.name for p in made["live"] + made["other"] if p.parent == folder}


def test_the_netcdf_and_zarr_maps_declare_cf_1_8(cube_root, tmp_path):
    dm = datamodule(cube_root, region="kaikoura")
    stem = predict(constant_model(dm.channel_names), dm, tmp_path, formats=["netcdf", "zarr"])
    with (
        xr.open_dataset(stem.with_suffix(".nc")) as nc,
        xr.open_zarr(stem.with_suffix(".zarr")) as z,
    ):
        for written in (nc, z):
            assert written.attrs["Conventions"] == "CF-1.8"
            attrs = written["landslide_probability"].attrs
            # no CF standard name fits a landslide probability: none is made up
            assert attrs["units"] == "1" and "standard_name" not in attrs
            assert attrs["long_name"] == "landslide probability"
            assert written[attrs["grid_mapping"]].attrs["grid_mapping_name"]


class RecordingLock:
    """A re-entrant lock that counts its acquisitions."""

    def __init__(self) -> None:
        self.lock, self.taken = threading.RLock(), 0

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        self.taken += 1
        return self.lock.acquire(blocking, timeout)

    def release(self) -> None:
        self.lock.release()

    def __enter__(self) -> RecordingLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def test_netcdf_cubes_are_read_under_the_lock_of_the_map_writer(tmp_path, monkeypatch):
    """xarray reads a netCDF cube holding the lock the netCDF map writer's thread holds:
    netCDF-C is not thread-safe. Nothing imports xarray's private lock for it."""
    path = write_synthetic_cube("kaikoura", root=tmp_path, size=(40, 50), seed=3, fmt="netcdf")
    lock = RecordingLock()
    monkeypatch.setattr(cube_module, "NETCDF_LOCK", lock)
    with open_cube(path) as cube:
        before = lock.taken
        assert cube[get_region("kaikoura").names.vv].values.size
    assert lock.taken > before > 0
    package = Path(map_files.__file__).parent
    importers = [p for p in package.rglob("*.py") if "xarray.backends" in p.read_text()]
    assert importers == []
