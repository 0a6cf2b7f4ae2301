"""Checks that a GeoTIFF is a Cloud-Optimized GeoTIFF, for the tests.

What GDAL reports (``LAYOUT=COG``, tiles, overviews, predictor) and what it does not: the
file's own structure, read from its bytes: GDAL's ghost header (``LAYOUT=IFDS_BEFORE_DATA``)
right after the TIFF header, every IFD before any tile, the IFDs in order (full resolution
first, then overviews from largest to smallest) and the tiles of smaller overviews before
those of larger ones, so a reader gets an overview's tiles from one range request.
"""

from __future__ import annotations

import struct
from itertools import pairwise
from pathlib import Path

TILE_OFFSETS, TILE_BYTE_COUNTS = 324, 325
_SIZES = {1: 1, 3: 2, 4: 4, 16: 8}  # BYTE, SHORT, LONG, LONG8


def _ifds(data: bytes) -> list[tuple[int, list[int]]]:
    """(offset of each IFD, offsets of its tiles), in the file's IFD chain order."""
    order = "<" if data[:2] == b"II" else ">"
    magic = struct.unpack_from(order + "H", data, 2)[0]
    big = magic == 43
    entry, count_fmt, next_fmt = (20, "Q", "Q") if big else (12, "H", "I")
    offset = struct.unpack_from(order + ("Q" if big else "I"), data, 8 if big else 4)[0]
    found = []
    while offset:
        n = struct.unpack_from(order + count_fmt, data, offset)[0]
        start = offset + (8 if big else 2)
        tiles: list[int] = []
        for i in range(n):
            at = start + i * entry
            if big:
                tag, kind, count = struct.unpack_from(order + "HHQ", data, at)
                value_at = at + 12
            else:
                tag, kind, count = struct.unpack_from(order + "HHI", data, at)
                value_at = at + 8
            if tag != TILE_OFFSETS:
                continue
            size = _SIZES[kind]
            if size * count > (8 if big else 4):
                value_at = struct.unpack_from(order + ("Q" if big else "I"), data, value_at)[0]
            code = {1: "B", 2: "H", 4: "I", 8: "Q"}[size]
            tiles = list(struct.unpack_from(order + code * count, data, value_at))
        found.append((offset, tiles))
        offset = struct.unpack_from(order + next_fmt, data, start + n * entry)[0]
    return found


def cog_problems(path: Path, predictor: int, tile: int = 256) -> list[str]:
    """What keeps ``path`` from being a tiled COG with overviews and this predictor."""
    import rasterio

    problems = []
    with rasterio.open(path) as src:
        structure = src.tags(ns="IMAGE_STRUCTURE")
        if structure.get("LAYOUT") != "COG":
            problems.append(f"GDAL does not report LAYOUT=COG: {structure}")
        if structure.get("PREDICTOR") != str(predictor):
            problems.append(f"predictor {structure.get('PREDICTOR')}, not {predictor}")
        if structure.get("COMPRESSION") != "DEFLATE":
            problems.append(f"compression {structure.get('COMPRESSION')}")
        if not src.profile.get("tiled") or set(src.block_shapes) != {(tile, tile)}:
            problems.append(f"not tiled {tile} x {tile}: {src.block_shapes}")
        if max(src.shape) > tile and not src.overviews(1):
            problems.append(f"no overviews for a {src.shape} raster")
        levels = len(src.overviews(1))
    data = Path(path).read_bytes()
    if b"LAYOUT=IFDS_BEFORE_DATA" not in data[:1024]:
        problems.append("no GDAL ghost header with LAYOUT=IFDS_BEFORE_DATA")
    ifds = _ifds(data)
    if len(ifds) != levels + 1:
        problems.append(f"{len(ifds)} IFDs for {levels} overviews")
    ifd_offsets = [offset for offset, _ in ifds]
    first_tile = min(t for _, tiles in ifds for t in tiles if t)
    if ifd_offsets != sorted(ifd_offsets) or max(ifd_offsets) > first_tile:
        problems.append("the IFDs are not all at the start, in order")
    for (_, larger), (_, smaller) in pairwise(ifds):
        if max(smaller) > min(t for t in larger if t):
            problems.append("an overview's tiles come after those of a larger image")
    return problems
