"""Tests for the SAR-safe batch augmentations."""

import pytest
import torch
from jsonargparse import ArgumentParser

from landslide_lit.augment import (
    GaussianBlur,
    GaussianNoise,
    MotionBlur,
    ResizedCrop,
    SarAugmentation,
)

B, C, H, W = 64, 6, 32, 32


def make_batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    image = torch.randn(B, C, H, W, generator=gen)
    mask = (torch.rand(B, 1, H, W, generator=gen) > 0.7).float()
    valid = torch.rand(B, 1, H, W, generator=gen) > 0.1
    return image, mask, valid


def changed_rows(before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
    return (before != after).flatten(1).any(1)


def only(**kwargs) -> SarAugmentation:
    """The transforms given, all others off."""
    off = {"crop": None, "blur": None, "motion_blur": None, "noise": None}
    return SarAugmentation(**{**off, **kwargs})


def always_on() -> SarAugmentation:
    return SarAugmentation(
        ResizedCrop(p=1.0), GaussianBlur(p=1.0), MotionBlur(p=1.0), GaussianNoise(p=1.0)
    )


def test_everything_off_returns_batch_unchanged() -> None:
    image, mask, valid = make_batch()
    out = SarAugmentation.off()(image, mask, valid)
    assert all(a is b for a, b in zip(out, (image, mask, valid), strict=True))


def test_shapes_dtypes_and_binary_labels_preserved() -> None:
    image, mask, valid = make_batch()
    out_image, out_mask, out_valid = always_on()(image, mask, valid)
    for before, after in zip((image, mask, valid), (out_image, out_mask, out_valid), strict=True):
        assert after.shape == before.shape
        assert after.dtype == before.dtype
    assert set(out_mask.unique().tolist()) <= {0.0, 1.0}
    assert torch.isfinite(out_image).all()


@pytest.mark.parametrize("axis", [-1, -2])
def test_crop_keeps_image_mask_and_valid_aligned(axis: int) -> None:
    # Stripes along one axis: there bilinear resampling thresholded at 0.5 equals nearest
    # exactly, so any shift between the image grid and the label grid shows up.
    torch.manual_seed(1)
    shape = [B, 1, 1, 1]
    shape[axis] = W
    stripes = (torch.rand(shape) > 0.5).float().expand(B, 1, H, W)
    image = torch.randn(B, C, H, W)
    image[:, :1] = stripes
    augment = only(crop=ResizedCrop(p=1.0, scale=(0.3, 0.8)))
    out_image, out_mask, out_valid = augment(image, stripes.clone(), stripes.bool())
    assert changed_rows(image, out_image).all()
    assert torch.equal(out_valid, out_mask.bool())
    decided = (out_image[:, :1] - 0.5).abs() > 1e-3
    assert decided.float().mean() > 0.9
    assert torch.equal((out_image[:, :1] > 0.5)[decided], out_mask.bool()[decided])


@pytest.mark.parametrize(
    "augment",
    [
        only(crop=ResizedCrop(p=0.5, scale=(0.3, 0.6))),
        only(blur=GaussianBlur(p=0.5)),
        only(motion_blur=MotionBlur(p=0.5)),
        only(noise=GaussianNoise(p=0.5)),
    ],
    ids=repr,
)
def test_each_transform_is_drawn_per_sample(augment: SarAugmentation) -> None:
    torch.manual_seed(2)
    image, mask, valid = make_batch()
    out_image, out_mask, out_valid = augment(image, mask, valid)
    hit = changed_rows(image, out_image)
    assert 0 < hit.sum() < B
    # Rows the draw skipped keep their labels too.
    assert not changed_rows(mask, out_mask)[~hit].any()
    assert not changed_rows(valid, out_valid)[~hit].any()


@pytest.mark.parametrize(
    "transform",
    [
        GaussianBlur(p=1.0, channels="sar"),
        GaussianBlur(p=1.0, channels="all"),
        MotionBlur(p=1.0, channels="sar"),
        MotionBlur(p=1.0, channels="all"),
        GaussianNoise(p=1.0, channels="sar"),
        GaussianNoise(p=1.0, channels="all"),
    ],
    ids=repr,
)
def test_intensity_transforms_touch_only_the_channels_asked(
    transform: GaussianBlur | MotionBlur | GaussianNoise,
) -> None:
    sar = (0, 2, 3)
    field = {GaussianBlur: "blur", MotionBlur: "motion_blur", GaussianNoise: "noise"}
    augment = only(**{field[type(transform)]: transform}, sar_channels=sar)
    image, mask, valid = make_batch()
    out_image, out_mask, out_valid = augment(image, mask, valid)
    per_channel = (image != out_image).transpose(0, 1).flatten(1).any(1)
    expected = [transform.channels == "all" or c in sar for c in range(C)]
    assert per_channel.tolist() == expected
    assert out_mask is mask
    assert out_valid is valid


def test_draws_reproducible_under_manual_seed() -> None:
    augment = SarAugmentation()
    image, mask, valid = make_batch()
    runs = []
    for seed in (0, 0, 1):
        torch.manual_seed(seed)
        runs.append(augment(image, mask, valid))
    assert all(torch.equal(a, b) for a, b in zip(runs[0], runs[1], strict=True))
    assert not torch.equal(runs[0][0], runs[2][0])


def test_configured_from_yaml() -> None:
    parser = ArgumentParser()
    parser.add_argument("--augment", type=SarAugmentation | None, default=None)

    def parse(config: str) -> SarAugmentation | None:
        return parser.instantiate(parser.parse_string(config)).augment

    assert repr(parse("augment: {}")) == repr(SarAugmentation())
    assert parse("augment: null") is None
    config = """
    augment:
      class_path: landslide_lit.augment.SarAugmentation
      init_args:
        crop: {p: 0.7}
        blur: {sigma: [0.2, 0.8], channels: all}
        motion_blur: null
        sar_channels: [0, 1]
    """
    augment = parse(config)
    assert augment.crop == ResizedCrop(p=0.7)
    assert augment.blur == GaussianBlur(sigma=(0.2, 0.8), channels="all")
    assert augment.motion_blur is None
    assert augment.noise == GaussianNoise()
    assert augment.sar_channels == (0, 1)
    with pytest.raises(SystemExit):
        parser.parse_string(config.replace("channels: all", "channels: dem"))


@pytest.mark.parametrize(
    "make",
    [
        lambda: ResizedCrop(p=1.5),
        lambda: ResizedCrop(scale=(0.8, 0.5)),
        lambda: GaussianBlur(kernel_size=4),
        lambda: MotionBlur(direction=(0.5, 2.0)),
        lambda: GaussianNoise(std=-0.1),
    ],
)
def test_invalid_settings_raise(make) -> None:
    with pytest.raises(ValueError):
        make()


def test_sar_channels_beyond_the_image_raise() -> None:
    augment = only(noise=GaussianNoise(p=1.0), sar_channels=(0, C))
    with pytest.raises(ValueError, match="sar_channels"):
        augment(*make_batch())
