"""The files of one chip cache entry: a manifest and ``.npy`` arrays with CRC-32 checksums.

An entry is named by a :class:`CacheKey` (a digest of every input that determines it) and
holds a :class:`CacheEntry`; :mod:`~landslide_lit.data.cache` decides where entries live
and writes them atomically. Bump :data:`FORMAT_VERSION` when the layout, or the chips
that the composite and chip code make from the same inputs, change. A new field of
:class:`~landslide_lit.data.settings.CompositeSettings` (``relative_orbit``) needs no bump:
the key holds every field, so an entry written without it has another digest and is never
read for settings that have it.
"""

from __future__ import annotations

import datetime as dt
import json
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from landslide_lit.data.chips import Chips
from landslide_lit.data.stats import ChannelStats

__all__ = [
    "ARRAY_MARKER",
    "FORMAT_VERSION",
    "MANIFEST",
    "CacheEntry",
    "CacheKey",
    "CorruptEntryError",
    "read_entry",
    "write_array",
    "write_entry",
]

FORMAT_VERSION = 3
"""3: chips listed column by column, the published order (2: CRC-32 checksums in the
manifest; 1: SHA-256)."""
MANIFEST = "manifest.json"
ARRAY_MARKER = "__npy__"


@dataclass(frozen=True)
class CacheKey:
    """An entry's name and the canonical JSON of the inputs it was derived from."""

    digest: str
    canonical: str

    @property
    def ingredients(self) -> dict[str, Any]:
        return json.loads(self.canonical)


class CacheEntry(NamedTuple):
    """What an entry holds: the chips, the region's channel statistics and its grid."""

    chips: Chips
    stats: ChannelStats
    grid_info: dict[str, Any]


class CorruptEntryError(ValueError):
    """An entry whose files do not match its manifest."""


def write_entry(
    folder: Path, key: CacheKey, chips: Chips, stats: ChannelStats, grid_info: dict[str, Any]
) -> None:
    """Write the entry's arrays and, last, its manifest into the new folder ``folder``."""
    arrays = {"images": chips.images.numpy(), "origins": chips.origins.numpy()}
    if chips.targets is not None:
        arrays["targets"] = chips.targets.numpy()
    grid_arrays: dict[str, np.ndarray] = {}
    grid_json = _extract_arrays(grid_info, grid_arrays)
    arrays.update(grid_arrays)
    files = {f"{name}.npy": write_array(folder / f"{name}.npy", a) for name, a in arrays.items()}
    manifest = {
        "format": FORMAT_VERSION,
        "digest": key.digest,
        "ingredients": key.ingredients,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "chips": {"count": len(chips), "channels": list(chips.channels)},
        "stats": {"mean": list(stats.mean), "std": list(stats.std)},
        "grid_info": grid_json,
        "files": files,
    }
    with open(folder / MANIFEST, "xb") as file:
        file.write(json.dumps(manifest, indent=1).encode())


def read_entry(folder: Path, key: CacheKey) -> CacheEntry:
    """The entry in ``folder``, checked against its manifest, or a CorruptEntryError."""
    manifest = json.loads((folder / MANIFEST).read_text())
    if manifest["digest"] != key.digest:
        raise CorruptEntryError(f"its manifest is not that of key {key.digest}")
    arrays = {
        name.removesuffix(".npy"): _read_array(folder / name, meta)
        for name, meta in manifest["files"].items()
    }
    targets = arrays.get("targets")
    chips = Chips(
        images=torch.from_numpy(arrays["images"]),
        targets=None if targets is None else torch.from_numpy(targets),
        origins=torch.from_numpy(arrays["origins"]),
        channels=tuple(manifest["chips"]["channels"]),
    )
    if len(chips) != manifest["chips"]["count"]:
        raise CorruptEntryError(f"{len(chips)} chips, the manifest says {manifest['chips']}")
    stats = ChannelStats(tuple(manifest["stats"]["mean"]), tuple(manifest["stats"]["std"]))
    return CacheEntry(chips, stats, _insert_arrays(manifest["grid_info"], arrays))


def write_array(path: Path, array: np.ndarray) -> dict[str, Any]:
    """Write ``array`` as a new ``.npy`` file; its manifest record (shape, dtype, CRC-32)."""
    array = np.asarray(array, order="C")
    with open(path, "xb") as file:
        np.save(file, array, allow_pickle=False)
    return {"shape": list(array.shape), "dtype": array.dtype.str, "crc32": _checksum(array)}


def _read_array(path: Path, meta: dict[str, Any]) -> np.ndarray:
    array = np.load(path, mmap_mode=None, allow_pickle=False)
    if list(array.shape) != meta["shape"] or array.dtype.str != meta["dtype"]:
        raise CorruptEntryError(
            f"{path.name} is {array.dtype.str} {list(array.shape)}, "
            f"the manifest says {meta['dtype']} {meta['shape']}"
        )
    if _checksum(array) != meta["crc32"]:
        raise CorruptEntryError(f"{path.name} fails its CRC-32 checksum")
    return array


def _checksum(array: np.ndarray) -> int:
    """CRC-32 of a C-contiguous array's bytes (any dtype, datetimes included)."""
    return zlib.crc32(array.reshape(-1).view(np.uint8))


def _extract_arrays(value: Any, arrays: dict[str, np.ndarray]) -> Any:
    """``value`` as JSON, each numpy array moved into ``arrays`` and left as a marker."""
    if isinstance(value, np.ndarray):
        name = f"grid_{len(arrays)}"
        arrays[name] = value
        return {ARRAY_MARKER: name}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise TypeError(f"grid_info: dict keys must be str, got {list(value)}")
        return {k: _extract_arrays(v, arrays) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_extract_arrays(v, arrays) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    raise TypeError(f"grid_info: cannot store a {type(value).__name__}")


def _insert_arrays(value: Any, arrays: dict[str, np.ndarray]) -> Any:
    """The inverse of :func:`_extract_arrays`."""
    if isinstance(value, dict):
        if set(value) == {ARRAY_MARKER}:
            return arrays[value[ARRAY_MARKER]]
        return {k: _insert_arrays(v, arrays) for k, v in value.items()}
    if isinstance(value, list):
        return [_insert_arrays(v, arrays) for v in value]
    return value
