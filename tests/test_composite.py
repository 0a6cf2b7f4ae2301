"""Composites on hand-built cubes whose expected values are known exactly."""

import math
import warnings

import numpy as np
import pandas as pd
import pytest

from landslide_lit.data.acquisitions import select_acquisitions
from landslide_lit.data.composite import (
    CompositeSettings,
    build_composite,
    resolve_channels,
)
from landslide_lit.data.cube import CubeError
from landslide_lit.errors import ConfigError
from landslide_lit.regions import Region, get_region
from tests.cubes import hand_cube

HOKKAIDO = get_region("hokkaido")  # before: day <= 2018-09-05, after: day >= 2018-09-07


def composite_value(channel, settings=None, region=HOKKAIDO, cube=None):
    out = build_composite(cube if cube is not None else hand_cube(), region, [channel], settings)
    values = out["image"].sel(channel=channel).values
    assert np.allclose(values, values.flat[0], equal_nan=True)
    return float(values.flat[0])


def test_windows_follow_event_dates_and_orbit():
    # descending: 0 (08-10), 2 (08-28), 3 (09-03) before; 4 (09-06) in neither; 6 (09-15) after
    windows = select_acquisitions(hand_cube(), HOKKAIDO, CompositeSettings(before=2, after=1))
    assert windows.before == (2, 3) and windows.after == (6,)
    both = select_acquisitions(hand_cube(), HOKKAIDO, CompositeSettings(before=4, orbit="both"))
    assert both.before == (0, 1, 2, 3) and both.after == (5,)


def test_mean_of_log_amplitudes_is_exact():
    settings = CompositeSettings(before=2, after=1)
    assert composite_value("vv_before", settings) == pytest.approx((math.log(3) + math.log(4)) / 2)
    assert composite_value("vh_before", settings) == pytest.approx((math.log(6) + math.log(8)) / 2)
    assert composite_value("vv_after", settings) == pytest.approx(math.log(7))
    two_after = CompositeSettings(before=2, after=2, orbit="both")
    assert composite_value("vh_after", two_after) == pytest.approx(
        (math.log(12) + math.log(14)) / 2
    )


def test_median_reducer():
    settings = CompositeSettings(before=3, reducer="median")
    assert composite_value("vv_before", settings) == pytest.approx(math.log(3))


def _event_cube(pre: int, post: int = 6):
    """``pre`` daily descending acquisitions up to 2018-09-05 and ``post`` from 09-07."""
    times = [
        *pd.date_range(end="2018-09-05", periods=pre),
        *pd.date_range("2018-09-07", periods=post),
    ]
    return hand_cube(height=4, width=5, times=pd.DatetimeIndex(times), orbits=["d"] * len(times))


def _published_oracle(cube, n):
    """The published code's selection, literally: its slices on the pre/post subsets."""
    pre = cube.sel(timestep=slice(None, "2018-09-05"))
    post = cube.sel(timestep=slice("2018-09-07", None))
    chosen = pre.isel(timestep=list(range(-1 - n, -1))) if pre.sizes["timestep"] > n else pre
    return list(chosen["timestep"].values), list(post.isel(timestep=slice(0, n))["timestep"].values)


@pytest.mark.parametrize(
    ("n", "pre"), [(n, n + extra) for n in (1, 2, 4) for extra in (-1, 0, 1, 3) if n + extra > 0]
)
def test_recipes_against_the_published_selection(n, pre):
    cube = _event_cube(pre)
    times = cube["timestep"].values
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # fewer than N before
        published = select_acquisitions(
            cube, HOKKAIDO, CompositeSettings(before=n, recipe="published_code")
        )
        paper = select_acquisitions(cube, HOKKAIDO, CompositeSettings(before=n))
        out = build_composite(
            cube,
            HOKKAIDO,
            ["vv_before", "vv_after"],
            CompositeSettings(before=n, recipe="published_code"),
        )
    assert ([times[i] for i in published.before], [times[i] for i in published.after]) == (
        _published_oracle(cube, n)
    )
    assert paper.before == tuple(range(max(pre - n, 0), pre)) and paper.after == (pre,)
    image = out["image"].values
    expected = [np.log(np.array(w) + 1.0).mean() for w in (published.before, published.after)]
    np.testing.assert_allclose(image[:, 0, 0], expected, rtol=1e-6)
    assert out.attrs["composite_recipe"] == "published_code"


