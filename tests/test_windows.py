"""Prediction windows larger than the chips: the plan, its checks, its batches, and a map
that does not depend on the window where the network sees one pixel at a time."""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import xarray as xr
from torch import nn

from landslide_lit.data.datamodule import LandslideDataModule
from landslide_lit.data.synthetic import write_synthetic_cube
from landslide_lit.data.windows import MULTIPLE, WindowPlan
from landslide_lit.errors import ConfigError
from landslide_lit.maps import ProbabilityMapWriter
from landslide_lit.module import LandslideSegmenter

TINY = {
    "encoder_name": "tu-test_resnet",
    "model_kwargs": {"encoder_depth": 3, "decoder_channels": [16, 8, 4]},
}


@pytest.mark.parametrize(
    "window", [0, 16, 100, 129, -512, True, "512"], ids=lambda w: f"{type(w).__name__}{w}"
)
def test_a_window_not_a_multiple_of_32_is_one_clear_error(window):
    with pytest.raises(
        ConfigError, match=rf"--data.predict_window={window!r}: must be a multiple of 32"
    ):
        LandslideDataModule(predict_window=window)


@pytest.mark.parametrize(("window", "overlap"), [(512, 512), (64, 100), (512, -1)])
def test_an_overlap_outside_the_window_is_one_clear_error(window, overlap):
    with pytest.raises(
        ConfigError,
        match=rf"--data.predict_overlap={overlap}: must be in \[0, predict_window\) = "
        rf"\[0, {window}\)",
    ):
        LandslideDataModule(predict_window=window, predict_overlap=overlap)


@pytest.mark.parametrize(
    ("height", "width", "window", "overlap"),
    [
        (1024, 1024, 512, 32),  # three windows of 384 a side, not three of 512
        (4096, 1024, 1024, 32),  # rectangular: 896 x 1024
        (300, 292, 1024, 32),  # one window larger than the region: padded to 320
        (1000, 77, 512, 32),
        (400, 392, 128, 32),
        (256, 256, 128, 0),
        (130, 500, 128, 100),  # starts 28 apart at most: no phase kept
        (60, 90, 128, 16),
        (20, 40, 512, 16),  # smaller than MULTIPLE
        (999, 1001, 256, 0),
    ],
)
def test_the_plan_covers_every_pixel_once_in_weight(height, width, window, overlap):
    plan = WindowPlan(height, width, window, overlap)
    align = MULTIPLE if window - overlap >= MULTIPLE else 1
    for starts, side, length in zip(
        (plan.rows, plan.cols), plan.shape, (height, width), strict=True
    ):
        assert side % MULTIPLE == 0 and side <= window
        assert (starts % align == 0).all()  # the same phase of the network's grid
        unaligned = 1 if length <= window else math.ceil((length - overlap) / (window - overlap))
        assert len(starts) in (unaligned, unaligned + 1)
        assert (np.diff(starts) > 0).all() and (np.diff(starts) <= side - overlap).all()
        assert starts[0] == 0 and 0 <= starts[-1] + side - length < MULTIPLE  # little padding
        if len(starts) > 1:  # as small as can be: MULTIPLE less would not cover
            assert len(starts) * (side - MULTIPLE) < length + (len(starts) - 1) * overlap + align
    assert plan.size == max(plan.shape)
    total = np.zeros((height, width))
    for i in range(len(plan)):
        y, x = plan.origin(i)
        weight = plan.weight(y, x)
        assert weight.shape == (min(plan.shape[0], height - y), min(plan.shape[1], width - x))
        assert (weight > 0).all()
        total[y : y + weight.shape[0], x : x + weight.shape[1]] += weight
    np.testing.assert_allclose(total, 1.0, rtol=1e-6)
    if overlap == 0:  # one window a pixel where they do not overlap
        assert np.isin(total, [1.0]).all()
    for i in range(len(plan)):  # every window's rows lie inside its band
        y0, y1 = plan.bands[plan.band_of(i)]
        y = plan.origin(i)[0]
        assert y0 <= y and min(y + plan.shape[0], height) <= y1


