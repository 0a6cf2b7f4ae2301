"""The checks of the data module's options: one :class:`ConfigError` naming the option."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, get_args

from landslide_lit.data.chips import Keep
from landslide_lit.data.settings import resolve_channels
from landslide_lit.data.windows import check_overlap, check_window
from landslide_lit.errors import ConfigError

__all__ = ["channel_names", "check_options"]


def check_options(
    *,
    chip_size: int,
    stride: int | None,
    predict_window: int,
    predict_overlap: int,
    batch_size: int,
    num_workers: int,
    block_chips: int,
    split_fractions: Sequence[float],
    keep: str,
    split: str,
    norm_stats: str,
) -> None:
    """One :class:`ConfigError` naming the first option that makes no sense.

    ``predict_window`` comes before ``predict_overlap``, whose range it sets.
    """
    _at_least(chip_size, 1, "chip_size", "the chip side in pixels (128 as published)")
    if stride is not None:
        _at_least(stride, 1, "stride", "the chip grid's step in pixels (default: the chip size)")
    try:
        check_window(predict_window)
        check_overlap(predict_overlap, predict_window)
    except ValueError as error:
        raise _option_error(error) from None
    _at_least(batch_size, 1, "batch_size", "chips per batch and process")
    _at_least(num_workers, 0, "num_workers", "DataLoader worker processes (0: none)")
    _at_least(block_chips, 1, "block_chips", "the side of a split block in chips")
    _check_fractions(split_fractions)
    for option, value, choices in (
        ("keep", keep, get_args(Keep)),
        ("split", split, ("random", "block")),
        ("norm_stats", norm_stats, ("region", "train")),
    ):
        if value not in choices:
            raise ConfigError(f"--data.{option}={value!r}: use one of {', '.join(choices)}")


def _at_least(value: Any, low: int, option: str, meaning: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"--data.{option}={value!r}: must be a whole number >= {low}, {meaning}")


def _check_fractions(fractions: Sequence[float]) -> None:
    try:
        values = [float(f) for f in fractions]
    except (TypeError, ValueError):
        values = []
    if (
        len(values) != 3
        or not all(math.isfinite(v) and v >= 0 for v in values)
        or abs(sum(values) - 1) > 1e-6
    ):
        raise ConfigError(
            f"--data.split_fractions={fractions!r}: need three fractions (train, val, test) "
            ">= 0 that sum to 1, e.g. [0.7, 0.2, 0.1] as published"
        )


def channel_names(channels: str | Sequence[str]) -> tuple[str, ...]:
    """The channel names of ``--data.channels``, one :class:`ConfigError` if it is unusable."""
    try:
        return resolve_channels(channels)
    except ValueError as error:
        raise _option_error(error) from None


def _option_error(error: ValueError) -> ConfigError:
    """``error`` (whose message starts with the option's name) as the option's ConfigError."""
    message = str(error)
    return ConfigError(message if message.startswith("--") else f"--data.{message}")