def test_published_recipe_takes_no_other_after():
    assert CompositeSettings(recipe="published_code", before=3).after_count == 3
    assert CompositeSettings(recipe="published_code", before=3, after=3).after_count == 3
    assert CompositeSettings(before=3).after_count == 1
    with pytest.raises(ConfigError, match=r"--data.composite.after 1 with --data.composite.recipe"):
        CompositeSettings(recipe="published_code", before=3, after=1)


@pytest.mark.parametrize(
    ("kwargs", "option"),
    [
        ({"before": 0}, "before"),
        ({"after": 0}, "after"),
        ({"before": -2}, "before"),
        ({"before": 2.5}, "before"),
        ({"after": True}, "after"),
        ({"reducer": "max"}, "reducer"),
        ({"orbit": "D"}, "orbit"),
        ({"recipe": "published"}, "recipe"),
        ({"nonpositive": "zero"}, "nonpositive"),
        ({"missing_chunks": "skip"}, "missing_chunks"),
    ],
)
def test_settings_that_make_no_sense_name_the_option(kwargs, option):
    with pytest.raises(ConfigError, match=rf"--data\.composite\.{option} "):
        CompositeSettings(**kwargs)


def test_fewer_before_acquisitions_warn_and_use_what_exists():
    with pytest.warns(UserWarning, match="only 3 acquisition.*4 asked"):
        value = composite_value("vv_before", CompositeSettings(before=4))
    assert value == pytest.approx((math.log(1) + math.log(3) + math.log(4)) / 3)
    with pytest.warns(UserWarning, match="only 1 acquisition"):
        composite_value("vv_before", CompositeSettings(before=2, orbit="a"))


def test_empty_window_lists_dates_and_orbits():
    late = Region(name="late", cube="x.zarr", event_start="2018-09-20", event_end="2018-09-21")
    with pytest.raises(
        CubeError, match=r"no acquisitions after .*2018-08-10\(d\), 2018-08-22\(a\)"
    ):
        build_composite(hand_cube(), late, "sar")


def test_orbit_filter_without_orbit_coordinate():
    cube = hand_cube(orbits=None)
    with pytest.raises(CubeError, match="no 'sat:orbit_state' coordinate.*orbit none"):
        build_composite(cube, HOKKAIDO, "sar")
    out = build_composite(cube, HOKKAIDO, "sar", CompositeSettings(before=2, orbit="none"))
    # with no orbit filter the 09-09 pass is the first after the event
    assert out.attrs["after_acquisitions"] == "2018-09-09"


def test_orbit_values_spelled_out():
    cube = hand_cube(
        orbits=[
            "descending",
            "ascending",
            "descending",
            "descending",
            "descending",
            "ascending",
            "descending",
        ]
    )
    windows = select_acquisitions(cube, HOKKAIDO, CompositeSettings(before=2))
    assert windows.before == (2, 3) and windows.after == (6,)


def test_channels_order_terrain_and_other_variables():
    out = build_composite(
        hand_cube(), HOKKAIDO, ["dem_slope_radians", "vv_after", "dem", "topophase.cor_1@1"]
    )
    assert list(out["channel"].values) == [
        "dem_slope_radians",
        "vv_after",
        "dem",
        "topophase.cor_1@1",
    ]
    image = out["image"].values
    assert np.allclose(image[0], 0.3) and np.allclose(image[2], 100) and np.allclose(image[3], 0.4)
    assert resolve_channels("sar_dem") == (
        "vv_before",
        "vh_before",
        "vv_after",
        "vh_after",
        "dem_aspect",
        "dem_slope_radians",
        "dem_curvature",
    )
    with pytest.raises(ValueError, match="unknown preset"):
        resolve_channels("sar+dem")
    with pytest.raises(CubeError, match="variable 'coherence' missing"):
        build_composite(hand_cube(), HOKKAIDO, ["coherence"])
    with pytest.raises(CubeError, match="pair index '7'"):
        build_composite(hand_cube(), HOKKAIDO, ["topophase.cor_1@7"])


