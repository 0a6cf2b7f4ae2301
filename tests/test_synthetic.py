"""Synthetic cubes: the real schema, code written for the real cubes, physics, writing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from scipy import ndimage

from landslide_lit.data import synthetic
from landslide_lit.data.chunks import chunk_layouts, present_chunks
from landslide_lit.data.cube import open_cube
from landslide_lit.data.synthetic import (
    PRESETS,
    make_synthetic_cube,
    synthetic_landslides,
    write_synthetic_cube,
)
from landslide_lit.regions import REGIONS, CubeNames, Region

SIZE = (512, 512)  # 16 chips of 128 x 128: enough for chip statistics, ~1 s per region
CHIP = 128
ORBITS = {
    "hokkaido": tuple("ddadddaddaddaddaddadaddadd"),
    "talakmau": tuple("adadadadadadadaaaaaa"),
    "kaikoura": ("ascending",) * 5,
    "puerto_rico": None,
}
# acquisitions (before, after) the event in the region's default orbit
COUNTS = {"hokkaido": (13, 5), "talakmau": (5, 2), "kaikoura": (3, 2), "puerto_rico": (8, 4)}
PAIR_VARIABLES = ("topophase.cor_1", "phsig.cor", "los.rdr_0", "los.rdr_1")
YX_VARIABLES = ("dem", "dem_slope_radians", "dem_aspect", "dem_curvature", "landslides")


@pytest.fixture(scope="module")
def cubes() -> dict[str, xr.Dataset]:
    return {name: make_synthetic_cube(name, size=SIZE) for name in PRESETS}


def default_orbit(ds: xr.Dataset, region: str) -> xr.Dataset:
    """The acquisitions of the region's default orbit ('ascending' counts as 'a')."""
    if "sat:orbit_state" not in ds.coords:
        return ds
    letters = np.array([str(o)[0] for o in ds["sat:orbit_state"].values])
    return ds.isel(timestep=letters == REGIONS[region].orbit)


def before_after(ds: xr.Dataset, region: str) -> tuple[np.ndarray, np.ndarray]:
    days = ds.timestep.values.astype("datetime64[D]")
    reg = REGIONS[region]
    before = np.flatnonzero(days <= np.datetime64(reg.event_start))
    after = np.flatnonzero(days >= np.datetime64(reg.event_end))
    return before, after


