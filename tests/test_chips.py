"""The chip grid, the positive/valid filters and the train/val/test splits."""

import numpy as np
import pytest
import torch

from landslide_lit.data.chips import extract_chips, grid_origins
from landslide_lit.data.splits import split_indices

CHANNELS = ("vv_before", "vh_before", "vv_after", "vh_after")


def test_grid_drops_incomplete_edge_chips_and_goes_column_by_column():
    origins = grid_origins(300, 260, size=128, stride=128)
    assert origins.tolist() == [[0, 0], [128, 0], [0, 128], [128, 128]]
    assert len(grid_origins(256, 256, size=128, stride=64)) == 9


def test_chips_keep_their_origin_and_pixels():
    image = np.arange(4 * 256 * 384, dtype=np.float32).reshape(4, 256, 384)
    label = np.zeros((256, 384), np.float32)
    label[130, 260] = 1  # chip (128, 256)
    label[5, 5] = np.nan  # NaN is not a landslide
    label[10, 140] = 2.0  # values > 1 are landslides too: chip (0, 128)
    chips = extract_chips(image, label, CHANNELS, [0, 1, 2, 3], size=128, keep="positive")
    assert chips.origins.tolist() == [[0, 128], [128, 256]]
    for k, (y, x) in enumerate(chips.origins.tolist()):
        np.testing.assert_array_equal(chips.images[k].numpy(), image[:, y : y + 128, x : x + 128])
        np.testing.assert_array_equal(chips.targets[k].numpy(), label[y : y + 128, x : x + 128] > 0)
    assert chips.images.dtype == torch.float32 and chips.targets.dtype == torch.uint8


def test_valid_filter_drops_chips_without_sar_data():
    image = np.ones((4, 256, 256), np.float32)
    image[:, :128, :128] = np.nan  # no SAR at all in the first chip
    image[2, 128:, 128:] = np.nan  # one SAR channel missing everywhere in the last chip
    chips = extract_chips(image, None, CHANNELS, [0, 1, 2, 3], size=128, keep="valid")
    assert chips.origins.tolist() == [[128, 0], [0, 128]]  # column by column
    assert chips.targets is None
    with pytest.raises(ValueError, match="needs landslide labels"):
        extract_chips(image, None, CHANNELS, [0, 1, 2, 3], size=128, keep="positive")


def test_published_split_sizes_for_hokkaido():
    chips = _fake_chips(309)
    splits = split_indices(chips, (0.7, 0.2, 0.1), 42, "random", 512)
    assert [len(splits[s]) for s in ("train", "val", "test")] == [216, 61, 32]
    # torch.utils.data.random_split with the published integer lengths gives the same indices
    reference = torch.utils.data.random_split(
        range(309), [216, 61, 32], generator=torch.Generator().manual_seed(42)
    )
    for split, subset in zip(("train", "val", "test"), reference, strict=True):
        assert splits[split].tolist() == list(subset.indices)


def test_block_split_keeps_blocks_whole_and_disjoint():
    chips = _fake_chips(400, grid=20)
    splits = split_indices(chips, (0.7, 0.2, 0.1), 0, "block", block_pixels=4 * 128)
    all_indices = torch.cat(list(splits.values()))
    assert sorted(all_indices.tolist()) == list(range(400))
    blocks = {s: {tuple(b) for b in (chips.origins[i] // 512).tolist()} for s, i in splits.items()}
    assert not (blocks["train"] & blocks["val"]) and not (blocks["val"] & blocks["test"])
    assert not (blocks["train"] & blocks["test"])
    assert abs(len(splits["train"]) - 280) <= 16 and len(splits["val"]) > 0


def _fake_chips(n, grid=20):
    image = np.zeros((1, 128 * grid, 128 * grid), np.float32)
    label = np.ones((128 * grid, 128 * grid), np.float32)
    chips = extract_chips(image, label, ("vv_before",), [0], size=128, keep="positive")
    return type(chips)(chips.images[:n], chips.targets[:n], chips.origins[:n], chips.channels)


@pytest.mark.parametrize("stride", [None, 3, 5])
def test_chips_are_the_grid_slices_contiguous(stride):
    """Every kept chip is the plain slice of the image and label at its origin."""
    rng = np.random.default_rng(0)
    image = rng.standard_normal((3, 23, 29)).astype(np.float32)
    image[1, ::4, ::3] = np.nan
    label = (rng.random((23, 29)) > 0.97).astype(np.float32)
    label[0, 0] = np.nan
    for keep in ("positive", "valid"):
        chips = extract_chips(image, label, ("a", "b", "c"), [0, 1], 6, stride, keep)
        assert chips.images.is_contiguous() and chips.targets.is_contiguous()
        assert chips.images.dtype == torch.float32 and chips.targets.dtype == torch.uint8
        for k, (row, col) in enumerate(chips.origins.tolist()):
            expected = image[:, row : row + 6, col : col + 6]
            np.testing.assert_array_equal(chips.images[k].numpy(), expected)
            np.testing.assert_array_equal(
                chips.targets[k].numpy(), (label[row : row + 6, col : col + 6] > 0).astype(np.uint8)
            )


def test_block_split_does_not_depend_on_the_chip_order():
    chips = _fake_chips(400, grid=20)
    reverse = torch.arange(len(chips) - 1, -1, -1)
    flipped = type(chips)(
        chips.images[reverse], chips.targets[reverse], chips.origins[reverse], chips.channels
    )
    picked = [
        {s: {tuple(o) for o in c.origins[i].tolist()} for s, i in splits.items()}
        for c in (chips, flipped)
        for splits in [split_indices(c, (0.7, 0.2, 0.1), 0, "block", block_pixels=512)]
    ]
    assert picked[0] == picked[1]
