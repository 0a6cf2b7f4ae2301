"""Before/after SAR composites and the channel stack, as xarray.

:func:`build_composite` stacks the channels of a region into one (channel, y, x) image:
SAR channels (``vv_before``...) average the acquisitions of their period
(:mod:`~landslide_lit.data.acquisitions`) slice by slice (:mod:`~landslide_lit.data.reading`);
terrain and other (y, x) variables, and pairs of interferometric ones (``NAME@K``), are
read as they are. The channel names and :class:`CompositeSettings` it takes live in
:mod:`~landslide_lit.data.settings` and are re-exported here, the module their users read.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import xarray as xr

from landslide_lit.data.acquisitions import (
    PERIODS,
    Acquisitions,
    resolve_orbit,
    select_acquisitions,
)
from landslide_lit.data.cube import CubeError, acquisition_times, require_variables
from landslide_lit.data.reading import TimeSource, check_chunks, read_plane, reduce_over_time
from landslide_lit.data.settings import (
    CHANNEL_PRESETS,
    SAR_CHANNELS,
    TERRAIN_CHANNELS,
    CompositeSettings,
    resolve_channels,
)
from landslide_lit.regions import CubeNames, Region

__all__ = [
    "CHANNEL_PRESETS",
    "SAR_CHANNELS",
    "TERRAIN_CHANNELS",
    "CompositeSettings",
    "build_composite",
    "composite_attrs",
    "resolve_channels",
]


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
    acquisitions = _acquisitions_for(ds, region, settings, channel_names)

    # One (channel, y, x) array filled channel by channel: no list of planes to stack, so
    # memory stays at the composite plus one channel's reads.
    shape = (len(channel_names), ds.sizes[names.y], ds.sizes[names.x])
    stack = np.empty(shape, np.float32)
    for i, name in enumerate(channel_names):
        _channel(ds, region, name, acquisitions, settings, path, empty_slices, out=stack[i])
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
    out.attrs = {**ds.attrs, **_provenance(ds, region, settings, acquisitions)}
    return out


def composite_attrs(
    ds: xr.Dataset,
    region: Region,
    channels: str | Sequence[str],
    settings: CompositeSettings | None = None,
) -> dict[str, str | int]:
    """The attributes :func:`build_composite` gives its result (the cube's, the dates used),
    without reading any data; warns as it does when a period has too few acquisitions."""
    settings = settings or CompositeSettings()
    acquisitions = _acquisitions_for(ds, region, settings, resolve_channels(channels))
    return {**ds.attrs, **_provenance(ds, region, settings, acquisitions)}


def _acquisitions_for(
    ds: xr.Dataset, region: Region, settings: CompositeSettings, channels: Sequence[str]
) -> Acquisitions | None:
    """The acquisitions ``channels`` need (None when none is a before/after composite)."""
    if any(_period_of(c) for c in channels):
        return select_acquisitions(ds, region, settings)
    return None


def _period_of(channel: str) -> str | None:
    """``before`` or ``after`` for a composite channel (``vv_before``), else None."""
    suffix = channel.rsplit("_", 1)[-1]
    return suffix if "_" in channel and suffix in PERIODS else None


def _channel(
    ds: xr.Dataset,
    region: Region,
    channel: str,
    acquisitions: Acquisitions | None,
    settings: CompositeSettings,
    path: object,
    empty_slices: Literal["error", "allow"],
    out: np.ndarray,
) -> None:
    """Write ``channel`` (y, x) into ``out``."""
    names = region.names
    period = _period_of(channel)
    if period is not None:
        base = channel[: -len(period) - 1]
        var = {"vv": names.vv, "vh": names.vh}.get(base, base)
        require_variables(ds, [var], names, path, dims=(names.time, names.y, names.x))
        indices = getattr(acquisitions, period)
        check_chunks(ds, var, names.time, indices, settings, path)
        source = TimeSource(
            ds, var, names, settings, path, var in (names.vv, names.vh), empty_slices == "allow"
        )
        reduce_over_time(source, indices, settings.reducer, out)
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
        check_chunks(ds, var, names.pair, (index,), settings, path)
        out[...] = read_plane(ds, var, names, settings, path, {names.pair: index})
        return
    var = {
        "dem": names.dem,
        "dem_aspect": names.aspect,
        "dem_slope_radians": names.slope,
        "dem_curvature": names.curvature,
    }.get(channel, channel)
    require_variables(ds, [var], names, path, dims=(names.y, names.x))
    check_chunks(ds, var, None, (), settings, path)
    out[...] = read_plane(ds, var, names, settings, path)


def _label(
    ds: xr.Dataset, names: CubeNames, settings: CompositeSettings, path: object
) -> xr.DataArray:
    """The raw ``landslides`` variable as float32 (y, x), whatever its stored order.

    Always a copy: the result is handed on and may be changed, the source never is.
    """
    require_variables(ds, [names.landslides], names, path, dims=(names.y, names.x))
    check_chunks(ds, names.landslides, None, (), settings, path)
    label = ds[names.landslides]
    return xr.DataArray(
        np.array(read_plane(ds, names.landslides, names, settings, path)),
        dims=(names.y, names.x),
        attrs=label.attrs,
        name=label.name,
    )


def _provenance(
    ds: xr.Dataset,
    region: Region,
    settings: CompositeSettings,
    acquisitions: Acquisitions | None,
) -> dict[str, str | int]:
    """Which acquisitions went into the composite, as netCDF-safe attributes."""
    attrs: dict[str, str | int] = {
        "region": region.name,
        "event_start": region.event_start,
        "event_end": region.event_end,
        "composite_reducer": settings.reducer,
        "composite_orbit": resolve_orbit(region, settings),
        "composite_recipe": settings.recipe,
        "composite_relative_orbit": str(settings.relative_orbit),
    }
    if acquisitions is not None and acquisitions.relative_orbit is not None:
        attrs["relative_orbit"] = acquisitions.relative_orbit
    if acquisitions is not None:
        times = acquisition_times(ds, region.names)
        for period in PERIODS:
            chosen = getattr(acquisitions, period)
            attrs[f"{period}_acquisitions"] = ",".join(f"{times[i]:%Y-%m-%d}" for i in chosen)
    return attrs
