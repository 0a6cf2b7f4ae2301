"""A region's composite held on disk while the region is predicted, read back by windows."""

from __future__ import annotations

import os
import shutil
import tempfile
import weakref
from pathlib import Path
from typing import Any

import numpy as np

from landslide_lit.owners import owner_tag, remove_stale

__all__ = ["COMPOSITE_PREFIX", "CompositeStore", "read_raw_rows", "remove_stale_composites"]

COMPOSITE_PREFIX = "landslide-lit-"
"""Start of the names of the held composites' folders in ``TMPDIR``."""


class CompositeStore:
    """A region's composite held on disk while it is predicted, read back by windows.

    The region is cut into strips of ``strip`` columns; each strip is two raw files in a
    temporary folder (``TMPDIR``): the image as (y, channel, x) float32, so that any run of
    rows of a strip is one contiguous read, and the labels as (y, x) uint8
    (``landslides > 0``). Tiles are appended top to bottom, strip by strip, and read with
    plain file reads (no memory map), so memory holds only the strips' rows asked for,
    whatever the region's width. The folder is removed by :meth:`remove`, or when the
    process that made it exits; copies sent to loader workers only read. Its name carries
    the owner's process id and host, so that the folders of a killed process are removed
    by the next store made on that host (:func:`remove_stale`).
    """

    def __init__(self, region: str, channels: int, width: int, labels: bool, strip: int) -> None:
        self.channels, self.width, self.labels, self.strip = channels, width, labels, strip
        self.rows = 0  # rows every strip holds
        self._strip_rows = [0] * -(-width // strip)
        prefix = f"{COMPOSITE_PREFIX}{region}-composite-{owner_tag()}-"
        self.folder = Path(tempfile.mkdtemp(prefix=prefix))
        self._remove = weakref.finalize(self, _remove_folder, self.folder, os.getpid())

    @staticmethod
    def bytes_needed(channels: int, height: int, width: int, labels: bool) -> int:
        return height * width * (4 * channels + int(labels))

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_remove": None}  # a copy never removes the folder

    def _paths(self, strip: int) -> tuple[Path, Path]:
        return self.folder / f"image.{strip}.f32", self.folder / f"label.{strip}.u8"

    def _columns(self, strip: int) -> int:
        return min(self.strip, self.width - strip * self.strip)

    def append(self, x0: int, image: np.ndarray, label: np.ndarray | None) -> None:
        """Add the next rows of the strip starting at column ``x0``: ``image`` (C, rows, w)
        float32 and ``label`` (rows, w) uint8, ``w`` the strip's columns."""
        strip, rest = divmod(x0, self.strip)
        if rest or image.shape[2] != self._columns(strip):
            raise ValueError(f"a tile at column {x0}, {image.shape[2]} wide, is not a strip")
        image_path, label_path = self._paths(strip)
        with open(image_path, "ab") as out:
            np.ascontiguousarray(image.transpose(1, 0, 2), np.float32).tofile(out)
        if self.labels:
            with open(label_path, "ab") as out:
                np.ascontiguousarray(label, np.uint8).tofile(out)
        self._strip_rows[strip] += image.shape[1]
        self.rows = min(self._strip_rows)

    def read(
        self, y0: int, y1: int, x0: int = 0, x1: int | None = None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Rows [y0, y1) and columns [x0, x1) (default: all): the image (C, rows, columns)
        and the labels (rows, columns), read from the strips they cross."""
        x1 = self.width if x1 is None else x1
        if not (0 <= y0 <= y1 <= self.rows and 0 <= x0 <= x1 <= self.width):
            raise IndexError(
                f"rows [{y0}, {y1}), columns [{x0}, {x1}) outside the {self.rows} x "
                f"{self.width} stored in {self.folder}"
            )
        image = np.empty((y1 - y0, self.channels, x1 - x0), np.float32)
        label = np.empty((y1 - y0, x1 - x0), np.uint8) if self.labels else None
        for strip in range(x0 // self.strip, -(-x1 // self.strip)):
            left = strip * self.strip
            a, b = max(x0, left) - left, min(x1, left + self._columns(strip)) - left
            image_path, label_path = self._paths(strip)
            shape = (self.channels, self._columns(strip))
            part = read_raw_rows(image_path, np.float32, shape, y0, y1)
            image[..., left + a - x0 : left + b - x0] = part[..., a:b]
            if label is not None:
                part = read_raw_rows(label_path, np.uint8, shape[1:], y0, y1)
                label[:, left + a - x0 : left + b - x0] = part[:, a:b]
        return image.transpose(1, 0, 2), label

    def remove(self) -> None:
        if self._remove is not None:
            self._remove()


def remove_stale_composites() -> list[Path]:
    """Remove the held composites in ``TMPDIR`` of ended processes of this host."""
    return remove_stale(Path(tempfile.gettempdir()), f"{COMPOSITE_PREFIX}*-composite-pid*")


def read_raw_rows(
    path: Path,
    dtype: type[np.generic],
    row_shape: tuple[int, ...],
    y0: int,
    y1: int,
    columns: slice | None = None,
) -> np.ndarray:
    """Rows [y0, y1) of a raw C-order file of rows shaped ``row_shape`` (a plain read);
    ``columns``: only these of the last axis (read through a memory map)."""
    row_values = int(np.prod(row_shape))
    row_bytes = row_values * np.dtype(dtype).itemsize
    if columns is None:
        values = np.fromfile(path, dtype, (y1 - y0) * row_values, offset=y0 * row_bytes)
        return values.reshape(y1 - y0, *row_shape)
    rows = np.memmap(path, dtype, "r", offset=y0 * row_bytes, shape=(y1 - y0, *row_shape))
    return np.array(rows[..., columns])  # a copy: the map is unmapped on return


def _remove_folder(folder: Path, owner: int) -> None:
    if os.getpid() == owner:  # not from a forked worker's copy
        shutil.rmtree(folder, ignore_errors=True)
