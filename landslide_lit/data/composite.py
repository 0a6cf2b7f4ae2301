"""Before/after SAR composites and the channel stack, as xarray.

The published method (Prapas et al.): natural log of linear ``vv``/``vh``; only
descending passes; *before* = pixel-wise mean of the last N pre-event
acquisitions, *after* = the first post-event acquisition; terrain channels are
aspect, slope and curvature. Each timestep is read once, one slice at a time,
so memory stays at a few (y, x) planes whatever the number of acquisitions.
"""

from __future__ import annotations

import itertools
import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import xarray as xr

from landslide_lit.data.cube import (
    MISSING_CHUNKS_FIX,
    CubeError,
    acquisition_times,
    chunk_layouts,
    orbit_states,
    require_variables,
    store_positions,
)
from landslide_lit.errors import ConfigError
from landslide_lit.regions import CubeNames, Orbit, Region

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
            raise ConfigError(
                f"--data.channels={channels!r}: unknown preset; use one of "
                f"{sorted(CHANNEL_PRESETS)} or a list of channel names"
            )
        return CHANNEL_PRESETS[channels]
    names = tuple(channels)
    if not names:
        raise ConfigError("--data.channels: the list is empty; give at least one channel")
    if len(set(names)) != len(names):
        raise ConfigError(f"--data.channels={list(names)}: a channel is listed twice")
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
    in_orbit &= _first_of_duplicates(times, states, names, path)
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


def _first_of_duplicates(
    times: pd.DatetimeIndex, states: np.ndarray | None, names: CubeNames, path: object
) -> np.ndarray:
    """Which timesteps to use: each acquisition time once (the first stored), never twice.

    A time stored twice is the same acquisition (a cube assembled from overlapping
    downloads), so averaging both would weigh it double: the first is kept, with a
    warning naming them. Copies that disagree in orbit cannot be the same acquisition,
    and which is right is unknown: an error.
    """
    keep = ~times.duplicated(keep="first")
    if keep.all():
        return keep
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
    return keep


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
        out["label"] = _label(ds, names, settings, path)
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
        _check_chunks(ds, var, names.time, indices, settings, path)
        source = _Source(
            ds, var, names, settings, path, var in (names.vv, names.vh), empty_slices == "allow"
        )
        _reduce_over_time(source, indices, settings.reducer, out)
        return
    if "@" in channel:
        var, _, pair = channel.rpartition("@")
        require_variables(ds, [var], names, path, dims=(names.pair, names.y, names.x))
        try:
            index = int(pair)
            ds[var].isel({names.pair: index})  # lazy: only checks the index
        except (ValueError, IndexError):
            raise CubeError(
                f"{path}: channel {channel!r}: pair index {pair!r} is not an integer in "
                f"[-{ds.sizes[names.pair]}, {ds.sizes[names.pair]})"
            ) from None
        index %= ds.sizes[names.pair]
        _check_chunks(ds, var, names.pair, (index,), settings, path)
        out[...] = read_plane(ds, var, names, settings, path, {names.pair: index})
        return
    var = {
        "dem": names.dem,
        "dem_aspect": names.aspect,
        "dem_slope_radians": names.slope,
        "dem_curvature": names.curvature,
    }.get(channel, channel)
    require_variables(ds, [var], names, path, dims=(names.y, names.x))
    _check_chunks(ds, var, None, (), settings, path)
    out[...] = read_plane(ds, var, names, settings, path)


def _label(
    ds: xr.Dataset, names: CubeNames, settings: CompositeSettings, path: object
) -> xr.DataArray:
    """The raw ``landslides`` variable as float32 (y, x), whatever its stored order.

    Always a copy: the result is handed on and may be changed, the source never is.
    """
    require_variables(ds, [names.landslides], names, path, dims=(names.y, names.x))
    _check_chunks(ds, names.landslides, None, (), settings, path)
    label = ds[names.landslides]
    return xr.DataArray(
        np.array(read_plane(ds, names.landslides, names, settings, path)),
        dims=(names.y, names.x),
        attrs=label.attrs,
        name=label.name,
    )