def test_keeps_coordinates_attributes_and_label():
    cube = hand_cube()
    out = build_composite(cube, HOKKAIDO, "sar", CompositeSettings(before=2))
    np.testing.assert_array_equal(out["y"].values, cube["y"].values)
    np.testing.assert_array_equal(out["x"].values, cube["x"].values)
    assert out.attrs["crs"] == "EPSG:32654" and out["spatial_ref"].attrs["crs_wkt"] == "EPSG:32654"
    assert out.attrs["before_acquisitions"] == "2018-08-28,2018-09-03"
    assert out.attrs["after_acquisitions"] == "2018-09-15"
    np.testing.assert_array_equal(out["label"].values, cube["landslides"].values)
    assert out["image"].dtype == np.float32 and out["image"].dims == ("channel", "y", "x")


def test_nonpositive_amplitudes_error_or_nodata():
    cube = hand_cube()
    cube["vv"][3, 0, 0] = 0.0
    with pytest.raises(CubeError, match=r"1 amplitude\(s\) <= 0.*10\*\*\(dB/10\)"):
        build_composite(cube, HOKKAIDO, ["vv_before"], CompositeSettings(before=2))
    out = build_composite(
        cube, HOKKAIDO, ["vv_before"], CompositeSettings(before=2, nonpositive="nodata")
    )
    assert out["image"].values[0, 0, 0] == pytest.approx(math.log(3))  # only the other date
    assert out["image"].values[0, 1, 1] == pytest.approx((math.log(3) + math.log(4)) / 2)


def test_all_nan_acquisition_is_an_error():
    cube = hand_cube()
    cube["vh"][6] = np.nan
    with pytest.raises(CubeError, match="vh at timestep index 6 .* all NaN"):
        build_composite(cube, HOKKAIDO, "sar", CompositeSettings(before=2))


def test_nan_pixels_are_skipped_in_the_mean():
    cube = hand_cube()
    cube["vv"][2, 4, 4] = np.nan
    cube["vv"][3, 4, 4] = np.nan
    cube["vv"][3, 5, 5] = np.nan
    image = build_composite(cube, HOKKAIDO, ["vv_before"], CompositeSettings(before=2))[
        "image"
    ].values
    assert np.isnan(image[0, 4, 4])
    assert image[0, 5, 5] == pytest.approx(math.log(3))


def test_source_cube_is_not_modified():
    cube = hand_cube()
    cube["vv"][3, 0, 0] = 0.0
    original = cube.copy(deep=True)
    build_composite(cube, HOKKAIDO, "sar_dem", CompositeSettings(before=2, nonpositive="nodata"))
    build_composite(
        cube, HOKKAIDO, "sar", CompositeSettings(before=2, reducer="median", nonpositive="nodata")
    )
    cube.load()
    assert cube.identical(original)


@pytest.mark.parametrize("block", [7, 64, 1 << 16])
def test_streamed_mean_is_the_exact_float64_mean_of_the_logs(monkeypatch, block):
    """Block by block or not, the mean is sum(finite logs) in float64 / count, cast once."""
    from landslide_lit.data import reading

    monkeypatch.setattr(reading, "BLOCK", block)
    rng = np.random.default_rng(3)
    cube = hand_cube(height=19, width=23)
    cube["vv"][:] = rng.gamma(4.4, 0.05, cube["vv"].shape).astype(np.float32)
    cube["vv"][0, 1, 1] = np.nan
    cube["vv"][2, 1, 1] = np.nan  # one finite acquisition left at (1, 1)
    cube["vv"][2, 3, 4] = np.inf
    cube["vv"][3, 5, 6] = 0.0  # -> NaN with nonpositive="nodata"
    cube["vv"][:, 7, 8] = np.nan  # no data at all
    settings = CompositeSettings(before=3, nonpositive="nodata")
    out = build_composite(cube, HOKKAIDO, ["vv_before", "vv_after"], settings)["image"].values
    planes = cube["vv"].values[[0, 2, 3]].copy()  # the descending acquisitions before
    planes[planes <= 0] = np.nan
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.log(planes)
        finite = np.isfinite(logs)
        total = np.where(finite, logs, 0).astype(np.float64).sum(axis=0)
        expected = (total / finite.sum(axis=0)).astype(np.float32)
    np.testing.assert_array_equal(out[0], expected)  # NaN where no finite value
    after = np.log(cube["vv"].values[6])
    np.testing.assert_array_equal(out[1], np.where(np.isfinite(after), after, np.nan))
    assert np.isnan(out[0, 7, 8]) and out[0, 1, 1] == logs[2, 1, 1]
