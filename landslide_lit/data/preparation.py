"""Chip preparation: a region's cube -> composite -> statistics -> chips, cached.

:class:`ChipPreparer` is the data module's collaborator that turns regions into chips. It
finds each region's cube (a built-in region's synthetic twin when asked, generated where
the data module allows), reads the region's chips, statistics and grid from the chip
cache (:mod:`~landslide_lit.data.cache`) or builds them and fills the cache, and keeps
them in memory. When a region yields no chips it says why.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from landslide_lit.data.cache import ChipCache, cache_place
from landslide_lit.data.chips import Chips, Keep, extract_chips
from landslide_lit.data.composite import CompositeSettings, build_composite
from landslide_lit.data.cube import CubeError, existing_cube, open_cube, region_cube_path
from landslide_lit.data.entries import CacheKey
from landslide_lit.data.settings import sar_channel_indices
from landslide_lit.data.stats import ChannelStats
from landslide_lit.distributed import on_rank_zero
from landslide_lit.regions import Region, checked_data_root

__all__ = ["ChipPreparer"]

log = logging.getLogger(__name__)


class ChipPreparer:
    """The chips, channel statistics and map grids of regions, prepared once each.

    Args:
        root: the data root (None: ``$LANDSLIDE_LIT_DATA``, else ``./data``).
        synthetic: built-in regions read their synthetic cubes (``root/synthetic/``).
        channels: the channel names of the chips.
        composite: how composites are made.
        chip_size: chip side in pixels.
        stride: the chip grid's step (None: the chip size).
        cache: use the chip cache; ``cache_dir`` is its folder (None: see
            :func:`~landslide_lit.data.cache.cache_place`).
        generates: whether a missing synthetic cube may be generated now (asked each
            time: it depends on the command the trainer runs).

    Attributes:
        stats: per region name, the statistics of its whole composite.
        grids: per region name, the composite's coordinates and attributes (to write
            maps in place).
    """

    def __init__(
        self,
        *,
        root: str | None,
        synthetic: bool,
        channels: Sequence[str],
        composite: CompositeSettings,
        chip_size: int,
        stride: int | None,
        cache: bool,
        cache_dir: str | None,
        generates: Callable[[], bool],
    ) -> None:
        self.root, self.synthetic, self.generates = root, synthetic, generates
        self.channels, self.composite = tuple(channels), composite
        self.chip_size, self.stride = chip_size, stride
        self.cache, self.cache_dir = cache, cache_dir
        self.stats: dict[str, ChannelStats] = {}
        self.grids: dict[str, xr.Dataset] = {}
        self._chips: dict[tuple[str, Keep], Chips] = {}
        self._chip_cache: ChipCache | None = None
        self._own_cube_noted: set[str] = set()

    # -- cubes ----------------------------------------------------------------

    def reads_synthetic(self, region: Region) -> bool:
        """Whether ``region`` reads a synthetic cube: built-in regions only, when asked.

        A region of one's own is never shadowed by a synthetic cube (said once).
        """
        if not self.synthetic or region.builtin:
            return self.synthetic
        if region.name not in self._own_cube_noted and on_rank_zero():
            log.info(
                "%s: a region of your own reads its own cube %s; --data.synthetic applies "
                "to the built-in regions only",
                region.name,
                region.cube_path(self.root),
            )
        self._own_cube_noted.add(region.name)
        return False

    def cube_path(self, region: Region) -> Path:
        """The existing cube of ``region``; a missing synthetic one is generated when allowed.

        The data root is checked whenever the cube lies in it.
        """
        synthetic = self.reads_synthetic(region)
        if synthetic and self.generates():
            self.generate(region)
        elif synthetic or not Path(region.cube).expanduser().is_absolute():
            checked_data_root(self.root)
        return region_cube_path(region, self.root, synthetic=synthetic)

    def generate_missing(self, regions: Iterable[Region]) -> None:
        """Write the missing synthetic cubes of ``regions`` (each region once)."""
        for region in {r.name: r for r in regions}.values():
            if self.reads_synthetic(region):
                self.generate(region)

    def generate(self, region: Region) -> None:
        """Write ``region``'s synthetic cube if missing; the data root may be created for it."""
        checked_data_root(self.root, may_be_missing=True)
        if existing_cube(region, self.root, synthetic=True) is None:
            # imported only to write a cube: importing it costs more than a warm start
            from landslide_lit.data.synthetic import write_synthetic_cube

            path = region.cube_path(self.root, synthetic=True)
            if on_rank_zero():
                log.info("generating a synthetic %s cube at %s", region.name, path)
            write_synthetic_cube(region, root=self.root)

    # -- chips ----------------------------------------------------------------

    def chips(self, region: Region, keep: Keep) -> Chips:
        """The chips of ``region``: from memory, else the chip cache, else built (and cached)."""
        if (region.name, keep) not in self._chips:
            self._chips[region.name, keep] = self._load_or_build(region, keep)
        return self._chips[region.name, keep]

    def chip_cache(self) -> ChipCache | None:
        """The chip cache (None when off), placed once; a fallback place is said on rank 0."""
        if not self.cache:
            return None
        if self._chip_cache is None:
            self._chip_cache, reason = cache_place(self.root, self.cache_dir)
            if reason is not None and on_rank_zero():
                log.warning(
                    "chip cache in %s: %s (choose a folder with --data.cache_dir DIR)",
                    self._chip_cache.root,
                    reason,
                )
        return self._chip_cache

    def _load_or_build(self, region: Region, keep: Keep) -> Chips:
        path = self.cube_path(region)
        cache = self.chip_cache()
        key = entry = None
        if cache is not None:
            key = cache.key(
                path, region, self.channels, self.composite, self.chip_size, self.stride, keep
            )
            entry = cache.load(key)
        if entry is None:
            chips, stats, grid = self._build(region, keep, path)
            if cache is not None:
                _save_quietly(cache, key, chips, stats, grid)
        else:
            chips, stats, grid_info = entry
            grid = xr.Dataset.from_dict(grid_info)
            self._log_chips(
                region, chips, keep, f"from the chip cache {cache.path(key)}", grid.attrs
            )
        self.stats.setdefault(region.name, stats)
        self.grids[region.name] = grid
        return chips

    def _build(
        self, region: Region, keep: Keep, path: Path
    ) -> tuple[Chips, ChannelStats, xr.Dataset]:
        """Composite -> statistics over the whole region -> chips."""
        cube = open_cube(path, region.names)
        self._check_cube(region, cube, path)
        composite = build_composite(cube, region, self.channels, self.composite)
        image = composite["image"].values
        label = composite["label"].values
        stats = ChannelStats.of(image, self.channels, region.name)
        chips = extract_chips(
            image,
            label,
            self.channels,
            sar_channel_indices(self.channels),
            size=self.chip_size,
            stride=self.stride,
            keep=keep,
        )
        if len(chips) == 0:
            why = self._why_no_chips(keep, label, region.names.landslides)
            raise CubeError(f"{path}: region {region.name!r} has {why}")
        self._log_chips(region, chips, keep, f"built from {path}", composite.attrs)
        return chips, stats, _grid_of(composite)

    def _check_cube(self, region: Region, cube: xr.Dataset, path: Path) -> None:
        """Chips need labels (fit, validate and test score against them) and a chip's room."""
        names = region.names
        if names.landslides not in cube.variables:
            flag = region.name if region.builtin else "<its region YAML file>"
            raise CubeError(
                f"{path}: region {region.name!r} has no landslide labels (no "
                f"{names.landslides!r} variable in the cube), and fit, validate and test "
                "need them: they train on and score against the labels. To map the region, "
                f"run `landslide-lit predict --region {flag}`. If the cube holds labels under "
                "another name, set names.landslides in the region's mapping."
            )
        height, width = cube.sizes[names.y], cube.sizes[names.x]
        if min(height, width) < self.chip_size:
            raise CubeError(
                f"{path}: region {region.name!r} is {height} x {width} pixels, smaller than "
                f"one {self.chip_size} x {self.chip_size} chip; give a smaller "
                "--data.chip_size"
            )

    def _why_no_chips(self, keep: Keep, label: np.ndarray, variable: str) -> str:
        """Why the chip grid kept nothing: the labels, or where the landslides lie."""
        if keep == "valid":
            return (
                "no chip with a pixel where every SAR channel has data: its before/after "
                "composites are empty; check --data.composite (orbit, before, after) "
                "against the acquisitions the cube holds"
            )
        labelled = np.isfinite(label)
        if not labelled.any():
            return (
                f"no labelled pixel: its labels ({variable!r}) are all NaN. Check "
                "that names.landslides names the label variable"
            )
        positive = int((label > 0).sum())
        if positive == 0:
            return (
                f"no landslide pixel: its landslide labels ({variable!r}) are all 0 "
                f"({int(labelled.sum())} "
                "labelled pixels); it cannot be trained on or evaluated. To map it, use "
                "`landslide-lit predict`"
            )
        return (
            f"no positive chip: its {positive} landslide pixels all lie in the edge strips "
            f"that the chip grid (--data.chip_size {self.chip_size}, --data.stride "
            f"{self.stride or self.chip_size}) leaves out; use a smaller --data.stride"
        )

    def _log_chips(
        self, region: Region, chips: Chips, keep: Keep, source: str, attrs: dict[str, Any]
    ) -> None:
        if not on_rank_zero():  # every rank prepares the same chips
            return
        log.info(
            "%s: %d %s chips of %d px (before %s, after %s), %s",
            region.name,
            len(chips),
            keep,
            self.chip_size,
            attrs.get("before_acquisitions", "-"),
            attrs.get("after_acquisitions", "-"),
            source,
        )


def _grid_of(composite: xr.Dataset) -> xr.Dataset:
    """The composite without its arrays: y/x (and other spatial) coordinates, attributes."""
    grid = composite.drop_vars(["image", "label", "channel"], errors="ignore")
    _, y, x = composite["image"].dims
    grid.attrs["dims"] = (y, x)
    grid.attrs["shape"] = (composite.sizes[y], composite.sizes[x])
    return grid


def _save_quietly(
    cache: ChipCache, key: CacheKey, chips: Chips, stats: ChannelStats, grid: xr.Dataset
) -> None:
    """Save a cache entry; a failed write (full disk, permissions) costs a rebuild, not the run."""
    try:
        cache.save(key, chips, stats, grid.to_dict(data="array"))
    except OSError as error:
        log.warning(
            "chip cache: could not save %s (%s); the chips will be built again next time",
            cache.path(key),
            error,
        )
