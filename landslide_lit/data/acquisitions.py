"""Which acquisitions make the before and after composites of a region's event.

Before: acquisition day <= ``event_start``; after: day >= ``event_end``, in the orbit
asked for, each acquisition time once; the recipe (``paper`` or ``published_code``, see
:class:`~landslide_lit.data.settings.CompositeSettings`) picks which of them are averaged.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
import xarray as xr

from landslide_lit.data.cube import CubeError, acquisition_times, orbit_states
from landslide_lit.data.settings import CompositeSettings
from landslide_lit.regions import CubeNames, Orbit, Region

__all__ = ["PERIODS", "Acquisitions", "Period", "resolve_orbit", "select_acquisitions"]

log = logging.getLogger(__name__)

Period = Literal["before", "after"]
PERIODS: tuple[Period, ...] = ("before", "after")
"""The two periods of an event whose acquisitions are composited."""


@dataclass(frozen=True)
class Acquisitions:
    """Indices (into the cube's timestep axis) of the acquisitions of each period."""

    before: tuple[int, ...]
    after: tuple[int, ...]


def select_acquisitions(
    ds: xr.Dataset, region: Region, settings: CompositeSettings
) -> Acquisitions:
    """Pick the before/after acquisitions for ``region``'s event.

    Before: acquisition day <= ``event_start``; after: day >= ``event_end``
    (whole days, inclusive, as the published code sliced). Raises when a
    period has none; warns loudly when fewer acquisitions exist than asked.
    """
    names, path = region.names, ds.encoding.get("source", "cube")
    times = acquisition_times(ds, names, path)
    orbit = resolve_orbit(region, settings)
    states = orbit_states(ds, names)
    if orbit in ("d", "a") and states is None:
        raise CubeError(
            f"{path}: orbit filter {orbit!r} asked for, but the cube has no "
            f"{names.orbit!r} coordinate; set --data.composite.orbit none (or the region's "
            "orbit to none) to use every acquisition"
        )
    in_orbit = np.ones(len(times), bool) if orbit in ("both", "none") else states == orbit
    in_orbit &= _first_of_duplicates(times, states, names, path)
    days = times.normalize()
    order = np.argsort(times.values, kind="stable")
    before = [i for i in order if in_orbit[i] and days[i].date() <= region.start_day]
    after = [i for i in order if in_orbit[i] and days[i].date() >= region.end_day]

    for period, found in (("before", before), ("after", after)):
        if not found:
            raise CubeError(
                f"{path}: no acquisitions {period} the {region.name} event "
                f"({_period_rule(region, period)}) in orbit {orbit!r}. The cube has: "
                f"{_describe_acquisitions(times, states)}. Check the region's event dates "
                "or choose another orbit with --data.composite.orbit"
            )

    chosen_before = _recipe_before(before, settings)
    chosen_after = tuple(int(i) for i in after[: settings.after_count])
    _warn_if_short(region, "before", len(before), settings.before, path)
    _warn_if_short(region, "after", len(after), settings.after_count, path)
    return Acquisitions(before=chosen_before, after=chosen_after)


def _first_of_duplicates(
    times: pd.DatetimeIndex, states: np.ndarray | None, names: CubeNames, path: object
) -> np.ndarray:
    """Which timesteps to use: each acquisition time once (the first stored), never twice.

    A time stored twice is the same acquisition (a cube assembled from overlapping
    downloads), so averaging both would weigh it double: the first is kept, with a
    warning naming them. Copies that disagree in orbit cannot be the same acquisition,
    and which is right is unknown: an error.
    """
    first = ~times.duplicated(keep="first")
    if first.all():
        return first
    groups = pd.Series(np.arange(len(times))).groupby(times.values).agg(list)
    groups = groups[groups.map(len) > 1]
    if states is not None:
        clash = [(t, g) for t, g in groups.items() if len(set(states[g])) > 1]
        if clash:
            listed = "; ".join(
                f"{pd.Timestamp(t)} at indices {g} with orbits {[str(s) for s in states[g]]}"
                for t, g in clash
            )
            raise CubeError(
                f"{path}: the same acquisition time appears twice in {names.time!r} with "
                f"different orbits ({names.orbit!r}): {listed}. One of them is mislabelled; "
                "fix the cube's times or orbits"
            )
    listed = "; ".join(f"{pd.Timestamp(t)} at indices {g} (kept {g[0]})" for t, g in groups.items())
    message = (
        f"{path}: {len(groups)} acquisition time(s) appear more than once in "
        f"{names.time!r}: {listed}. The same acquisition is used once, from its first "
        "timestep, so that it is not averaged twice"
    )
    warnings.warn(message, UserWarning, stacklevel=3)
    log.warning(message)
    return first


def _recipe_before(before: list[int], settings: CompositeSettings) -> tuple[int, ...]:
    """The pre-event acquisitions (time-ordered indices) the recipe averages.

    ``paper``: the last N. ``published_code``: what that code's
    ``isel(range(-1 - N, -1))`` selects when run: with more than N pre-event
    acquisitions, the N before the last one; with N or fewer, all of them.
    """
    n = settings.before
    if settings.recipe == "published_code" and len(before) > n:
        return tuple(int(i) for i in before[-1 - n : -1])
    return tuple(int(i) for i in before[-n:])


def resolve_orbit(region: Region, settings: CompositeSettings) -> Orbit:
    """The pass direction the composite keeps: the region's own, or the settings'."""
    return region.orbit if settings.orbit == "region" else settings.orbit


def _period_rule(region: Region, period: str) -> str:
    if period == "before":
        return f"on or before {region.event_start}"
    return f"on or after {region.event_end}"


def _describe_acquisitions(times: pd.DatetimeIndex, states: np.ndarray | None) -> str:
    orbits = states if states is not None else ["?"] * len(times)
    return ", ".join(f"{t:%Y-%m-%d}({o})" for t, o in zip(times, orbits, strict=True))


def _warn_if_short(region: Region, period: str, found: int, wanted: int, path: object) -> None:
    """Fewer acquisitions than asked: a loud warning, not an error (documented choice).

    In a rapid-response setting a composite of fewer images is still the same
    estimate with more speckle, and stopping would leave the analyst with no
    map. The composite's attributes record exactly which dates were used.
    """
    if found < wanted:
        message = (
            f"{path}: only {found} acquisition(s) {period} the {region.name} event, "
            f"{wanted} asked for (--data.composite.{period}); the {period} composite "
            f"uses {found}"
        )
        warnings.warn(message, UserWarning, stacklevel=3)
        log.warning(message)
