"""Opening cubes: formats, read-only access, schema checks and their errors."""

import datetime as dt
import hashlib
import json
import logging
import math
import re
import warnings
from pathlib import Path

import cftime
import numpy as np
import pandas as pd
import pytest
import xarray as xr
import zarr

from landslide_lit.data.acquisitions import select_acquisitions
from landslide_lit.data.composite import CompositeSettings, build_composite
from landslide_lit.data.cube import (
    CubeError,
    acquisition_times,
    chunk_layouts,
    open_cube,
    open_region_cube,
)
from landslide_lit.regions import REGIONS, CubeNames, Region, get_region
from tests.cubes import TIMES, hand_cube

HOKKAIDO = get_region("hokkaido")


@pytest.mark.parametrize("fmt", ["zarr2", "zarr2-unconsolidated", "zarr3", "netcdf"])
def test_formats_open_lazily_and_identically(tmp_path, fmt):
    ds = hand_cube()
    path = tmp_path / ("cube.nc" if fmt == "netcdf" else "cube.zarr")
    if fmt == "netcdf":
        ds.to_netcdf(path)
    else:
        ds.to_zarr(
            path, zarr_format=3 if fmt == "zarr3" else 2, consolidated=fmt != "zarr2-unconsolidated"
        )
    opened = open_cube(path)
    # lazily backed: nothing loaded yet
    assert not opened["vv"].variable._in_memory
    xr.testing.assert_equal(
        opened.load()[["vv", "vh", "landslides"]], ds[["vv", "vh", "landslides"]]
    )
    assert list(opened["sat:orbit_state"].values) == list(ds["sat:orbit_state"].values)


