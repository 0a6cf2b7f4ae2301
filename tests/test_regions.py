"""Regions: mappings and region YAML files, each mistake one ConfigError naming the key."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from landslide_lit.errors import ConfigError
from landslide_lit.regions import REGIONS, CubeNames, Region, get_region, region_from_mapping

MINE = {"name": "mine", "cube": "mine.zarr", "event_start": "2024-01-01", "event_end": "2024-01-02"}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"event_end": None}, r"--data.test_region: region 'mine': missing key\(s\) event_end"),
        ({"evnt_start": "x"}, r"unknown key\(s\) evnt_start \(did you mean 'event_start'\?\)"),
        ({"event_end": "2023-12-31"}, r"region 'mine': event_end 2023-12-31 is before event_start"),
        ({"event_start": "2024-13-01"}, r"region 'mine': event_start='2024-13-01' is not a day"),
        ({"event_start": "2024-01-01junk"}, r"event_start='2024-01-01junk' is not a day"),
        ({"orbit": "descending"}, r"region 'mine': orbit='descending' is not one of d, a"),
        ({"names": {"vvv": "VV"}}, r"names.vvv is not a cube name \(did you mean 'vv'\?\)"),
        ({"name": "my event/1"}, r"name must be letters, digits"),
    ],
)
def test_a_bad_region_mapping_is_one_error_naming_the_key(changes, message):
    mapping = {k: v for k, v in (MINE | changes).items() if v is not None}
    with pytest.raises(ConfigError, match=message):
        get_region(mapping, "--data.test_region")


def test_a_mapping_becomes_a_region_with_plain_dates_and_names():
    region = region_from_mapping(MINE | {"event_end": "20240103", "names": {"vv": "VV"}})
    assert region.event_end == "2024-01-03" and region.names == CubeNames(vv="VV")
    assert not region.builtin and REGIONS["hokkaido"].builtin
    assert not dataclasses.replace(REGIONS["hokkaido"], event_end="2018-09-08").builtin
    with pytest.raises(ValueError):  # ConfigError is still a ValueError for old callers
        Region("bad", "x.zarr", "2020-01-01", "2019-12-31")


def write_region_file(folder: Path, text: str) -> Path:
    path = folder / "my_event.yaml"
    path.write_text(text)
    return path


def test_a_region_file_is_loaded_and_its_cube_is_relative_to_it(tmp_path):
    (tmp_path / "cubes" / "my_event.zarr").mkdir(parents=True)
    # unquoted dates: YAML reads them as dates
    path = write_region_file(
        tmp_path,
        "name: my_event\ncube: cubes/my_event.zarr\nevent_start: 2024-01-01\n"
        "event_end: 2024-01-02\norbit: a\nnames: {vh: VH}\n",
    )
    region = get_region(str(path))
    assert region.cube == str(tmp_path / "cubes" / "my_event.zarr")
    assert (region.event_start, region.orbit, region.names.vh) == ("2024-01-01", "a", "VH")
    assert region.cube_path("/anywhere") == tmp_path / "cubes" / "my_event.zarr"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (None, r"region file .*my_event.yaml not found"),
        ("- a\n- list\n", r"region file .*my_event.yaml: holds list"),
        ("name: [unclosed\n", r"region file .*my_event.yaml cannot be read as YAML"),
        (
            "name: e\ncube: e.zarr\nevent_start: 2024-01-01\nevent_end: 2024-01-02\ncolour: red\n",
            r"region file .*my_event.yaml: region 'e': unknown key\(s\) colour",
        ),
        (
            "name: e\ncube: e.zarr\nevent_start: 2024-01-03\nevent_end: 2024-01-02\n",
            r"region file .*my_event.yaml: region 'e': event_end 2024-01-02 is before",
        ),
        (
            "name: e\ncube: e.zarr\nevent_start: 2024-01-01\nevent_end: 2024-01-02\n",
            r"my_event.yaml: region 'e': cube 'e.zarr' resolves to .*/e.zarr, which does not "
            r"exist; a relative cube in a region file is relative to the file's folder",
        ),
    ],
)
def test_a_bad_region_file_is_one_error_naming_it(tmp_path, text, message):
    path = tmp_path / "my_event.yaml" if text is None else write_region_file(tmp_path, text)
    with pytest.raises(ConfigError, match=message):
        get_region(str(path))


def test_an_unknown_name_suggests_the_closest_and_region_files():
    with pytest.raises(ConfigError, match=r"'hokaido' \(did you mean 'hokkaido'\?\).*YAML file"):
        get_region("hokaido", "--region")


def test_the_command_line_hands_a_region_file_over_as_a_path(tmp_path, capsys):
    """jsonargparse reads a YAML path given for a dataclass into a mapping, losing the
    folder its cube is relative to: the region options take the path itself."""
    import yaml

    from landslide_lit.cli import run

    (tmp_path / "e.zarr").mkdir()
    path = write_region_file(
        tmp_path, "name: e\ncube: e.zarr\nevent_start: 2024-01-01\nevent_end: 2024-01-02\n"
    )
    with pytest.raises(SystemExit):
        run(["fit", "--data.test_region", str(path), "--print_config"])
    assert yaml.safe_load(capsys.readouterr().out)["data"]["test_region"] == str(path)
