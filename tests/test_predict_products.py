"""predict's responder products: the mask, polygons and summary written with the map.

Library-level runs map a small synthetic Talakmau cube (300 rows: bands of 256, so a seam)
with tiny models; command-line runs use a tiny fit on a 32 x 32 hand-made cube.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import xarray as xr

pytest.importorskip("rasterio")
pytest.importorskip("pyogrio")
pytest.importorskip("geopandas")

import pyogrio
import rasterio

from landslide_lit import map_files, maps
from landslide_lit.data import datamodule as datamodule_module
from landslide_lit.data.datamodule import LandslideDataModule
from landslide_lit.data.synthetic import write_synthetic_cube
from landslide_lit.ensemble import EnsembleSegmenter
from landslide_lit.errors import ConfigError
from landslide_lit.main import main
from landslide_lit.map_files import Block
from landslide_lit.maps import ProbabilityMapWriter
from landslide_lit.module import LandslideSegmenter
from landslide_lit.products import ProductPaths, ResponderProducts
from landslide_lit.rasters import Grid
from landslide_lit.thresholds import CONVENTION, ChosenThreshold
from tests.cogs import cog_problems
from tests.probability_maps import fake_windows
from tests.test_bad_input import QUIET, fit_args, good_cube, write_root
from tests.test_maps import write_map

TINY = {
    "encoder_name": "tu-test_resnet",
    "model_kwargs": {"encoder_depth": 3, "decoder_channels": [16, 8, 4]},
}
THRESHOLD = 0.57  # about the 0.85 quantile of the seed-0 model's map: many landslides
REGION = "talakmau"


def products(region: str = REGION) -> set[str]:
    """The files of the mask and polygons (and the mask's QGIS style)."""
    return {
        f"{region}_landslide_mask.tif",
        f"{region}_landslide_mask.qml",
        f"{region}_landslides.gpkg",
    }


def stored(max_f1: float, precision_07: float | None = None) -> dict:
    """Validation thresholds as ``fit`` stores them in a checkpoint."""
    points = {"max_f1": {"threshold": max_f1, "precision": 0.41, "recall": 0.52, "f1": 0.46}}
    if precision_07 is not None:
        points["precision@0.7"] = {
            "threshold": precision_07,
            "precision": 0.71,
            "recall": 0.2,
            "f1": 0.31,
        }
    return {
        "region": "hokkaido",
        "split": "val",
        "epoch": 3,
        "source": "validation pixels, exact",
        "convention": CONVENTION,
        "operating_points": points,
        "max_precision": 0.8,
    }


@pytest.fixture(scope="module")
def cube_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("products")
    write_synthetic_cube(REGION, root=root, size=(300, 292), seed=1)
    return root


def datamodule(root: Path) -> LandslideDataModule:
    return LandslideDataModule(
        root=str(root),
        synthetic=True,
        train_region=REGION,
        test_region=REGION,
        channels="sar_dem",
        cache=False,
        batch_size=4,
    )


def model(seed: int = 0, thresholds: dict | None = None) -> LandslideSegmenter:
    torch.manual_seed(seed)
    module = LandslideSegmenter(channel_names=list(datamodule(Path()).channel_names), **TINY)
    module.thresholds = thresholds
    return module.eval()


def predict(module, root: Path, folder: Path, **writer) -> Path:
    return write_map(module, datamodule(root), folder, **writer)


def layer(path: Path):
    """The polygons and every attribute, in a stable order."""
    frame = pyogrio.read_dataframe(path, layer="landslides")
    frame = frame.assign(wkt=frame.geometry.to_wkt()).sort_values("wkt")
    return frame.drop(columns="geometry").reset_index(drop=True)


def read_map(stem: Path) -> np.ndarray:
    with xr.open_dataset(stem.with_suffix(".nc")) as written:
        return written["landslide_probability"].values


def at_once(stem: Path, folder: Path, threshold: float) -> ProductPaths:
    """The products of predict's map labelled in one band of all its rows: no seam."""
    probability = read_map(stem)
    with rasterio.open(stem.with_suffix(".tif")) as src:
        grid = Grid(src.height, src.width, src.transform, src.crs.to_wkt())
    folder.mkdir()
    paths = ProductPaths.for_region(folder, REGION)
    products = ResponderProducts(paths, grid, ChosenThreshold(threshold, "fixed", "test"))
    valid = np.isfinite(probability)
    products.add(Block(0, 0, probability, valid, np.zeros_like(valid)))
    products.close()
    return paths


def in_one_process_merged(monkeypatch) -> None:
    """The DDP path (the ranks' sums merged at the end, rank 0 writes), in one process:
    the writer sees two processes, the data module one, and there is nothing to reduce."""
    monkeypatch.setattr(L.Trainer, "world_size", property(lambda self: 2))
    monkeypatch.setattr(datamodule_module, "rank_and_world", lambda trainer: (0, 1))
    monkeypatch.setattr(maps, "MERGE_PIXELS", 1)  # bands of 256 rows: a seam


@pytest.mark.parametrize("path", ["streamed", "merged"])
@pytest.mark.parametrize("members", [1, 2])
def test_predicts_products_are_those_of_its_map_labelled_at_once(
    cube_root, tmp_path, monkeypatch, path, members
):
    """Mask and polygons built block by block as the map streams (seams at row 256 and
    columns 128 and 256; the merged path of DDP too) equal those of the whole map at once,
    a landslide across a seam one polygon; an ensemble's come from its mean."""
    monkeypatch.setattr(map_files, "BLOCK_COLUMNS", 128)
    if path == "merged":
        in_one_process_merged(monkeypatch)
    module = model(0) if members == 1 else EnsembleSegmenter([model(0), model(1)])
    stem = predict(module, cube_root, tmp_path / "maps", threshold=str(THRESHOLD))
    expected = at_once(stem, tmp_path / "at_once", THRESHOLD)
    got, want = layer(tmp_path / "maps" / f"{REGION}_landslides.gpkg"), layer(expected.polygons)
    assert len(got) > 20
    # p_mean: sums over a landslide's pieces, in another order than over it at once
    np.testing.assert_allclose(got.pop("p_mean"), want.pop("p_mean"), rtol=1e-12)
    assert got.drop(columns=["before_acquisitions", "after_acquisitions"]).equals(want)
    with rasterio.open(stem.with_suffix(".tif")) as src:
        seam = src.transform.f + 256 * src.transform.e  # y of row 256's top edge
        seams = [src.transform.c + x * src.transform.a for x in (128, 256)]  # of columns
    frame = pyogrio.read_dataframe(tmp_path / "maps" / f"{REGION}_landslides.gpkg")
    bounds = frame.geometry.bounds
    assert ((bounds.miny < seam) & (bounds.maxy > seam)).sum() >= 1
    for x in seams:
        assert ((bounds.minx < x) & (bounds.maxx > x)).sum() >= 1
    probability = read_map(stem)
    mask = stem.parent / f"{REGION}_landslide_mask.tif"
    assert cog_problems(mask, predictor=2) == []
    with rasterio.open(mask) as src:
        expected_mask = np.where(np.isfinite(probability), probability >= THRESHOLD, 255)
        np.testing.assert_array_equal(src.read(1), expected_mask)
    if members == 2:
        with xr.open_dataset(stem.with_suffix(".nc")) as written:
            assert "landslide_probability_std" in written  # the map is the ensemble's
    assert not list(stem.parent.glob(".*"))  # nothing hidden left


def test_the_default_is_the_checkpoints_max_f1_and_polygonize_gives_the_same(
    cube_root, tmp_path, caplog
):
    """Default threshold: the model's stored max-F1 one, logged with where it came from;
    the map carries the thresholds, so `polygonize MAP --threshold max_f1` gives predict's
    polygons, geometries and attributes."""
    module = model(0, stored(THRESHOLD, 0.6))
    with caplog.at_level(logging.INFO, logger="landslide_lit"):
        stem = predict(module, cube_root, tmp_path / "maps", formats=["netcdf", "geotiff"])
    assert (
        f"landslide mask and polygons at threshold {THRESHOLD} (max_f1): max-F1 threshold of "
        "hokkaido validation, epoch 3, stored in the checkpoint (precision 0.41, recall 0.52)"
    ) in caplog.text
    folder = stem.parent
    summary = json.loads(stem.with_suffix(".json").read_text())
    assert summary["threshold"] == THRESHOLD and summary["threshold_rule"] == "max_f1"
    assert "max-F1 threshold of hokkaido" in summary["threshold_source"]
    assert summary["thresholds"]["precision@0.7"]["threshold"] == 0.6
    frame = pyogrio.read_dataframe(folder / f"{REGION}_landslides.gpkg")
    assert summary["landslides"] == len(frame) > 20
    assert summary["area_m2"] == pytest.approx(frame.area_m2.sum())
    assert sum(c["landslides"] for c in summary["by_p_mean"]) == len(frame)
    assert (
        set(summary["files"])
        == {p.name for p in folder.iterdir()}
        >= {
            *products(),
            f"{REGION}_landslide_probability.qml",
            f"{REGION}_landslide_probability.png",
            f"{REGION}_landslide_probability.json",
        }
    )
    assert set(frame.threshold) == {THRESHOLD} and set(frame.threshold_rule) == {"max_f1"}
    assert set(frame.after_acquisitions) == {summary["after_acquisitions"]}
    for suffix in (".nc", ".tif"):
        out = tmp_path / suffix.strip(".") / "again.gpkg"
        main(
            [
                "polygonize",
                str(stem.with_suffix(suffix)),
                "--threshold",
                "max_f1",
                "--out",
                str(out),
            ]
        )
        assert layer(out).equals(layer(folder / f"{REGION}_landslides.gpkg")), suffix


def test_threshold_none_writes_the_probability_map_alone(cube_root, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="landslide_lit"):
        stem = predict(model(0), cube_root, tmp_path, threshold="none", formats=["netcdf"])
    assert "--maps.threshold none: the probability map alone" in caplog.text
    assert not any(p.name in products() for p in tmp_path.iterdir())
    summary = json.loads(stem.with_suffix(".json").read_text())
    assert "threshold" not in summary and "landslides" not in summary


def test_a_model_without_thresholds_and_the_default_is_an_error_before_any_window(
    cube_root, tmp_path
):
    with pytest.raises(ConfigError, match=r"holds no thresholds chosen on validation"):
        predict(model(0), cube_root, tmp_path)
    assert list(tmp_path.iterdir()) == []


def without_the_responder_extra(monkeypatch) -> None:
    missing = {*maps.RESPONDER_MODULES, "rasterio"}
    real = maps.find_spec
    monkeypatch.setattr(maps, "find_spec", lambda name: None if name in missing else real(name))


def test_without_the_extra_the_default_writes_the_probability_map_and_says_why(
    cube_root, tmp_path, monkeypatch, caplog
):
    without_the_responder_extra(monkeypatch)
    module = model(0, stored(THRESHOLD))
    with caplog.at_level(logging.WARNING, logger="landslide_lit"):
        stem = predict(module, cube_root, tmp_path)
    assert "pip install 'landslide-lit[responder]'" in caplog.text
    assert "probability map alone" in caplog.text
    assert {p.name for p in tmp_path.iterdir()} == {
        f"{stem.name}.nc",
        f"{stem.name}.png",
        f"{stem.name}.json",
    }


@pytest.mark.parametrize(
    "options",
    [{"threshold": "0.3"}, {"threshold": "precision@0.7"}, {"min_area_m2": 100.0}],
)
def test_without_the_extra_asked_for_products_are_one_clear_error(monkeypatch, options):
    without_the_responder_extra(monkeypatch)
    with pytest.raises(
        ConfigError, match=r"need rasterio.*pip install 'landslide-lit\[responder\]'"
    ):
        ProbabilityMapWriter(**options)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"min_area_m2": -1.0}, r"--maps.min_area_m2 -1.0: give a number >= 0"),
        ({"simplify": float("nan")}, r"--maps.simplify nan"),
        ({"threshold": "none", "geojson": True}, r"--maps.threshold none turns the landslide"),
    ],
)
def test_bad_polygon_options_are_one_clear_error(options, message):
    with pytest.raises(ConfigError, match=message):
        ProbabilityMapWriter(**options)