def _digest(path: Path) -> dict[str, tuple[str, int]]:
    return {
        str(p.relative_to(path)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


def test_cube_is_never_written(tmp_path):
    path = tmp_path / "cube.zarr"
    hand_cube().to_zarr(path, zarr_format=2, consolidated=True)
    before = _digest(path)
    ds = open_cube(path)
    build_composite(ds, get_region("hokkaido"), "sar_dem")
    ds.close()
    assert _digest(path) == before


def test_yyyymmdd_string_timesteps(tmp_path):
    ds = hand_cube()
    ds = ds.assign_coords(timestep=[t.strftime("%Y%m%d") for t in ds.indexes["timestep"]])
    path = tmp_path / "cube.nc"
    ds.to_netcdf(path)
    times = acquisition_times(open_cube(path), CubeNames())
    assert times[0].isoformat() == "2018-08-10T00:00:00"


def test_missing_real_cube_names_zenodo_and_synthetic(tmp_path):
    with pytest.raises(CubeError) as err:
        open_region_cube(get_region("hokkaido"), root=tmp_path)
    message = str(err.value)
    assert "10.5281/zenodo.7248056" in message
    assert "hokkaido_japan.zarr" in message and "hokkaido_japan.zip" in message
    assert "landslide-lit synth --region hokkaido" in message


def test_missing_synthetic_cube_says_how_to_generate(tmp_path):
    with pytest.raises(CubeError, match="landslide-lit synth --region talakmau"):
        open_region_cube(REGIONS["talakmau"], root=tmp_path, synthetic=True)


def test_not_a_datacube(tmp_path):
    bogus = tmp_path / "cube.nc"
    bogus.write_text("not a netCDF file")
    with pytest.raises(CubeError, match="cannot read .*cube.nc.*corrupt"):
        open_cube(bogus)
    folder = tmp_path / "folder"
    folder.mkdir()
    with pytest.raises(CubeError, match="not a Zarr store"):
        open_cube(folder)


def test_corrupt_zarr_store(tmp_path):
    path = tmp_path / "cube.zarr"
    hand_cube().to_zarr(path, zarr_format=2, consolidated=True)
    (path / ".zmetadata").write_text("{broken")
    with pytest.raises(CubeError, match="cannot read .*cube.zarr"):
        open_cube(path)


def test_missing_variable_and_dimension(tmp_path):
    path = tmp_path / "novh.nc"
    hand_cube().drop_vars("vh").to_netcdf(path)
    with pytest.raises(CubeError, match="variable 'vh' missing.*names.vh"):
        open_cube(path)
    path = tmp_path / "notime.nc"
    hand_cube().isel(timestep=0).to_netcdf(path)
    with pytest.raises(CubeError, match=r"dimension\(s\) \['timestep'\] missing"):
        open_cube(path)


def test_remapped_names(tmp_path):
    path = tmp_path / "renamed.nc"
    hand_cube().rename({"vv": "VV", "timestep": "time"}).to_netcdf(path)
    ds = open_cube(path, CubeNames(vv="VV", time="time"))
    assert ds.sizes["time"] == 7


def test_unknown_region_lists_known_ones():
    with pytest.raises(ValueError, match="hokkaido, kaikoura, puerto_rico, talakmau"):
        get_region("atlantis")


def test_custom_region_and_data_root(tmp_path, monkeypatch):
    region = Region(name="mine", cube="mine.zarr", event_start="2020-01-01", event_end="2020-01-02")
    monkeypatch.setenv("LANDSLIDE_LIT_DATA", str(tmp_path))
    assert region.cube_path() == tmp_path / "mine.zarr"
    assert region.cube_path("/elsewhere") == Path("/elsewhere/mine.zarr")
    assert region.cube_path(synthetic=True) == tmp_path / "synthetic" / "mine.zarr"
    with pytest.raises(ValueError, match="event_end 2019-12-31 is before"):
        Region(name="bad", cube="x.zarr", event_start="2020-01-01", event_end="2019-12-31")


# -- damaged Zarr stores ---------------------------------------------------------------------

STORES = {
    "zarr2": {"zarr_format": 2, "consolidated": True},
    "zarr2-unconsolidated": {"zarr_format": 2, "consolidated": False},
    "zarr3": {"zarr_format": 3, "consolidated": False},
    "zarr3-consolidated": {"zarr_format": 3, "consolidated": True},
}


def write_chunked(path: Path, fmt: str, cube: xr.Dataset | None = None) -> Path:
    """A store of the hand cube, chunked 1 x 4 x 4, with every chunk file written."""
    cube = hand_cube() if cube is None else cube
    encoding = {
        name: {"chunks": (1, 4, 4)[-var.ndim :]} for name, var in cube.data_vars.items() if var.ndim
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zarr 3: consolidated metadata, string dtypes
        cube.to_zarr(path, encoding=encoding, write_empty_chunks=True, **STORES[fmt])
    return path


def chunk_file(path: Path, var: str, index: tuple[int, ...]) -> Path:
    return path / chunk_layouts(path)[var].key(index)


@pytest.fixture(params=list(STORES))
def store(request, tmp_path):
    return write_chunked(tmp_path / "cube.zarr", request.param)


def test_complete_store_has_no_damage(store):
    assert "chunk_damage" not in open_cube(store).encoding
    assert chunk_file(store, "vv", (3, 1, 0)).is_file()


def test_missing_sar_chunk_of_a_used_acquisition_is_an_error(store, caplog):
    chunk_file(store, "vv", (3, 1, 0)).unlink()  # 2018-09-03: a descending 'before' pass
    with caplog.at_level(logging.WARNING):
        ds = open_cube(store)
    assert "vv: 1 of 28 chunk files missing" in caplog.text
    assert "partial copy or unzip" in caplog.text
    settings = CompositeSettings(before=2)
    with pytest.raises(CubeError) as err:
        build_composite(ds, HOKKAIDO, "sar", settings)
    message = str(err.value)
    assert "variable 'vv': 1 chunk file(s) it needs are missing" in message
    assert "1 of 28 chunk files missing" in message and "2018-09-03" in message
    assert "download or unzip the cube again" in message
    assert "--data.composite.missing_chunks nodata" in message
    build_composite(ds, HOKKAIDO, ["vh_before", "dem"], settings)  # other variables: fine


def test_missing_chunk_of_an_unused_acquisition_is_no_error(store):
    chunk_file(store, "vv", (1, 0, 0)).unlink()  # 2018-08-22: ascending, not used
    build_composite(open_cube(store), HOKKAIDO, "sar", CompositeSettings(before=2))


def test_missing_chunks_as_nodata(store):
    chunk_file(store, "vv", (3, 1, 0)).unlink()  # rows 4-7, columns 0-3 of 2018-09-03
    chunk_file(store, "landslides", (0, 0)).unlink()
    settings = CompositeSettings(before=2, missing_chunks="nodata")
    out = build_composite(open_cube(store), HOKKAIDO, ["vv_before"], settings)
    image, label = out["image"].values[0], out["label"].values
    assert np.allclose(image[4:, :4], math.log(3))  # 2018-08-28 alone
    assert np.allclose(image[:4], (math.log(3) + math.log(4)) / 2)
    assert np.isnan(label[:4, :4]).all()
    np.testing.assert_array_equal(label[4:], hand_cube()["landslides"].values[4:])


def test_missing_label_chunk_is_an_error(store):
    chunk_file(store, "landslides", (1, 1)).unlink()
    with pytest.raises(CubeError, match="variable 'landslides': 1 chunk file.*1 of 4"):
        build_composite(open_cube(store), HOKKAIDO, ["dem"])


def test_missing_chunks_in_a_row_slice_of_the_cube(store):
    """A band of rows (as whole-region prediction reads) is located in the store's grid."""
    chunk_file(store, "vv", (3, 1, 0)).unlink()
    ds = open_cube(store)
    settings = CompositeSettings(before=2, missing_chunks="nodata")
    whole = build_composite(ds, HOKKAIDO, ["vv_before"], settings)["image"].values
    for y0, y1 in [(0, 3), (3, 6), (6, 8)]:
        band = build_composite(ds.isel(y=slice(y0, y1)), HOKKAIDO, ["vv_before"], settings)
        np.testing.assert_array_equal(band["image"].values, whole[:, y0:y1])
    with pytest.raises(CubeError, match="chunk file"):  # the whole store is judged
        build_composite(
            ds.isel(y=slice(0, 3)), HOKKAIDO, ["vv_before"], CompositeSettings(before=2)
        )


def test_missing_coordinate_chunk_is_an_error_at_open(store):
    chunk_file(store, "timestep", (0,)).unlink()
    with pytest.raises(CubeError, match="coordinates missing.*timestep: 1 of 1.*unzip"):
        open_cube(store)


def test_whole_array_folder_missing(tmp_path):
    """A consolidated store whose array folder was never unzipped: every chunk missing."""
    path = write_chunked(tmp_path / "cube.zarr", "zarr2")
    for file in (path / "vh").iterdir():
        if not file.name.startswith("."):
            file.unlink()
    with pytest.raises(CubeError, match="'vh': 8 chunk file.*28 of 28"):
        build_composite(open_cube(path), HOKKAIDO, "sar", CompositeSettings(before=2))


def test_nested_chunk_keys(tmp_path):
    """Zarr v2 with '/' as the dimension separator keeps chunks in nested folders."""
    cube = hand_cube()
    path = tmp_path / "cube.zarr"
    encoding = {"vv": {"chunks": (1, 4, 4)}}
    store_ = zarr.storage.LocalStore(path)
    cube.to_zarr(store_, zarr_format=2, encoding=encoding, write_empty_chunks=True)
    meta = json.loads((path / "vv" / ".zarray").read_text())
    if meta.get("dimension_separator") != "/":  # re-key the chunks as nested folders
        meta["dimension_separator"] = "/"
        (path / "vv" / ".zarray").write_text(json.dumps(meta))
        (path / ".zmetadata").unlink(missing_ok=True)
        for file in list((path / "vv").iterdir()):
            if not file.name.startswith("."):
                target = path / "vv" / Path(*file.name.split("."))
                target.parent.mkdir(parents=True, exist_ok=True)
                file.rename(target)
    assert (path / "vv" / "3" / "1" / "0").is_file()
    xr.testing.assert_equal(open_cube(path)["vv"].load(), cube["vv"])
    (path / "vv" / "3" / "1" / "0").unlink()
    with pytest.raises(CubeError, match="'vv': 1 chunk file"):
        build_composite(open_cube(path), HOKKAIDO, ["vv_before"], CompositeSettings(before=2))


def test_corrupt_chunk_names_file_variable_and_chunk(store):
    chunk = chunk_file(store, "vv", (3, 1, 0))
    chunk.write_bytes(b"\x00garbage" * 3)
    with pytest.raises(CubeError) as err:
        build_composite(open_cube(store), HOKKAIDO, "sar", CompositeSettings(before=2))
    message = str(err.value)
    assert str(store) in message and "variable 'vv' at timestep index 3" in message
    assert f"chunk {chunk.relative_to(store).as_posix()}" in message
    assert "corrupt or truncated" in message and "Traceback" not in message


# -- time coordinate encodings ---------------------------------------------------------------


def with_times(values) -> xr.Dataset:
    cube = hand_cube(times=pd.date_range("2018-09-01", periods=len(values)), orbits=None)
    if not isinstance(values, np.ndarray):
        values = np.array(values, dtype=object)
    return cube.assign_coords(timestep=values)


def utc_times(values) -> list[str]:
    return [t.isoformat() for t in acquisition_times(with_times(values), CubeNames(), "c.zarr")]


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (["20180905", "20180906"], ["2018-09-05T00:00:00", "2018-09-06T00:00:00"]),
        ([b"20180905", b"20180906"], ["2018-09-05T00:00:00", "2018-09-06T00:00:00"]),
        (np.array([20180905, 20180906]), ["2018-09-05T00:00:00", "2018-09-06T00:00:00"]),
        (
            ["2018-09-06T01:00:00+09:00", "2018-09-05T23:00:00Z"],
            ["2018-09-05T16:00:00", "2018-09-05T23:00:00"],
        ),
        (
            ["2018-09-05T23:00:00-03:00", "2018-09-05 10:00:00+00:00"],
            ["2018-09-06T02:00:00", "2018-09-05T10:00:00"],
        ),
        (["2018-09-05T20:48:10", "2018-09-06"], ["2018-09-05T20:48:10", "2018-09-06T00:00:00"]),
        (
            [
                dt.datetime(2018, 9, 5, 20, tzinfo=dt.timezone(dt.timedelta(hours=9))),
                pd.Timestamp("2018-09-06T00:00Z"),
            ],
            ["2018-09-05T11:00:00", "2018-09-06T00:00:00"],
        ),
        (
            [dt.datetime(2018, 9, 5, 20, 1, 2, 500), dt.datetime(2018, 9, 6)],
            ["2018-09-05T20:01:02.000500", "2018-09-06T00:00:00"],
        ),
        (
            [
                cftime.DatetimeGregorian(2018, 9, 5, 20),
                cftime.DatetimeProlepticGregorian(2018, 9, 6),
            ],
            ["2018-09-05T20:00:00", "2018-09-06T00:00:00"],
        ),
    ],
    ids=[
        "yyyymmdd",
        "bytes",
        "integers",
        "zones",
        "zones2",
        "naive",
        "aware-objects",
        "naive-objects",
        "cftime",
    ],
)
def test_time_encodings_are_read_exactly_in_utc(values, expected):
    assert utc_times(values) == expected


def test_event_days_are_utc_days():
    """09-06 01:00 in Japan is 09-05 16:00 UTC: before the Hokkaido event (day <= 09-05)."""
    cube = hand_cube(times=pd.date_range("2018-09-01", periods=7), orbits=None)
    local = [
        "2018-09-01T00:00Z",
        "2018-09-02T00:00Z",
        "2018-09-06T01:00:00+09:00",
        "2018-09-07T08:00:00+09:00",
        "2018-09-07T09:00:00+09:00",
        "2018-09-08T00:00Z",
        "2018-09-09T00:00Z",
    ]
    cube = cube.assign_coords(timestep=np.array(local, dtype=object))
    windows = select_acquisitions(cube, HOKKAIDO, CompositeSettings(before=1, orbit="none"))
    assert windows.before == (2,)  # 09-05T16:00Z; then 09-06T23:00Z is in neither window
    assert windows.after == (4,)  # 09-07T00:00Z


@pytest.mark.parametrize(
    ("values", "problem"),
    [
        (["2018-09-05T23:00:00+09:00", "2018-09-06T10:00:00"], "mixes times with a time zone"),
        (["05/09/2018", "06/09/2018"], r"holds '05/09/2018', not a date"),
        (["20180931", "20181001"], r"holds '20180931', not a date"),
        (np.array([1536105600, 1536192000]), r"holds np.int64\(1536105600\), not a date"),
        (np.array([1.5, 2.5]), r"not a date"),
        (["2018-09-05", None], r"holds nan, not a date"),
        (
            [cftime.Datetime360Day(2018, 9, 5), cftime.Datetime360Day(2018, 9, 6)],
            "'360_day' calendar",
        ),
    ],
    ids=[
        "naive-aware",
        "ambiguous-slashes",
        "no-such-day",
        "epoch-seconds",
        "floats",
        "none",
        "360-day",
    ],
)
def test_uninterpretable_times_are_one_exact_error(values, problem):
    with pytest.raises(CubeError) as err:
        utc_times(values)
    message = str(err.value)
    assert re.search(problem, message), message
    assert "c.zarr: coordinate 'timestep'" in message and "(values: " in message
    assert "ISO 8601" in message and "YYYYMMDD" in message


def test_missing_time_is_an_error():
    cube = hand_cube()
    times = cube["timestep"].values.copy()
    times[2] = np.datetime64("NaT")
    with pytest.raises(CubeError, match="missing times"):
        acquisition_times(cube.assign_coords(timestep=times), CubeNames())


def test_string_times_survive_netcdf_and_zarr(tmp_path):
    values = [f"2018-{t:%m-%d}T21:00:00+09:00" for t in TIMES]
    cube = hand_cube().assign_coords(timestep=values)
    for path in (tmp_path / "c.nc", tmp_path / "c.zarr"):
        cube.to_netcdf(path) if path.suffix == ".nc" else cube.to_zarr(path, zarr_format=2)
        times = acquisition_times(open_cube(path), CubeNames())
        assert times[0].isoformat() == "2018-08-10T12:00:00"


# -- duplicated acquisitions ----------------------------------------------------------------


def concat(cube: xr.Dataset, extra: xr.Dataset) -> xr.Dataset:
    """``cube`` with the timesteps of ``extra`` appended (time-less variables unchanged)."""
    return xr.concat(
        [cube, extra], dim="timestep", data_vars="minimal", coords="minimal", compat="override"
    )


def test_a_duplicated_acquisition_is_used_once():
    cube = hand_cube()
    doubled = concat(cube, cube.isel(timestep=[3]))  # 09-03 again, last
    doubled["vv"][-1] = 100.0  # if it were used, the mean would show it
    with pytest.warns(
        UserWarning, match=r"2018-09-03 00:00:00 at indices \[3, 7\] \(kept 3\).*not averaged twice"
    ):
        out = build_composite(doubled, HOKKAIDO, "sar", CompositeSettings(before=2))
    expected = build_composite(cube, HOKKAIDO, "sar", CompositeSettings(before=2))
    np.testing.assert_array_equal(out["image"].values, expected["image"].values)
    assert out.attrs["before_acquisitions"] == "2018-08-28,2018-09-03"


def test_duplicates_that_disagree_in_orbit_are_an_error():
    cube = hand_cube()
    twin = cube.isel(timestep=[3]).assign_coords({"sat:orbit_state": ("timestep", ["a"])})
    doubled = concat(cube, twin)
    with pytest.raises(CubeError, match=r"appears twice .* different orbits .*\['d', 'a'\]"):
        build_composite(doubled, HOKKAIDO, "sar", CompositeSettings(before=2))
