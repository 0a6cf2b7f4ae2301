"""The random split picks the published chips: xbatcher's chip order, torch's random_split.

The oracle is the published pipeline itself: xbatcher ``BatchGenerator(ds, {'x': S,
'y': S})`` over the composite (x is its outer loop: chips come column by column), the
chips with a landslide pixel in that order, and ``torch.utils.data.random_split`` with
lengths ``int(0.7 n)``, ``int(0.2 n)`` and the rest, seeded 42.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from landslide_lit.data.chips import Chips
from landslide_lit.data.composite import build_composite
from landslide_lit.data.cube import open_cube, region_cube_path
from landslide_lit.data.datamodule import LandslideDataModule
from landslide_lit.data.splits import split_indices
from landslide_lit.stages import SPLITS

xbatcher = pytest.importorskip("xbatcher")  # in the dev extra

SIZE = 32  # 256 windows on the 512 px synthetic Hokkaido: many chips, and fast


def published_splits(dm: LandslideDataModule) -> dict[str, set[tuple[int, int]]]:
    """Chip origins (row, column) of each split, as the published code picks them."""
    region = dm.train_region
    path = region_cube_path(region, dm.root, synthetic=True)
    composite = build_composite(open_cube(path, region.names), region, dm.channel_names)
    y, x = composite.indexes[region.names.y], composite.indexes[region.names.x]
    batches = xbatcher.BatchGenerator(composite, {region.names.x: SIZE, region.names.y: SIZE})
    positive = [
        (y.get_loc(batch[region.names.y].values[0]), x.get_loc(batch[region.names.x].values[0]))
        for batch in batches
        if float(batch["label"].sum()) > 0  # NaN skipped
    ]
    n = len(positive)
    subsets = torch.utils.data.random_split(
        positive,
        [int(0.7 * n), int(0.2 * n), n - int(0.7 * n) - int(0.2 * n)],
        generator=torch.Generator().manual_seed(42),
    )
    return {
        split: {positive[i] for i in s.indices} for split, s in zip(SPLITS, subsets, strict=True)
    }


def origins_of(chips: Chips, splits: dict[str, torch.Tensor]) -> dict[str, set]:
    return {split: {tuple(o) for o in chips.origins[i].tolist()} for split, i in splits.items()}


def test_random_split_picks_the_published_chips(synthetic_root):
    dm = LandslideDataModule(
        root=synthetic_root,
        synthetic=True,
        channels="sar",
        chip_size=SIZE,
        predict_overlap=0,
        cache=False,
    )
    expected = published_splits(dm)
    chips = dm.chips(dm.train_region)
    assert sum(map(len, expected.values())) == len(chips) > 20
    assert origins_of(chips, dm.splits()) == expected

    # The same permutation over chips listed row by row picks other chips: the order matters.
    by_row = torch.from_numpy(np.lexsort((chips.origins[:, 1], chips.origins[:, 0])))
    row_major = Chips(
        chips.images[by_row], chips.targets[by_row], chips.origins[by_row], chips.channels
    )
    other = origins_of(row_major, split_indices(row_major, (0.7, 0.2, 0.1), 42, "random", 0))
    assert other["val"] != expected["val"] and other["test"] != expected["test"]
