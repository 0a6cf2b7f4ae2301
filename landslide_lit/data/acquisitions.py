"""Which acquisitions make the before and after composites of a region's event.

Before: acquisition day <= ``event_start``; after: day >= ``event_end``, in the orbit
direction asked for and, in a cube with a ``sat:relative_orbit`` coordinate, one relative
orbit (``relative_orbit: auto|N|none``), each acquisition time once; the recipe
(``paper`` or ``published_code``, see
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

__all__ = [
    "PERIODS",
    "RELATIVE_ORBIT",
    "Acquisitions",
    "Period",
    "choose_relative_orbit",
    "relative_orbits",
    "resolve_orbit",
    "select_acquisitions",
]

log = logging.getLogger(__name__)

Period = Literal["before", "after"]
PERIODS: tuple[Period, ...] = ("before", "after")
"""The two periods of an event whose acquisitions are composited."""
RELATIVE_ORBIT = "sat:relative_orbit"
"""The per-timestep coordinate of relative orbit numbers (STAC's name), when a cube has one."""


@dataclass(frozen=True)
class Acquisitions:
    """Indices (into the cube's timestep axis) of the acquisitions of each period.

    ``relative_orbit``: the relative orbit they all share, or None (the cube has no
    ``sat:relative_orbit`` coordinate, or ``relative_orbit: none`` mixed them).
    """

    before: tuple[int, ...]
    after: tuple[int, ...]
    relative_orbit: int | None = None


def select_acquisitions(
    ds: xr.Dataset, region: Region, settings: CompositeSettings
) -> Acquisitions:
    """Pick the before/after acquisitions for ``region``'s event.

    Before: acquisition day <= ``event_start``; after: day >= ``event_end``
    (whole days, inclusive, as the published code sliced), in the orbit direction and
    relative orbit asked for. Raises when a period has none; warns loudly when fewer
    acquisitions exist than asked.
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
    usable = np.ones(len(times), bool) if orbit in ("both", "none") else states == orbit
    usable &= _first_of_duplicates(times, states, names, path)
    days = [t.date() for t in times.normalize()]
    is_before = np.array([d <= region.start_day for d in days], bool)
    is_after = np.array([d >= region.end_day for d in days], bool)
    relative = relative_orbits(ds, names, settings, path)
    kept = None
    if relative is not None:
        kept = choose_relative_orbit(relative, usable, is_before, is_after, settings, path)
        usable &= relative == kept
    order = np.argsort(times.values, kind="stable")
    before = [i for i in order if usable[i] and is_before[i]]
    after = [i for i in order if usable[i] and is_after[i]]

    for period, found in (("before", before), ("after", after)):
        if not found:
            raise CubeError(_empty_window_message(ds, region, period, orbit, kept, times, states))

    chosen_before = _recipe_before(before, settings)
    chosen_after = tuple(int(i) for i in after[: settings.after_count])
    _warn_if_short(region, "before", len(before), settings.before, path)
    _warn_if_short(region, "after", len(after), settings.after_count, path)
    return Acquisitions(before=chosen_before, after=chosen_after, relative_orbit=kept)


def relative_orbits(
    ds: xr.Dataset, names: CubeNames, settings: CompositeSettings, path: object
) -> np.ndarray | None:
    """Per-timestep relative orbit numbers the composite filters on, or None when it does not.

    None with ``relative_orbit: none`` and, under ``auto``, for a cube without a
    ``sat:relative_orbit`` coordinate (the published cubes carry no relative orbit). A
    number asked of such a cube, or a coordinate that holds anything but whole numbers
    >= 1 along the time axis, is a :class:`CubeError`.
    """
    setting = settings.relative_orbit
    if setting == "none":
        return None
    if RELATIVE_ORBIT not in ds.variables:
        if setting == "auto":
            return None
        raise CubeError(
            f"{path}: --data.composite.relative_orbit {setting} asked for, but the cube has "
            f"no {RELATIVE_ORBIT!r} coordinate (the published cubes carry no relative orbit); "
            "use --data.composite.relative_orbit auto or none"
        )
    coord = ds[RELATIVE_ORBIT]
    values = np.asarray(coord.values)
    numeric = np.issubdtype(values.dtype, np.integer) or np.issubdtype(values.dtype, np.floating)
    if coord.dims != (names.time,) or not numeric or not _whole_and_positive(values):
        examples = ", ".join(repr(v) for v in values.ravel()[:4].tolist())
        raise CubeError(
            f"{path}: coordinate {RELATIVE_ORBIT!r} (dims {coord.dims}, values {examples}) "
            f"is not one relative orbit number (a whole number >= 1) per {names.time!r}; "
            "fix the cube, or set --data.composite.relative_orbit none to mix every "
            "relative orbit"
        )
    return values.astype(np.int64)


def _whole_and_positive(values: np.ndarray) -> bool:
    with np.errstate(invalid="ignore"):
        return bool(np.all(np.isfinite(values) & (values >= 1) & (values == np.round(values))))


def choose_relative_orbit(
    relative: np.ndarray,
    usable: np.ndarray,
    is_before: np.ndarray,
    is_after: np.ndarray,
    settings: CompositeSettings,
    path: object,
) -> int | None:
    """The relative orbit the composites keep, among the ``usable`` acquisitions.

    A number N: N, when the cube has it at all (else a :class:`CubeError` listing the
    relative orbits it has). ``auto``: the relative orbit with the most pre-event passes
    among those with passes on both sides of the event; ties go to the one with more
    post-event passes, then to the lowest number. When no relative orbit has passes on
    both sides, the one with the most pre-event passes (same ties), whose empty window
    is then reported. None when no acquisition is usable (reported by the caller).
    """
    counts = {
        int(r): (
            int(np.sum(usable & is_before & (relative == r))),
            int(np.sum(usable & is_after & (relative == r))),
        )
        for r in np.unique(relative[usable])
    }
    setting = settings.relative_orbit
    if isinstance(setting, int):
        if setting not in set(relative.tolist()):
            raise CubeError(
                f"{path}: --data.composite.relative_orbit {setting}: the cube has no "
                f"acquisition in relative orbit {setting}; it has relative orbits "
                f"{', '.join(str(r) for r in sorted(set(relative.tolist())))}. Pick one of "
                "them, auto, or none"
            )
        return setting
    if not counts:
        return None
    chosen = max(counts, key=lambda r: (min(counts[r]) > 0, *counts[r], -r))
    listed = "; ".join(f"{r}: {b} before, {a} after" for r, (b, a) in sorted(counts.items()))
    log.info(
        "%s: relative orbit %d chosen for the composites (--data.composite.relative_orbit "
        "auto: the most pre-event passes); passes per relative orbit: %s",
        path,
        chosen,
        listed,
    )
    return chosen


def _empty_window_message(
    ds: xr.Dataset,
    region: Region,
    period: Period,
    orbit: Orbit,
    relative_orbit: int | None,
    times: pd.DatetimeIndex,
    states: np.ndarray | None,
) -> str:
    """No acquisition in ``period``: what was asked, and every acquisition the cube has."""
    path = ds.encoding.get("source", "cube")
    asked = f"in orbit {orbit!r}"
    fix = "choose another orbit with --data.composite.orbit"
    if relative_orbit is not None:
        asked += f" and relative orbit {relative_orbit}"
        fix += " or another relative orbit with --data.composite.relative_orbit (N, or none)"
    listed, legend = _describe_acquisitions(times, states, ds.get(RELATIVE_ORBIT))
    return (
        f"{path}: no acquisitions {period} the {region.name} event "
        f"({_period_rule(region, period)}) {asked}. The cube has{legend}: {listed}. Check "
        f"the region's event dates or {fix}"
    )


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


def _describe_acquisitions(
    times: pd.DatetimeIndex, states: np.ndarray | None, relative: xr.DataArray | None
) -> tuple[str, str]:
    """Every acquisition as ``date(orbit)``, or ``date(orbit/relative orbit)`` when the cube
    has relative orbits; and the legend saying which."""
    orbits = [str(s) for s in states] if states is not None else ["?"] * len(times)
    legend = ""
    if relative is not None and relative.shape == (len(times),):
        orbits = [f"{o}/{_number(r)}" for o, r in zip(orbits, relative.values, strict=True)]
        legend = " (date(orbit state/relative orbit))"
    listed = ", ".join(f"{t:%Y-%m-%d}({o})" for t, o in zip(times, orbits, strict=True))
    return listed, legend


def _number(value: object) -> str:
    """A relative orbit as written: 46 for 46.0, anything else as it is."""
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    return str(value)


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
