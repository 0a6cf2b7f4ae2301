"""LightningDataModule: region cubes -> composites -> chips -> splits -> batches.

Chips are held in memory as one compact tensor per region, unnormalised (NaN
where there is no data). Standardisation, the valid-pixel mask and the
augmentations run on the device in :meth:`on_after_batch_transfer`, so the
statistics restored from a checkpoint apply whatever the order of Lightning's
setup and restore steps.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import lightning as L
import numpy as np
import torch
import xarray as xr
from lightning.pytorch.trainer.states import RunningStage, TrainerFn
from torch.utils.data import DataLoader, Dataset

from landslide_lit.augment import SarAugmentation
from landslide_lit.data.cache import CacheKey, ChipCache, cache_place
from landslide_lit.data.chips import Chips, Keep, extract_chips
from landslide_lit.data.composite import (
    SAR_CHANNELS,
    CompositeSettings,
    build_composite,
    resolve_channels,
)
from landslide_lit.data.cube import CubeError, existing_cube, open_cube, region_cube_path
from landslide_lit.data.windows import WindowDataset, check_overlap
from landslide_lit.distributed import (
    EvaluationShard,
    ResumableLoader,
    batch_seed,
    rank_and_world,
    run_seed,
    seeded_rng,
    training_shard,
)
from landslide_lit.errors import ConfigError
from landslide_lit.regions import Region, checked_data_root, get_region

log = logging.getLogger(__name__)

Split = Literal["train", "val", "test"]
SPLITS: tuple[Split, ...] = ("train", "val", "test")


@dataclass(frozen=True)
class ChannelStats:
    """Per-channel mean and standard deviation over a region's valid pixels."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def of(cls, image: np.ndarray, channels: Sequence[str], region: str) -> ChannelStats:
        # Channel by channel, one copy of a plane for both moments (see _nan_mean_std).
        mean, std = np.array([_nan_mean_std(image[c]) for c in range(len(image))]).T
        return cls.from_moments(mean, std, channels, region)

    @classmethod
    def from_moments(
        cls, mean: np.ndarray, std: np.ndarray, channels: Sequence[str], region: str
    ) -> ChannelStats:
        """Statistics from per-channel moments; constant or empty channels standardise to 0."""
        unusable = ~np.isfinite(std) | (std == 0)
        for channel in np.asarray(channels)[unusable]:
            log.warning(
                "%s: channel %s is constant or empty; it standardises to 0", region, channel
            )
        return cls(
            mean=tuple(np.where(np.isfinite(mean), mean, 0.0).tolist()),
            std=tuple(np.where(unusable, 1.0, std).tolist()),
        )


def _nan_mean_std(plane: np.ndarray) -> tuple[float, float]:
    """``np.nanmean`` and ``np.nanstd`` (float64) of a (y, x) plane, the same bits, in one go.

    numpy's two calls each copy the plane with NaN set to 0, find the NaN and sum the copy;
    here that is done once. The arithmetic is numpy's own: the float64 sum of the zeroed
    float32 copy by the same reduction call, over the count of non-NaN pixels; deviations
    from the mean computed in float64 and stored as float32, squared, summed in float64.
    The per-pixel steps go block by block, so their temporaries stay in the CPU cache.
    An all-NaN plane gives NaN for both, without numpy's warnings.
    """
    nan = np.isnan(plane)
    zeroed = np.where(nan, plane.dtype.type(0), plane)  # numpy's copy, in the plane's dtype
    count = nan.size - np.count_nonzero(nan)
    cube = zeroed[None]  # numpy's nan-reductions sum a (1, y, x) channel over axes (1, 2)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.sum(cube, axis=(1, 2), dtype=np.float64, keepdims=True) / count
        flat, mask = zeroed.reshape(-1), nan.reshape(-1)
        for s in range(0, flat.size, _STATS_BLOCK):
            block = flat[s : s + _STATS_BLOCK]
            np.subtract(block, mean.reshape(()), out=block, casting="unsafe")
            np.copyto(block, 0, where=mask[s : s + _STATS_BLOCK])
            np.multiply(block, block, out=block)
        var = np.sum(cube, axis=(1, 2), dtype=np.float64) / count
    return float(mean.reshape(())), float(np.sqrt(var)[0])