def read_plane(
    ds: xr.Dataset,
    var: str,
    names: CubeNames,
    settings: CompositeSettings,
    path: object,
    fixed: dict[str, int] | None = None,
) -> np.ndarray:
    """``var`` at the ``fixed`` indices (e.g. one timestep) as a float32 (y, x) array.

    Read by dimension NAMES: the stored order of the dimensions does not matter. The
    selection is read in stored order (lazy indexing reads just that), then its axes are
    permuted in memory (a view, no copy, for a cube stored (..., y, x)). Chunk files
    missing from the store are NaN here (only reached with ``missing_chunks: nodata``);
    a chunk that fails to decode is a :class:`CubeError` naming it. The result may be a
    view of an in-memory cube: callers copy before writing.
    """
    fixed = fixed or {}
    selection = ds[var].isel(fixed)
    try:
        values = np.asarray(selection.values)
    except MemoryError:
        raise
    except Exception as exc:  # the codecs raise many types for a corrupt chunk
        raise CubeError(_decode_message(ds, var, fixed, path, exc)) from exc
    values = values.transpose([selection.dims.index(d) for d in (names.y, names.x)])
    if values.dtype != np.float32:
        values = values.astype(np.float32)
    damage = ds.encoding.get("chunk_damage", {}).get(var)
    if damage is not None:
        positions = {d: store_positions(ds, d)[i] for d, i in fixed.items()}
        positions[names.y] = store_positions(ds, names.y)[:, None]
        positions[names.x] = store_positions(ds, names.x)[None, :]
        missing = damage.missing_at(positions)
        if missing.any():
            values = np.where(missing, np.float32(np.nan), values)
    return values


def _check_chunks(
    ds: xr.Dataset,
    var: str,
    dim: str | None,
    indices: Sequence[int],
    settings: CompositeSettings,
    path: object,
) -> None:
    """Stop if chunk files of ``var`` that the composite reads are missing from the store.

    ``indices`` along ``dim`` (a timestep or pair dimension; None for a (y, x) variable)
    are the slices read. The whole store is judged, not a row slice of it, so every part
    of a region gives the same answer. With ``missing_chunks: nodata`` the missing chunks
    are read as NaN instead (:func:`read_plane`).
    """
    damage = ds.encoding.get("chunk_damage", {}).get(var)
    if damage is None or settings.missing_chunks == "nodata":
        return
    missing, used = ~damage.present, ""
    if dim is not None:
        axis = damage.dims.index(dim)
        chunk_of = store_positions(ds, dim) // damage.layout.chunks[axis]
        bad = [i for i in indices if np.take(missing, chunk_of[i], axis=axis).any()]
        missing = np.take(missing, sorted({int(chunk_of[i]) for i in bad}), axis=axis)
        labels = ", ".join(pd.Index(ds[dim].values[bad]).astype(str))
        used = f"; under the {dim} slice(s) the composite reads: {labels}"
    if not missing.any():
        return
    raise CubeError(
        f"{path}: variable {var!r}: {int(missing.sum())} chunk file(s) it needs are missing "
        f"({damage.describe()}{used}). {MISSING_CHUNKS_FIX}"
    )


def _decode_message(
    ds: xr.Dataset, var: str, fixed: dict[str, int], path: object, exc: Exception
) -> str:
    where = ", ".join(f"{d} index {i}" for d, i in fixed.items())
    chunk = _failing_chunk(ds, var, fixed)
    return (
        f"{path}: variable {var!r}{f' at {where}' if where else ''}: a chunk failed to "
        f"decode{f' ({chunk})' if chunk else ''}: {type(exc).__name__}: {exc}. The chunk file "
        "is corrupt or truncated (a damaged copy or download); download or unzip the cube "
        "again"
    )


