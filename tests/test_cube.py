"""Opening cubes: formats, read-only access, schema checks and their errors."""

import hashlib
from pathlib import Path

import pytest
import xarray as xr

from landslide_lit.data.composite import build_composite
from landslide_lit.data.cube import CubeError, acquisition_times, open_cube, open_region_cube
from landslide_lit.regions import REGIONS, CubeNames, Region, get_region
from tests.cubes import hand_cube


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
