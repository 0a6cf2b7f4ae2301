"""The region registry: name -> cube file, event dates, orbit, variable names.

The four regions of the published datacubes (Boehm et al. 2022, Zenodo DOI
10.5281/zenodo.7248056) are built in. A user adds another region in a config
by giving a mapping instead of a name, or the path of a YAML file holding that
mapping (see :func:`get_region`); no code changes. Every problem with a region
or the data root is one :class:`ConfigError` naming the region, the key and the file.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import difflib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import yaml

from landslide_lit.errors import ConfigError

__all__ = [
    "CUBE_SUFFIXES",
    "DATA_ROOT_ENV",
    "ORBITS",
    "REGIONS",
    "REGION_FILE_SUFFIXES",
    "REGION_KEYS",
    "REQUIRED_KEYS",
    "ZARR_MARKERS",
    "ZENODO_DOI",
    "CubeNames",
    "Orbit",
    "Region",
    "RegionLike",
    "checked_data_root",
    "data_root",
    "get_region",
    "load_region_file",
    "region_from_mapping",
]

ZENODO_DOI = "10.5281/zenodo.7248056"
DATA_ROOT_ENV = "LANDSLIDE_LIT_DATA"
CUBE_SUFFIXES = (".zarr", ".nc", ".nc4", ".netcdf", ".cdf")
ZARR_MARKERS = (".zgroup", ".zmetadata", "zarr.json")  # files that make a folder a Zarr store

Orbit = Literal["d", "a", "both", "none"]


@dataclass(frozen=True)
class CubeNames:
    """Names of the dimensions, variables and coordinates inside a cube.

    The defaults are the names of the published cubes. Those that
    ``datacube.md`` marks uncertain can be remapped per region in a config.
    """

    time: str = "timestep"
    pair: str = "timepair"
    y: str = "y"
    x: str = "x"
    vv: str = "vv"
    vh: str = "vh"
    dem: str = "dem"
    aspect: str = "dem_aspect"
    slope: str = "dem_slope_radians"
    curvature: str = "dem_curvature"
    landslides: str = "landslides"
    orbit: str = "sat:orbit_state"


@dataclass(frozen=True)
class Region:
    """One study region: where its cube is and when its event happened.

    Attributes:
        name: short name used in metric keys, tables and file names (letters,
            digits, ``_``, ``-``, ``.``).
        cube: the cube's file name (resolved under the data root) or a path.
        event_start: last day (inclusive, ``YYYY-MM-DD``) whose acquisitions
            count as *before* the event.
        event_end: first day (inclusive) whose acquisitions count as *after*.
        orbit: passes used by default: ``d`` descending, ``a`` ascending,
            ``both``, or ``none`` for cubes without an orbit coordinate.
        trigger: what caused the landslides, for reports.
        names: variable and coordinate names inside this cube (a mapping is accepted).

    Dates are stored as ``YYYY-MM-DD`` strings whatever form they came in (a date
    object from YAML, ``20240101``); anything else is a :class:`ConfigError`.
    """

    name: str
    cube: str
    event_start: str
    event_end: str
    orbit: Orbit = "d"
    trigger: str = ""
    names: CubeNames = field(default_factory=CubeNames)

    def __post_init__(self) -> None:
        where = f"region {self.name!r}"
        if not isinstance(self.name, str) or not _NAME.fullmatch(self.name):
            raise ConfigError(
                f"{where}: name must be letters, digits, '_', '-' or '.' (it names files "
                "and metric keys)"
            )
        if not isinstance(self.cube, str | os.PathLike) or not str(self.cube).strip():
            raise ConfigError(f"{where}: cube={self.cube!r}; give the cube's path")
        if not isinstance(self.trigger, str):
            raise ConfigError(f"{where}: trigger={self.trigger!r} is not text")
        start = _parse_day(self.event_start, "event_start", self.name)
        end = _parse_day(self.event_end, "event_end", self.name)
        if end < start:
            raise ConfigError(
                f"{where}: event_end {end} is before event_start {start}; event_start is "
                "the last day before the event and event_end the first day after it "
                "(the same day or later)"
            )
        if self.orbit not in ORBITS:
            raise ConfigError(
                f"{where}: orbit={self.orbit!r} is not one of {', '.join(ORBITS)} "
                "(d descending, a ascending, both, none for a cube without orbits)"
            )
        object.__setattr__(self, "cube", str(self.cube))
        object.__setattr__(self, "event_start", start.isoformat())
        object.__setattr__(self, "event_end", end.isoformat())
        object.__setattr__(self, "names", _cube_names(self.names, self.name))

    @property
    def start_day(self) -> dt.date:
        return dt.date.fromisoformat(self.event_start)

    @property
    def end_day(self) -> dt.date:
        return dt.date.fromisoformat(self.event_end)

    @property
    def builtin(self) -> bool:
        """Whether this is one of the four published regions, exactly as built in."""
        return REGIONS.get(self.name) == self

    def cube_path(self, root: str | os.PathLike | None = None, synthetic: bool = False) -> Path:
        """Where this region's cube lives: ``root/cube`` or ``root/synthetic/cube``.

        An absolute ``cube`` (``~`` expanded) is used as it is, only for real cubes.
        """
        cube = Path(self.cube).expanduser()
        base = data_root(root)
        if synthetic:
            return base / "synthetic" / cube.name
        return cube if cube.is_absolute() else base / cube


ORBITS: tuple[str, ...] = get_args(Orbit)
REGION_KEYS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Region))
REQUIRED_KEYS = ("name", "cube", "event_start", "event_end")
REGION_FILE_SUFFIXES = (".yaml", ".yml")
_NAME = re.compile(r"[A-Za-z0-9_.-]+")
_MAPPING_HELP = (
    "a region mapping needs name, cube, event_start and event_end (YYYY-MM-DD); orbit "
    "(d, a, both, none), trigger and names are optional (README, 'Your own region')"
)


def _parse_day(value: Any, key: str, region: str) -> dt.date:
    """A day from ``YYYY-MM-DD`` text or a date (YAML reads unquoted dates as dates)."""
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return value
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value.strip())
        except ValueError:
            pass
    raise ConfigError(
        f"region {region!r}: {key}={value!r} is not a day; write it as YYYY-MM-DD "
        "(event days are whole days, without a time)"
    )


def _cube_names(names: CubeNames | Mapping[str, Any] | None, region: str) -> CubeNames:
    """``names`` as :class:`CubeNames`; a mapping may set any of its fields."""
    if isinstance(names, CubeNames):
        return names
    if names is None:
        return CubeNames()
    fields = [f.name for f in dataclasses.fields(CubeNames)]
    if not isinstance(names, Mapping):
        raise ConfigError(
            f"region {region!r}: names must be a mapping such as {{vv: VV, time: time}}, "
            f"not {names!r}"
        )
    for key, value in names.items():
        if key not in fields:
            raise ConfigError(
                f"region {region!r}: names.{key} is not a cube name{_closest(key, fields)}; "
                f"names can set {', '.join(fields)}"
            )
        if not isinstance(value, str) or not value:
            raise ConfigError(f"region {region!r}: names.{key}={value!r} must be a name")
    return CubeNames(**names)


def _closest(key: str, choices: list[str] | tuple[str, ...]) -> str:
    match = difflib.get_close_matches(str(key), choices, n=1)
    return f" (did you mean {match[0]!r}?)" if match else ""


REGIONS: dict[str, Region] = {
    region.name: region
    for region in (
        Region(
            name="hokkaido",
            cube="hokkaido_japan.zarr",
            event_start="2018-09-05",
            event_end="2018-09-07",
            orbit="d",
            trigger="Hokkaido Eastern Iburi earthquake, 2018-09-05 18:08 UTC",
        ),
        # The published scripts differ (02-25/02-26 or 02-24/02-25); 02-24 is the
        # safer start: a same-day pass after 01:39 UTC would be post-event.
        Region(
            name="talakmau",
            cube="talakmau_indonesia.zarr",
            event_start="2022-02-24",
            event_end="2022-02-25",
            orbit="d",
            trigger="Pasaman Barat earthquake (Mt Talakmau), 2022-02-25 01:39 UTC",
        ),
        Region(
            name="kaikoura",
            cube="kaikoura_newzealand.zarr",
            event_start="2016-11-13",
            event_end="2016-11-14",
            orbit="a",
            trigger="Kaikoura earthquake, 2016-11-13 11:02 UTC",
        ),
        # Landfall was 2017-09-20 ~10:15 UTC, so an evening pass that day is
        # post-event: 2017-09-19 is the safe last 'before' day.
        Region(
            name="puerto_rico",
            cube="puerto_rico.zarr",
            event_start="2017-09-19",
            event_end="2017-09-21",
            orbit="none",
            trigger="Hurricane Maria landfall, 2017-09-20 ~10:15 UTC",
        ),
    )
}


RegionLike = str | os.PathLike | Mapping[str, Any] | Region


def get_region(region: RegionLike, option: str = "region") -> Region:
    """The region ``region`` means: itself, a built-in name, a mapping, or a region YAML file.

    ``option`` names where the value came from in error messages (``--data.test_region``).
    """
    if isinstance(region, Region):
        return region
    if isinstance(region, Mapping):
        return region_from_mapping(region, option)
    text = os.fspath(region)
    if text in REGIONS:
        return REGIONS[text]
    if Path(text).suffix.lower() in REGION_FILE_SUFFIXES or Path(text).expanduser().is_file():
        return load_region_file(text)
    known = ", ".join(sorted(REGIONS))
    raise ConfigError(
        f"{option}: unknown region {text!r}{_closest(text, list(REGIONS))}; known regions: "
        f"{known}. For a region of your own give a mapping or the path of a YAML file "
        f"holding it ({_MAPPING_HELP})."
    )


def region_from_mapping(mapping: Mapping[str, Any], where: str = "region") -> Region:
    """A region from a mapping; one :class:`ConfigError` naming ``where`` and the key."""
    if not isinstance(mapping, Mapping):
        raise ConfigError(f"{where}: holds {type(mapping).__name__} {mapping!r}; {_MAPPING_HELP}")
    label = f"{where}: region {mapping['name']!r}" if "name" in mapping else where
    unknown = [str(k) for k in mapping if k not in REGION_KEYS]
    if unknown:
        hints = "".join(_closest(k, REGION_KEYS) for k in unknown)
        raise ConfigError(f"{label}: unknown key(s) {', '.join(unknown)}{hints}; {_MAPPING_HELP}")
    missing = [k for k in REQUIRED_KEYS if mapping.get(k) is None]
    if missing:
        raise ConfigError(f"{label}: missing key(s) {', '.join(missing)}; {_MAPPING_HELP}")
    try:
        return Region(**mapping)
    except ConfigError as error:
        raise ConfigError(f"{where}: {error}") from None


def load_region_file(path: str | os.PathLike) -> Region:
    """The region held by a YAML file.

    A relative ``cube`` is relative to the file's own folder (so a file can travel
    with its cube), and must exist.
    """
    path = Path(path).expanduser()
    where = f"region file {path}"
    if not path.is_file():
        state = "is a folder" if path.is_dir() else "not found"
        raise ConfigError(
            f"{where} {state}; give a YAML file holding a region mapping, or a built-in "
            f"region ({', '.join(sorted(REGIONS))})"
        )
    try:
        content = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise ConfigError(f"{where} cannot be read as YAML: {error}") from None
    region = region_from_mapping(content, where)
    cube = (path.parent / Path(region.cube).expanduser()).resolve()  # absolute stays
    if not cube.exists():
        raise ConfigError(
            f"{where}: region {region.name!r}: cube {region.cube!r} resolves to {cube}, "
            "which does not exist; a relative cube in a region file is relative to the "
            "file's folder: give the right path, or an absolute one"
        )
    return dataclasses.replace(region, cube=str(cube))


def data_root(root: str | os.PathLike | None = None) -> Path:
    """The data root: ``root`` if given, else ``$LANDSLIDE_LIT_DATA``, else ``./data``."""
    if root is not None:
        return Path(root).expanduser()
    return Path(os.environ.get(DATA_ROOT_ENV) or "data").expanduser()


def checked_data_root(root: str | os.PathLike | None = None, may_be_missing: bool = False) -> Path:
    """The data root, once it is known to be a folder that holds cubes; never created here.

    A file, a datacube given as the root itself, or (unless ``may_be_missing``: ``fit
    --data.synthetic true`` generates cubes into it) a missing folder is one
    :class:`ConfigError` naming it and where it came from.
    """
    path = data_root(root)
    origin = _root_origin(root, path)
    parent = f"--data.root {path.parent}"
    if path.is_dir() and any((path / marker).exists() for marker in ZARR_MARKERS):
        raise ConfigError(
            f"{origin} is a datacube itself, not the folder that holds the cubes; give its "
            f"folder ({parent}), or for a region of your own, its path as the region's cube"
        )
    if path.exists() and not path.is_dir():
        raise ConfigError(
            f"{origin} is a file, not a folder; the data root is the folder that holds the "
            f"cubes (for a cube file: {parent})"
        )
    if not path.exists() and not may_be_missing:
        cube_like = path.suffix.lower() in CUBE_SUFFIXES
        hint = f" It names a cube, not a folder: use {parent}." if cube_like else ""
        raise ConfigError(
            f"{origin} does not exist.{hint} Check it for a typo, or unzip the cubes from "
            f"the Zenodo record DOI {ZENODO_DOI} into it; `landslide-lit fit "
            "--data.synthetic true` generates synthetic cubes there instead."
        )
    return path


def _root_origin(root: str | os.PathLike | None, path: Path) -> str:
    """The data root as the user set it: the option, the variable or the default."""
    if root is None and not os.environ.get(DATA_ROOT_ENV):
        cwd = Path.cwd()
        return f"the default data root ./data (in {cwd}; set --data.root or ${DATA_ROOT_ENV})"
    shown = path if path.is_absolute() else f"{path} (in {Path.cwd()})"
    option = "--data.root " if root is not None else f"${DATA_ROOT_ENV}="
    return f"the data root {option}{shown}"
