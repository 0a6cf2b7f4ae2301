"""The chip grid: square tiles cut from a composite, with their origins in the cube.

Chips sit on a grid anchored at the top-left pixel; with the default stride
(= chip size) they do not overlap and incomplete edge chips are dropped, as in
the published method. Each chip keeps its (y, x) origin so predictions can be
stitched back into the cube's grid.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from numpy.lib.stride_tricks import sliding_window_view

Keep = Literal["positive", "valid"]


@dataclass(frozen=True)
class Chips:
    """All chips of one region, in grid order (row by row), as compact tensors.

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
    """(row, column) origins of every complete chip on the grid, row by row."""
    if size < 1 or stride < 1:
        raise ValueError(f"chip size ({size}) and stride ({stride}) must be positive")
    rows = np.arange(0, height - size + 1, stride)
    cols = np.arange(0, width - size + 1, stride)
    grid = np.stack(np.meshgrid(rows, cols, indexing="ij"), axis=-1)
    return grid.reshape(-1, 2).astype(np.int64)


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
    windows = sliding_window_view(image, (size, size), axis=(1, 2))[:, ::stride, ::stride]
    positive = None
    if label is not None:
        target = label > 0  # NaN compares False: no landslide
        label_windows = sliding_window_view(target, (size, size))[::stride, ::stride]
        positive = label_windows.any(axis=(-2, -1)).reshape(-1)
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
        selected = (
            sliding_window_view(has_sar, (size, size))[::stride, ::stride]
            .any(axis=(-2, -1))
            .reshape(-1)
        )
    index = np.flatnonzero(selected)
    rows, cols = np.divmod(index, windows.shape[2])
    # (C, rows, cols, S, S) -> (rows, cols, C, S, S): indexing the two grid axes then gives
    # (N, C, S, S) in one C-contiguous copy, without a transposed copy in between.
    images = windows.transpose(1, 2, 0, 3, 4)[rows, cols].astype(np.float32, copy=False)
    targets = None
    if label is not None:  # bool and uint8 share their bytes: 1 where positive
        targets = torch.from_numpy(label_windows[rows, cols].view(np.uint8))
    return Chips(
        images=torch.from_numpy(images),
        targets=targets,
        origins=torch.from_numpy(origins[index]),
        channels=channels,
    )
