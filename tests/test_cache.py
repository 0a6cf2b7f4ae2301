"""The chip cache: keys, round trips, corruption, crashes and concurrent writers."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

from landslide_lit.data import cache as cache_module
from landslide_lit.data import entries
from landslide_lit.data.cache import ChipCache, clear_cache, cube_fingerprint
from landslide_lit.data.chips import Chips
from landslide_lit.data.composite import CompositeSettings
from landslide_lit.data.stats import ChannelStats
from landslide_lit.errors import ConfigError
from landslide_lit.regions import CubeNames, Region, get_region

CHANNELS = ("vv_before", "vh_before", "vv_after")


def make_chips(n: int = 3, targets: bool = True, seed: int = 0) -> Chips:
    rng = np.random.default_rng(seed)
    images = rng.normal(size=(n, len(CHANNELS), 8, 8)).astype(np.float32)
    images[0, 1, :3, :2] = np.nan
    return Chips(
        images=torch.from_numpy(images),
        targets=torch.from_numpy(rng.integers(0, 2, (n, 8, 8), dtype=np.uint8))
        if targets
        else None,
        origins=torch.arange(2 * n, dtype=torch.int64).view(n, 2) * 8,
        channels=CHANNELS,
    )


STATS = ChannelStats(mean=(0.1, -2.5, 1 / 3), std=(1.0, 0.25, 2 / 3))


def make_cube(root: Path) -> Path:
    """A Zarr-like directory: metadata files and a chunk."""
    cube = root / "cube.zarr"
    (cube / "vv").mkdir(parents=True)
    (cube / ".zgroup").write_text('{"zarr_format": 2}')
    (cube / "vv" / ".zarray").write_text('{"shape": [2, 8, 8]}')
    (cube / "vv" / "0.0.0").write_bytes(b"\x00" * 64)
    return cube


def key_of(cube: Path, **changes):
    """The key of the default inputs, with some of them changed."""
    inputs = {
        "region": get_region("hokkaido"),
        "channels": CHANNELS,
        "composite": CompositeSettings(),
        "chip_size": 8,
        "stride": None,
        "keep": "positive",
    } | changes
    return ChipCache(cube.parent / "cache").key(cube, **inputs)


@pytest.fixture
def cube(tmp_path: Path) -> Path:
    return make_cube(tmp_path)


@pytest.fixture
def cache(tmp_path: Path) -> ChipCache:
    return ChipCache(tmp_path / "cache")


def assert_same_chips(got: Chips, want: Chips) -> None:
    np.testing.assert_array_equal(got.images.numpy(), want.images.numpy())  # NaN == NaN here
    np.testing.assert_array_equal(got.origins.numpy(), want.origins.numpy())
    assert got.images.dtype == torch.float32 and got.origins.dtype == torch.int64
    assert got.channels == want.channels
    if want.targets is None:
        assert got.targets is None
    else:
        assert got.targets.dtype == torch.uint8
        np.testing.assert_array_equal(got.targets.numpy(), want.targets.numpy())


# -- round trips --------------------------------------------------------------


@pytest.mark.parametrize("targets", [True, False])
def test_round_trip(cache, cube, targets):
    chips = make_chips(targets=targets)
    grid_info = {
        "y": np.linspace(5000.0, 4930.0, 8),
        "times": np.array(["2018-09-03", "2018-09-09"], dtype="datetime64[ns]"),
        "spatial_ref": {"data": np.array(0, np.int32), "attrs": {"crs_wkt": "EPSG:32654"}},
        "attrs": {"shape": (8, 8), "dims": ("y", "x"), "nodata": np.float32(np.nan)},
        "seed": np.int64(3),
    }
    key = key_of(cube)
    assert cache.load(key) is None
    path = cache.save(key, chips, STATS, grid_info)
    assert path == cache.path(key) and (path / "targets.npy").exists() == targets
    entry = cache.load(key)
    assert_same_chips(entry.chips, chips)
    assert entry.stats == STATS
    grid = entry.grid_info
    np.testing.assert_array_equal(grid["y"], grid_info["y"])
    assert grid["times"].dtype == np.dtype("datetime64[ns]")
    np.testing.assert_array_equal(grid["times"], grid_info["times"])
    assert grid["spatial_ref"]["data"].shape == () and grid["spatial_ref"]["data"].dtype == np.int32
    assert grid["attrs"]["shape"] == [8, 8] and np.isnan(grid["attrs"]["nodata"])
    assert grid["seed"] == 3
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["ingredients"] == key.ingredients
    assert manifest["chips"] == {"count": 3, "channels": list(CHANNELS)}


def test_xarray_grid_round_trips_through_to_dict(cache, cube):
    """The datamodule's grid (a coordinates-only Dataset) survives as to_dict(data='array')."""
    grid = xr.Dataset(
        coords={
            "y": ("y", 5000.0 - 10 * np.arange(4)),
            "x": ("x", 3e5 + 10 * np.arange(5), {"units": "m"}),
            "spatial_ref": ((), np.int32(0), {"crs_wkt": "EPSG:32654"}),
        },
        attrs={"crs": "EPSG:32654", "dims": ("y", "x"), "shape": (4, 5)},
    )
    key = key_of(cube)
    cache.save(key, make_chips(), STATS, grid.to_dict(data="array"))
    restored = xr.Dataset.from_dict(cache.load(key).grid_info)
    xr.testing.assert_equal(restored, grid)
    assert restored.attrs["shape"] == [4, 5] and restored.attrs["crs"] == "EPSG:32654"
    assert restored["spatial_ref"].attrs == {"crs_wkt": "EPSG:32654"}


