"""The chunk files of a local Zarr store (v2 or v3): where they live, which are missing.

A store copied or unzipped only in part lacks some chunk files; zarr reads a missing
chunk as the fill value, silently. :func:`present_chunks` scans an array's folder once
(no data read), so the cube can be judged before any of it is used (see
:func:`~landslide_lit.data.cube.chunk_damage`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "MISSING_CHUNKS_CAUSE",
    "MISSING_CHUNKS_FIX",
    "ChunkDamage",
    "ChunkLayout",
    "chunk_layouts",
    "present_chunks",
]

MISSING_CHUNKS_CAUSE = (
    "Likely cause: a partial copy or unzip of the store. Fix: download or unzip the cube again"
)
MISSING_CHUNKS_FIX = (
    f"{MISSING_CHUNKS_CAUSE}. If the store was written without its all-no-data chunks "
    "(zarr's write_empty_chunks=False), set --data.composite.missing_chunks nodata to read "
    "them as no data (NaN)"
)


@dataclass(frozen=True)
class ChunkLayout:
    """Where one array of a Zarr store keeps its chunk files."""

    folder: Path
    shape: tuple[int, ...]
    chunks: tuple[int, ...]
    prefix: str  # "c" under zarr v3's default chunk key encoding, else ""
    separator: str

    @property
    def grid(self) -> tuple[int, ...]:
        return tuple(-(-n // c) for n, c in zip(self.shape, self.chunks, strict=True))

    def key(self, index: Sequence[int]) -> str:
        """The chunk file of chunk ``index``, relative to the store."""
        parts = [self.prefix] if self.prefix else []
        parts += [str(int(i)) for i in index] or ([] if self.prefix else ["0"])
        return f"{self.folder.name}/{self.separator.join(parts)}"


@dataclass(frozen=True)
class ChunkDamage:
    """Chunk files missing from one array of a Zarr store.

    Attributes:
        layout: the array's chunk layout.
        dims: the array's dimensions, in stored order.
        present: bool, one per chunk of the chunk grid: whether its file exists.
    """

    layout: ChunkLayout
    dims: tuple[str, ...]
    present: np.ndarray

    @property
    def missing(self) -> int:
        return int(self.present.size - np.count_nonzero(self.present))

    def describe(self) -> str:
        return (
            f"{self.layout.folder.name}: {self.missing} of {self.present.size} chunk files missing"
        )

    def missing_at(self, positions: dict[str, int | np.ndarray]) -> np.ndarray:
        """Whether the chunk holding each element is missing, for store ``positions``.

        ``positions`` maps every dimension to a store index or an array of them; arrays
        broadcast against each other (give them shapes that do, e.g. (n, 1) and (1, m)).
        """
        chunk = dict(zip(self.dims, self.layout.chunks, strict=True))
        index = tuple(np.asarray(positions[d]) // chunk[d] for d in self.dims)
        return ~self.present[index]


def chunk_layouts(path: Path) -> dict[str, ChunkLayout]:
    """The chunk layout of each array at the root of the local Zarr store ``path``.

    Read from the consolidated metadata when there is some (what xarray opens), else from
    each array's own metadata file.
    """
    layouts = {}
    for name, meta in _array_metadata(path).items():
        if meta.get("zarr_format") == 3 or "chunk_grid" in meta:
            encoding = meta.get("chunk_key_encoding", {"name": "default"})
            separator = encoding.get("configuration", {}).get(
                "separator", "/" if encoding.get("name") == "default" else "."
            )
            prefix = "c" if encoding.get("name") == "default" else ""
            chunks = meta["chunk_grid"]["configuration"]["chunk_shape"]
        else:
            separator, prefix = meta.get("dimension_separator") or ".", ""
            chunks = meta["chunks"]
        layouts[name] = ChunkLayout(
            path / name, tuple(meta["shape"]), tuple(chunks), prefix, separator
        )
    return layouts


def _array_metadata(path: Path) -> dict[str, dict]:
    """Metadata of the arrays at the root of a Zarr v2 or v3 store, by name."""
    consolidated = path / ".zmetadata"
    if consolidated.is_file():
        entries = json.loads(consolidated.read_text())["metadata"]
        return {
            k[: -len("/.zarray")]: v
            for k, v in entries.items()
            if k.count("/") == 1 and k.endswith("/.zarray")
        }
    root = path / "zarr.json"
    if root.is_file():
        inline = json.loads(root.read_text()).get("consolidated_metadata") or {}
        entries = inline.get("metadata") or {}
        if entries:
            return {
                k: v for k, v in entries.items() if "/" not in k and v.get("node_type") == "array"
            }
    arrays = {}
    for child in sorted(p for p in path.iterdir() if p.is_dir()):
        for meta_file in (child / ".zarray", child / "zarr.json"):
            if meta_file.is_file():
                meta = json.loads(meta_file.read_text())
                if meta_file.name == ".zarray" or meta.get("node_type") == "array":
                    arrays[child.name] = meta
                break
    return arrays


def present_chunks(layout: ChunkLayout) -> np.ndarray:
    """Which chunks of ``layout``'s grid have a file: one directory scan, no data read."""
    present = np.zeros(layout.grid, bool)
    if not layout.folder.is_dir():
        return present
    ndim = len(layout.shape)
    for folder, _, files in os.walk(layout.folder):
        relative = Path(folder).relative_to(layout.folder).as_posix()
        for file in files:
            key = file if relative == "." else f"{relative}/{file}"
            index = _chunk_index(key, layout, ndim)
            if index is not None:
                present[index] = True
    return present


def _chunk_index(key: str, layout: ChunkLayout, ndim: int) -> tuple[int, ...] | None:
    """The chunk index of file ``key`` (relative to the array), or None for other files."""
    parts = key.split(layout.separator)
    if layout.prefix:
        if parts[0] != layout.prefix:
            return None
        parts = parts[1:]
    elif ndim == 0:
        return () if key == "0" else None
    if len(parts) != ndim or not all(p.isdigit() for p in parts):
        return None
    index = tuple(int(p) for p in parts)
    return index if all(i < n for i, n in zip(index, layout.grid, strict=True)) else None