def _failing_chunk(ds: xr.Dataset, var: str, fixed: dict[str, int]) -> str | None:
    """The store chunk of ``var`` that fails to decode, found by reading chunk by chunk."""
    source = Path(str(ds.encoding.get("source", "")))
    try:
        layout = chunk_layouts(source).get(var) if source.is_dir() else None
        if layout is None:
            return None
        dims = ds[var].dims
        chunk = dict(zip(dims, layout.chunks, strict=True))
        runs = {}  # per free dimension: (local slice, chunk index) of each chunk it crosses
        for d in dims:
            if d in fixed:
                continue
            ids = store_positions(ds, d) // chunk[d]
            edges = [0, *np.flatnonzero(np.diff(ids)) + 1, len(ids)]
            runs[d] = [(slice(a, b), int(ids[a])) for a, b in itertools.pairwise(edges)]
        for combo in itertools.product(*runs.values()):
            where = dict(zip(runs, (s for s, _ in combo), strict=True))
            try:
                ds[var].isel({**fixed, **where}).load()
            except Exception:  # the one that fails is the answer
                ids = dict(zip(runs, (i for _, i in combo), strict=True))
                for d, i in fixed.items():
                    ids[d] = int(store_positions(ds, d)[i]) // chunk[d]
                return f"chunk {layout.key([ids[d] for d in dims])}"
    except (CubeError, OSError, ValueError, KeyError):
        return None
    return None


BLOCK = 1 << 16
"""Elements per block of the fused per-pixel passes (256 KiB of float32): a block's log,
finiteness mask and sums stay in the CPU cache instead of making full-plane temporaries.
Per-pixel arithmetic only, so the result does not depend on it."""


def _blocks(n: int) -> range:
    return range(0, n, BLOCK)


@dataclass(frozen=True)
class _Source:
    """A (time, y, x) variable the composite reads slice by slice, and how."""

    ds: xr.Dataset
    var: str
    names: CubeNames
    settings: CompositeSettings
    path: object
    log_amplitude: bool
    allow_empty: bool


def _reduce_over_time(
    source: _Source,
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
        _reduce_over_time(source, indices, reducer, tmp)
        out[...] = tmp
        return
    if reducer == "median":
        slices = [_read_slice(source, i) for i in indices]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels stay NaN
            out[...] = np.nanmedian(np.stack(slices), axis=0)
        return
    flat_out = out.reshape(-1)  # out is one C-contiguous channel of the stack
    if len(indices) == 1:  # the mean of one value is that value: no float64 round trip
        _read_slice(source, indices[0], out=out)
        for s in _blocks(flat_out.size):
            block = flat_out[s : s + BLOCK]
            np.copyto(block, np.nan, where=~np.isfinite(block))  # +-inf -> no data
        return
    total = np.zeros(flat_out.size, np.float64)
    count = np.zeros(flat_out.size, np.uint8 if len(indices) < 256 else np.int32)
    plane = np.empty(out.shape, np.float32)  # one buffer for every slice
    flat = plane.reshape(-1)
    for index in indices:
        _read_slice(source, index, out=plane)
        for s in _blocks(flat.size):
            block, finite = flat[s : s + BLOCK], np.isfinite(flat[s : s + BLOCK])
            np.copyto(block, 0, where=~finite)  # our own buffer
            np.add(total[s : s + BLOCK], block, out=total[s : s + BLOCK])
            np.add(count[s : s + BLOCK], finite, out=count[s : s + BLOCK])
    with np.errstate(invalid="ignore", divide="ignore"):
        np.divide(total, count, out=flat_out, casting="same_kind")


def _read_slice(source: _Source, index: int, out: np.ndarray | None = None) -> np.ndarray:
    """Timestep ``index`` of ``source`` as float32 (natural log for amplitudes) in ``out``.

    ``out`` (or a new array) is always our own: the source slice, which an in-memory cube
    hands out as a view, is never written to. A slice without any data is an error
    unless ``allow_empty``.
    """
    ds, var, time_dim, settings = source.ds, source.var, source.names.time, source.settings
    raw = read_plane(ds, var, source.names, settings, source.path, {time_dim: index})
    plane = np.empty(raw.shape, np.float32) if out is None else out
    when = f"{source.path}: {var} at {time_dim} index {index} ({ds[time_dim].values[index]})"
    allow_empty = source.allow_empty
    if not source.log_amplitude:
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