def test_grid_info_of_unknown_types_is_refused(cache, cube):
    with pytest.raises(TypeError, match="cannot store a .*Path"):
        cache.save(key_of(cube), make_chips(), STATS, {"where": Path("/x")})
    assert not cache.path(key_of(cube)).exists()
    assert list(cache.root.iterdir()) == []


def test_chips_of_other_channels_are_refused(cache, cube):
    with pytest.raises(ValueError, match="channels"):
        cache.save(key_of(cube, channels=CHANNELS[:2]), make_chips(), STATS, {})


# -- keys ---------------------------------------------------------------------


def test_every_ingredient_changes_the_key(cube):
    hokkaido = get_region("hokkaido")
    composite = CompositeSettings()
    other_composite_values = {
        "before": 3,
        "after": 2,
        "reducer": "median",
        "orbit": "both",
        "recipe": "published_code",
        "missing_chunks": "nodata",
        "nonpositive": "nodata",
        "relative_orbit": 46,
    }
    assert set(other_composite_values) == {f.name for f in dataclasses.fields(composite)}
    other_region_values = {
        "name": "hokkaido2",
        "cube": "other.zarr",
        "event_start": "2018-09-04",
        "event_end": "2018-09-08",
        "orbit": "a",
        "trigger": "another",
        "names": CubeNames(vv="VV"),
    }
    assert set(other_region_values) == {f.name for f in dataclasses.fields(hokkaido)}
    variants = {
        "base": key_of(cube),
        "channels": key_of(cube, channels=(*CHANNELS, "vh_after")),
        "channel order": key_of(cube, channels=CHANNELS[::-1]),
        "chip_size": key_of(cube, chip_size=16),
        "stride": key_of(cube, stride=4),
        "keep": key_of(cube, keep="valid"),
        "cube path": key_of(make_cube(cube.parent / "copy")),
    }
    for field, value in other_composite_values.items():
        changed = dataclasses.replace(composite, **{field: value})
        variants[f"composite.{field}"] = key_of(cube, composite=changed)
    for field, value in other_region_values.items():
        variants[f"region.{field}"] = key_of(
            cube, region=dataclasses.replace(hokkaido, **{field: value})
        )
    digests = [key.digest for key in variants.values()]
    assert len(set(digests)) == len(digests), variants


def test_stride_none_is_the_chip_size(cube):
    assert key_of(cube, stride=None) == key_of(cube, stride=8)


def test_cube_modifications_change_the_key(tmp_path, cube):
    chunk = cube / "vv" / "0.0.0"
    keys = [key_of(cube)]
    os.utime(chunk, ns=(1, chunk.stat().st_mtime_ns + 10**9))  # rewritten, same size
    keys.append(key_of(cube))
    (cube / ".zgroup").write_text('{"zarr_format": 2} ')  # metadata edited
    keys.append(key_of(cube))
    (cube / "vv" / "1.0.0").write_bytes(b"\x01" * 64)  # a chunk added
    keys.append(key_of(cube))
    netcdf = tmp_path / "cube.nc"
    netcdf.write_bytes(b"CDF" * 10)
    keys.append(key_of(netcdf))
    os.utime(netcdf, ns=(1, netcdf.stat().st_mtime_ns + 10**9))
    keys.append(key_of(netcdf))
    netcdf.write_bytes(b"CDF" * 11)
    keys.append(key_of(netcdf))
    assert len({key.digest for key in keys}) == len(keys)
    assert key_of(netcdf) == keys[-1]  # reading metadata changes nothing


def test_fingerprint_reads_no_data_and_names_a_missing_cube(tmp_path, cube):
    print_ = cube_fingerprint(cube)
    assert print_["files"] == 3 and print_["bytes"] == 18 + 20 + 64
    assert print_["path"] == str(cube.resolve())
    with pytest.raises(FileNotFoundError, match="no datacube"):
        cube_fingerprint(tmp_path / "absent.zarr")