@pytest.mark.parametrize(("window", "overlap"), [(512, 64), (128, 32), (160, 40), (1024, 64)])
def test_the_default_overlap_is_64_pixels_or_a_quarter_of_a_smaller_window(window, overlap):
    assert LandslideDataModule(predict_window=window).predict_overlap == overlap
    assert LandslideDataModule(predict_window=window, predict_overlap=0).predict_overlap == 0


def test_a_window_of_the_chip_size_keeps_the_published_windows():
    """128-pixel windows stay 128 (rounding up to 32 never shrinks them below the chip)."""
    for length in (300, 1024, 4096, 5000):
        assert WindowPlan(length, length, 128, 32).shape == (128, 128)


@pytest.fixture(scope="module")
def cube_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("windows")
    write_synthetic_cube("talakmau", root=root, size=(300, 292), seed=1)
    return root


def datamodule(root: Path, **kwargs) -> LandslideDataModule:
    settings = {"channels": "sar_dem", "cache": False, "batch_size": 4, **kwargs}
    return LandslideDataModule(
        root=str(root), synthetic=True, train_region="talakmau", test_region="talakmau", **settings
    )


@pytest.mark.parametrize(("window", "per_batch"), [(32, 16), (64, 4), (128, 1), (512, 1)])
def test_a_predict_batch_holds_the_pixels_of_a_training_batch(cube_root, window, per_batch):
    dm = datamodule(cube_root, chip_size=64, predict_window=window, predict_overlap=0)
    windows = dm.windows(dm.test_region)
    assert dm.windows_per_batch(windows) == per_batch  # 4 chips of 64 x 64 pixels


def pixelwise_model(channels: int) -> LandslideSegmenter:
    """A network of one 1x1 convolution: exactly translation-equivariant, no padding."""
    torch.manual_seed(0)
    model = LandslideSegmenter(
        channel_names=[f"c{i}" for i in range(channels)], predict_precision="32-true", **TINY
    )
    model.model = nn.Conv2d(channels, 1, 1)
    return model.eval()


def predicted_map(model: LandslideSegmenter, dm: LandslideDataModule, folder: Path) -> np.ndarray:
    trainer = L.Trainer(
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[
            ProbabilityMapWriter(
                output_dir=str(folder), formats=["netcdf"], quicklook=False, threshold="none"
            )
        ],
    )
    trainer.predict(model, datamodule=dm)
    with xr.open_dataset(folder / "talakmau_landslide_probability.nc") as written:
        return written["landslide_probability"].values


def test_windows_of_any_size_give_the_same_map_with_a_pixelwise_network(cube_root, tmp_path):
    """With a network that sees one pixel at a time, the windows (smaller or larger than
    the region, rectangular, overlapping or not) and their blending change nothing: the
    map is the network applied to the whole standardised composite."""
    dm = datamodule(cube_root)
    model = pixelwise_model(len(dm.channel_names))
    maps = {}
    for window, overlap in ((32, 0), (64, 16), (128, 32), (160, 48), (512, 32), (1024, 0)):
        dm = datamodule(cube_root, predict_window=window, predict_overlap=overlap)
        maps[window] = predicted_map(model, dm, tmp_path / str(window))
    windows = dm.datasets["predict"][0]
    image, _ = windows.read_rows(0, windows.plan.height)
    batch = {"image": torch.from_numpy(image)[None], "origin": torch.zeros(1, 2)}
    batch = dm.standardise(batch, dm.test_region)
    with torch.no_grad():
        whole = model(batch["image"])[0, 0].sigmoid().numpy()
    whole[~batch["valid"][0, 0].numpy()] = np.nan
    assert np.isfinite(whole).mean() > 0.5
    for window, values in maps.items():
        np.testing.assert_allclose(values, whole, rtol=1e-6, atol=1e-7, err_msg=str(window))