def test_options_reach_the_polygons(cube_root, tmp_path):
    min_area = 5000.0
    predict(
        model(0),
        cube_root,
        tmp_path,
        threshold=str(THRESHOLD),
        min_area_m2=min_area,
        simplify=5.0,
        geojson=True,
        formats=["netcdf"],
    )
    frame = pyogrio.read_dataframe(tmp_path / f"{REGION}_landslides.gpkg")
    assert len(frame) > 0 and frame.area_m2.min() >= min_area
    assert (tmp_path / f"{REGION}_landslides.geojson").is_file()
    summary = json.loads((tmp_path / f"{REGION}_landslide_probability.json").read_text())
    assert summary["min_area_m2"] == min_area and summary["simplify"] == 5.0
    assert f"{REGION}_landslides.geojson" in summary["files"]


# -- the command line -----------------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    """A tiny fit's checkpoint with thresholds set to known values, and one without."""
    base = tmp_path_factory.mktemp("cli_products")
    root = base / "data"
    write_root(root, good_cube())
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(base)
        main(fit_args(root))
    (best,) = (base / "runs").rglob("best-*.ckpt")
    state = torch.load(best, weights_only=False)
    paths = {"root": root}
    for name, thresholds in (("chosen", stored(0.45, 0.5)), ("old", None)):
        if thresholds is None:
            state.pop("thresholds", None)
        else:
            state["thresholds"] = thresholds
        paths[name] = base / f"{name}.ckpt"
        torch.save(state, paths[name])
    return paths


