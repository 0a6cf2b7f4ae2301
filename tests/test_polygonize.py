"""`landslide-lit polygonize`: an existing map re-thresholded through the products' code path."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("rasterio")
pytest.importorskip("pyogrio")
pytest.importorskip("geopandas")

import pyogrio
import rasterio
import xarray as xr

from landslide_lit.main import main
from landslide_lit.products import ChosenThreshold, ProductPaths, ResponderProducts
from tests.cogs import cog_problems
from tests.probability_maps import CRS, blocks_of, grid, probability_field, write_map

HEIGHT, WIDTH = 300, 260  # two bands of rows: landslides cross the seam


@pytest.fixture(scope="module")
def field():
    return probability_field(HEIGHT, WIDTH, seed=1)


@pytest.fixture(scope="module")
def stem(tmp_path_factory, field):
    """predict's map files (netCDF and GeoTIFF) of ``field``, carrying validation thresholds."""
    thresholds = json.dumps({"max_f1": {"threshold": 0.6, "f1": 0.4}, "precision@0.7": 0.75})
    attrs = {"checkpoint": "runs/best.ckpt", "thresholds": thresholds}
    return write_map(tmp_path_factory.mktemp("maps"), field, attrs=attrs)


def direct(tmp_path, field, threshold: float):
    """The products of ``field``'s bands fed to ResponderProducts, as predict feeds them."""
    paths = ProductPaths.for_region(tmp_path / "direct", "direct")
    paths.polygons.parent.mkdir()
    products = ResponderProducts(paths, grid(*field.shape), ChosenThreshold(threshold, "", ""))
    for block in blocks_of(field):
        products.add(block)
    products.close()
    return paths


def layer(path):
    """The polygons' geometry and measures, in a stable order."""
    frame = pyogrio.read_dataframe(path, layer="landslides")
    frame = frame.assign(wkt=frame.geometry.to_wkt()).sort_values("wkt")
    return frame[["wkt", "pixels", "area_m2", "p_mean", "p_max"]].reset_index(drop=True)


def polygonize(*args: str) -> None:
    main(["polygonize", *map(str, args)])


@pytest.mark.parametrize("suffix", [".nc", ".tif"])
def test_polygonize_gives_the_polygons_of_the_products_code_path(tmp_path, stem, field, suffix):
    out = tmp_path / "out" / "slides.gpkg"
    polygonize(stem.with_suffix(suffix), "--threshold", "0.55", "--out", out)
    expected = direct(tmp_path, field, 0.55)
    got, want = layer(out), layer(expected.polygons)
    assert len(got) > 5
    assert got.equals(want)
    mask = tmp_path / "out" / "slides_mask.tif"
    assert cog_problems(mask, predictor=2) == []
    with rasterio.open(mask) as src, rasterio.open(expected.mask) as reference:
        np.testing.assert_array_equal(src.read(1), reference.read(1))
        assert src.crs.to_string() == CRS and src.transform == reference.transform
    summary = json.loads(out.with_suffix(".json").read_text())
    assert summary["threshold"] == 0.55 and summary["threshold_rule"] == "fixed"
    assert summary["landslides"] == len(got) and summary["map"].endswith(suffix)
    assert set(summary["files"]) == {
        "slides_mask.tif",
        "slides_mask.qml",
        "slides.gpkg",
        "slides.json",
    }
    attributes = pyogrio.read_dataframe(out, layer="landslides")
    assert set(attributes.checkpoint) == {"runs/best.ckpt"}


def test_a_rule_name_takes_the_threshold_the_map_carries(tmp_path, stem, capsys):
    out = tmp_path / "rule.gpkg"
    polygonize(stem.with_suffix(".nc"), "--threshold", "max_f1", "--out", out, "--geojson")
    summary = json.loads(out.with_suffix(".json").read_text())
    assert summary["threshold"] == 0.6 and summary["threshold_rule"] == "max_f1"
    assert "runs/best.ckpt" in summary["threshold_source"]
    assert pyogrio.read_info(out.with_suffix(".geojson"))["crs"] == "EPSG:4326"
    assert "threshold 0.6 (max_f1" in capsys.readouterr().out


