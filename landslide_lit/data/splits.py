"""The train/val/test split of a region's chips, and the datasets that view them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch.utils.data import Dataset

from landslide_lit.data.chips import Chips, Keep
from landslide_lit.errors import ConfigError
from landslide_lit.stages import SPLITS, Split

__all__ = ["ChipDataset", "SplitMethod", "split_dataset", "split_indices"]

SplitMethod = Literal["random", "block"]


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
    method: SplitMethod,
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


def split_dataset(
    chips: Chips,
    splits: dict[Split, torch.Tensor],
    split: Split,
    *,
    region: str,
    keep: Keep,
    method: SplitMethod,
    fractions: Sequence[float],
) -> ChipDataset:
    """``split`` of a region's ``chips`` (indices ``splits``), or one error when it is empty."""
    if len(splits[split]) == 0:
        counts = ", ".join(f"{name} {len(indices)}" for name, indices in splits.items())
        block = ", a smaller --data.block_chips" if method == "block" else ""
        raise ConfigError(
            f"the {split} split of region {region!r} is empty: its "
            f"{len(chips)} {keep} chips split {method} by "
            f"--data.split_fractions {list(fractions)} give {counts}. Give "
            f"each split a share of the chips{block}, or make more chips (a smaller "
            "--data.stride or --data.chip_size, or --data.keep valid)"
        )
    return ChipDataset(chips, splits[split])
