"""Composites keep one relative orbit (viewing geometry): ``relative_orbit: auto|N|none``."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging

import numpy as np
import pandas as pd
import pytest

from landslide_lit.data.acquisitions import (
    RELATIVE_ORBIT,
    choose_relative_orbit,
    select_acquisitions,
)
from landslide_lit.data.cache import ChipCache
from landslide_lit.data.composite import CompositeSettings, build_composite
from landslide_lit.data.cube import CubeError
from landslide_lit.data.datamodule import LandslideDataModule
from landslide_lit.data.entries import CacheKey
from landslide_lit.data.windows import WindowDataset
from landslide_lit.errors import ConfigError
from landslide_lit.regions import Region, get_region
from landslide_lit.runs import checkpoint_arguments
from tests.cubes import hand_cube
from tests.test_cache import CHANNELS, STATS, make_chips

HOKKAIDO = get_region("hokkaido")  # before: day <= 2018-09-05, after: day >= 2018-09-07

# All descending. Relative orbit 10 has three pre-event passes, 20 two; the first
# post-event pass (09-08) is 20's, 10's comes two days later.
TIMES = pd.to_datetime(
    [
        "2018-08-04",
        "2018-08-10",
        "2018-08-16",
        "2018-08-28",
        "2018-09-03",
        "2018-09-08",
        "2018-09-10",
    ]
)
RELATIVE = [20, 10, 10, 10, 20, 20, 10]
# Fewer acquisitions than asked for warn; the tests ask for more on purpose.
pytestmark = pytest.mark.filterwarnings("ignore:.*only \\d acquisition")


def orbit_cube(relative=RELATIVE, times=TIMES):
    """vv[t] = t + 1, with one relative orbit number per timestep (None: no coordinate)."""
    ds = hand_cube(times=times, orbits=["d"] * len(times))
    if relative is not None:
        ds = ds.assign_coords({RELATIVE_ORBIT: ("timestep", np.array(relative))})
    return ds


def chosen(settings, cube=None, region=HOKKAIDO):
    found = select_acquisitions(orbit_cube() if cube is None else cube, region, settings)
    return found.before, found.after, found.relative_orbit


def vv_before(settings, cube):
    out = build_composite(cube, HOKKAIDO, ["vv_before"], settings)
    return float(out["image"].values[0, 0, 0]), out.attrs


def test_auto_keeps_the_relative_orbit_with_most_pre_event_passes(caplog):
    with caplog.at_level(logging.INFO, logger="landslide_lit.data.acquisitions"):
        assert chosen(CompositeSettings(before=4)) == ((1, 2, 3), (6,), 10)
    assert "relative orbit 10 chosen" in caplog.text
    assert "10: 3 before, 1 after; 20: 2 before, 1 after" in caplog.text
    value, attrs = vv_before(CompositeSettings(before=4), orbit_cube())
    assert value == pytest.approx(np.mean(np.log([2.0, 3.0, 4.0])), rel=1e-6)
    assert attrs["relative_orbit"] == 10 and attrs["composite_relative_orbit"] == "auto"
    assert attrs["before_acquisitions"] == "2018-08-10,2018-08-16,2018-08-28"
    assert attrs["after_acquisitions"] == "2018-09-10"


def test_a_number_keeps_that_relative_orbit():
    assert chosen(CompositeSettings(before=4, relative_orbit=20)) == ((0, 4), (5,), 20)


def test_none_mixes_them_as_before_and_equals_a_cube_without_the_coordinate():
    mixed = CompositeSettings(before=4, relative_orbit="none")
    assert chosen(mixed) == ((1, 2, 3, 4), (5,), None)
    with_coordinate = build_composite(orbit_cube(), HOKKAIDO, "sar_dem", mixed)
    without = build_composite(orbit_cube(None), HOKKAIDO, "sar_dem", CompositeSettings(before=4))
    np.testing.assert_array_equal(with_coordinate["image"].values, without["image"].values)
    assert "relative_orbit" not in with_coordinate.attrs


def test_auto_leaves_a_cube_without_relative_orbits_as_it_was():
    cube = orbit_cube(None)
    auto = build_composite(cube, HOKKAIDO, "sar_dem", CompositeSettings(before=4))
    mixed = build_composite(
        cube, HOKKAIDO, "sar_dem", CompositeSettings(before=4, relative_orbit="none")
    )
    np.testing.assert_array_equal(auto["image"].values, mixed["image"].values)
    assert "relative_orbit" not in auto.attrs


@pytest.mark.parametrize(
    ("relative", "before", "after", "expected"),
    [
        ([10, 10, 10, 20, 20], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0], 10),  # most pre-event passes
        ([10, 10, 20, 20, 20], [1, 1, 1, 1, 0], [0, 0, 0, 0, 1], 20),  # tie: more after
        ([30, 30, 20, 20, 9], [1, 0, 1, 0, 0], [0, 1, 0, 1, 0], 20),  # tie again: lowest number
        ([10, 10, 10, 20, 20], [1, 1, 1, 1, 0], [0, 0, 0, 0, 1], 20),  # 10 has nothing after
        ([10, 10, 10, 20, 20], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0], 10),  # none has: most before
    ],
)
def test_auto_ties_are_broken_by_a_fixed_rule(relative, before, after, expected):
    relative = np.array(relative)
    usable = np.ones(len(relative), bool)
    pre, post = np.array(before, bool), np.array(after, bool)
    assert choose_relative_orbit(relative, usable, pre, post, CompositeSettings(), "c") == expected


def test_auto_counts_only_the_passes_the_orbit_filter_keeps():
    # 10's extra passes are ascending: under orbit d, 20 has the most pre-event passes
    cube = orbit_cube()
    orbits = np.array(["d", "a", "a", "d", "d", "d", "d"])
    cube = cube.assign_coords({"sat:orbit_state": ("timestep", orbits)})
    assert chosen(CompositeSettings(before=2), cube) == ((0, 4), (5,), 20)
    both = CompositeSettings(before=2, orbit="both")
    assert chosen(both, cube) == ((2, 3), (6,), 10)


def test_a_number_on_a_cube_without_relative_orbits_is_an_error():
    with pytest.raises(
        CubeError,
        match=r"relative_orbit 20 asked for, but the cube has no 'sat:relative_orbit' "
        r"coordinate \(the published cubes carry no relative orbit\)",
    ):
        chosen(CompositeSettings(relative_orbit=20), orbit_cube(None))


def test_a_number_the_cube_lacks_lists_those_it_has():
    with pytest.raises(
        CubeError, match=r"no acquisition in relative orbit 99; it has relative orbits 10, 20"
    ):
        chosen(CompositeSettings(relative_orbit=99))


def test_an_empty_window_lists_dates_orbits_and_relative_orbits():
    only_before = orbit_cube([10, 10, 10, 10, 20, 20, 20])
    with pytest.raises(CubeError) as error:
        chosen(CompositeSettings(relative_orbit=10), only_before)
    message = str(error.value)
    assert (
        "no acquisitions after the hokkaido event (on or after 2018-09-07) in orbit 'd' and "
        "relative orbit 10. The cube has" in message
    )
    assert (
        "The cube has (date(orbit state/relative orbit)): 2018-08-04(d/10), 2018-08-10(d/10)"
        in message
    )
    assert "2018-09-10(d/20)" in message and "--data.composite.relative_orbit" in message


def test_relative_orbits_that_are_not_numbers_are_an_error_unless_mixed():
    for bad in ([10, 10, 10, np.nan, 20, 20, 20], [10, 0, 10, 10, 20, 20, 20], list("abcdefg")):
        cube = orbit_cube(bad)
        with pytest.raises(CubeError, match="is not one relative orbit number"):
            chosen(CompositeSettings(), cube)
        assert chosen(CompositeSettings(relative_orbit="none"), cube)[2] is None
    floats = orbit_cube([float(r) for r in RELATIVE])
    assert chosen(CompositeSettings(before=4), floats) == ((1, 2, 3), (6,), 10)


@pytest.mark.parametrize("value", [0, -3, True, "x", 1.5, "", None])
def test_a_relative_orbit_setting_that_makes_no_sense_names_the_option(value):
    with pytest.raises(ConfigError, match=r"--data.composite.relative_orbit .*use auto"):
        CompositeSettings(relative_orbit=value)


def test_a_number_given_as_text_is_a_number():
    assert CompositeSettings(relative_orbit="46").relative_orbit == 46
    assert type(CompositeSettings(relative_orbit=np.int64(46)).relative_orbit) is int


def test_cache_keys_differ_by_relative_orbit(tmp_path):
    cache, cube = ChipCache(tmp_path / "cache"), tmp_path / "cube.nc"
    orbit_cube().to_netcdf(cube)

    def key(**settings):
        return cache.key(cube, HOKKAIDO, CHANNELS, CompositeSettings(**settings), 4, None, "valid")

    keys = {key().digest, key(relative_orbit="none").digest, key(relative_orbit=20).digest}
    assert len(keys) == 3
    # An entry written before the setting existed (its ingredients lack it) is never read
    # for today's default, whose chips may keep one relative orbit where it mixed them.
    old = key().ingredients
    del old["composite"]["relative_orbit"]
    canonical = json.dumps(old, sort_keys=True, separators=(",", ":"))
    old_key = CacheKey(hashlib.sha256(canonical.encode()).hexdigest(), canonical)
    cache.save(old_key, make_chips(), STATS, {})
    assert cache.load(old_key) is not None and cache.load(key()) is None


def test_maps_and_checkpoints_record_the_setting(tmp_path):
    path = tmp_path / "cube.nc"
    orbit_cube().to_netcdf(path)
    region = Region("mine", str(path), "2018-09-05", "2018-09-07")
    with pytest.warns(UserWarning, match="only 3"):
        windows = WindowDataset(path, region, ["vv_before", "vv_after"], CompositeSettings(), 4, 0)
    assert windows.attrs["relative_orbit"] == 10  # a map's attributes are these
    dm = LandslideDataModule(composite=CompositeSettings(relative_orbit=20))
    restored = checkpoint_arguments(
        {"hyper_parameters": {}, "datamodule_hyper_parameters": dm.hparams}
    )
    composite = next(a for a in restored if a.startswith("--data.composite="))
    assert json.loads(composite.partition("=")[2])["relative_orbit"] == 20
    assert dataclasses.asdict(dm.composite)["relative_orbit"] == 20
