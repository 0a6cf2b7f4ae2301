"""A region's composite held on disk while the region is predicted, read back by rows."""

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
    """A region's composite held on disk while it is predicted, read back by rows.

    Two raw files in a temporary folder (``TMPDIR``): the image as (y, channel, x) float32,
    so that any run of rows is one contiguous read, and the labels as (y, x) uint8
    (``landslides > 0``). Rows are appended top to bottom and read with plain file reads
    (no memory map), so memory holds only the rows asked for. The folder is removed by
    :meth:`remove`, or when the process that made it exits; copies sent to loader workers
    only read. Its name carries the owner's process id and host, so that the folders of a
    killed process are removed by the next store made on that host (:func:`remove_stale`).
    """

    def __init__(self, region: str, channels: int, width: int, labels: bool) -> None:
        self.channels, self.width, self.labels, self.rows = channels, width, labels, 0
        prefix = f"{COMPOSITE_PREFIX}{region}-composite-{owner_tag()}-"
        self.folder = Path(tempfile.mkdtemp(prefix=prefix))
        self._remove = weakref.finalize(self, _remove_folder, self.folder, os.getpid())

    @staticmethod
    def bytes_needed(channels: int, height: int, width: int, labels: bool) -> int:
        return height * width * (4 * channels + int(labels))

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_remove": None}  # a copy never removes the folder

    def append(self, image: np.ndarray, label: np.ndarray | None) -> None:
        """Add the next rows: ``image`` (C, rows, W) float32, ``label`` (rows, W) uint8."""
        with open(self.folder / "image.f32", "ab") as out:
            np.ascontiguousarray(image.transpose(1, 0, 2), np.float32).tofile(out)
        if self.labels:
            with open(self.folder / "label.u8", "ab") as out:
                np.ascontiguousarray(label, np.uint8).tofile(out)
        self.rows += image.shape[1]

    def read(self, y0: int, y1: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Rows [y0, y1): the image (C, rows, W) (a view of a fresh read) and the labels."""
        if not 0 <= y0 <= y1 <= self.rows:
            raise IndexError(f"rows [{y0}, {y1}) outside the {self.rows} stored in {self.folder}")
        image = read_raw_rows(
            self.folder / "image.f32", np.float32, (self.channels, self.width), y0, y1
        )
        label = None
        if self.labels:
            label = read_raw_rows(self.folder / "label.u8", np.uint8, (self.width,), y0, y1)
        return image.transpose(1, 0, 2), label

    def remove(self) -> None:
        if self._remove is not None:
            self._remove()


def remove_stale_composites() -> list[Path]:
    """Remove the held composites in ``TMPDIR`` of ended processes of this host."""
    return remove_stale(Path(tempfile.gettempdir()), f"{COMPOSITE_PREFIX}*-composite-pid*")


def read_raw_rows(
    path: Path, dtype: type[np.generic], row_shape: tuple[int, ...], y0: int, y1: int
) -> np.ndarray:
    """Rows [y0, y1) of a raw C-order file of rows shaped ``row_shape`` (a plain read)."""
    row_values = int(np.prod(row_shape))
    row_bytes = row_values * np.dtype(dtype).itemsize
    values = np.fromfile(path, dtype, (y1 - y0) * row_values, offset=y0 * row_bytes)
    return values.reshape(y1 - y0, *row_shape)


def _remove_folder(folder: Path, owner: int) -> None:
    if os.getpid() == owner:  # not from a forked worker's copy
        shutil.rmtree(folder, ignore_errors=True)