def test_keys_are_the_same_in_other_processes(cube):
    """No hash randomisation: two interpreters with other hash seeds make the same key."""
    script = (
        "import sys; from landslide_lit.data.cache import ChipCache; "
        "from landslide_lit.data.composite import CompositeSettings; "
        "from landslide_lit.regions import get_region; "
        "print(ChipCache('.').key(sys.argv[1], get_region('hokkaido'), sys.argv[2:], "
        "CompositeSettings(), 8, None, 'positive').digest)"
    )
    children = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(cube), *CHANNELS],
            env=os.environ | {"PYTHONHASHSEED": seed},
            stdout=subprocess.PIPE,
            text=True,
        )
        for seed in ("1", "2")
    ]
    digests = {child.communicate(timeout=120)[0].strip() for child in children}
    assert digests == {key_of(cube).digest}


# -- damaged entries ------------------------------------------------------------


def _truncate(path: Path) -> None:
    images = path / "images.npy"
    images.write_bytes(images.read_bytes()[:-5])


def _flip_a_byte(path: Path) -> None:
    images = path / "images.npy"
    data = bytearray(images.read_bytes())
    data[-7] ^= 0xFF
    images.write_bytes(bytes(data))


def _remove_manifest(path: Path) -> None:
    (path / "manifest.json").unlink()


def _cut_manifest(path: Path) -> None:
    manifest = path / "manifest.json"
    manifest.write_text(manifest.read_text()[:50])


def _remove_targets(path: Path) -> None:
    (path / "targets.npy").unlink()


def _empty_grid_array(path: Path) -> None:
    (path / "grid_0.npy").write_bytes(b"")


def _swap_targets_for_images(path: Path) -> None:
    os.replace(path / "images.npy", path / "targets.npy")


@pytest.mark.parametrize(
    "damage",
    [
        _truncate,
        _flip_a_byte,
        _remove_manifest,
        _cut_manifest,
        _remove_targets,
        _empty_grid_array,
        _swap_targets_for_images,
    ],
)
def test_damaged_entries_are_never_used(cache, cube, caplog, damage):
    key, chips = key_of(cube), make_chips()
    path = cache.save(key, chips, STATS, {"y": np.arange(8.0)})
    damage(path)
    with caplog.at_level(logging.WARNING, logger="landslide_lit.data.cache"):
        assert cache.load(key) is None
    assert "unusable" in caplog.text
    assert not path.exists() and list(cache.root.iterdir()) == []
    cache.save(key, chips, STATS, {"y": np.arange(8.0)})  # rebuilt
    assert_same_chips(cache.load(key).chips, chips)


def test_an_entry_under_another_name_is_not_used(cache, cube):
    key, other = key_of(cube), key_of(cube, keep="valid")
    os.rename(cache.save(key, make_chips(), STATS, {}), cache.path(other))
    assert cache.load(other) is None


# -- crashes, concurrency, clearing -----------------------------------------------


def test_a_failed_save_leaves_nothing(cache, cube, monkeypatch):
    written = []

    def fail_on_second_array(path, array):
        if written:
            raise OSError("disk full")
        written.append(path)
        return real_write(path, array)

    real_write = entries.write_array
    monkeypatch.setattr(entries, "write_array", fail_on_second_array)
    key = key_of(cube)
    with pytest.raises(OSError, match="disk full"):
        cache.save(key, make_chips(), STATS, {})
    assert written and not cache.path(key).exists()
    assert list(cache.root.iterdir()) == []


def test_a_writer_killed_before_its_rename_leaves_nothing_usable(cache, cube):
    """A temporary directory with a complete entry is never loaded, and is swept later."""
    key = key_of(cube)
    leftover = cache.root / ".tmp-killed"
    os.rename(cache.save(key, make_chips(), STATS, {}), leftover)  # what a killed writer leaves
    assert cache.load(key) is None
    cache.save(key, make_chips(), STATS, {})
    assert leftover.exists()  # it might be a live writer's
    os.utime(leftover, (0, 0))  # stale: the writer died long ago
    cache.save(key_of(cube, keep="valid"), make_chips(), STATS, {})
    assert not leftover.exists()
    assert cache.load(key) is not None


