"""An on-disk cache of a region's chips, channel statistics and map grid, built once.

Building composites and cutting chips is the cold start of every run. An entry
holds everything that chip preparation (:mod:`~landslide_lit.data.preparation`) derives
from one cube, and is named by a digest of every input that determines it (see
:meth:`ChipCache.key`)::

    <root>/<64 hex digits>/
        manifest.json   key ingredients, chip count and channels, channel
                        statistics, grid_info (arrays replaced by file names),
                        and per file: shape, dtype, CRC-32 of the array data
        images.npy      (N, C, S, S) float32, NaN where there is no data
        targets.npy     (N, S, S) uint8; absent for cubes without labels
        origins.npy     (N, 2) int64
        grid_0.npy ...  the numpy arrays of grid_info

Where it lives (:func:`cache_place`): ``--data.cache_dir`` when given, else
``<data root>/.chip_cache``, else (a read-only or missing data root, as shared datasets on
clusters are) the per-user folder ``$XDG_CACHE_HOME/landslide-lit/chip_cache`` (else
``~/.cache/landslide-lit/chip_cache``). Nothing is written anywhere else.

Use::

    cache, reason = cache_place(data_root, cache_dir)  # reason: why not under the data root
    key = cache.key(cube_path, region, channels, composite, chip_size, stride, keep)
    entry = cache.load(key)
    if entry is None:
        ...  # build chips, stats, grid_info
        cache.save(key, chips, stats, grid_info)

An entry is written into a hidden temporary directory and renamed into place (a folder
renamed with ``os.rename``, which never replaces an entry already there, hence not
:func:`~landslide_lit.atomic.write_atomically`, which replaces files), so
a crashed or killed process never leaves a partial entry under a digest name, and
of two processes saving the same key the first rename wins and the second discards
its copy. :meth:`ChipCache.load` checks the manifest, every shape, dtype and
checksum; an entry that fails is logged, removed and reported as absent, never
used. Nothing is fsynced: only a power loss or an operating-system crash can leave
an entry whose files are incomplete, and those checks catch it (it is rebuilt),
while the nine fsyncs of an entry took about 30 ms here (a fifth of a small cube's
cold start), and take more on cluster file systems. The checksum is CRC-32 (4 GB/s;
it catches torn writes and flipped bits); a cryptographic hash would protect nothing
more, since the manifest that holds it is not signed.

The entry's files, and :data:`~landslide_lit.data.entries.FORMAT_VERSION`, are
:mod:`~landslide_lit.data.entries`'.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import shutil
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from landslide_lit.data.chips import Chips, Keep
from landslide_lit.data.entries import (
    FORMAT_VERSION,
    CacheEntry,
    CacheKey,
    read_entry,
    write_entry,
)
from landslide_lit.data.settings import CompositeSettings
from landslide_lit.data.stats import ChannelStats
from landslide_lit.distributed import on_rank_zero
from landslide_lit.errors import ConfigError
from landslide_lit.regions import Region, data_root
from landslide_lit.version import __version__

__all__ = [
    "CACHE_DIR",
    "ChipCache",
    "cache_place",
    "clear_cache",
    "cube_fingerprint",
    "user_cache_dir",
    "writable",
]

log = logging.getLogger(__name__)

CACHE_DIR = ".chip_cache"
USER_CACHE = Path("landslide-lit", "chip_cache")  # under $XDG_CACHE_HOME, else ~/.cache
TEMP_PREFIX = ".tmp-"
STALE_TEMP_SECONDS = 3600
_DIGEST = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class ChipCache:
    """Chip cache entries under ``root`` (a directory it creates on the first save)."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root).expanduser())

    @classmethod
    def under(cls, root: str | os.PathLike | None = None) -> ChipCache:
        """The cache in ``<data root>/.chip_cache`` (data root as in :func:`data_root`)."""
        return cls(data_root(root) / CACHE_DIR)

    def key(
        self,
        cube_path: str | os.PathLike,
        region: Region,
        channels: Sequence[str],
        composite: CompositeSettings,
        chip_size: int,
        stride: int | None,
        keep: Keep,
    ) -> CacheKey:
        """The key of the chips made from this cube with these settings.

        Ingredients: the cache format and package versions, the cube's resolved
        path and :func:`cube_fingerprint`, every field of ``region`` and of
        ``composite``, the channels, chip size, stride (None counts as the chip
        size, which it means) and keep filter.
        """
        ingredients = {
            "format": FORMAT_VERSION,
            "package": __version__,
            "cube": cube_fingerprint(cube_path),
            "region": dataclasses.asdict(region),
            "channels": list(channels),
            "composite": dataclasses.asdict(composite),
            "chip_size": chip_size,
            "stride": stride or chip_size,
            "keep": keep,
        }
        canonical = json.dumps(ingredients, sort_keys=True, separators=(",", ":"))
        return CacheKey(hashlib.sha256(canonical.encode()).hexdigest(), canonical)

    def path(self, key: CacheKey) -> Path:
        """Where the entry of ``key`` lives (whether or not it exists)."""
        return self.root / key.digest

    def load(self, key: CacheKey) -> CacheEntry | None:
        """The entry of ``key``, or None when there is none or it fails its checks.

        A failing entry (missing manifest, truncated or altered file) is logged
        and removed, so the caller rebuilds and saves it again.
        """
        path = self.path(key)
        if not path.is_dir():
            return None
        try:
            entry = read_entry(path, key)
        except Exception as error:  # anything unreadable is a cache miss, never a crash
            log.warning(
                "chip cache entry %s is unusable (%s: %s); removing it",
                path,
                type(error).__name__,
                error,
            )
            self._discard(path)
            return None
        if on_rank_zero():  # every rank reads the entry
            log.info("chip cache: %d chips from %s", len(entry.chips), path)
        return entry

    def save(
        self, key: CacheKey, chips: Chips, stats: ChannelStats, grid_info: dict[str, Any]
    ) -> Path:
        """Store an entry atomically; return its path.

        ``grid_info``: JSON-able values (dicts with str keys, lists, tuples, str,
        numbers, bool, None) and numpy arrays anywhere inside; tuples come back
        as lists, numpy scalars as Python numbers. An existing entry of ``key``
        is kept as it is (a concurrent writer got there first).
        """
        if list(chips.channels) != key.ingredients["channels"]:
            raise ValueError(
                f"chips of channels {list(chips.channels)} saved under a key of "
                f"channels {key.ingredients['channels']}"
            )
        self.root.mkdir(parents=True, exist_ok=True)
        self._sweep_stale_temps()
        final = self.path(key)
        tmp = self.root / f"{TEMP_PREFIX}{key.digest[:12]}-{uuid.uuid4().hex}"
        tmp.mkdir()  # not tempfile.mkdtemp: the entry keeps the umask's permissions
        try:
            write_entry(tmp, key, chips, stats, grid_info)
            try:
                os.rename(tmp, final)  # not os.replace: an entry already there is kept
                saved = True
            except OSError:
                if not final.is_dir():
                    raise
                saved = False
            if saved and on_rank_zero():  # said once, not by every rank that saves
                log.info("chip cache: saved %d chips to %s", len(chips), final)
            elif on_rank_zero():
                log.info("chip cache entry %s was saved by another process; keeping it", final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)  # gone already after a successful rename
        return final

    def clear(self) -> int:
        """Remove every entry and leftover temporary directory; return the number of entries.

        Only directories named like entries or temporaries are touched, so a
        cache root pointed at a directory with other content loses nothing else.
        """
        if not self.root.is_dir():
            return 0
        removed = 0
        for child in self.root.iterdir():
            if child.is_dir() and _DIGEST.fullmatch(child.name):
                removed += self._discard(child)
            elif child.is_dir() and child.name.startswith(TEMP_PREFIX):
                shutil.rmtree(child, ignore_errors=True)
        return removed

    def _discard(self, path: Path) -> bool:
        """Rename ``path`` out of the way (atomic), then delete it; whether it did (no raise)."""
        trash = self.root / f"{TEMP_PREFIX}{uuid.uuid4().hex}"
        try:
            os.rename(path, trash)
        except FileNotFoundError:  # another process removed it first
            return False
        except OSError as error:  # a read-only cache: the entry stays
            log.warning("chip cache: cannot remove %s (%s)", path, error)
            return False
        shutil.rmtree(trash, ignore_errors=True)
        return True

    def _sweep_stale_temps(self) -> None:
        """Delete temporaries left by writers that crashed over an hour ago."""
        cutoff = time.time() - STALE_TEMP_SECONDS
        for child in self.root.glob(f"{TEMP_PREFIX}*"):
            try:
                stale = child.stat().st_mtime < cutoff
            except FileNotFoundError:
                continue
            if stale:
                shutil.rmtree(child, ignore_errors=True)


