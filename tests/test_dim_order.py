"""Variables are read by dimension NAME: the order a cube stores them in never matters."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from landslide_lit.data.composite import CompositeSettings, build_composite
from landslide_lit.data.cube import CubeError, open_cube
from landslide_lit.data.datamodule import LandslideDataModule
from landslide_lit.data.windows import WindowDataset
from landslide_lit.regions import Region
from tests.cubes import textured_cube

SETTINGS = CompositeSettings(before=2, after=2, orbit="both")
CHANNELS = [
    "vv_before",
    "vh_before",
    "vv_after",
    "vh_after",
    "dem",
    "dem_slope_radians",
    "topophase.cor_1@1",
]
SHAPES = [(8, 8), (6, 10), (12, 5)]  # square and not, taller and wider


def layouts(ds: xr.Dataset) -> dict[str, xr.Dataset]:
    """The same cube stored canonically, with vv/vh (timestep, x, y), and all (..., x, y)."""
    swapped = ds.copy()
    for name in ("vv", "vh"):
        swapped[name] = ds[name].transpose("timestep", "x", "y")
    return {
        "canonical": ds,
        "sar_xy": swapped,
        "all_xy": ds.transpose(..., "x", "y"),
        "time_last": ds.transpose("x", "y", ...),
    }


def region_of(path) -> Region:
    return Region(name="tiny", cube=str(path), event_start="2018-09-05", event_end="2018-09-07")


@pytest.fixture(params=SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def stores(request, tmp_path):
    """Each layout of one textured cube, written as a Zarr store."""
    paths = {}
    for name, cube in layouts(textured_cube(*request.param)).items():
        paths[name] = tmp_path / f"{name}.zarr"
        cube.to_zarr(paths[name], zarr_format=3, consolidated=False)
    return paths


def test_layouts_really_differ(stores):
    opened = {k: open_cube(p) for k, p in stores.items()}
    assert opened["sar_xy"]["vv"].dims == ("timestep", "x", "y")
    assert opened["all_xy"]["landslides"].dims == ("x", "y")
    assert opened["all_xy"]["topophase.cor_1"].dims == ("timepair", "x", "y")
    assert opened["time_last"]["vv"].dims == ("x", "y", "timestep")


def test_composites_are_identical(stores):
    region = region_of(stores["canonical"])
    expected = build_composite(open_cube(stores["canonical"]), region, CHANNELS, SETTINGS)
    for name, path in stores.items():
        out = build_composite(open_cube(path), region, CHANNELS, SETTINGS)
        assert out["image"].dims == ("channel", "y", "x") and out["label"].dims == ("y", "x"), name
        np.testing.assert_array_equal(out["image"].values, expected["image"].values, err_msg=name)
        np.testing.assert_array_equal(out["label"].values, expected["label"].values, err_msg=name)
        np.testing.assert_array_equal(out["y"].values, expected["y"].values)
        np.testing.assert_array_equal(out["x"].values, expected["x"].values)


@pytest.mark.parametrize("reducer", ["mean", "median"])
def test_in_memory_layouts_are_identical(reducer):
    settings = CompositeSettings(before=2, after=1, reducer=reducer)
    cubes = layouts(textured_cube(6, 9))
    expected = build_composite(cubes["canonical"], region_of("x.zarr"), CHANNELS, settings)
    for cube in cubes.values():
        out = build_composite(cube, region_of("x.zarr"), CHANNELS, settings)
        xr.testing.assert_identical(out, expected)


def test_chips_are_identical(stores):
    chips = {}
    for name, path in stores.items():
        dm = LandslideDataModule(
            train_region=region_of(path),
            test_region=region_of(path),
            channels=CHANNELS,
            composite=SETTINGS,
            chip_size=4,
            predict_overlap=0,
            stride=2,
            keep="valid",
            cache=False,
        )
        chips[name] = dm.chips(dm.train_region)
    expected = chips["canonical"]
    for name, got in chips.items():
        assert torch_equal(got.images, expected.images), name
        assert torch_equal(got.targets, expected.targets), name
        assert torch_equal(got.origins, expected.origins), name


def torch_equal(a, b) -> bool:
    return a.shape == b.shape and np.array_equal(a.numpy(), b.numpy(), equal_nan=True)


def test_map_windows_are_identical(stores, monkeypatch):
    from landslide_lit.data import windows

    monkeypatch.setattr(windows, "BAND_ROWS", 4)  # several bands: row slices of the cube
    items = {}
    for name, path in stores.items():
        dataset = WindowDataset(path, region_of(path), CHANNELS, SETTINGS, size=4, overlap=1)
        items[name] = [dataset[i] for i in range(len(dataset))]
    for name, got in items.items():
        for a, b in zip(got, items["canonical"], strict=True):
            assert torch_equal(a["image"], b["image"]), name
            assert torch_equal(a["target"], b["target"]), name
            assert torch_equal(a["origin"], b["origin"]), name


def test_an_extra_dimension_is_one_clear_error(tmp_path):
    cube = textured_cube()
    banded = cube.assign(vv=cube["vv"].expand_dims(band=2))
    path = tmp_path / "banded.zarr"
    banded.to_zarr(path, zarr_format=2)
    with pytest.raises(
        CubeError, match=r"variable 'vv' has dimensions \('band', 'timestep'.*extra: \['band'\]"
    ):
        open_cube(path)
    labelled = cube.assign(landslides=cube["landslides"].expand_dims(band=1))
    with pytest.raises(CubeError, match=r"variable 'landslides' has dimensions"):
        build_composite(labelled, region_of(path), ["dem"])
