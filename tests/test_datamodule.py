"""The data module: normalisation, valid pixels, statistics modes, train-only augmentation."""

from __future__ import annotations

import logging
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from lightning.pytorch.trainer.states import RunningStage

from landslide_lit.augment import SarAugmentation
from landslide_lit.data.composite import CompositeSettings
from landslide_lit.data.datamodule import LandslideDataModule


def make_datamodule(root: str, **kwargs) -> LandslideDataModule:
    return LandslideDataModule(
        root=root, synthetic=True, channels="sar_dem", batch_size=4, **kwargs
    )


def attach(datamodule: LandslideDataModule, stage: RunningStage) -> None:
    """What a Trainer sets on its datamodule, without running one."""
    datamodule.trainer = SimpleNamespace(
        training=stage == RunningStage.TRAINING, state=SimpleNamespace(stage=stage)
    )


def test_standardised_over_the_whole_region_nan_to_zero(synthetic_root):
    dm = make_datamodule(synthetic_root, keep="valid")
    chips = dm.chips(dm.train_region)
    raw = chips.images
    batch = dm.standardise({"image": raw, "origin": chips.origins}, dm.train_region)
    image, valid = batch["image"], batch["valid"][:, 0]
    sar_finite = torch.isfinite(raw[:, :4]).all(1)
    assert torch.equal(valid, sar_finite)
    assert torch.isfinite(image).all() and (image[torch.isnan(raw)] == 0).all()
    # chips cover the whole 512 x 512 synthetic region: statistics are exact over them
    for c in range(7):
        finite = torch.isfinite(raw[:, c])
        values = image[:, c][finite].double()
        assert abs(values.mean()) < 1e-4 and abs(values.std(unbiased=False) - 1) < 1e-4


def test_region_stats_are_each_regions_own_or_the_train_regions(synthetic_root):
    own = make_datamodule(synthetic_root)
    shared = make_datamodule(synthetic_root, norm_stats="train")
    talakmau = own.test_region
    assert own.region_stats(talakmau) != own.region_stats(own.train_region)
    assert shared.region_stats(talakmau) == shared.region_stats(shared.train_region)


def test_checkpoint_train_stats_are_used_without_the_train_cube(synthetic_root, tmp_path):
    trained = make_datamodule(synthetic_root, norm_stats="train")
    trained.region_stats(trained.train_region)
    state = trained.state_dict()
    # a fresh module whose train cube does not exist: only the test cube is read
    fresh = make_datamodule(synthetic_root, norm_stats="train", train_region="kaikoura")
    fresh.load_state_dict({**state, "train_region": "kaikoura"})
    assert fresh.region_stats(fresh.test_region) == trained.region_stats(trained.train_region)
    with pytest.raises(ValueError, match="trained on channels"):
        LandslideDataModule(root=synthetic_root, channels="sar").load_state_dict(state)


def test_augmentation_runs_in_training_only(synthetic_root):
    dm = make_datamodule(synthetic_root, augment=SarAugmentation())
    assert dm.augmentation.sar_channels == (0, 1, 2, 3)
    chips = dm.chips(dm.train_region)
    batch = {"image": chips.images[:8], "target": chips.targets[:8], "origin": chips.origins[:8]}
    torch.manual_seed(0)
    stages = {
        RunningStage.VALIDATING: dm.train_region,
        RunningStage.SANITY_CHECKING: dm.train_region,
        RunningStage.TESTING: dm.test_region,  # standardised with the test region's own stats
    }
    for stage, region in stages.items():
        attach(dm, stage)
        plain = dm.standardise(dict(batch), region)
        out = dm.on_after_batch_transfer(dict(batch), 0)
        assert torch.equal(out["image"], plain["image"]) and torch.equal(out["mask"], plain["mask"])
    attach(dm, RunningStage.TRAINING)
    plain = dm.standardise(dict(batch), dm.train_region)
    out = dm.on_after_batch_transfer(dict(batch), 0)
    assert not torch.equal(out["image"], plain["image"])
    assert set(out["mask"].unique().tolist()) <= {0.0, 1.0}