def cli_predict(checkpoints, folder: Path, *extra: str, ckpt: str = "chosen") -> Path:
    """`landslide-lit predict` into ``folder``; the predictions folder."""
    out = folder / "maps"
    main(
        [
            "predict",
            "--ckpt_path",
            str(checkpoints[ckpt]),
            f"--data.root={checkpoints['root']}",
            "--region=hokkaido",
            f"--maps.output_dir={out}",
            *QUIET,
            *extra,
        ]
    )
    return out


@pytest.mark.parametrize(
    ("option", "value", "rule"),
    [
        ([], 0.45, "max_f1"),
        (["--maps.threshold", "precision@0.7"], 0.5, "precision@0.7"),
        (["--maps.threshold", "0.3"], 0.3, "fixed"),
    ],
)
def test_the_command_line_threshold(checkpoints, tmp_path, monkeypatch, capfd, option, value, rule):
    monkeypatch.chdir(tmp_path)
    out = cli_predict(checkpoints, tmp_path, *option)
    log = capfd.readouterr().err
    assert f"landslide mask and polygons at threshold {value:g} ({rule})" in log
    if rule != "fixed":
        assert "stored in chosen.ckpt" in log
    stem = out / "hokkaido_landslide_probability"
    summary = json.loads(stem.with_suffix(".json").read_text())
    assert summary["threshold"] == value and summary["threshold_rule"] == rule
    names = {p.name for p in out.iterdir()}
    assert names >= products("hokkaido") | {"hokkaido_landslide_probability.qml"}
    assert set(summary["files"]) == {p.name for p in out.iterdir()}
    with xr.open_dataset(stem.with_suffix(".nc")) as written:
        assert json.loads(written.attrs["thresholds"])["max_f1"]["threshold"] == 0.45
        assert written.attrs["threshold"] == value and written.attrs["threshold_rule"] == rule


