"""The data module: normalisation, valid pixels, statistics modes, train-only augmentation."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from lightning.pytorch.trainer.states import RunningStage, TrainerFn

from landslide_lit.augment import SarAugmentation
from landslide_lit.data.composite import CompositeSettings
from landslide_lit.data.cube import CubeError
from landslide_lit.data.datamodule import LandslideDataModule
from landslide_lit.errors import ConfigError
from tests.cubes import hand_cube


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
    assert (
        second.preparer.grids["hokkaido"].attrs["crs"]
        == first.preparer.grids["hokkaido"].attrs["crs"]
    )
    np.testing.assert_array_equal(
        second.preparer.grids["hokkaido"]["x"], first.preparer.grids["hokkaido"]["x"]
    )
    # another setting is another entry; cache=False never reads or writes one
    entries = set((root / ".chip_cache").iterdir())
    make_datamodule(str(root), composite=CompositeSettings(before=2)).chips(first.train_region)
    assert len(set((root / ".chip_cache").iterdir()) - entries) == 1
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="landslide_lit"):
        make_datamodule(str(root), cache=False).chips(first.train_region)
    assert "built from" in caplog.text and "chip cache" not in caplog.text


def test_channel_stats_are_numpys_nanmean_and_nanstd_to_the_bit(monkeypatch):
    from landslide_lit.data import stats as stats_module
    from landslide_lit.data.stats import ChannelStats

    rng = np.random.default_rng(5)
    image = (rng.standard_normal((4, 37, 41)) * 300 + 7).astype(np.float32)
    image[0, ::3, ::5] = np.nan
    image[1] = np.nan  # empty: mean 0, std 1
    image[2] = 3.0  # constant: std 1
    for block in (11, 1 << 16):
        monkeypatch.setattr(stats_module, "STATS_BLOCK", block)
        stats = ChannelStats.of(image, ["a", "b", "c", "d"], "r")
        for c in (0, 3):
            assert stats.mean[c] == float(
                np.nanmean(image[c : c + 1], axis=(1, 2), dtype=np.float64)[0]
            )
            assert stats.std[c] == float(
                np.nanstd(image[c : c + 1], axis=(1, 2), dtype=np.float64)[0]
            )
        assert (stats.mean[1], stats.std[1], stats.mean[2], stats.std[2]) == (0.0, 1.0, 3.0, 1.0)


# -- options, regions and cubes that cannot be used: one clear error each ----------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"stride": 0}, r"--data.stride=0: must be a whole number >= 1"),
        ({"chip_size": 0}, r"--data.chip_size=0: must be a whole number >= 1"),
        ({"chip_size": -8}, r"--data.chip_size=-8"),
        ({"predict_window": 64, "predict_overlap": 64}, r"predict_overlap=64: must be in \[0, "),
        ({"predict_window": 100}, r"--data.predict_window=100: must be a multiple of 32"),
        ({"batch_size": 0}, r"--data.batch_size=0"),
        ({"num_workers": -1}, r"--data.num_workers=-1: must be a whole number >= 0"),
        ({"block_chips": 0}, r"--data.block_chips=0"),
        ({"split_fractions": (0.7, 0.2, 0.2)}, r"--data.split_fractions=.*sum to 1"),
        ({"split_fractions": (0.5, 0.5)}, r"--data.split_fractions=.*three fractions"),
        ({"split_fractions": (1.2, -0.1, -0.1)}, r"--data.split_fractions=.*>= 0"),
        ({"keep": "all"}, r"--data.keep='all': use one of positive, valid"),
        ({"norm_stats": "global"}, r"--data.norm_stats='global'"),
        ({"channels": "sar_dme"}, r"--data.channels='sar_dme': unknown preset"),
    ],
)
def test_an_option_that_makes_no_sense_is_one_error_naming_it(options, message):
    with pytest.raises(ConfigError, match=message):
        LandslideDataModule(**options)


def with_trainer(datamodule: LandslideDataModule, fn: TrainerFn) -> LandslideDataModule:
    """What a Trainer running ``fn`` sets on its datamodule, without running one."""
    datamodule.trainer = SimpleNamespace(
        state=SimpleNamespace(fn=fn, stage=None), global_rank=0, world_size=1
    )
    return datamodule


@pytest.fixture
def generated(monkeypatch) -> list[str]:
    """The regions whose synthetic cube the data module asks to generate (none is written)."""
    from landslide_lit.data import synthetic

    calls: list[str] = []
    monkeypatch.setattr(synthetic, "write_synthetic_cube", lambda r, root: calls.append(r.name))
    return calls


@pytest.mark.parametrize("fn", [TrainerFn.VALIDATING, TrainerFn.TESTING, TrainerFn.PREDICTING])
def test_only_fit_generates_synthetic_cubes(tmp_path, generated, fn):
    dm = LandslideDataModule(root=str(tmp_path), synthetic=True, cache=False)
    with_trainer(dm, fn)
    stage = {TrainerFn.VALIDATING: "validate"}.get(fn, fn.value)
    with pytest.raises(CubeError, match="no synthetic cube for region"):
        dm.prepare_data()
        dm.setup(stage)
    assert generated == [] and list(tmp_path.iterdir()) == []
    with_trainer(dm, TrainerFn.FITTING).prepare_data()
    assert generated == ["hokkaido", "talakmau"]


def own_region(folder: Path, labels: np.ndarray | None = None, size: int = 16, **cube) -> dict:
    """A region of one's own (Hokkaido's dates) over a hand-built netCDF cube in ``folder``."""
    ds = hand_cube(size, size, **cube)
    if labels is None:
        ds = ds.drop_vars("landslides")
    else:
        ds["landslides"] = (("y", "x"), labels.astype(np.float32))
    path = folder / "mine.nc"
    ds.to_netcdf(path)
    return {
        "name": "mine",
        "cube": str(path),
        "event_start": "2018-09-05",
        "event_end": "2018-09-07",
    }


def test_a_region_with_its_own_cube_is_never_shadowed_by_a_synthetic_one(
    tmp_path, generated, caplog
):
    labels = np.zeros((16, 16))
    labels[:2, :3] = 1
    mine = own_region(tmp_path, labels)
    (tmp_path / "synthetic").mkdir()
    hand_cube(16, 16).to_netcdf(tmp_path / "synthetic" / "mine.nc")  # must not be read
    dm = with_trainer(
        LandslideDataModule(
            test_region=mine,
            root=str(tmp_path),
            synthetic=True,
            chip_size=4,
            predict_overlap=0,
            cache=False,
        ),
        TrainerFn.FITTING,
    )
    with caplog.at_level(logging.INFO, logger="landslide_lit"):
        dm.prepare_data()
        assert dm.cube_path(dm.test_region) == Path(mine["cube"])
        dm.chips(dm.test_region)
    assert generated == ["hokkaido"]
    assert caplog.text.count("a region of your own reads its own cube") == 1
    assert f"built from {mine['cube']}" in caplog.text


def test_evaluation_without_labels_points_to_predict(tmp_path):
    for keep in ("positive", "valid"):
        dm = LandslideDataModule(
            test_region=own_region(tmp_path), chip_size=4, predict_overlap=0, keep=keep
        )
        with pytest.raises(
            CubeError,
            match=r"no landslide labels \(no 'landslides' variable.*"
            r"landslide-lit predict --region",
        ):
            dm.setup("test")


def edge_only() -> np.ndarray:
    labels = np.zeros((10, 10))
    labels[9, 9] = 1  # the 4-pixel grid covers rows and columns 0..7 only
    return labels


@pytest.mark.parametrize(
    ("labels", "size", "message"),
    [
        (np.zeros((16, 16)), 16, r"no landslide pixel: .*\('landslides'\) are all 0"),
        (np.full((16, 16), np.nan), 16, r"no labelled pixel: .*\('landslides'\) are all NaN"),
        (edge_only(), 10, r"its 1 landslide pixels all lie in the edge strips"),
        (np.ones((3, 3)), 3, r"is 3 x 3 pixels, smaller than one 4 x 4 chip.*--data.chip_size"),
    ],
)
def test_a_region_without_positive_chips_says_why(tmp_path, labels, size, message):
    dm = LandslideDataModule(
        test_region=own_region(tmp_path, labels, size), chip_size=4, predict_overlap=0
    )
    with pytest.raises(CubeError, match=message):
        dm.setup("test")


def test_an_empty_split_names_the_fractions_and_counts(tmp_path):
    labels = np.zeros((16, 16))
    labels[:2, :3] = 1  # one positive chip of 4 pixels
    dm = LandslideDataModule(
        train_region=own_region(tmp_path, labels), chip_size=4, predict_overlap=0, cache=False
    )
    with pytest.raises(
        ConfigError,
        match=r"the train split of region 'mine' is empty: its 1 positive chips split random "
        r"by --data.split_fractions \[0.7, 0.2, 0.1\] give train 0, val 0, test 1",
    ):
        dm.setup("fit")


def test_predict_never_reads_the_train_regions_cube(synthetic_root):
    # kaikoura has no cube here: predict must not need it
    dm = make_datamodule(synthetic_root, norm_stats="train", train_region="kaikoura")
    with_trainer(dm, TrainerFn.PREDICTING).prepare_data()
    dm.setup("predict")
    with pytest.raises(ConfigError, match="needs|statistics, which come from the checkpoint"):
        dm.predict_dataloader()
    # the checkpoint, restored after setup, brings them
    stats = {"mean": [0.0] * 7, "std": [1.0] * 7}
    dm.load_state_dict({"channels": list(dm.channel_names), "train_stats": stats})
    dm.predict_dataloader()
    assert dm.region_stats(dm.test_region).mean == (0.0,) * 7
    dm.teardown("predict")


# -- the data root: checked where used, never created (but by fit --data.synthetic) ------


def test_a_wrong_data_root_is_one_error_naming_it_and_nothing_is_created(tmp_path):
    store = tmp_path / "hokkaido_japan.zarr"
    store.mkdir()
    (store / ".zgroup").write_text('{"zarr_format": 2}')
    file = tmp_path / "notes.txt"
    file.write_text("not a folder")
    cases = {
        tmp_path / "dat": "does not exist. Check it for a typo",
        file: "is a file, not a folder",
        store: f"is a datacube itself.*give its folder \\(--data.root {tmp_path}\\)",
    }
    for root, problem in cases.items():
        for fn, stage in [(TrainerFn.TESTING, "test"), (TrainerFn.PREDICTING, "predict")]:
            dm = with_trainer(LandslideDataModule(root=str(root)), fn)
            with pytest.raises(ConfigError, match=f"the data root --data.root {root} {problem}"):
                dm.prepare_data()
                dm.setup(stage)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hokkaido_japan.zarr", "notes.txt"]
    assert [p.name for p in store.iterdir()] == [".zgroup"]


def test_the_data_root_says_where_it_came_from(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    dm = LandslideDataModule()
    with pytest.raises(ConfigError, match=r"the default data root ./data \(in .*set --data.root"):
        dm.setup("test")
    monkeypatch.setenv("LANDSLIDE_LIT_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match=r"\$LANDSLIDE_LIT_DATA=.*nowhere does not exist"):
        dm.setup("test")
    assert list(tmp_path.iterdir()) == []


def test_fit_with_synthetic_cubes_may_generate_into_a_new_data_root(tmp_path, generated):
    dm = LandslideDataModule(root=str(tmp_path / "new"), synthetic=True, cache=False)
    with_trainer(dm, TrainerFn.FITTING).prepare_data()
    assert generated == ["hokkaido", "talakmau"]


# -- the chip cache: in the data root, else the per-user folder, else --data.cache_dir -----


def root_with_cubes(synthetic_root: str, folder: Path) -> Path:
    """A fresh data root whose synthetic cubes are the session's (no chip cache yet)."""
    root = folder / "root"
    root.mkdir()
    (root / "synthetic").symlink_to(Path(synthetic_root) / "synthetic")
    return root