def test_without_out_the_products_go_beside_the_map(tmp_path, field, capsys):
    stem = write_map(tmp_path, field, formats=["geotiff"], region="nepal")
    polygonize(stem.with_suffix(".tif"), "--threshold", "0.7", "--min-area-m2", "500")
    assert "writing beside the map" in capsys.readouterr().out
    names = {p.name for p in tmp_path.iterdir()}
    assert {"nepal_landslide_mask.tif", "nepal_landslides.gpkg", "nepal_landslides.json"} <= names
    frame = pyogrio.read_dataframe(tmp_path / "nepal_landslides.gpkg")
    assert (frame.area_m2 >= 500).all() and not [n for n in names if n.startswith(".")]


def test_a_map_without_crs_is_one_clear_error(tmp_path, field, capsys):
    stem = write_map(tmp_path, field, formats=["netcdf"], crs=False)
    with pytest.raises(SystemExit) as stop:
        polygonize(stem.with_suffix(".nc"), "--threshold", "0.5")
    err = capsys.readouterr().err
    assert stop.value.code != 0 and err.count("error:") == 1 and "no CRS" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == [stem.name + ".json", stem.name + ".nc"]


def not_a_map(folder):
    path = folder / "cube.nc"
    xr.Dataset({"vv": (("y", "x"), np.zeros((2, 2)))}).to_netcdf(path)
    return path


@pytest.mark.parametrize(
    ("args", "expect"),
    [
        (lambda s, t: [s.with_suffix(".nc"), "--threshold", "1.5"], r"outside [0, 1]"),
        (lambda s, t: [s.with_suffix(".tif"), "--threshold", "-0.1"], r"outside [0, 1]"),
        (lambda s, t: [s.with_suffix(".nc"), "--threshold", "nan"], r"outside [0, 1]"),
        (lambda s, t: [t / "none.nc", "--threshold", "0.5"], "none.nc"),
        (lambda s, t: [not_a_map(t), "--threshold", "0.5"], "'landslide_probability'"),
        (lambda s, t: [s.with_suffix(".json"), "--threshold", "0.5"], ".nc) or GeoTIFF"),
        (lambda s, t: [s.with_suffix(".nc"), "--threshold", "max_f2"], "max_f1, precision@0.7"),
        (lambda s, t: [s.with_suffix(".nc")], "--threshold"),
        (lambda s, t: [s.with_suffix(".nc"), "--threshold", "0.5", "--out", t / "x.shp"], ".gpkg"),
        (lambda s, t: [s.with_suffix(".nc"), "--threshold", "0.5", "--min-area-m2", "-1"], "-1"),
        (
            lambda s, t: [s.with_suffix(".nc"), "--threshold=0.5", f"--out={s}.gpkg"],
            "replace the map",
        ),
    ],
    ids=[
        "threshold above 1",
        "threshold below 0",
        "threshold nan",
        "missing map",
        "not a probability map",
        "not a map format",
        "unknown rule",
        "no threshold",
        "out not gpkg",
        "negative min area",
        "out over the map",
    ],
)
def test_bad_input_is_one_clear_error(tmp_path, stem, args, expect, capsys):
    with pytest.raises(SystemExit) as stop:
        polygonize(*args(stem, tmp_path))
    err = capsys.readouterr().err
    assert stop.value.code != 0 and err.count("error:") == 1 and expect in err, err
    assert list(tmp_path.glob("*.gpkg")) == []


def test_a_rule_name_needs_a_map_with_thresholds(tmp_path, field, capsys):
    stem = write_map(tmp_path, field, formats=["netcdf"])
    with pytest.raises(SystemExit):
        polygonize(stem.with_suffix(".nc"), "--threshold", "max_f1")
    assert "carries no validation thresholds" in capsys.readouterr().err