def test_custom_channel_order_moves_the_sar_channels(synthetic_root):
    dm = LandslideDataModule(
        root=synthetic_root,
        synthetic=True,
        channels=["dem_slope_radians", "vh_after", "vv_after"],
        augment=SarAugmentation(),
    )
    assert dm.sar_channel_indices == [1, 2] and dm.augmentation.sar_channels == (1, 2)


def test_split_fractions_must_sum_to_one(synthetic_root):
    with pytest.raises(ValueError, match="sum to 1"):
        make_datamodule(synthetic_root, split_fractions=(0.7, 0.2, 0.2))


def test_block_split_is_spatially_disjoint(synthetic_root):
    dm = make_datamodule(synthetic_root, split="block", block_chips=2, keep="valid")
    splits = dm.splits()
    origins = dm.chips(dm.train_region, keep="valid").origins
    blocks = {k: {tuple(o) for o in (origins[v] // 256).tolist()} for k, v in splits.items()}
    assert not blocks["train"] & blocks["val"] and not blocks["train"] & blocks["test"]
    assert np.isclose(sum(len(v) for v in splits.values()), len(origins))


def test_chip_cache_is_built_once_and_reused(synthetic_root, tmp_path, caplog):
    root = tmp_path / "root"
    shutil.copytree(synthetic_root, root, ignore=shutil.ignore_patterns(".chip_cache"))
    with caplog.at_level(logging.INFO, logger="landslide_lit"):
        first = make_datamodule(str(root))
        built = first.chips(first.train_region)
        assert "built from" in caplog.text
        caplog.clear()
        second = make_datamodule(str(root))
        cached = second.chips(second.train_region)
        assert "from the chip cache" in caplog.text
    assert torch.equal(cached.images.nan_to_num(-9), built.images.nan_to_num(-9))
    assert torch.equal(cached.targets, built.targets) and torch.equal(cached.origins, built.origins)
    assert second.region_stats(second.train_region) == first.region_stats(first.train_region)
    assert second.grids["hokkaido"].attrs["crs"] == first.grids["hokkaido"].attrs["crs"]
    np.testing.assert_array_equal(second.grids["hokkaido"]["x"], first.grids["hokkaido"]["x"])
    # another setting is another entry; cache=False never reads or writes one
    entries = set((root / ".chip_cache").iterdir())
    make_datamodule(str(root), composite=CompositeSettings(before=2)).chips(first.train_region)
    assert len(set((root / ".chip_cache").iterdir()) - entries) == 1
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="landslide_lit"):
        make_datamodule(str(root), cache=False).chips(first.train_region)
    assert "built from" in caplog.text and "chip cache" not in caplog.text


def test_channel_stats_are_numpys_nanmean_and_nanstd_to_the_bit(monkeypatch):
    from landslide_lit.data import datamodule
    from landslide_lit.data.datamodule import ChannelStats

    rng = np.random.default_rng(5)
    image = (rng.standard_normal((4, 37, 41)) * 300 + 7).astype(np.float32)
    image[0, ::3, ::5] = np.nan
    image[1] = np.nan  # empty: mean 0, std 1
    image[2] = 3.0  # constant: std 1
    for block in (11, 1 << 16):
        monkeypatch.setattr(datamodule, "_STATS_BLOCK", block)
        stats = ChannelStats.of(image, ["a", "b", "c", "d"], "r")
        for c in (0, 3):
            assert stats.mean[c] == float(
                np.nanmean(image[c : c + 1], axis=(1, 2), dtype=np.float64)[0]
            )
            assert stats.std[c] == float(
                np.nanstd(image[c : c + 1], axis=(1, 2), dtype=np.float64)[0]
            )
        assert (stats.mean[1], stats.std[1], stats.mean[2], stats.std[2]) == (0.0, 1.0, 3.0, 1.0)