def cache_place(
    root: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None
) -> tuple[ChipCache, str | None]:
    """The chip cache a run uses, and why it is not ``<data root>/.chip_cache`` (or None).

    ``cache_dir`` (``--data.cache_dir``) is used as given, and must be a folder this user
    can write (or create). Otherwise the cache lives in the data root, unless the data
    root (or its ``.chip_cache``) cannot be written or does not exist: then in
    :func:`user_cache_dir`. The key is the same wherever the cache lives.
    """
    if cache_dir is not None:
        path = Path(cache_dir).expanduser()
        nearest = next(p for p in (path, *path.parents) if p.exists())  # made on first save
        if not nearest.is_dir():
            raise ConfigError(f"--data.cache_dir {path}: {nearest} is a file; give a folder")
        if not writable(nearest):
            raise ConfigError(
                f"--data.cache_dir {path}: {nearest} is read-only; give a folder you can write"
            )
        return ChipCache(path), None
    base = data_root(root)
    under = base / CACHE_DIR
    if not base.is_dir():
        reason = f"the data root {base} does not exist"
    elif not writable(under if under.exists() else base):
        reason = f"{under if under.exists() else f'the data root {base}'} is read-only"
    else:
        return ChipCache(under), None
    return ChipCache(user_cache_dir()), reason


