"""SAR-safe training augmentations, run with kornia on the device on whole batches.

The seed paper's four transforms: a random resized crop (scale invariance, partial
landslides), Gaussian blur (ignore fine detail), motion blur (suboptimal focusing) and
additive Gaussian noise on the standardised log amplitudes (speckle). No flips or
rotations: they make implausible SAR geometry. The exact published parameters are
unknown; the defaults below are chosen for 10 m pixels and 128 x 128 chips.

Each transform is drawn per sample with its own probability, in the order crop, blur,
motion blur, noise (noise last: speckle is not smoothed by focusing). Two kornia traps
are handled here:

- ``RandomResizedCrop(p=...)`` passes ``p`` on as ``p_batch``: the whole batch is
  cropped or none. We draw our own per-sample gate and crop the chosen rows with p=1.
- Image and labels must be resampled on one pixel grid: the image bilinear and
  ``mask``/``valid`` nearest, both on the half-pixel grid (``align_corners=False``;
  kornia's default ``True`` would shift the image up to half a pixel off the mask).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import kornia.augmentation as K
import torch
from kornia.constants import Resample
from torch import Tensor, nn

from landslide_lit.errors import ConfigError

__all__ = [
    "DEFAULT_BLUR",
    "DEFAULT_CROP",
    "DEFAULT_MOTION_BLUR",
    "DEFAULT_NOISE",
    "Batch",
    "Channels",
    "GaussianBlur",
    "GaussianNoise",
    "MotionBlur",
    "ResizedCrop",
    "SarAugmentation",
]

Channels = Literal["sar", "all"]
Batch = tuple[Tensor, Tensor, Tensor]


def _check_probability(p: float) -> None:
    if not 0.0 <= p <= 1.0:
        raise ConfigError(
            f"p={p}: a probability must lie in [0, 1] (--data.augment.init_args.<transform>.p)"
        )


def _check_range(name: str, bounds: tuple[float, float], low: float, high: float) -> None:
    if not low <= bounds[0] <= bounds[1] <= high:
        raise ConfigError(
            f"{name}={bounds}: need {low} <= min <= max <= {high} "
            f"(--data.augment.init_args.<transform>.{name})"
        )


def _check_kernel(kernel_size: int) -> None:
    if kernel_size < 3 or kernel_size % 2 == 0:
        raise ConfigError(
            f"kernel_size={kernel_size}: need an odd size >= 3 "
            "(--data.augment.init_args.<transform>.kernel_size)"
        )


@dataclass(frozen=True)
class ResizedCrop:
    """Crop a random box and resize it back to the chip size (image, mask and valid).

    ``scale`` is the box's share of the chip area and ``ratio`` its width/height.
    Defaults keep at least half the chip (zoom about 1.4x at most, up to 1.6x along one
    axis), so a landslide near the border is cut only sometimes, and change the
    aspect by at most 4:3.
    """

    p: float = 0.5
    scale: tuple[float, float] = (0.5, 1.0)
    ratio: tuple[float, float] = (0.75, 1.3333)

    def __post_init__(self) -> None:
        _check_probability(self.p)
        _check_range("scale", self.scale, 1e-3, 1.0)
        _check_range("ratio", self.ratio, 1e-3, 1e3)

    def build(self, size: tuple[int, int]) -> K.RandomResizedCrop:
        """kornia crop to ``size`` that always applies (the caller gates per sample)."""
        return K.RandomResizedCrop(
            size, self.scale, self.ratio, p=1.0, align_corners=False, cropping_mode="slice"
        )


@dataclass(frozen=True)
class GaussianBlur:
    """Isotropic Gaussian blur; ``sigma`` in pixels, drawn per sample.

    Up to 1 px (10 m), well below a landslide's width; the 5 px kernel spans
    +-2 sigma at the top of the range. SAR channels only by default: it models the
    imaging, and terrain features from the DEM are not blurred by it.
    """

    p: float = 0.3
    kernel_size: int = 5
    sigma: tuple[float, float] = (0.1, 1.0)
    channels: Channels = "sar"

    def __post_init__(self) -> None:
        _check_probability(self.p)
        _check_kernel(self.kernel_size)
        _check_range("sigma", self.sigma, 1e-3, float("inf"))

    def build(self) -> K.RandomGaussianBlur:
        """The per-sample kornia transform."""
        return K.RandomGaussianBlur(self.kernel_size, self.sigma, border_type="reflect", p=self.p)


@dataclass(frozen=True)
class MotionBlur:
    """Line blur of ``kernel_size`` pixels at an angle drawn per sample (degrees).

    All orientations by default: the azimuth direction in the map grid depends on the
    orbit, and a model that transfers between regions should not rely on one. The
    kernel size is fixed because kornia draws a ranged size once per batch.
    ``direction`` skews the kernel; the default (0, 0) keeps it symmetric, as
    defocus is, since a skewed 5 px kernel moves the SAR content up to 1 px off the
    mask. SAR channels only by default, like the Gaussian blur.
    """

    p: float = 0.3
    kernel_size: int = 5
    angle: tuple[float, float] = (-90.0, 90.0)
    direction: tuple[float, float] = (0.0, 0.0)
    channels: Channels = "sar"

    def __post_init__(self) -> None:
        _check_probability(self.p)
        _check_kernel(self.kernel_size)
        _check_range("angle", self.angle, -360.0, 360.0)
        _check_range("direction", self.direction, -1.0, 1.0)

    def build(self) -> K.RandomMotionBlur:
        """The per-sample kornia transform."""
        return K.RandomMotionBlur(
            self.kernel_size, self.angle, self.direction, border_type="reflect", p=self.p
        )


@dataclass(frozen=True)
class GaussianNoise:
    """Additive zero-mean Gaussian noise, ``std`` in standardised units.

    On log amplitudes additive noise is multiplicative speckle. 0.1 of a channel's
    spread (a few tenths of a dB for dB channels) is mild next to the residual speckle
    of a composite, so it perturbs without drowning the change signal. SAR channels
    only by default; ``"all"`` also perturbs the terrain features.
    """

    p: float = 0.5
    std: float = 0.1
    channels: Channels = "sar"

    def __post_init__(self) -> None:
        _check_probability(self.p)
        if self.std < 0:
            raise ConfigError(f"std={self.std}: must be >= 0 (--data.augment.init_args.noise.std)")

    def build(self) -> K.RandomGaussianNoise:
        """The per-sample kornia transform."""
        return K.RandomGaussianNoise(mean=0.0, std=self.std, p=self.p)


DEFAULT_CROP = ResizedCrop()
DEFAULT_BLUR = GaussianBlur()
DEFAULT_MOTION_BLUR = MotionBlur()
DEFAULT_NOISE = GaussianNoise()


class SarAugmentation(nn.Module):
    """Per-sample SAR-safe augmentation of a training batch; a transform set to None is off.

    Args:
        crop: random resized crop of image, mask and valid together.
        blur: Gaussian blur of the image.
        motion_blur: motion blur of the image.
        noise: additive Gaussian noise on the image.
        sar_channels: indices of the SAR channels in ``image``, for ``channels="sar"``.

    ``SarAugmentation()`` runs all four with their defaults (``{}`` in YAML) and
    :meth:`off` none; set a transform to None (``null``) to turn it off. Draws come
    from torch's global RNG, so ``torch.manual_seed`` makes them reproducible; the data
    module seeds them per batch from (run seed, rank, batches seen). The intensity
    transforms draw on the batch's device (the noise map is batch-sized); the crop draws
    its gate and boxes on the CPU, so slicing the boxes needs no device sync.
    """

    def __init__(
        self,
        crop: ResizedCrop | None = DEFAULT_CROP,
        blur: GaussianBlur | None = DEFAULT_BLUR,
        motion_blur: MotionBlur | None = DEFAULT_MOTION_BLUR,
        noise: GaussianNoise | None = DEFAULT_NOISE,
        sar_channels: tuple[int, ...] = (0, 1, 2, 3),
    ) -> None:
        super().__init__()
        self.crop = crop
        self.blur = blur
        self.motion_blur = motion_blur
        self.noise = noise
        self.sar_channels = tuple(sar_channels)
        intensity = [t for t in (blur, motion_blur, noise) if t is not None]
        self._channels = [t.channels for t in intensity]
        self._intensity = nn.ModuleList(t.build() for t in intensity)
        # Built per chip size on first use; a plain dict so that .to() leaves it on the CPU.
        self._crops: dict[tuple[int, int], K.RandomResizedCrop] = {}

    @classmethod
    def off(cls, sar_channels: tuple[int, ...] = (0, 1, 2, 3)) -> SarAugmentation:
        """No transform: the batch passes unchanged."""
        return cls(None, None, None, None, sar_channels)

    def with_sar_channels(self, sar_channels: tuple[int, ...]) -> SarAugmentation:
        """The same transforms for images whose SAR channels are ``sar_channels``."""
        return type(self)(self.crop, self.blur, self.motion_blur, self.noise, sar_channels)

    def forward(self, image: Tensor, mask: Tensor, valid: Tensor) -> Batch:
        """Augment ``image`` (B, C, H, W), ``mask`` (B, 1, H, W) 0/1 and ``valid`` (same, bool)."""
        if self.crop is not None:
            image, mask, valid = self._crop_rows(image, mask, valid)
        for channels, transform in zip(self._channels, self._intensity, strict=True):
            image = self._intensity_on(transform, image, channels)
        return image, mask, valid

    def _crop_rows(self, image: Tensor, mask: Tensor, valid: Tensor) -> Batch:
        chosen = torch.rand(image.shape[0]) < self.crop.p
        if not chosen.any():
            return image, mask, valid
        rows = chosen.nonzero().squeeze(1).to(image.device)
        crop = self._crop_for(image.shape[-2], image.shape[-1])
        params = crop.forward_parameters((len(rows), *image.shape[1:]))
        image = image.index_copy(0, rows, crop(image[rows], params=params))
        labels = torch.cat([mask.to(image.dtype), valid.to(image.dtype)], dim=1)
        cropped = crop(labels[rows], params=params, resample=Resample.NEAREST)
        labels = labels.index_copy(0, rows, cropped)
        # contiguous: a channel sliced out of labels would be a strided view into the loss
        return image, labels[:, :1].to(mask.dtype).contiguous(), labels[:, 1:] > 0.5

    def _crop_for(self, height: int, width: int) -> K.RandomResizedCrop:
        if (height, width) not in self._crops:
            self._crops[height, width] = self.crop.build((height, width))
        return self._crops[height, width]

    def _intensity_on(self, transform: nn.Module, image: Tensor, channels: Channels) -> Tensor:
        transform.set_rng_device_and_dtype(image.device, image.dtype)
        if channels == "all":
            return transform(image)
        if not self.sar_channels:
            return image
        if max(self.sar_channels) >= image.shape[1]:
            raise ValueError(
                f"sar_channels={self.sar_channels} but the image has {image.shape[1]} channels"
            )
        index = list(self.sar_channels)
        out = image.clone()
        out[:, index] = transform(image[:, index])
        return out

    def __repr__(self) -> str:
        fields = ("crop", "blur", "motion_blur", "noise", "sar_channels")
        return f"{type(self).__name__}({', '.join(f'{f}={getattr(self, f)!r}' for f in fields)})"
