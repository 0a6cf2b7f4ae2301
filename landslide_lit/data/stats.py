"""Per-channel statistics of a region's composite, which standardise its chips.

:class:`ChannelStats` holds a region's per-channel mean and standard deviation over its
valid (non-NaN) pixels. They are computed from a whole composite in memory
(:meth:`ChannelStats.of`, bit for bit numpy's ``nanmean``/``nanstd``) or streamed over
blocks of rows (:class:`RunningMoments`, equal to those to ~1e-12); the chip cache stores
them with the chips, checkpoints store the train region's.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from landslide_lit.distributed import on_rank_zero

__all__ = ["STATS_BLOCK", "ChannelStats", "RunningMoments", "nan_mean_std", "standardise"]

log = logging.getLogger(__name__)

STATS_BLOCK = 1 << 16
"""Elements per block of :func:`nan_mean_std`'s per-pixel passes (their temporaries stay
in the CPU cache); per-pixel arithmetic only, so the result does not depend on it."""


@dataclass(frozen=True)
class ChannelStats:
    """Per-channel mean and standard deviation over a region's valid pixels."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def of(cls, image: np.ndarray, channels: Sequence[str], region: str) -> ChannelStats:
        """The statistics of a (channel, y, x) composite, channel by channel."""
        # One copy of a plane for both moments (see nan_mean_std).
        mean, std = np.array([nan_mean_std(image[c]) for c in range(len(image))]).T
        return cls.from_moments(mean, std, channels, region)

    @classmethod
    def from_moments(
        cls, mean: np.ndarray, std: np.ndarray, channels: Sequence[str], region: str
    ) -> ChannelStats:
        """Statistics from per-channel moments; constant or empty channels standardise to 0."""
        unusable = ~np.isfinite(std) | (std == 0)
        if on_rank_zero():  # every rank computes them: said once
            for channel in np.asarray(channels)[unusable]:
                log.warning(
                    "%s: channel %s is constant or empty; it standardises to 0", region, channel
                )
        return cls(
            mean=tuple(np.where(np.isfinite(mean), mean, 0.0).tolist()),
            std=tuple(np.where(unusable, 1.0, std).tolist()),
        )


def standardise(
    batch: dict[str, torch.Tensor], stats: ChannelStats, sar_channels: Sequence[int]
) -> dict[str, torch.Tensor]:
    """Raw chips -> model input: per-channel standardisation, then NaN -> 0.

    Returns ``image``, ``valid`` (B, 1, H, W) bool where every SAR channel (indices
    ``sar_channels``) has data, ``origin``, and ``mask`` (B, 1, H, W) float target when
    labelled.
    """
    image = batch["image"]
    mean = image.new_tensor(stats.mean).view(1, -1, 1, 1)
    std = image.new_tensor(stats.std).view(1, -1, 1, 1)
    if sar_channels:
        valid = torch.isfinite(image[:, list(sar_channels)]).all(1, keepdim=True)
    else:
        valid = torch.ones_like(image[:, :1], dtype=torch.bool)
    out = {
        "image": torch.nan_to_num((image - mean) / std, nan=0.0),
        "valid": valid,
        "origin": batch["origin"],
    }
    if "target" in batch:
        out["mask"] = batch["target"].unsqueeze(1).to(image.dtype)
    return out


def nan_mean_std(plane: np.ndarray) -> tuple[float, float]:
    """``np.nanmean`` and ``np.nanstd`` (float64) of a (y, x) plane, the same bits, in one go.

    numpy's two calls each copy the plane with NaN set to 0, find the NaN and sum the copy;
    here that is done once. The arithmetic is numpy's own: the float64 sum of the zeroed
    float32 copy by the same reduction call, over the count of non-NaN pixels; deviations
    from the mean computed in float64 and stored as float32, squared, summed in float64.
    The per-pixel steps go block by block (:data:`STATS_BLOCK`). An all-NaN plane gives
    NaN for both, without numpy's warnings.
    """
    nan = np.isnan(plane)
    zeroed = np.where(nan, plane.dtype.type(0), plane)  # numpy's copy, in the plane's dtype
    count = nan.size - np.count_nonzero(nan)
    cube = zeroed[None]  # numpy's nan-reductions sum a (1, y, x) channel over axes (1, 2)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.sum(cube, axis=(1, 2), dtype=np.float64, keepdims=True) / count
        flat, mask = zeroed.reshape(-1), nan.reshape(-1)
        for s in range(0, flat.size, STATS_BLOCK):
            block = flat[s : s + STATS_BLOCK]
            np.subtract(block, mean.reshape(()), out=block, casting="unsafe")
            np.copyto(block, 0, where=mask[s : s + STATS_BLOCK])
            np.multiply(block, block, out=block)
        var = np.sum(cube, axis=(1, 2), dtype=np.float64) / count
    return float(mean.reshape(())), float(np.sqrt(var)[0])


class RunningMoments:
    """Per-channel count, mean and sum of squared deviations of finite values, streamed.

    Blocks of rows are combined exactly (Chan et al.'s pairwise update, float64).
    """

    def __init__(self, channels: int) -> None:
        self.count = np.zeros(channels)
        self.mean = np.zeros(channels)
        self.m2 = np.zeros(channels)

    def add(self, image: np.ndarray) -> None:
        """Add the finite values of a (channel, rows, x) block."""
        for c, plane in enumerate(image):
            values = plane[np.isfinite(plane)].astype(np.float64)
            if values.size == 0:
                continue
            n_b, mean_b = values.size, values.mean()
            m2_b = np.square(values - mean_b).sum()
            n = self.count[c] + n_b
            delta = mean_b - self.mean[c]
            self.mean[c] += delta * n_b / n
            self.m2[c] += m2_b + delta**2 * self.count[c] * n_b / n
            self.count[c] = n

    def mean_std(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean and standard deviation per channel; NaN for a channel without data."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.count > 0, self.mean, np.nan), np.sqrt(self.m2 / self.count)
