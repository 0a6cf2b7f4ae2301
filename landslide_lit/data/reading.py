"""Reading a cube's planes for a composite: by dimension name, checked chunk by chunk.

:func:`read_plane` reads one (y, x) plane of a variable whatever its stored dimension
order; :func:`check_chunks` stops before a read that would meet missing chunk files;
:func:`reduce_over_time` averages (or takes the median of) chosen timesteps of a SAR
variable one slice at a time, so memory stays at a few (y, x) planes whatever the number
of acquisitions.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import xarray as xr

from landslide_lit.data.chunks import MISSING_CHUNKS_FIX, chunk_layouts
from landslide_lit.data.cube import CubeError, store_positions
from landslide_lit.data.settings import CompositeSettings
from landslide_lit.regions import CubeNames

__all__ = ["BLOCK", "TimeSource", "check_chunks", "read_plane", "reduce_over_time"]


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


def check_chunks(
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
class TimeSource:
    """A (time, y, x) variable the composite reads slice by slice, and how."""

    ds: xr.Dataset
    var: str
    names: CubeNames
    settings: CompositeSettings
    path: object
    log_amplitude: bool
    allow_empty: bool


def reduce_over_time(
    source: TimeSource,
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
        reduce_over_time(source, indices, reducer, tmp)
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


def _read_slice(source: TimeSource, index: int, out: np.ndarray | None = None) -> np.ndarray:
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