def chips_with_log(root: Path, caplog, **options) -> str:
    """Chips of both regions; the log."""
    with caplog.at_level(logging.INFO, logger="landslide_lit"):
        dm = make_datamodule(str(root), **options)
        dm.chips(dm.train_region)
        dm.chips(dm.test_region)
    return caplog.text


def test_a_read_only_data_root_puts_the_chip_cache_in_the_user_folder(
    synthetic_root, tmp_path, monkeypatch, caplog
):
    from landslide_lit.data import cache

    root = root_with_cubes(synthetic_root, tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    # root ignores permission bits: the data root is read-only as far as the check tells
    monkeypatch.setattr(cache, "writable", lambda folder: not folder.is_relative_to(root))
    log = chips_with_log(root, caplog)
    assert log.count("chip cache in") == 1
    assert f"chip cache in {tmp_path}/xdg/landslide-lit/chip_cache: the data root {root} is " in log
    assert len(list((tmp_path / "xdg" / "landslide-lit" / "chip_cache").iterdir())) == 2
    assert [p.name for p in root.iterdir()] == ["synthetic"]


@pytest.fixture
def read_only_root(synthetic_root, tmp_path):
    """A data root bind-mounted read-only onto itself (Linux, as root; skipped elsewhere)."""
    root = root_with_cubes(synthetic_root, tmp_path)
    mounted = (
        os.name == "posix"
        and os.geteuid() == 0
        and shutil.which("mount") is not None
        and subprocess.run(
            ["mount", "--bind", "-o", "ro", root, root], capture_output=True
        ).returncode
        == 0
    )
    if not mounted:
        pytest.skip("cannot bind-mount a folder read-only here")
    try:
        if os.access(root, os.W_OK):
            pytest.skip("the read-only bind mount is writable")
        yield root
    finally:
        subprocess.run(["umount", root], check=True)


def test_a_data_root_on_a_read_only_mount_is_never_written(
    read_only_root, tmp_path, monkeypatch, caplog
):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    log = chips_with_log(read_only_root, caplog)
    assert log.count(f"the data root {read_only_root} is read-only") == 1
    assert len(list((tmp_path / "xdg" / "landslide-lit" / "chip_cache").iterdir())) == 2
    assert [p.name for p in read_only_root.iterdir()] == ["synthetic"]


def test_the_cache_dir_option_places_the_chip_cache(synthetic_root, tmp_path, caplog):
    root = root_with_cubes(synthetic_root, tmp_path)
    log = chips_with_log(root, caplog, cache_dir=str(tmp_path / "mine"))
    assert "chip cache in" not in log
    assert len(list((tmp_path / "mine").iterdir())) == 2
    assert [p.name for p in root.iterdir()] == ["synthetic"]
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match=r"--data.cache_dir .*file/cache: .*file is a file"):
        chips_with_log(root, caplog, cache_dir=str(tmp_path / "file" / "cache"))