def test_the_command_line_threshold_none(checkpoints, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = cli_predict(checkpoints, tmp_path, "--maps.threshold", "none")
    assert {p.suffix for p in out.iterdir()} == {".nc", ".tif", ".png", ".json", ".qml"}
    assert not any("mask" in p.name or p.suffix == ".gpkg" for p in out.iterdir())


@pytest.mark.parametrize(
    ("extra", "ckpt", "message"),
    [
        (
            ["--maps.threshold", "1.5"],
            "chosen",
            "--maps.threshold 1.5: a threshold is a probability",
        ),
        (["--maps.threshold", "precision@0.9"], "chosen", "highest precision 0.800"),
        ([], "old", "old.ckpt holds no thresholds chosen on validation"),
        (["--maps.min_area_m2", "-5"], "chosen", "--maps.min_area_m2 -5.0"),
    ],
)
def test_bad_thresholds_are_one_error_and_nothing_is_predicted(
    checkpoints, tmp_path, monkeypatch, capfd, extra, ckpt, message
):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stop:
        cli_predict(checkpoints, tmp_path, *extra, ckpt=ckpt)
    err = capfd.readouterr().err
    assert stop.value.code != 0 and err.count("error:") == 1 and message in err, err[-2000:]
    assert "Traceback" not in err
    assert list(tmp_path.iterdir()) == []  # no map, no run folder: found before any work


def colour_pixels(png: Path, colour: str) -> int:
    """How many pixels of the image are ``colour``."""
    from matplotlib.colors import to_rgb
    from matplotlib.image import imread

    image = imread(png)[..., :3]
    return int((np.abs(image - np.array(to_rgb(colour))).max(-1) < 0.02).sum())


def test_the_quicklook_outlines_predicted_and_mapped_landslides(cube_root, tmp_path):
    stem = predict(model(0), cube_root, tmp_path / "t", threshold="0.6", formats=["netcdf"])
    plain = predict(model(0), cube_root, tmp_path / "n", threshold="none", formats=["netcdf"])
    for png, predicted in ((stem.with_suffix(".png"), True), (plain.with_suffix(".png"), False)):
        assert (colour_pixels(png, map_files.PREDICTED_COLOUR) > 100) is predicted
        assert colour_pixels(png, map_files.MAPPED_COLOUR) > 100  # the synthetic labels


@pytest.mark.parametrize(
    ("coords", "crs", "labels"),
    [
        ({}, "EPSG:32654", ("easting (m, WGS 84 / UTM zone 54N)", "northing (m)")),
        (
            {"standard_name": "longitude", "units": "degrees_east"},
            "EPSG:4326",
            ("longitude (°, WGS 84)", "latitude (°)"),
        ),
    ],
)
def test_the_quicklook_axes_are_in_map_units(coords, crs, labels):
    windows = fake_windows(40, 50)
    windows.grid["x"].attrs.update(coords)
    windows.grid["spatial_ref"].attrs["crs_wkt"] = crs
    look = map_files.Quicklook(windows, {})
    assert look.axes.labels(look.step) == labels
    x, y = windows.grid["x"].values, windows.grid["y"].values
    assert look.axes.extent == (x[0] - 5, x[-1] + 5, y[-1] - 5, y[0] + 5)  # pixel edges


def test_without_coordinates_the_quicklook_axes_are_pixels():
    windows = fake_windows(40, 50)
    windows.grid = windows.grid.drop_vars(["x", "y"])
    look = map_files.Quicklook(windows, {})
    assert look.axes.extent is None and look.axes.labels(1) == ("x (pixels / 1)", "y (pixels / 1)")