def test_concurrent_writers_of_one_key(cache, cube):
    key, barrier, paths = key_of(cube), threading.Barrier(4), []

    def write(seed: int) -> None:
        chips = make_chips(seed=seed)
        barrier.wait()
        paths.append(cache.save(key, chips, STATS, {}))

    threads = [threading.Thread(target=write, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert paths == [cache.path(key)] * 4
    assert [p.name for p in cache.root.iterdir()] == [key.digest]
    winner = cache.load(key).chips
    assert any(
        np.array_equal(winner.images.numpy(), make_chips(seed=s).images.numpy(), equal_nan=True)
        for s in range(4)
    )


def test_a_second_save_keeps_the_first_entry(cache, cube):
    key = key_of(cube)
    cache.save(key, make_chips(seed=0), STATS, {})
    cache.save(key, make_chips(seed=1), STATS, {})
    assert_same_chips(cache.load(key).chips, make_chips(seed=0))


def test_clear_removes_entries_and_temporaries_only(cache, cube):
    assert cache.clear() == 0  # no cache directory yet
    cache.save(key_of(cube), make_chips(), STATS, {})
    cache.save(key_of(cube, keep="valid"), make_chips(), STATS, {})
    (cache.root / ".tmp-crashed").mkdir()
    (cache.root / "notes").mkdir()
    (cache.root / "README").write_text("mine")
    assert cache.clear() == 2
    assert sorted(p.name for p in cache.root.iterdir()) == ["README", "notes"]
    assert cache.load(key_of(cube)) is None


def test_clear_cache_under_the_data_root(tmp_path, cube, monkeypatch):
    monkeypatch.setenv("LANDSLIDE_LIT_DATA", str(tmp_path / "data"))
    under_env = ChipCache.under()
    assert under_env.root == tmp_path / "data" / ".chip_cache"
    under_env.save(key_of(cube), make_chips(), STATS, {})
    assert clear_cache() == 1
    assert ChipCache.under(tmp_path).root == tmp_path / ".chip_cache"
    assert clear_cache(tmp_path) == 0


def test_region_with_custom_names_is_json_keyed(cube):
    region = Region("mine", "mine.zarr", "2020-01-01", "2020-01-02", names=CubeNames(vh="VH"))
    assert key_of(cube, region=region).ingredients["region"]["names"]["vh"] == "VH"


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_entries_follow_the_umask(cache, cube):
    """Readable by the group and others on a shared data root, as the umask allows."""
    previous = os.umask(0o022)
    try:
        path = cache.save(key_of(cube), make_chips(), STATS, {})
    finally:
        os.umask(previous)
    assert path.stat().st_mode & 0o777 == 0o755
    assert (path / "images.npy").stat().st_mode & 0o777 == 0o644


def test_the_cache_lives_in_the_data_root_else_the_user_folder(tmp_path, monkeypatch):
    from landslide_lit.data.cache import cache_place, user_cache_dir

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert user_cache_dir() == tmp_path / "xdg" / "landslide-lit" / "chip_cache"
    assert cache_place(tmp_path) == (ChipCache(tmp_path / ".chip_cache"), None)
    assert cache_place(tmp_path, tmp_path / "a" / "b") == (ChipCache(tmp_path / "a" / "b"), None)
    # root ignores permission bits: make the check say what a chmod 0555 root says to a user
    monkeypatch.setattr(cache_module, "writable", lambda folder: folder != tmp_path)
    assert cache_place(tmp_path) == (
        ChipCache(user_cache_dir()),
        f"the data root {tmp_path} is read-only",
    )
    cache, reason = cache_place(tmp_path / "missing")
    assert cache.root == user_cache_dir() and reason.endswith("missing does not exist")
    with pytest.raises(ConfigError, match=r"--data.cache_dir .*/a/b: .* is read-only"):
        cache_place(None, tmp_path / "a" / "b")
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert user_cache_dir() == tmp_path / "home" / ".cache" / "landslide-lit" / "chip_cache"


def test_cache_clear_empties_the_data_root_and_user_caches(tmp_path, cube, monkeypatch, capsys):
    from landslide_lit.data.cache import user_cache_dir
    from landslide_lit.tools import cache_main

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    for folder in (tmp_path / ".chip_cache", user_cache_dir(), tmp_path / "mine"):
        ChipCache(folder).save(key_of(cube), make_chips(), STATS, {})
    cache_main(["clear", "--cache-dir", str(tmp_path / "mine")])
    assert capsys.readouterr().out == f"removed 1 cache entries from {tmp_path / 'mine'}\n"
    cache_main(["clear", "--root", str(tmp_path)])
    assert capsys.readouterr().out.splitlines() == [
        f"removed 1 cache entries from {tmp_path / '.chip_cache'}",
        f"removed 1 cache entries from {user_cache_dir()}",
    ]


def test_an_entry_that_cannot_be_removed_is_left_without_a_traceback(cache, cube, monkeypatch):
    cache.save(key_of(cube), make_chips(), STATS, {})

    def refuse(source, target):
        raise PermissionError(13, "Permission denied", str(source))

    monkeypatch.setattr(cache_module.os, "rename", refuse)
    assert cache.clear() == 0
