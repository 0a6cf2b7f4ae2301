"""The chip grid: square tiles cut from a composite, with their origins in the cube.

Chips sit on a grid anchored at the top-left pixel; with the default stride
(= chip size) they do not overlap and incomplete edge chips are dropped, as in
the published method. Each chip keeps its (y, x) origin so predictions can be
stitched back into the cube's grid.

Chips are listed column by column (origins (0, 0), (S, 0), (2S, 0), ..., then (0, S),
...), the order in which the published code's xbatcher ``BatchGenerator(ds, {'x': S,
'y': S})`` yields them (x is its outer loop). The seeded random split permutes chip
*indices*, so this order decides which chips land in train, validation and test: listed
row by row, the same seed would pick other chips than the published split.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from numpy.lib.stride_tricks import sliding_window_view

__all__ = ["Chips", "Keep", "extract_chips", "grid_origins"]

Keep = Literal["positive", "valid"]


@dataclass(frozen=True)
class Chips:
    """All chips of one region, in the published order (column by column), as tensors.

    Attributes:
        images: (N, C, S, S) float32 composite values, NaN where there is no data.
        targets: (N, S, S) uint8, 1 where ``landslides > 0``; None without labels.
        origins: (N, 2) int64 top-left (row, column) of each chip in the cube.
        channels: channel names, in the order of ``images``' second axis.
    """

    images: torch.Tensor
    targets: torch.Tensor | None
    origins: torch.Tensor
    channels: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.origins)


def grid_origins(height: int, width: int, size: int, stride: int) -> np.ndarray:
    """(row, column) origins of every complete chip on the grid, column by column."""
    if size < 1 or stride < 1:
        raise ValueError(f"chip size ({size}) and stride ({stride}) must be positive")
    rows = np.arange(0, height - size + 1, stride)
    cols = np.arange(0, width - size + 1, stride)
    col, row = np.meshgrid(cols, rows, indexing="ij")  # (cols, rows): the column varies slowest
    return np.stack([row, col], axis=-1).reshape(-1, 2).astype(np.int64)


def extract_chips(
    image: np.ndarray,
    label: np.ndarray | None,
    channels: tuple[str, ...],
    sar_channels: list[int],
    size: int = 128,
    stride: int | None = None,
    keep: Keep = "positive",
) -> Chips:
    """Cut ``image`` (C, H, W) and ``label`` (H, W) into chips and keep the wanted ones.

    ``keep="positive"`` keeps chips with at least one landslide pixel (the
    published filter); ``"valid"`` keeps every chip with at least one pixel
    where all SAR channels have data.
    """
    stride = stride or size
    _, height, width = image.shape
    origins = grid_origins(height, width, size, stride)
    if len(origins) == 0:
        raise ValueError(
            f"the composite ({height} x {width} pixels) is smaller than one {size} x {size} chip"
        )
    grid = sliding_window_view(image, (size, size), axis=(1, 2))[:, ::stride, ::stride]
    positive = None
    if label is not None:
        target = label > 0  # NaN compares False: no landslide
        label_grid = sliding_window_view(target, (size, size))[::stride, ::stride]
        positive = label_grid.any(axis=(-2, -1))
    if keep == "positive":
        if positive is None:
            raise ValueError(
                "keep='positive' needs landslide labels, but the cube has none; "
                "use --data.keep valid"
            )
        selected = positive
    else:
        has_sar = np.ones((height, width), bool)  # a plane at a time, no (C, H, W) copies
        for channel in sar_channels:
            has_sar &= np.isfinite(image[channel])
        selected = sliding_window_view(has_sar, (size, size))[::stride, ::stride].any(axis=(-2, -1))
    # ``selected`` is (grid rows, grid columns); its transpose, flattened, lists the grid
    # column by column, as grid_origins does.
    index = np.flatnonzero(selected.T)
    cols, rows = np.divmod(index, grid.shape[1])
    # (C, rows, cols, S, S) -> (rows, cols, C, S, S): the two grid axes first, so a chip is
    # one item of the grid, copied without a transposed copy in between.
    images = _gather(grid.transpose(1, 2, 0, 3, 4), rows, cols)
    targets = None
    if label is not None:  # bool and uint8 share their bytes: 1 where positive
        targets = torch.from_numpy(label_grid[rows, cols].view(np.uint8))
    return Chips(
        images=torch.from_numpy(images),
        targets=targets,
        origins=torch.from_numpy(origins[index]),
        channels=channels,
    )


def _gather(grid: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``grid[rows, cols]`` as one C-contiguous float32 array, in the given chip order.

    The chips are read row by row whatever their order: neighbouring chips of one grid row
    share memory pages, so this is about 10 % faster than fancy indexing in column order.
    """
    out = np.empty((len(rows), *grid.shape[2:]), np.float32)
    for k in np.lexsort((cols, rows)):
        out[k] = grid[rows[k], cols[k]]
    return out