def user_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/landslide-lit/chip_cache``, else ``~/.cache/landslide-lit/...``."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / USER_CACHE


def writable(folder: Path) -> bool:
    """Whether this process may create entries in ``folder`` (a read-only mount counts)."""
    return os.access(folder, os.W_OK | os.X_OK)


def clear_cache(root: str | os.PathLike | None = None) -> int:
    """Empty the chip cache under data root ``root``; return the number of entries removed."""
    return ChipCache.under(root).clear()


def cube_fingerprint(cube_path: str | os.PathLike) -> dict[str, Any]:
    """A cheap identity of a cube's content from file metadata (no data is read).

    A file (netCDF): its size and modification time. A directory (Zarr): its
    number of files, total size, latest modification time and a SHA-256 of
    every file's relative path, size and modification time.
    """
    path = Path(cube_path).resolve()
    if path.is_file():
        stat = path.stat()
        return {"path": str(path), "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    if not path.is_dir():
        raise FileNotFoundError(f"no datacube at {path}")
    listing: list[tuple[str, int, int]] = []
    _list_files(str(path), "", listing)
    listing.sort()
    return {
        "path": str(path),
        "files": len(listing),
        "bytes": sum(size for _, size, _ in listing),
        "mtime_ns": max((mtime for *_, mtime in listing), default=0),
        "listing_sha256": hashlib.sha256(json.dumps(listing).encode()).hexdigest(),
    }


def _list_files(folder: str, prefix: str, listing: list[tuple[str, int, int]]) -> None:
    """Append (relative path, size, mtime_ns) of every file under ``folder`` to ``listing``.

    The same entries as ``os.walk`` + ``os.stat`` (links to files followed, links to
    folders not entered), with one ``os.scandir`` per folder and no path joining per
    file: stating every chunk file is a fixed cost of every warm start.
    """
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.is_dir():
                if not entry.is_symlink():
                    _list_files(entry.path, prefix + entry.name + os.sep, listing)
            else:
                stat = entry.stat()
                listing.append((prefix + entry.name, stat.st_size, stat.st_mtime_ns))
