"""The region registry: name -> cube file, event dates, orbit, variable names.

The four regions of the published datacubes (Boehm et al. 2022, Zenodo DOI
10.5281/zenodo.7248056) are built in. A user adds another region in a config
by giving a mapping instead of a name (see :class:`Region`); no code changes.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

ZENODO_DOI = "10.5281/zenodo.7248056"
DATA_ROOT_ENV = "LANDSLIDE_LIT_DATA"

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
        name: short name used in metric keys, tables and file names.
        cube: the cube's file name (resolved under the data root) or a path.
        event_start: last day (inclusive, ``YYYY-MM-DD``) whose acquisitions
            count as *before* the event.
        event_end: first day (inclusive) whose acquisitions count as *after*.
        orbit: passes used by default: ``d`` descending, ``a`` ascending,
            ``both``, or ``none`` for cubes without an orbit coordinate.
        trigger: what caused the landslides, for reports.
        names: variable and coordinate names inside this cube.
    """

    name: str
    cube: str
    event_start: str
    event_end: str
    orbit: Orbit = "d"
    trigger: str = ""
    names: CubeNames = field(default_factory=CubeNames)

    def __post_init__(self) -> None:
        start, end = (
            _parse_day(self.event_start, "event_start", self.name),
            _parse_day(self.event_end, "event_end", self.name),
        )
        if end < start:
            raise ValueError(
                f"region {self.name!r}: event_end {self.event_end} is before "
                f"event_start {self.event_start}; event_end must be the same day or later"
            )

    @property
    def start_day(self) -> dt.date:
        return _parse_day(self.event_start, "event_start", self.name)

    @property
    def end_day(self) -> dt.date:
        return _parse_day(self.event_end, "event_end", self.name)

    def cube_path(self, root: str | os.PathLike | None = None, synthetic: bool = False) -> Path:
        """Where this region's cube lives: ``root/cube`` or ``root/synthetic/cube``.

        An absolute ``cube`` is used as it is (only for real cubes).
        """
        cube = Path(self.cube)
        base = data_root(root)
        if synthetic:
            return base / "synthetic" / cube.name
        return cube if cube.is_absolute() else base / cube


def _parse_day(value: str, option: str, region: str) -> dt.date:
    try:
        return dt.date.fromisoformat(str(value)[:10])
    except ValueError:
        raise ValueError(
            f"region {region!r}: {option}={value!r} is not a date; write it as YYYY-MM-DD"
        ) from None


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


def get_region(region: str | Region) -> Region:
    """Return ``region`` itself, or the built-in region of that name."""
    if isinstance(region, Region):
        return region
    try:
        return REGIONS[region]
    except KeyError:
        known = ", ".join(sorted(REGIONS))
        raise ValueError(
            f"unknown region {region!r}; known regions: {known}. To use another "
            "region, give a mapping with name, cube, event_start, event_end and orbit "
            "instead of a name (see README, 'Your own region')."
        ) from None


def data_root(root: str | os.PathLike | None = None) -> Path:
    """The data root: ``root`` if given, else ``$LANDSLIDE_LIT_DATA``, else ``./data``."""
    if root is not None:
        return Path(root).expanduser()
    return Path(os.environ.get(DATA_ROOT_ENV, "data")).expanduser()
