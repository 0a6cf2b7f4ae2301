"""Before/after SAR composites and the channel stack, as xarray.

The published method (Prapas et al.): natural log of linear ``vv``/``vh``; only
descending passes; *before* = pixel-wise mean of the last N pre-event
acquisitions, *after* = the first post-event acquisition; terrain channels are
aspect, slope and curvature. Each timestep is read once, one slice at a time,
so memory stays at a few (y, x) planes whatever the number of acquisitions.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
import xarray as xr

from landslide_lit.data.cube import (
    CubeError,
    acquisition_times,
    orbit_states,
    require_variables,
)
from landslide_lit.errors import ConfigError
from landslide_lit.regions import Orbit, Region

log = logging.getLogger(__name__)

SAR_CHANNELS = ("vv_before", "vh_before", "vv_after", "vh_after")
TERRAIN_CHANNELS = ("dem_aspect", "dem_slope_radians", "dem_curvature")
CHANNEL_PRESETS: dict[str, tuple[str, ...]] = {
    "sar": SAR_CHANNELS,
    "sar_dem": SAR_CHANNELS + TERRAIN_CHANNELS,
}
WINDOWS = ("before", "after")


Recipe = Literal["paper", "published_code"]
RECIPES: tuple[str, ...] = ("paper", "published_code")
_CHOICES: dict[str, tuple[str, ...]] = {
    "reducer": ("mean", "median"),
    "orbit": ("region", "d", "a", "both", "none"),
    "recipe": RECIPES,
    "nonpositive": ("error", "nodata"),
    "missing_chunks": ("error", "nodata"),
}


@dataclass(frozen=True)
class CompositeSettings:
    """How the before/after composites are made.

    Attributes:
        before: number N of pre-event acquisitions averaged.
        after: number of post-event acquisitions averaged; None: the recipe's (1 for
            ``paper``, N for ``published_code``).
        recipe: which acquisitions: ``paper`` (the seed paper: the last N before the event,
            the first ``after`` after it) or ``published_code`` (the code published with the
            predecessor paper: with more than N pre-event acquisitions it skips the last
            one, ``isel(range(-1 - N, -1))``, with N or fewer it takes them all; after =
            the first N). ``published_code`` takes no other ``after`` than N.
        reducer: ``mean`` (published) or ``median`` across the acquisitions.
        orbit: ``region`` uses the region's own setting (descending for Hokkaido
            and Talakmau, as published); ``d``/``a`` keep one pass direction,
            ``both`` keeps all passes, ``none`` ignores orbits (for cubes without
            a ``sat:orbit_state`` coordinate).
        nonpositive: amplitudes <= 0 are impossible for linear power; ``error``
            stops with a message, ``nodata`` treats them as missing (NaN).
        missing_chunks: chunk files absent from a Zarr store (a partial copy or unzip)
            under a variable the composite reads; ``error`` stops with a message,
            ``nodata`` reads them as missing (NaN).
    """

    before: int = 4
    after: int | None = None
    reducer: Literal["mean", "median"] = "mean"
    orbit: Literal["region", "d", "a", "both", "none"] = "region"
    recipe: Recipe = "paper"
    nonpositive: Literal["error", "nodata"] = "error"
    missing_chunks: Literal["error", "nodata"] = "error"

    def __post_init__(self) -> None:
        for option in ("before", "after"):
            value = getattr(self, option)
            if value is None and option == "after":
                continue
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
                raise ConfigError(
                    f"--data.composite.{option} {value!r}: need a whole number of "
                    "acquisitions, at least 1"
                )
        for option, choices in _CHOICES.items():
            if getattr(self, option) not in choices:
                raise ConfigError(
                    f"--data.composite.{option} {getattr(self, option)!r}: use one of "
                    f"{', '.join(choices)}"
                )
        if self.recipe == "published_code" and self.after not in (None, self.before):
            raise ConfigError(
                f"--data.composite.after {self.after} with --data.composite.recipe "
                f"published_code: the published code averages the first N = "
                f"--data.composite.before = {self.before} post-event acquisitions. Leave "
                "--data.composite.after out (or null in a config file), set it to "
                f"{self.before}, or use --data.composite.recipe paper"
            )

    @property
    def after_count(self) -> int:
        """The number of post-event acquisitions averaged."""
        if self.after is not None:
            return self.after
        return self.before if self.recipe == "published_code" else 1


def resolve_channels(channels: str | Sequence[str]) -> tuple[str, ...]:
    """Channel names from a preset name (``sar``, ``sar_dem``) or an explicit list.

    Explicit names may be ``vv_before``-style SAR composites (any timestep
    variable with ``_before``/``_after``), terrain or other (y, x) variables by
    name (e.g. ``dem``), or ``NAME@K`` for pair K of an interferometric
    (timepair, y, x) variable such as a coherence.
    """
    if isinstance(channels, str):
        if channels not in CHANNEL_PRESETS:
            raise ValueError(
                f"channels={channels!r}: unknown preset; use one of {sorted(CHANNEL_PRESETS)} "
                "or a list of channel names"
            )
        return CHANNEL_PRESETS[channels]
    names = tuple(channels)
    if not names:
        raise ValueError("channels: the list is empty; give at least one channel")
    if len(set(names)) != len(names):
        raise ValueError(f"channels={list(names)}: a channel is listed twice")
    return names


@dataclass(frozen=True)
class Windows:
    """Indices (into the cube's timestep axis) of the acquisitions in each window."""

    before: tuple[int, ...]
    after: tuple[int, ...]


def select_windows(ds: xr.Dataset, region: Region, settings: CompositeSettings) -> Windows:
    """Pick the before/after acquisitions for ``region``'s event.

    Before: acquisition day <= ``event_start``; after: day >= ``event_end``
    (whole days, inclusive, as the published code sliced). Raises when a
    window is empty; warns loudly when fewer acquisitions exist than asked.
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
    days = times.normalize()
    order = np.argsort(times.values, kind="stable")
    before = [i for i in order if in_orbit[i] and days[i].date() <= region.start_day]
    after = [i for i in order if in_orbit[i] and days[i].date() >= region.end_day]

    for window, found in (("before", before), ("after", after)):
        if not found:
            raise CubeError(
                f"{path}: no acquisitions {window} the {region.name} event "
                f"({_window_rule(region, window)}) in orbit {orbit!r}. The cube has: "
                f"{_describe_acquisitions(times, states)}. Check the region's event dates "
                "or choose another orbit with --data.composite.orbit"
            )

    chosen_before = _recipe_before(before, settings)
    chosen_after = tuple(int(i) for i in after[: settings.after_count])
    _warn_if_short(region, "before", len(before), settings.before, path)
    _warn_if_short(region, "after", len(after), settings.after_count, path)
    return Windows(before=chosen_before, after=chosen_after)


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
    return region.orbit if settings.orbit == "region" else settings.orbit


def _window_rule(region: Region, window: str) -> str:
    if window == "before":
        return f"on or before {region.event_start}"
    return f"on or after {region.event_end}"


def _describe_acquisitions(times: pd.DatetimeIndex, states: np.ndarray | None) -> str:
    orbits = states if states is not None else ["?"] * len(times)
    return ", ".join(f"{t:%Y-%m-%d}({o})" for t, o in zip(times, orbits, strict=True))


def _warn_if_short(region: Region, window: str, found: int, wanted: int, path: object) -> None:
    """Fewer acquisitions than asked: a loud warning, not an error (documented choice).

    In a rapid-response setting a composite of fewer images is still the same
    estimate with more speckle, and stopping would leave the analyst with no
    map. The composite's attributes record exactly which dates were used.
    """
    if found < wanted:
        message = (
            f"{path}: only {found} acquisition(s) {window} the {region.name} event, "
            f"{wanted} asked for (--data.composite.{window}); the {window} composite "
            f"uses {found}"
        )
        warnings.warn(message, UserWarning, stacklevel=3)
        log.warning(message)


def build_composite(
    ds: xr.Dataset,
    region: Region,
    channels: str | Sequence[str],
    settings: CompositeSettings | None = None,
    empty_slices: Literal["error", "allow"] = "error",
) -> xr.Dataset:
    """Stack ``channels`` for ``region`` into ``image`` (channel, y, x) and ``label`` (y, x).

    The result keeps the cube's y/x coordinates, other coordinates without a
    time or pair dimension (e.g. ``spatial_ref``) and its attributes (CRS
    included), plus the dates actually used. ``label`` is the raw
    ``landslides`` variable (absent when the cube has none).

    ``empty_slices``: an acquisition with no data at all in ``ds`` is an ``error``
    (whole regions), or ``allow``-ed for a part of a region (a band of rows outside an
    acquisition's footprint), whose caller checks the region as a whole.
    """
    settings = settings or CompositeSettings()
    channel_names = resolve_channels(channels)
    names, path = region.names, ds.encoding.get("source", "cube")
    windows = _windows_for(ds, region, settings, channel_names)

    # One (channel, y, x) array filled channel by channel: no list of planes to stack, so
    # memory stays at the composite plus one channel's reads.
    shape = (len(channel_names), ds.sizes[names.y], ds.sizes[names.x])
    stack = np.empty(shape, np.float32)
    for i, name in enumerate(channel_names):
        _channel(ds, region, name, windows, settings, path, empty_slices, out=stack[i])
    image = xr.DataArray(
        stack,
        dims=("channel", names.y, names.x),
        coords={"channel": list(channel_names)},
        name="image",
    )
    out = xr.Dataset({"image": image})
    if names.landslides in ds.variables:
        out["label"] = ds[names.landslides].astype(np.float32).load()
    spatial = {
        k: v for k, v in ds.coords.items() if names.time not in v.dims and names.pair not in v.dims
    }
    out = out.assign_coords(spatial)
    out.attrs = {**ds.attrs, **_provenance(ds, region, settings, windows)}
    return out


def composite_attrs(
    ds: xr.Dataset,
    region: Region,
    channels: str | Sequence[str],
    settings: CompositeSettings | None = None,
) -> dict[str, str | int]:
    """The attributes :func:`build_composite` gives its result (the cube's, the dates used),
    without reading any data; warns as it does when a window is short."""
    settings = settings or CompositeSettings()
    windows = _windows_for(ds, region, settings, resolve_channels(channels))
    return {**ds.attrs, **_provenance(ds, region, settings, windows)}


def _windows_for(
    ds: xr.Dataset, region: Region, settings: CompositeSettings, channels: Sequence[str]
) -> Windows | None:
    """The acquisitions ``channels`` need (None when none is a before/after composite)."""
    if any(_window_of(c) for c in channels):
        return select_windows(ds, region, settings)
    return None


def _window_of(channel: str) -> str | None:
    suffix = channel.rsplit("_", 1)[-1]
    return suffix if "_" in channel and suffix in WINDOWS else None


def _channel(
    ds: xr.Dataset,
    region: Region,
    channel: str,
    windows: Windows | None,
    settings: CompositeSettings,
    path: object,
    empty_slices: Literal["error", "allow"],
    out: np.ndarray,
) -> None:
    """Write ``channel`` (y, x) into ``out``."""
    names = region.names
    window = _window_of(channel)
    if window is not None:
        base = channel[: -len(window) - 1]
        var = {"vv": names.vv, "vh": names.vh}.get(base, base)
        require_variables(ds, [var], names, path, dims=(names.time, names.y, names.x))
        indices = getattr(windows, window)
        amplitude = var in (names.vv, names.vh)
        read = (ds[var], names.time, settings, amplitude, path, empty_slices == "allow")
        _reduce_over_time(read, indices, settings.reducer, out)
        return
    if "@" in channel:
        var, _, pair = channel.rpartition("@")
        require_variables(ds, [var], names, path, dims=(names.pair, names.y, names.x))
        try:
            out[...] = ds[var].isel({names.pair: int(pair)}).values
            return
        except (ValueError, IndexError):
            raise CubeError(
                f"{path}: channel {channel!r}: pair index {pair!r} is not an integer in "
                f"[-{ds.sizes[names.pair]}, {ds.sizes[names.pair]})"
            ) from None
    var = {
        "dem": names.dem,
        "dem_aspect": names.aspect,
        "dem_slope_radians": names.slope,
        "dem_curvature": names.curvature,
    }.get(channel, channel)
    require_variables(ds, [var], names, path, dims=(names.y, names.x))
    out[...] = ds[var].values


BLOCK = 1 << 16
"""Elements per block of the fused per-pixel passes (256 KiB of float32): a block's log,
finiteness mask and sums stay in the CPU cache instead of making full-plane temporaries.
Per-pixel arithmetic only, so the result does not depend on it."""


def _blocks(n: int) -> range:
    return range(0, n, BLOCK)


_ReadArgs = tuple[xr.DataArray, str, CompositeSettings, bool, object, bool]
"""The leading arguments of :func:`_read_slice` for one variable."""


def _reduce_over_time(
    read: _ReadArgs,
    indices: tuple[int, ...],
    reducer: Literal["mean", "median"],
    out: np.ndarray,
) -> None:
    """Mean (streamed, one slice in memory) or median of the chosen timesteps, into ``out``.

    The mean sums the finite values in float64 and divides by their per-pixel count (NaN
    where there is none), written to float32 ``out`` by the division itself. Each slice
    is read once and then passed over block by block (see :data:`BLOCK`).
    """
    if not out.flags.c_contiguous:  # the passes below work on flat views of out
        tmp = np.empty(out.shape, np.float32)
        _reduce_over_time(read, indices, reducer, tmp)
        out[...] = tmp
        return
    if reducer == "median":
        slices = [_read_slice(*read, i) for i in indices]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels stay NaN
            out[...] = np.nanmedian(np.stack(slices), axis=0)
        return
    flat_out = out.reshape(-1)  # out is one C-contiguous channel of the stack
    if len(indices) == 1:  # the mean of one value is that value: no float64 round trip
        _read_slice(*read, indices[0], out=out)
        for s in _blocks(flat_out.size):
            block = flat_out[s : s + BLOCK]
            np.copyto(block, np.nan, where=~np.isfinite(block))  # +-inf -> no data
        return
    total = np.zeros(flat_out.size, np.float64)
    count = np.zeros(flat_out.size, np.uint8 if len(indices) < 256 else np.int32)
    plane = np.empty(out.shape, np.float32)  # one buffer for every slice
    flat = plane.reshape(-1)
    for index in indices:
        _read_slice(*read, index, out=plane)
        for s in _blocks(flat.size):
            block, finite = flat[s : s + BLOCK], np.isfinite(flat[s : s + BLOCK])
            np.copyto(block, 0, where=~finite)  # our own buffer
            np.add(total[s : s + BLOCK], block, out=total[s : s + BLOCK])
            np.add(count[s : s + BLOCK], finite, out=count[s : s + BLOCK])
    with np.errstate(invalid="ignore", divide="ignore"):
        np.divide(total, count, out=flat_out, casting="same_kind")


def _read_slice(
    var: xr.DataArray,
    time_dim: str,
    settings: CompositeSettings,
    log_amplitude: bool,
    path: object,
    allow_empty: bool,
    index: int,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Timestep ``index`` of ``var`` as float32 (natural log for amplitudes) in ``out``.

    ``out`` (or a new array) is always our own: the source slice, which an in-memory cube
    hands out as a view, is never written to. A slice without any data is an error
    unless ``allow_empty``.
    """
    raw = np.asarray(var.isel({time_dim: index}).values)
    if raw.dtype != np.float32:
        raw = raw.astype(np.float32)
    plane = np.empty(raw.shape, np.float32) if out is None else out
    when = f"{path}: {var.name} at {time_dim} index {index} ({var[time_dim].values[index]})"
    if not log_amplitude:
        np.copyto(plane, raw)
        if not allow_empty and not _any_finite(plane):
            raise CubeError(_all_nan_message(when))
        return plane
    # One pass per block: look for amplitudes <= 0 and take the log. Without any (the
    # usual case), log is finite exactly where the amplitude is, so the all-NaN check
    # can look at the log.
    src, dst = raw.reshape(-1), plane.reshape(-1)
    nonpositive = False
    with np.errstate(divide="ignore", invalid="ignore"):
        for s in _blocks(src.size):
            block = src[s : s + BLOCK]
            nonpositive = nonpositive or bool(np.less_equal(block, 0).any())
            np.log(block, out=dst[s : s + BLOCK])
    if nonpositive:  # rare: the exact rules, on whole planes
        finite = np.isfinite(raw)
        if not allow_empty and not finite.any():
            raise CubeError(_all_nan_message(when))
        bad = finite & (raw <= 0)
        if bad.any():
            if settings.nonpositive == "error":
                raise CubeError(
                    f"{when}: {int(bad.sum())} amplitude(s) <= 0 (min "
                    f"{float(raw[finite].min()):.4g}); vv/vh must be linear power. If the "
                    "cube holds dB, convert with 10**(dB/10); if 0 marks missing data, set "
                    "--data.composite.nonpositive nodata"
                )
            plane[bad] = np.nan
    elif not allow_empty and not _any_finite(plane):
        raise CubeError(_all_nan_message(when))
    return plane


def _any_finite(plane: np.ndarray) -> bool:
    flat = plane.reshape(-1)
    return any(np.isfinite(flat[s : s + BLOCK]).any() for s in _blocks(flat.size))


def _all_nan_message(when: str) -> str:
    return (
        f"{when} is all NaN (no data); drop that "
        "acquisition or pick others with the composite settings"
    )


def _provenance(
    ds: xr.Dataset, region: Region, settings: CompositeSettings, windows: Windows | None
) -> dict[str, str | int]:
    """Which acquisitions went into the composite, as netCDF-safe attributes."""
    attrs: dict[str, str | int] = {
        "region": region.name,
        "event_start": region.event_start,
        "event_end": region.event_end,
        "composite_reducer": settings.reducer,
        "composite_orbit": resolve_orbit(region, settings),
        "composite_recipe": settings.recipe,
    }
    if windows is not None:
        times = acquisition_times(ds, region.names)
        for window in WINDOWS:
            chosen = getattr(windows, window)
            attrs[f"{window}_acquisitions"] = ",".join(f"{times[i]:%Y-%m-%d}" for i in chosen)
    return attrs