def chip_counts(landslides: np.ndarray) -> np.ndarray:
    """Landslide pixels per complete 128 x 128 chip."""
    rows, cols = (n // CHIP for n in landslides.shape)
    chips = landslides[: rows * CHIP, : cols * CHIP].reshape(rows, CHIP, cols, CHIP)
    return chips.sum(axis=(1, 3))


def default_landslides(region: str) -> np.ndarray:
    """The landslide mask of the region's default-size cube (seed 0), without backscatter."""
    return synthetic_landslides(region)


def spans_event(pair: str, region: str) -> bool:
    reg = REGIONS[region]
    first, second = pair.split("_")
    return first <= reg.event_start.replace("-", "") and second >= reg.event_end.replace("-", "")


# --- schema -----------------------------------------------------------------------------


@pytest.mark.parametrize("region", list(PRESETS))
def test_schema_matches_the_real_cubes(cubes: dict[str, xr.Dataset], region: str) -> None:
    ds = cubes[region]
    assert set(ds.dims) == {"timestep", "timepair", "y", "x"}
    assert ds.sizes["timestep"] == len(PRESETS[region].times)
    assert (ds.sizes["y"], ds.sizes["x"]) == SIZE
    for name in ("vv", "vh"):
        assert ds[name].dims == ("timestep", "y", "x")
        assert ds[name].dtype == np.float32
        values = ds[name].values
        assert np.all(values[np.isfinite(values)] > 0)
        assert 0 < np.isnan(values).mean() < 0.05  # layover and shadow only
    for name in YX_VARIABLES:
        assert ds[name].dims == ("y", "x") and ds[name].dtype == np.float32
    for name in PAIR_VARIABLES:
        assert ds[name].dims == ("timepair", "y", "x") and ds[name].dtype == np.float32
    slope, aspect = ds.dem_slope_radians.values, ds.dem_aspect.values
    assert slope.min() >= 0 and slope.max() < np.pi / 2
    assert aspect.min() >= 0 and aspect.max() < 360
    labels = ds.landslides.values
    assert set(np.unique(labels[np.isfinite(labels)])) == {0.0, 1.0}
    assert np.array_equal(np.isnan(labels), ds.dem.values <= 0)  # unmapped sea only
    coherence = ds["topophase.cor_1"].values
    assert np.nanmin(coherence) >= 0 and np.nanmax(coherence) <= 1
    assert 30 < np.nanmin(ds["los.rdr_0"].values) < np.nanmax(ds["los.rdr_0"].values) < 45
    assert ds.timestep.dtype == np.dtype("datetime64[ns]")
    assert np.all(np.diff(ds.timestep.values) > np.timedelta64(0))


@pytest.mark.parametrize("region", list(PRESETS))
def test_coordinates_and_tags(cubes: dict[str, xr.Dataset], region: str) -> None:
    ds, preset = cubes[region], PRESETS[region]
    assert np.allclose(np.diff(ds.x.values), 10) and np.allclose(np.diff(ds.y.values), -10)
    assert ds.x.values[0] == preset.origin[0] + 5 and ds.y.values[0] == preset.origin[1] - 5
    assert ds.attrs["crs"] == f"EPSG:{preset.epsg}"
    assert f'AUTHORITY["EPSG","{preset.epsg}"]]' in ds.spatial_ref.attrs["crs_wkt"]
    assert ds.attrs["synthetic"] == 1 and isinstance(ds.attrs["synthetic"], int)
    assert ds.attrs["synthetic_preset"] == region and ds.attrs["synthetic_seed"] == 0
    assert "synthetic" in ds.attrs["title"].lower() and "not observed" in ds.attrs["source"]


@pytest.mark.parametrize("region", list(PRESETS))
def test_orbit_sequence_is_the_real_one(cubes: dict[str, xr.Dataset], region: str) -> None:
    ds = cubes[region]
    if ORBITS[region] is None:
        assert "sat:orbit_state" not in ds.variables
    else:
        assert tuple(ds["sat:orbit_state"].values) == ORBITS[region]
        assert ds["sat:orbit_state"].dims == ("timestep",)


@pytest.mark.parametrize("region", list(PRESETS))
def test_acquisitions_before_and_after_the_event(cubes: dict[str, xr.Dataset], region: str) -> None:
    ds = default_orbit(cubes[region], region)
    before, after = before_after(ds, region)
    assert (len(before), len(after)) == COUNTS[region]
    assert len(before) + len(after) == ds.sizes["timestep"]  # none between the event days


def test_timepairs_are_consecutive_same_orbit_pairs(cubes: dict[str, xr.Dataset]) -> None:
    ds = cubes["hokkaido"]
    days = [str(d)[:10].replace("-", "") for d in ds.timestep.values.astype("datetime64[D]")]
    orbit = dict(zip(days, ds["sat:orbit_state"].values.tolist(), strict=True))
    pairs = [str(p).split("_") for p in ds.timepair.values]
    assert len(pairs) == (18 - 1) + (8 - 1)
    for first, second in pairs:
        assert orbit[first] == orbit[second] and first < second
        between = [d for d in days if first < d < second and orbit[d] == orbit[first]]
        assert not between


# --- code written for the real cubes ----------------------------------------------------


@pytest.mark.parametrize("timestep_format", ["datetime", "yyyymmdd"])
@pytest.mark.parametrize("fmt", ["zarr", "netcdf"])
def test_real_code_runs_unchanged(tmp_path: Path, fmt: str, timestep_format: str) -> None:
    path = write_synthetic_cube(
        "hokkaido", root=tmp_path, size=(64, 96), fmt=fmt, timestep_format=timestep_format
    )
    suffix = ".zarr" if fmt == "zarr" else ".nc"
    assert path == tmp_path / "synthetic" / f"hokkaido_japan{suffix}"
    ds = xr.open_zarr(path) if fmt == "zarr" else xr.open_dataset(path)
    descending = ds["sat:orbit_state"] == "d"
    assert int(descending.sum()) == 18
    # open_zarr leaves non-index coordinates lazy, as it would for the real cubes
    sar = ds.isel(timestep=descending.values).drop_dims("timepair")
    assert set(sar.data_vars) == {"vv", "vh", *YX_VARIABLES}
    before = sar.sel(timestep=slice(None, "20180905"))
    after = sar.sel(timestep=slice("20180907", None))
    assert (before.sizes["timestep"], after.sizes["timestep"]) == COUNTS["hokkaido"]
    expected = make_synthetic_cube("hokkaido", size=(64, 96), timestep_format=timestep_format)
    np.testing.assert_array_equal(ds.vv.values, expected.vv.values)
    np.testing.assert_array_equal(ds.timepair.values.astype(str), expected.timepair.values)
    assert ds.attrs["synthetic"] == 1


def test_zarr_is_format_2_consolidated_and_chunked_by_timestep(tmp_path: Path) -> None:
    path = write_synthetic_cube("kaikoura", root=tmp_path, size=(600, 40))
    assert json.loads((path / ".zgroup").read_text())["zarr_format"] == 2
    assert "metadata" in json.loads((path / ".zmetadata").read_text())
    ds = xr.open_zarr(path, consolidated=True)
    assert ds.vv.encoding["chunks"] == (1, 512, 40)
    assert ds["topophase.cor_1"].encoding["chunks"] == (1, 512, 40)
    assert ds.dem.encoding["chunks"] == (512, 40)
    assert ds.vv.chunks[0] == (1,) * 5  # lazy, one timestep per chunk


def test_zarr_has_every_chunk_file(tmp_path: Path) -> None:
    """No chunk is left out for equalling the fill value, so the missing-chunk check holds."""
    path = write_synthetic_cube("hokkaido", root=tmp_path, size=(600, 40))
    layouts = chunk_layouts(path)
    assert {"vv", "landslides", "timestep", "sat:orbit_state"} <= set(layouts)
    missing = {name: int((~present_chunks(lay)).sum()) for name, lay in layouts.items()}
    assert not any(missing.values()), missing
    assert "chunk_damage" not in open_cube(path).encoding


def test_netcdf_is_compressed(tmp_path: Path) -> None:
    path = write_synthetic_cube("talakmau", root=tmp_path, size=(32, 32), fmt="netcdf")
    with xr.open_dataset(path) as ds:
        assert ds.vv.encoding["zlib"] and ds.vv.encoding["chunksizes"] == (1, 32, 32)
        assert tuple(ds["sat:orbit_state"].values) == ORBITS["talakmau"]


# --- determinism ------------------------------------------------------------------------


def test_same_seed_same_cube_other_seed_other_cube() -> None:
    first = make_synthetic_cube("puerto_rico", size=(48, 64), seed=7)
    xr.testing.assert_identical(first, make_synthetic_cube("puerto_rico", size=(48, 64), seed=7))
    other = make_synthetic_cube("puerto_rico", size=(48, 64), seed=8)
    assert not np.array_equal(first.dem.values, other.dem.values)
    assert not np.allclose(first.vv.values, other.vv.values, equal_nan=True)
    assert other.attrs["synthetic_seed"] == 8


# --- statistics -------------------------------------------------------------------------


def test_presets_carry_the_published_statistics() -> None:
    assert PRESETS["hokkaido"].cover.vv_log10 == (-0.73, 0.21)
    assert PRESETS["hokkaido"].cover.vh_log10 == (-1.32, 0.19)
    assert PRESETS["kaikoura"].cover.vv_log10 == (-0.99, 0.27)
    assert PRESETS["kaikoura"].cover.vh_log10 == (-1.61, 0.24)


@pytest.mark.parametrize("region", list(PRESETS))
def test_log_backscatter_statistics(cubes: dict[str, xr.Dataset], region: str) -> None:
    """Land log10 backscatter matches the preset (datacube.md for Hokkaido and Kaikoura).

    The generator calibrates the land mean exactly and the std up to the post-event change
    and point targets; 0.015 leaves room for those and for the speckle sample.
    """
    ds, cover = cubes[region], PRESETS[region].cover
    land = ds.dem.values > 0
    for name, (mean, std) in (("vv", cover.vv_log10), ("vh", cover.vh_log10)):
        values = np.log10(ds[name].values[:, land])
        values = values[np.isfinite(values)]
        assert values.mean() == pytest.approx(mean, abs=0.015)
        assert values.std() == pytest.approx(std, abs=0.015)


@pytest.mark.parametrize("region", list(PRESETS))
def test_landslides_fill_5_to_12_percent_of_positive_chips(region: str) -> None:
    counts = chip_counts(default_landslides(region))
    positive = counts > 0
    assert 0.4 * counts.size < positive.sum() < 0.9 * counts.size  # a good share, not all
    assert 0.05 <= counts[positive].sum() / (positive.sum() * CHIP * CHIP) <= 0.12


@pytest.mark.slow
@pytest.mark.parametrize("region", list(PRESETS))
def test_default_cube_has_those_landslides(region: str) -> None:
    cube = make_synthetic_cube(region)
    assert np.array_equal(cube.landslides.fillna(0).values > 0, default_landslides(region))


# --- physics ----------------------------------------------------------------------------


@pytest.mark.parametrize("region", list(PRESETS))
def test_slope_aspect_curvature_follow_the_dem(cubes: dict[str, xr.Dataset], region: str) -> None:
    ds = cubes[region]
    dem = ds.dem.values.astype(np.float64)
    d_north, d_east = np.gradient(dem, -10.0, 10.0)  # y decreases down the rows
    np.testing.assert_allclose(
        ds.dem_slope_radians.values, np.arctan(np.hypot(d_east, d_north)), atol=1e-4
    )
    steep = np.hypot(d_east, d_north) > 0.05
    downslope = np.degrees(np.arctan2(-d_east, -d_north)) % 360
    error = (ds.dem_aspect.values - downslope + 180) % 360 - 180
    assert np.abs(error[steep]).max() < 0.1
    # two pixels along the aspect is lower ground
    rows, cols = np.nonzero(steep[3:-3, 3:-3])
    rows, cols = rows + 3, cols + 3
    angle = np.radians(ds.dem_aspect.values[rows, cols])
    ahead = dem[
        np.rint(rows - 2 * np.cos(angle)).astype(int), np.rint(cols + 2 * np.sin(angle)).astype(int)
    ]
    assert (ahead < dem[rows, cols]).mean() > 0.95
    # convex ground (above its surroundings) has positive curvature
    relief = dem - ndimage.gaussian_filter(dem, 5)
    assert np.corrcoef(relief.ravel(), ds.dem_curvature.values.ravel())[0, 1] > 0.5


@pytest.mark.parametrize("region", list(PRESETS))
def test_landslides_are_on_steep_land_and_point_downslope(
    cubes: dict[str, xr.Dataset], region: str
) -> None:
    ds = cubes[region]
    slide = ds.landslides.fillna(0).values > 0
    land = ds.dem.values > 0
    slope = np.degrees(ds.dem_slope_radians.values)
    assert slope[slide].mean() > slope[land & ~slide].mean() + 2.5
    # a landslide pixel's neighbour 3 px downslope is more often landslide than 3 px across
    rows, cols = np.nonzero(slide[4:-4, 4:-4])
    rows, cols = rows + 4, cols + 4
    angle = np.radians(ds.dem_aspect.values[rows, cols])
    along = slide[
        np.rint(rows - 3 * np.cos(angle)).astype(int), np.rint(cols + 3 * np.sin(angle)).astype(int)
    ]
    across = slide[
        np.rint(rows + 3 * np.sin(angle)).astype(int), np.rint(cols + 3 * np.cos(angle)).astype(int)
    ]
    assert along.mean() > across.mean() + 0.05


def test_ascending_and_descending_passes_see_the_terrain_differently(
    cubes: dict[str, xr.Dataset],
) -> None:
    ds = cubes["hokkaido"]
    orbit = ds["sat:orbit_state"].values
    log_vv = np.log10(ds.vv.isel(timestep=slice(0, 18)))  # before the event
    first, second = (log_vv.isel(timestep=np.flatnonzero(orbit[:18] == "d")[i::2]) for i in (0, 1))
    asc = log_vv.isel(timestep=np.flatnonzero(orbit[:18] == "a"))

    def corr(a: xr.DataArray, b: xr.DataArray) -> float:
        a, b = a.mean("timestep").values.ravel(), b.mean("timestep").values.ravel()
        ok = np.isfinite(a) & np.isfinite(b)
        return float(np.corrcoef(a[ok], b[ok])[0, 1])

    assert corr(first, asc) < corr(first, second) - 0.1


@pytest.mark.parametrize("region", list(PRESETS))
def test_landslides_change_after_the_event_only(cubes: dict[str, xr.Dataset], region: str) -> None:
    """VH on landslides drops against other land after the event, not between earlier dates.

    The landslides lose 0.9-1.6 dB on average; per-date canopy and moisture patterns move
    the landslide clusters against the rest by up to ~0.5 dB (0.05 in log10) by chance.
    """
    ds = default_orbit(cubes[region], region)
    before, after = before_after(ds, region)
    slide = ds.landslides.values > 0
    other = (ds.dem.values > 0) & ~slide
    log_vh = np.log10(ds.vh.values)

    def relative_change(later: np.ndarray, earlier: np.ndarray) -> float:
        change = log_vh[later].mean(axis=0) - log_vh[earlier].mean(axis=0)
        return float(np.nanmean(change[slide]) - np.nanmean(change[other]))

    assert relative_change(after[:1], before[-3:]) < -0.06
    assert abs(relative_change(before[-1:], before[-3:-1])) < 0.05


@pytest.mark.parametrize("region", list(PRESETS))
def test_coherence_drops_over_pairs_spanning_the_event(
    cubes: dict[str, xr.Dataset], region: str
) -> None:
    ds = cubes[region]
    span = np.array([spans_event(str(p), region) for p in ds.timepair.values])
    assert 0 < span.sum() < span.size
    coherence = ds["topophase.cor_1"].values
    slide = ds.landslides.values > 0
    land = ds.dem.values > 0
    assert np.nanmean(coherence[span][:, slide]) < np.nanmean(coherence[~span][:, slide]) - 0.1
    assert np.nanmean(coherence[span][:, land]) < np.nanmean(coherence[~span][:, land])


# --- other regions ----------------------------------------------------------------------


def test_custom_region_uses_its_dates_orbit_and_names() -> None:
    region = Region(
        name="my_valley",
        cube="my_valley.zarr",
        event_start="2021-06-01",
        event_end="2021-06-03",
        orbit="none",
        names=CubeNames(time="time", vv="VV", landslides="target"),
    )
    ds = make_synthetic_cube(region, size=(32, 32))
    assert {"time", "VV", "target"} <= set(ds.variables) and "vv" not in ds.variables
    assert "sat:orbit_state" not in ds.variables
    assert ds.attrs["synthetic_preset"] == "hokkaido"
    days = ds.time.values.astype("datetime64[D]")
    assert (days <= np.datetime64("2021-06-01")).sum() == 18
    assert (days >= np.datetime64("2021-06-03")).sum() == 8


# --- writing ----------------------------------------------------------------------------


def test_write_refuses_to_overwrite_unless_asked(tmp_path: Path) -> None:
    path = write_synthetic_cube("kaikoura", root=tmp_path, size=(32, 32), seed=1)
    with pytest.raises(FileExistsError, match="overwrite=True") as error:
        write_synthetic_cube("kaikoura", root=tmp_path, size=(32, 32), seed=2)
    assert str(path) in str(error.value)
    assert xr.open_zarr(path).attrs["synthetic_seed"] == 1
    write_synthetic_cube("kaikoura", root=tmp_path, size=(32, 32), seed=2, overwrite=True)
    assert xr.open_zarr(path).attrs["synthetic_seed"] == 2
    assert os.listdir(path.parent) == [path.name]  # no partial or old copies left


def test_failed_write_leaves_no_cube_and_keeps_the_old_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_synthetic_cube("kaikoura", root=tmp_path, size=(32, 32), seed=1)

    def broken(self: xr.Dataset, store: Path, *args: object, **kwargs: object) -> None:
        Path(store).mkdir()
        (Path(store) / ".zgroup").write_text("{}")
        raise OSError("disk full")

    monkeypatch.setattr(xr.Dataset, "to_zarr", broken)
    with pytest.raises(OSError, match="disk full"):
        write_synthetic_cube("kaikoura", root=tmp_path, size=(32, 32), seed=2, overwrite=True)
    with pytest.raises(OSError, match="disk full"):
        write_synthetic_cube("hokkaido", root=tmp_path, size=(32, 32))
    assert sorted(os.listdir(path.parent)) == [path.name]
    monkeypatch.undo()
    assert xr.open_zarr(path).attrs["synthetic_seed"] == 1


def test_killed_write_leaves_no_cube_under_the_final_name(tmp_path: Path) -> None:
    """A process killed after writing, before the rename, leaves only a hidden partial."""
    script = f"""
import os, signal
import xarray as xr
from landslide_lit.data.synthetic import write_synthetic_cube

write = xr.Dataset.to_zarr
def write_then_die(self, store, *args, **kwargs):
    write(self, store, *args, **kwargs)
    os.kill(os.getpid(), signal.SIGKILL)
xr.Dataset.to_zarr = write_then_die
write_synthetic_cube("hokkaido", root={str(tmp_path)!r}, size=(32, 32))
"""
    package_root = str(Path(synthetic.__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": package_root}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True)
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()
    left = os.listdir(tmp_path / "synthetic")
    assert "hokkaido_japan.zarr" not in left
    assert len(left) == 1 and left[0].startswith(".hokkaido_japan.zarr.partial-")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"size": (8, 64)}, "too small"),
        ({"seed": -1}, "non-negative"),
        ({"timestep_format": "iso"}, "timestep_format"),
    ],
)
def test_bad_arguments_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_synthetic_cube("hokkaido", **kwargs)


def test_bad_format_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="fmt"):
        write_synthetic_cube("hokkaido", root=tmp_path, fmt="tiff")  # type: ignore[arg-type]
