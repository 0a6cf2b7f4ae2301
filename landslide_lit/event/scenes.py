"""Sentinel-1 acquisitions of a new event and where their backscatter comes from.

A :class:`Scene` is one acquisition (one time and platform) with a :class:`Source` per
polarisation. A source only has to resample its values onto a :class:`~.grid.Grid`; the
GeoTIFF route (:mod:`~landslide_lit.event.geotiff`) and the STAC route implement it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol, get_args

import numpy as np

from landslide_lit.errors import LandslideLitError
from landslide_lit.event.grid import Grid

__all__ = [
    "POLARISATIONS",
    "SCALES",
    "EventInputError",
    "OrbitState",
    "Polarisation",
    "Scale",
    "Scene",
    "Source",
    "to_power",
]

Scale = Literal["power", "amplitude", "db"]
"""How values are stored: linear power, amplitude (sqrt of power) or decibels (10 log10)."""
SCALES: tuple[str, ...] = get_args(Scale)
Polarisation = Literal["vv", "vh"]
POLARISATIONS: tuple[Polarisation, ...] = ("vv", "vh")
OrbitState = Literal["a", "d"]


class EventInputError(LandslideLitError, ValueError):
    """SAR, DEM or inventory input of ``landslide-lit cube`` that cannot be used as given."""


class Source(Protocol):
    """The values of one polarisation of one scene."""

    def read(self, grid: Grid) -> np.ndarray:
        """Values resampled onto ``grid`` as float32 (height, width), in the scene's own
        scale, NaN where there are no data (outside the footprint, nodata)."""
        ...


@dataclass(frozen=True)
class Scene:
    """One Sentinel-1 acquisition.

    Attributes:
        time: acquisition start, timezone-aware (converted to UTC).
        platform: e.g. ``sentinel-1a`` (lower case).
        orbit_state: ``a`` ascending, ``d`` descending, None if unknown.
        relative_orbit: relative orbit (track) number 1-175, None if unknown.
        name: what the scene is called where it came from (product or item id).
        bands: a :class:`Source` per polarisation ('vv', 'vh').
        scale: the scale the sources' values are in.
        sources: files or URLs the bands are read from, for the cube's provenance.
    """

    time: dt.datetime
    platform: str
    orbit_state: OrbitState | None
    relative_orbit: int | None
    name: str
    bands: Mapping[str, Source]
    scale: Scale = "power"
    sources: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.time.tzinfo is None:
            raise ValueError(f"scene {self.name}: time {self.time} has no time zone")
        object.__setattr__(self, "time", self.time.astimezone(dt.timezone.utc))
        object.__setattr__(self, "platform", self.platform.lower())
        if self.orbit_state not in (None, "a", "d"):
            raise ValueError(f"scene {self.name}: orbit_state {self.orbit_state!r}")
        if self.scale not in SCALES:
            raise ValueError(f"scene {self.name}: scale {self.scale!r} not one of {SCALES}")
        unknown = set(self.bands) - set(POLARISATIONS)
        if unknown:
            raise ValueError(f"scene {self.name}: bands {sorted(unknown)} not in {POLARISATIONS}")


def to_power(values: np.ndarray, scale: Scale) -> np.ndarray:
    """``values`` in ``scale`` as linear power (float32; NaN stays NaN)."""
    values = np.asarray(values, dtype=np.float32)
    if scale == "power":
        return values
    if scale == "amplitude":
        return np.square(values)
    return np.power(np.float32(10.0), values / np.float32(10.0))