_STATS_BLOCK = 1 << 16


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


class ChipDataset(Dataset):
    """A view on some chips of one region; items are dicts of tensors."""

    def __init__(self, chips: Chips, indices: torch.Tensor | None = None) -> None:
        self.chips = chips
        self.indices = torch.arange(len(chips)) if indices is None else indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, item: int) -> dict[str, torch.Tensor]:
        i = self.indices[item]
        sample = {"image": self.chips.images[i], "origin": self.chips.origins[i]}
        if self.chips.targets is not None:
            sample["target"] = self.chips.targets[i]
        return sample


def split_indices(
    chips: Chips,
    fractions: tuple[float, float, float],
    seed: int,
    method: Literal["random", "block"],
    block_pixels: int,
) -> dict[Split, torch.Tensor]:
    """Train/val/test indices of ``chips``.

    ``random`` reproduces the published split: ``torch.utils.data.random_split``
    with lengths ``int(0.7 n)``, ``int(0.2 n)`` and the rest, and a generator
    seeded 42 (Hokkaido: 216/61/32). ``block`` assigns whole square blocks of
    ``block_pixels`` to one split, so neighbouring chips never straddle train
    and validation.
    """
    n = len(chips)
    generator = torch.Generator().manual_seed(seed)
    if method == "random":
        n_train, n_val = int(fractions[0] * n), int(fractions[1] * n)
        order = torch.randperm(n, generator=generator)
        bounds = (0, n_train, n_train + n_val, n)
    else:
        block_id = torch.unique(chips.origins // block_pixels, dim=0, return_inverse=True)[1]
        block_rank = torch.randperm(int(block_id.max()) + 1, generator=generator).argsort()
        chip_rank = block_rank[block_id]
        order = torch.argsort(chip_rank, stable=True)
        # chip counts at block boundaries; each cut goes to the boundary nearest its fraction
        ends = torch.cat([torch.zeros(1, dtype=torch.long), torch.bincount(chip_rank).cumsum(0)])
        n_train = _nearest(ends, fractions[0] * n, at_least=0)
        n_val_end = _nearest(ends, (fractions[0] + fractions[1]) * n, at_least=n_train)
        bounds = (0, n_train, n_val_end, n)
    return {split: order[bounds[i] : bounds[i + 1]] for i, split in enumerate(SPLITS)}


def _nearest(ends: torch.Tensor, target: float, at_least: int) -> int:
    candidates = ends[ends >= at_least]
    return int(candidates[(candidates - target).abs().argmin()])


def _check_options(
    *,
    chip_size: int,
    stride: int | None,
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

    ``chip_size`` comes before ``predict_overlap``, whose range it sets.
    """
    _at_least(chip_size, 1, "chip_size", "the chip side in pixels (128 as published)")
    if stride is not None:
        _at_least(stride, 1, "stride", "the chip grid's step in pixels (default: the chip size)")
    try:
        check_overlap(predict_overlap, chip_size)
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


def _channels(channels: str | Sequence[str]) -> tuple[str, ...]:
    """The channel names of ``--data.channels``, one :class:`ConfigError` if it is unusable."""
    try:
        return resolve_channels(channels)
    except ValueError as error:
        raise _option_error(error) from None


def _option_error(error: ValueError) -> ConfigError:
    """``error`` (whose message starts with the option's name) as the option's ConfigError."""
    message = str(error)
    return ConfigError(message if message.startswith("--") else f"--data.{message}")


class LandslideDataModule(L.LightningDataModule):
    """Chips of landslide-affected terrain from before/after SAR composites.

    Args:
        train_region: region trained on (validation comes from it too): a
            built-in name (hokkaido, talakmau, kaikoura, puerto_rico), a
            mapping with name, cube, event_start, event_end, orbit, the path
            of a YAML file holding such a mapping, or a :class:`Region`.
        test_region: region tested and mapped. When it is the train region,
            testing uses the train region's held-out test split.
        validate_region: region scored by ``validate`` (default: the train
            region's validation split).
        root: data root (default ``$LANDSLIDE_LIT_DATA``, else ``./data``); it must be an
            existing folder, and nothing but the chip cache is ever written into it.
        synthetic: read the built-in regions' synthetic cubes from ``root/synthetic/``
            (regions of one's own keep their own cube). Missing ones are generated by
            ``fit`` only (and by a data module used without a trainer), never by
            validate, test or predict.
        channels: ``sar`` (4 channels), ``sar_dem`` (7) or channel names.
        composite: how before/after composites are made.
        chip_size: chip side in pixels (128 as published).
        stride: grid step (default: the chip size, non-overlapping as published).
        predict_overlap: pixels shared by neighbouring windows of ``predict``, which
            covers the whole region with ``chip_size`` windows and blends their overlaps
            (0 <= overlap < chip_size; 0: plain chip predictions).
        keep: ``positive`` chips with a landslide pixel (published) or every
            ``valid`` chip with SAR data (training and evaluation chips).
        split: ``random`` (published: 0.7/0.2/0.1, seed 42) or spatial ``block``.
        split_fractions: train/val/test fractions of the train region's chips.
        split_seed: seed of the split.
        block_chips: block side in chips for ``split: block``.
        norm_stats: ``region`` standardises each region with its own statistics
            (as the published code); ``train`` uses the train region's for all.
        cache: keep prepared chips and statistics in ``<root>/.chip_cache`` (keyed by the
            cube, its modification and every setting that shapes the chips), built once
            in ``prepare_data`` and read by every rank and later run; clear it with
            ``landslide-lit cache clear``. A read-only data root puts it in the per-user
            cache folder instead (see :func:`~landslide_lit.data.cache.cache_place`).
        cache_dir: the chip cache's folder instead of ``<root>/.chip_cache``.
        augment: on-device training augmentations (None: off; ``{}`` in YAML: the
            seed paper's four with their defaults). Their SAR channels are set here.
        batch_size: chips per batch and process (under DDP the effective batch is
            batch_size x processes).
        num_workers: DataLoader worker processes.
    """

    def __init__(
        self,
        # Not annotated with Region (accepted too): jsonargparse would read a region YAML
        # file given as a path into a mapping, losing the folder its cube is relative to.
        train_region: str | dict[str, Any] = "hokkaido",
        test_region: str | dict[str, Any] = "talakmau",
        validate_region: str | dict[str, Any] | None = None,
        root: str | None = None,
        synthetic: bool = False,
        channels: str | list[str] = "sar",
        composite: CompositeSettings = CompositeSettings(),  # noqa: B008 - frozen dataclass
        chip_size: int = 128,
        stride: int | None = None,
        predict_overlap: int = 32,
        keep: Keep = "positive",
        split: Literal["random", "block"] = "random",
        split_fractions: tuple[float, float, float] = (0.7, 0.2, 0.1),
        split_seed: int = 42,
        block_chips: int = 4,
        norm_stats: Literal["region", "train"] = "region",
        cache: bool = True,
        cache_dir: str | None = None,
        augment: SarAugmentation | None = None,
        batch_size: int = 16,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["augment"])
        _check_options(
            chip_size=chip_size,
            stride=stride,
            predict_overlap=predict_overlap,
            batch_size=batch_size,
            num_workers=num_workers,
            block_chips=block_chips,
            split_fractions=split_fractions,
            keep=keep,
            split=split,
            norm_stats=norm_stats,
        )
        # Typed settings live as attributes: under LightningCLI, hparams hold raw config dicts.
        self.root = root
        self.synthetic = synthetic
        self.composite = composite
        self.chip_size = chip_size
        self.stride = stride
        self.predict_overlap = predict_overlap
        self.keep = keep
        self.split = split
        self.split_fractions = tuple(split_fractions)
        self.split_seed = split_seed
        self.block_chips = block_chips
        self.norm_stats = norm_stats
        self.cache = cache
        self.cache_dir = cache_dir
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.train_region = get_region(train_region, "--data.train_region")
        self.test_region = get_region(test_region, "--data.test_region")
        self.validate_region = (
            get_region(validate_region, "--data.validate_region") if validate_region else None
        )
        self.channel_names = _channels(channels)
        self.sar_channel_indices = [
            i for i, c in enumerate(self.channel_names) if c in SAR_CHANNELS
        ]
        self.augmentation = (
            None if augment is None else augment.with_sar_channels(tuple(self.sar_channel_indices))
        )
        self.stats: dict[str, ChannelStats] = {}
        self.checkpoint_train_stats: ChannelStats | None = None
        self._chips: dict[tuple[str, Keep], Chips] = {}
        # Per region: the composite's coordinates and attributes, to write maps in place.
        self.grids: dict[str, xr.Dataset] = {}
        self._datasets: dict[str, list[ChipDataset | WindowDataset]] = {}
        self._chip_cache_place: ChipCache | None = None
        self._own_cube_noted: set[str] = set()

    # -- regions and chips ------------------------------------------------

    def dataloader_regions(self, stage: str) -> list[str]:
        """Region names of the evaluation dataloaders of ``stage``, in order."""
        return [region.name for region in self._eval_regions(stage)]

    def _eval_regions(self, stage: str) -> list[Region]:
        if stage in ("fit", "validate"):
            return [self.validate_region or self.train_region]
        if stage in ("test", "predict"):
            return [self.test_region]
        raise ValueError(f"unknown stage {stage!r}")

    def prepare_data(self) -> None:
        """Once per node: generate missing synthetic cubes (``fit`` only), fill the chip cache."""
        if self._generates():
            for region in {r.name: r for r in self._all_regions()}.values():
                if self._synthetic_for(region):
                    self._generate(region)
        if self.cache and self.trainer is not None:
            for region, keep in self._needed_chips(self._trainer_fn()):
                self.chips(region, keep)

    def _needed_chips(self, fn: TrainerFn | None) -> list[tuple[Region, Keep]]:
        """The (region, keep) chip sets a trainer function reads.

        Predict reads its region band by band, never chips. The train region's statistics
        of ``norm_stats: train`` come from the checkpoint, restored after this runs, so
        validate and test never prepare the train region for them.
        """
        needed = {
            TrainerFn.FITTING: [self.train_region, *self._eval_regions("validate")],
            TrainerFn.VALIDATING: self._eval_regions("validate"),
            TrainerFn.TESTING: self._eval_regions("test"),
        }.get(fn, [])
        return [(region, self.keep) for region in needed]

    def _all_regions(self) -> list[Region]:
        return [self.train_region, self.test_region, *filter(None, [self.validate_region])]

    def _trainer_fn(self) -> TrainerFn | None:
        return getattr(getattr(self.trainer, "state", None), "fn", None)

    def _generates(self) -> bool:
        """Whether missing synthetic cubes are made: by ``fit``, or without a trainer."""
        return self.synthetic and (self.trainer is None or self._trainer_fn() == TrainerFn.FITTING)

    def _is_rank_zero(self) -> bool:
        return getattr(self.trainer, "global_rank", 0) == 0

    def _synthetic_for(self, region: Region) -> bool:
        """Whether ``region`` reads a synthetic cube: built-in regions only, when asked.

        A region of one's own is never shadowed by a synthetic cube (said once).
        """
        if not self.synthetic or region.builtin:
            return self.synthetic
        if region.name not in self._own_cube_noted and self._is_rank_zero():
            log.info(
                "%s: a region of your own reads its own cube %s; --data.synthetic applies "
                "to the built-in regions only",
                region.name,
                region.cube_path(self.root),
            )
        self._own_cube_noted.add(region.name)
        return False

    def _cube_path(self, region: Region) -> Path:
        """The existing cube of ``region``; a missing synthetic one is generated when allowed.

        The data root is checked whenever the cube lies in it.
        """
        synthetic = self._synthetic_for(region)
        if synthetic and self._generates():
            self._generate(region)
        elif synthetic or not Path(region.cube).expanduser().is_absolute():
            checked_data_root(self.root)
        return region_cube_path(region, self.root, synthetic=synthetic)

    def _generate(self, region: Region) -> None:
        """Write ``region``'s synthetic cube if missing; the data root may be created for it."""
        checked_data_root(self.root, may_be_missing=True)
        if existing_cube(region, self.root, synthetic=True) is None:
            # imported only to write a cube: importing it costs more than a warm start
            from landslide_lit.data.synthetic import write_synthetic_cube

            path = region.cube_path(self.root, synthetic=True)
            log.info("generating a synthetic %s cube at %s", region.name, path)
            write_synthetic_cube(region, root=self.root)

    def chips(self, region: Region, keep: Keep | None = None) -> Chips:
        """The chips of ``region``: from memory, else the chip cache, else built (and cached)."""
        keep = keep or self.keep
        if (region.name, keep) not in self._chips:
            self._chips[region.name, keep] = self._load_or_build(region, keep)
        return self._chips[region.name, keep]

    def _load_or_build(self, region: Region, keep: Keep) -> Chips:
        path = self._cube_path(region)
        cache = self._chip_cache()
        key = entry = None
        if cache is not None:
            key = cache.key(
                path, region, self.channel_names, self.composite, self.chip_size, self.stride, keep
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

    def _chip_cache(self) -> ChipCache | None:
        """The chip cache (None when off), placed once; a fallback place is said on rank 0."""
        if not self.cache:
            return None
        if self._chip_cache_place is None:
            self._chip_cache_place, reason = cache_place(self.root, self.cache_dir)
            if reason is not None and self._is_rank_zero():
                log.warning(
                    "chip cache in %s: %s (choose a folder with --data.cache_dir DIR)",
                    self._chip_cache_place.root,
                    reason,
                )
        return self._chip_cache_place

    def _build(
        self, region: Region, keep: Keep, path: Path
    ) -> tuple[Chips, ChannelStats, xr.Dataset]:
        """Composite -> statistics over the whole region -> chips."""
        cube = open_cube(path, region.names)
        self._check_cube(region, cube, path)
        composite = build_composite(cube, region, self.channel_names, self.composite)
        image = composite["image"].values
        label = composite["label"].values
        stats = ChannelStats.of(image, self.channel_names, region.name)
        chips = extract_chips(
            image,
            label,
            self.channel_names,
            self.sar_channel_indices,
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

    def splits(self) -> dict[Split, torch.Tensor]:
        """Train/val/test chip indices of the train region."""
        chips = self.chips(self.train_region)
        return split_indices(
            chips,
            self.split_fractions,
            self.split_seed,
            self.split,
            self.block_chips * self.chip_size,
        )

    def _region_dataset(self, region: Region, split: Split) -> ChipDataset:
        """``split`` of the train region (never empty), or all chips of another region."""
        if region.name != self.train_region.name:
            return ChipDataset(self.chips(region))
        splits = self.splits()
        if len(splits[split]) == 0:
            counts = ", ".join(f"{name} {len(indices)}" for name, indices in splits.items())
            block = ", a smaller --data.block_chips" if self.split == "block" else ""
            raise ConfigError(
                f"the {split} split of region {region.name!r} is empty: its "
                f"{len(self.chips(region))} {self.keep} chips split {self.split} by "
                f"--data.split_fractions {list(self.split_fractions)} give {counts}. Give "
                f"each split a share of the chips{block}, or make more chips (a smaller "
                "--data.stride or --data.chip_size, or --data.keep valid)"
            )
        return ChipDataset(self.chips(region), splits[split])

    def setup(self, stage: str) -> None:
        if stage == "fit":
            self._datasets["train"] = [self._region_dataset(self.train_region, "train")]
        if stage in ("fit", "validate"):
            self._datasets["val"] = [
                self._region_dataset(r, "val") for r in self._eval_regions("validate")
            ]
        if stage == "test":
            self._datasets["test"] = [
                self._region_dataset(r, "test") for r in self._eval_regions("test")
            ]
        if stage == "predict":
            self._datasets["predict"] = [self._windows(r) for r in self._eval_regions("predict")]
            for region, windows in zip(
                self._eval_regions("predict"), self._datasets["predict"], strict=True
            ):
                self._stream_stats(region, windows)

    def _windows(self, region: Region) -> WindowDataset:
        """Every ``chip_size`` window of ``region``, ``predict_overlap`` apart, read by bands."""
        return WindowDataset(
            self._cube_path(region),
            region,
            self.channel_names,
            self.composite,
            self.chip_size,
            self.predict_overlap,
        )

    def _stream_stats(self, region: Region, windows: WindowDataset) -> None:
        """Ready the statistics that standardise ``region`` (predicted as ``windows``).

        Statistics that do not come from a checkpoint (``norm_stats: region``, or the
        train region's own) are streamed over the cube band by band: the values of
        :meth:`ChannelStats.of` over the whole composite, without holding it. The
        composite is kept on disk for the windows (see :class:`CompositeStore`) instead
        of being made twice. Another region's ``norm_stats: train`` statistics come from
        the checkpoint, restored after ``setup`` (see :meth:`predict_dataloader`).
        """
        own = self.norm_stats == "region" or region.name == self.train_region.name
        if own and region.name not in self.stats:
            mean, std = windows.moments(keep=True)
            self.stats[region.name] = ChannelStats.from_moments(
                mean, std, self.channel_names, region.name
            )

    def teardown(self, stage: str) -> None:
        if stage == "predict":
            for windows in self._datasets.get("predict", []):
                windows.release()

    # -- loaders ----------------------------------------------------------

    def _loader(self, dataset: ChipDataset | WindowDataset) -> DataLoader:
        """An evaluation loader of this process's shard, each chip on one rank only."""
        rank, world = rank_and_world(self.trainer)
        return DataLoader(dataset, sampler=EvaluationShard(dataset, world, rank), **self._loading)

    @property
    def _loading(self) -> dict[str, Any]:
        return {
            "batch_size": self.batch_size,
            "num_workers": self.num_workers,
            "persistent_workers": self.num_workers > 0,
        }

    def train_dataloader(self) -> DataLoader:
        """This process's shuffled shard, resumable mid-epoch (see ResumableLoader)."""
        dataset = self._datasets["train"][0]
        rank, world = rank_and_world(self.trainer)
        sampler = training_shard(dataset, world, rank, seed=run_seed())
        return ResumableLoader(
            dataset, sampler=sampler, progress=self._fit_progress, **self._loading
        )

    def _fit_progress(self) -> tuple[int, int]:
        """(epoch, batches done in it) of the running fit; (0, 0) outside one."""
        loop = getattr(self.trainer, "fit_loop", None)
        if loop is None:
            return 0, 0
        return (
            loop.epoch_progress.current.processed,
            loop.epoch_loop.batch_progress.current.processed,
        )

    def val_dataloader(self) -> list[DataLoader]:
        return [self._loader(d) for d in self._datasets["val"]]

    def test_dataloader(self) -> list[DataLoader]:
        return [self._loader(d) for d in self._datasets["test"]]

    def predict_dataloader(self) -> list[DataLoader]:
        """The windows' loaders; asked for after Lightning restored the checkpoint."""
        self._require_checkpoint_stats()
        return [self._loader(d) for d in self._datasets["predict"]]

    def _require_checkpoint_stats(self) -> None:
        """``norm_stats: train`` needs the checkpoint's statistics: predict never reads the
        train region's cube to make them."""
        if self.norm_stats != "train" or self.checkpoint_train_stats is not None:
            return
        for region in self._eval_regions("predict"):
            if region.name != self.train_region.name:
                raise ConfigError(
                    f"predict with --data.norm_stats train standardises {region.name!r} with "
                    f"the train region {self.train_region.name!r}'s statistics, which come "
                    "from the checkpoint, and this one holds none. Predict with a checkpoint "
                    "written by `landslide-lit fit` (--ckpt_path); predict never reads the "
                    "train region's cube"
                )

    # -- on the device ------------------------------------------------------

    def on_after_batch_transfer(
        self, batch: dict[str, torch.Tensor], dataloader_idx: int
    ) -> dict[str, torch.Tensor]:
        """Standardise and mark valid pixels; augment too while training."""
        batch = self.standardise(batch, self._batch_region(dataloader_idx))
        if self.trainer is not None and self.trainer.training and self.augmentation is not None:
            mask = batch.get("mask", torch.zeros_like(batch["valid"], dtype=batch["image"].dtype))
            with seeded_rng(self._augmentation_seed(), batch["image"].device):
                batch["image"], mask, batch["valid"] = self.augmentation(
                    batch["image"], mask, batch["valid"]
                )
            if "mask" in batch:
                batch["mask"] = mask
        return batch

    def _augmentation_seed(self) -> int:
        """Seed of this training batch's draws: run seed, global rank, batches seen before it.

        The count is the fit loop's (restored from checkpoints); a trainer-like object
        without a rank or a fit loop counts as rank 0 from batch 0.
        """
        rank = getattr(self.trainer, "global_rank", 0)
        loop = getattr(self.trainer, "fit_loop", None)
        seen = 0 if loop is None else loop.epoch_loop.batch_progress.total.ready
        return batch_seed(run_seed(), rank, seen)

    def standardise(
        self, batch: dict[str, torch.Tensor], region: Region
    ) -> dict[str, torch.Tensor]:
        """Raw chips -> model input: per-channel standardisation, then NaN -> 0.

        Returns ``image``, ``valid`` (B, 1, H, W) bool where every SAR channel has
        data, ``origin``, and ``mask`` (B, 1, H, W) float target when labelled.
        """
        stats = self.region_stats(region)
        image = batch["image"]
        mean = image.new_tensor(stats.mean).view(1, -1, 1, 1)
        std = image.new_tensor(stats.std).view(1, -1, 1, 1)
        if self.sar_channel_indices:
            valid = torch.isfinite(image[:, self.sar_channel_indices]).all(1, keepdim=True)
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

    def _batch_region(self, dataloader_idx: int) -> Region:
        stage = self.trainer.state.stage if self.trainer is not None else None
        if stage is None or stage == RunningStage.TRAINING:
            return self.train_region
        name = {
            RunningStage.VALIDATING: "validate",
            RunningStage.SANITY_CHECKING: "validate",
            RunningStage.TESTING: "test",
            RunningStage.PREDICTING: "predict",
        }[stage]
        return self._eval_regions(name)[dataloader_idx]

    def region_stats(self, region: Region) -> ChannelStats:
        """Statistics used to standardise ``region`` under the ``norm_stats`` setting.

        ``region``: the region's own, always from its own cube. ``train``: the
        train region's, from the checkpoint when one was loaded (so testing
        never needs the train cube), else from the train cube.
        """
        if self.norm_stats == "train":
            if self.checkpoint_train_stats is not None:
                return self.checkpoint_train_stats
            region = self.train_region
        if region.name not in self.stats:
            self.chips(region)
        return self.stats[region.name]

    # -- checkpoints ----------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Channel names and the train region's statistics, saved in every checkpoint."""
        stats = self.checkpoint_train_stats or self.stats.get(self.train_region.name)
        return {
            "channels": list(self.channel_names),
            "train_region": self.train_region.name,
            "train_stats": None if stats is None else {"mean": stats.mean, "std": stats.std},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if list(state["channels"]) != list(self.channel_names):
            raise ConfigError(
                f"the checkpoint was trained on channels {state['channels']}, but the data "
                f"module makes {list(self.channel_names)}; set --data.channels to match"
            )
        if state["train_stats"] is not None:
            stats = state["train_stats"]
            self.checkpoint_train_stats = ChannelStats(tuple(stats["mean"]), tuple(stats["std"]))
