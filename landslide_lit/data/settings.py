"""What a composite is made of: its channels and :class:`CompositeSettings`.

The published method (Prapas et al.): natural log of linear ``vv``/``vh``; only
descending passes; *before* = pixel-wise mean of the last N pre-event acquisitions,
*after* = the first post-event acquisition; terrain channels are aspect, slope and
curvature.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from landslide_lit.errors import ConfigError

__all__ = [
    "CHANNEL_PRESETS",
    "RECIPES",
    "SAR_CHANNELS",
    "TERRAIN_CHANNELS",
    "CompositeSettings",
    "Recipe",
    "resolve_channels",
    "sar_channel_indices",
]

SAR_CHANNELS = ("vv_before", "vh_before", "vv_after", "vh_after")
TERRAIN_CHANNELS = ("dem_aspect", "dem_slope_radians", "dem_curvature")
CHANNEL_PRESETS: dict[str, tuple[str, ...]] = {
    "sar": SAR_CHANNELS,
    "sar_dem": SAR_CHANNELS + TERRAIN_CHANNELS,
}


Recipe = Literal["paper", "published_code"]
RECIPES: tuple[str, ...] = ("paper", "published_code")
RELATIVE_ORBIT_WORDS: tuple[str, ...] = ("auto", "none")
_CHOICES: dict[str, tuple[str, ...]] = {
    "reducer": ("mean", "median"),
    "orbit": ("region", "d", "a", "both", "none"),
    "recipe": RECIPES,
    "nonpositive": ("error", "nodata"),
    "missing_chunks": ("error", "nodata"),
}


@dataclass(frozen=True)
class CompositeSettings:
    """How the before/after composites are made.

    Attributes:
        before: number N of pre-event acquisitions averaged.
        after: number of post-event acquisitions averaged; None: the recipe's (1 for
            ``paper``, N for ``published_code``).
        recipe: which acquisitions: ``paper`` (the seed paper: the last N before the event,
            the first ``after`` after it) or ``published_code`` (the code published with the
            predecessor paper: with more than N pre-event acquisitions it skips the last
            one, ``isel(range(-1 - N, -1))``, with N or fewer it takes them all; after =
            the first N). ``published_code`` takes no other ``after`` than N.
        reducer: ``mean`` (published) or ``median`` across the acquisitions.
        orbit: ``region`` uses the region's own setting (descending for Hokkaido
            and Talakmau, as published); ``d``/``a`` keep one pass direction,
            ``both`` keeps all passes, ``none`` ignores orbits (for cubes without
            a ``sat:orbit_state`` coordinate).
        nonpositive: amplitudes <= 0 are impossible for linear power; ``error``
            stops with a message, ``nodata`` treats them as missing (NaN).
        missing_chunks: chunk files absent from a Zarr store (a partial copy or unzip)
            under a variable the composite reads; ``error`` stops with a message,
            ``nodata`` reads them as missing (NaN).
        relative_orbit: which relative orbit (viewing geometry) of a cube with a
            ``sat:relative_orbit`` coordinate the before and after composites keep, so
            that incidence-angle differences never pass for change: ``auto`` the one
            with the most pre-event passes (see
            :func:`~landslide_lit.data.acquisitions.choose_relative_orbit`), a number N
            that orbit, ``none`` mixes them all. A cube without the coordinate (the
            published cubes carry no relative orbit) is unaffected by ``auto``; a number
            asked of it is an error.
    """

    before: int = 4
    after: int | None = None
    reducer: Literal["mean", "median"] = "mean"
    orbit: Literal["region", "d", "a", "both", "none"] = "region"
    recipe: Recipe = "paper"
    nonpositive: Literal["error", "nodata"] = "error"
    missing_chunks: Literal["error", "nodata"] = "error"
    relative_orbit: int | Literal["auto", "none"] = "auto"

    def __post_init__(self) -> None:
        for option in ("before", "after"):
            value = getattr(self, option)
            if value is None and option == "after":
                continue
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
                raise ConfigError(
                    f"--data.composite.{option} {value!r}: need a whole number of "
                    "acquisitions, at least 1"
                )
        for option, choices in _CHOICES.items():
            if getattr(self, option) not in choices:
                raise ConfigError(
                    f"--data.composite.{option} {getattr(self, option)!r}: use one of "
                    f"{', '.join(choices)}"
                )
        if self.recipe == "published_code" and self.after not in (None, self.before):
            raise ConfigError(
                f"--data.composite.after {self.after} with --data.composite.recipe "
                f"published_code: the published code averages the first N = "
                f"--data.composite.before = {self.before} post-event acquisitions. Leave "
                "--data.composite.after out (or null in a config file), set it to "
                f"{self.before}, or use --data.composite.recipe paper"
            )
        self._check_relative_orbit()

    def _check_relative_orbit(self) -> None:
        value = self.relative_orbit
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value)  # a number given as text, in a config file or on the command line
        elif isinstance(value, np.integer):
            value = int(value)
        if value not in RELATIVE_ORBIT_WORDS and (
            isinstance(value, bool) or not isinstance(value, int) or value < 1
        ):
            raise ConfigError(
                f"--data.composite.relative_orbit {value!r}: use auto (the relative orbit "
                "with the most pre-event passes), a relative orbit number (1 or more), or "
                "none (mix every relative orbit)"
            )
        object.__setattr__(self, "relative_orbit", value)

    @property
    def after_count(self) -> int:
        """The number of post-event acquisitions averaged."""
        if self.after is not None:
            return self.after
        return self.before if self.recipe == "published_code" else 1


def resolve_channels(channels: str | Sequence[str]) -> tuple[str, ...]:
    """Channel names from a preset name (``sar``, ``sar_dem``) or an explicit list.

    Explicit names may be ``vv_before``-style SAR composites (any timestep
    variable with ``_before``/``_after``), terrain or other (y, x) variables by
    name (e.g. ``dem``), or ``NAME@K`` for pair K of an interferometric
    (timepair, y, x) variable such as a coherence.
    """
    if isinstance(channels, str):
        if channels not in CHANNEL_PRESETS:
            raise ConfigError(
                f"--data.channels={channels!r}: unknown preset; use one of "
                f"{sorted(CHANNEL_PRESETS)} or a list of channel names"
            )
        return CHANNEL_PRESETS[channels]
    names = tuple(channels)
    if not names:
        raise ConfigError("--data.channels: the list is empty; give at least one channel")
    if len(set(names)) != len(names):
        raise ConfigError(f"--data.channels={list(names)}: a channel is listed twice")
    return names


def sar_channel_indices(channels: Sequence[str]) -> list[int]:
    """Positions of the SAR composites among ``channels``: where valid pixels are judged."""
    return [i for i, c in enumerate(channels) if c in SAR_CHANNELS]
