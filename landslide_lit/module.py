"""LightningModule: an smp segmentation network, its loss, optimiser and per-region metrics.

Batches are dicts with ``image`` (B, C, H, W) float, ``mask`` (B, 1, H, W) 0/1 float,
``valid`` (B, 1, H, W) bool (pixels with SAR data) and ``origin`` (B, 2) long.

Logged keys, with one validation/test dataloader per region (names from the datamodule's
``dataloader_regions(stage)``, or ``all`` without one):

- ``train/loss`` (epoch mean);
- ``val/<region>/<name>`` and ``test/<region>/<name>`` for ``loss``, ``auprc`` (average
  precision: exact in test, as published; binned in validation unless ``val_auprc`` is
  ``exact``), ``auroc`` (likewise), ``f1`` and ``iou`` (probability > 0.5) and ``no_skill``
  (the fraction of landslide pixels: the AUPRC of a classifier without skill);
- ``val/auprc``: the AUPRC of the first validation region, the scalar to monitor.

During ``fit``, each validation epoch also chooses the operating points of the first
validation region (:mod:`landslide_lit.thresholds`: max F1 and precision 0.5/0.7/0.9,
from its probability histogram, or its pixels with ``val_auprc="exact"``); they are kept
in ``thresholds`` and saved in every checkpoint as ``checkpoint["thresholds"]``, so the
best checkpoint holds its own epoch's. ``validate`` and ``test`` never change them.

Metrics are computed over all pixels of a region's chips at epoch end; with
``ignore_invalid`` only over pixels with SAR data. Under DDP each process evaluates its
own chips (the datamodule shards them without repeats) and the metric states are
gathered or summed, so the figures equal a single process's.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import IO, Any, Literal, get_args

import lightning as L
import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.types import OptimizerLRScheduler
from torch import Tensor, nn
from torchmetrics.utilities import dim_zero_cat

from landslide_lit.encoders import (
    EncoderWeightsError,
    check_model_names,
    check_weights_reachable,
    download_help,
    is_file_name,
    load_encoder_weights,
)
from landslide_lit.errors import ConfigError
from landslide_lit.metrics import (
    BatchMean,
    ProbabilityHistogram,
    dataloader_regions,
    region_metrics,
)
from landslide_lit.stages import EVALUATED_BY, METRIC_SPLIT
from landslide_lit.thresholds import (
    histogram_operating_points,
    operating_points,
    stored_thresholds,
)

__all__ = [
    "IGNORE_INDEX",
    "BCEWithLogits",
    "LandslideSegmenter",
    "Loss",
    "PredictPrecision",
    "native_cpu_bf16",
]

Loss = Literal["bce", "dice", "focal", "bce+dice"]
PredictPrecision = Literal["auto", "32-true", "bf16-mixed"]

IGNORE_INDEX = -1
"""Target value of pixels left out of the loss when ``ignore_invalid`` is set."""


class BCEWithLogits(nn.Module):
    """Binary cross-entropy on logits, averaged over the pixels whose target is not ignored."""

    def __init__(self, pos_weight: float | None = None, ignore_index: int | None = None) -> None:
        super().__init__()
        self.ignore_index = ignore_index
        weight = None if pos_weight is None else torch.tensor(pos_weight)
        self.register_buffer("pos_weight", weight, persistent=False)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Mean loss over the kept pixels (0 when none is kept)."""
        if self.ignore_index is None:
            return F.binary_cross_entropy_with_logits(logits, target, pos_weight=self.pos_weight)
        keep = target != self.ignore_index
        loss = F.binary_cross_entropy_with_logits(
            logits, target.clamp_min(0), pos_weight=self.pos_weight, reduction="none"
        )
        return torch.where(keep, loss, 0.0).sum() / keep.sum().clamp_min(1)


class LandslideSegmenter(L.LightningModule):
    """Pixel-wise landslide segmentation with a segmentation-models-pytorch network.

    Args:
        channel_names: names of the input channels, linked from the datamodule; sets the
            number of input channels.
        arch: smp architecture name, e.g. ``Unet``, ``UnetPlusPlus``, ``FPN``.
        encoder_name: smp encoder name, e.g. ``resnet50`` or a timm ``tu-...`` name.
        encoder_weights: ``None`` trains from scratch; an smp weights name (``imagenet``) is
            downloaded from the Hugging Face hub; a file path loads a local 3-channel encoder
            state dict (see :func:`~landslide_lit.encoders.load_encoder_weights`).
        model_kwargs: extra arguments for the smp architecture, e.g.
            ``{"encoder_depth": 3, "decoder_channels": [16, 8, 4]}``.
        loss: ``bce``, ``dice``, ``focal`` or ``bce+dice`` (their sum), all on logits.
        pos_weight: weight of landslide pixels in BCE.
        ignore_invalid: leave pixels without SAR data out of the loss and the metrics;
            ``False`` (published) counts them as background.
        optimizer: optimiser factory, called with the parameters.
        lr_scheduler: optional scheduler factory, called with the optimiser.
        scheduler_monitor: logged key a ``ReduceLROnPlateau`` scheduler follows.
        val_auprc: validation AUPRC and AUROC ``binned`` (constant memory, states summed
            across processes; see
            :class:`~landslide_lit.metrics.BinnedAveragePrecision`) or ``exact`` (every
            pixel kept on every device and gathered at epoch end). Test metrics are
            always exact.
        auprc_bins: probability bins of the binned validation metrics.
        predict_precision: arithmetic of ``predict``'s forward. ``bf16-mixed``: bfloat16
            autocast, about 1.7x faster on a CPU with bfloat16 instructions (AVX512-BF16
            or AMX), the map 0.0007 from float32's on average (99 % of pixels within 0.004,
            all within 0.04 on the demo model, region AUPRC within 0.0005); ``32-true``: float32
            throughout, even under a mixed ``--trainer.precision``; ``auto``:
            ``bf16-mixed`` on such a CPU when the trainer's precision is float32, else
            the trainer's precision (float32 by default; a CPU without bfloat16
            instructions only emulates it, slower than float32).
        predict_channels_last: run ``predict``'s forward with channels-last tensors
            (faster convolutions on CPUs and on GPUs' tensor cores; the same map to
            float rounding).
    """

    def __init__(
        self,
        channel_names: list[str] | None = None,
        arch: str = "Unet",
        encoder_name: str = "resnet50",
        encoder_weights: str | None = None,
        model_kwargs: dict[str, Any] | None = None,
        loss: Loss = "bce",
        pos_weight: float | None = None,
        ignore_invalid: bool = False,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
        scheduler_monitor: str = "train/loss",
        val_auprc: Literal["exact", "binned"] = "binned",
        auprc_bins: int = 65536,
        predict_precision: PredictPrecision = "auto",
        predict_channels_last: bool = True,
    ) -> None:
        super().__init__()
        if predict_precision not in get_args(PredictPrecision):
            raise ConfigError(
                f"--model.predict_precision={predict_precision!r}: use one of "
                f"{', '.join(get_args(PredictPrecision))}"
            )
        # Factories stay out of the checkpoint: classes and partials would not load with
        # torch.load(weights_only=True). LightningCLI's saved config keeps them.
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler"])
        self.make_optimizer = optimizer
        self.make_lr_scheduler = lr_scheduler
        self.metrics = nn.ModuleDict()
        self.losses = nn.ModuleDict()
        self.thresholds: dict[str, Any] | None = None
        """Operating points of the train region's validation (see the module docstring)."""
        self._layout = torch.contiguous_format
        self.configure_models()
        self.configure_losses()

    def configure_models(self) -> None:
        """Build the smp network with one output logit per pixel."""
        hp = self.hparams
        if not hp.channel_names:
            raise ConfigError(
                "LandslideSegmenter needs the input channel names: link them from the "
                "datamodule or pass e.g. --model.channel_names '[vv_before, vh_before, vv_after, "
                "vh_after]'."
            )
        weights, in_channels = hp.encoder_weights, len(hp.channel_names)
        from_file = weights is not None and is_file_name(weights)
        check_model_names(hp.arch, hp.encoder_name, weights)
        try:
            if weights is not None and not from_file:
                check_weights_reachable(hp.encoder_name, weights)
            self.model = smp.create_model(
                hp.arch,
                encoder_name=hp.encoder_name,
                encoder_weights=None if from_file else weights,
                in_channels=3 if from_file else in_channels,
                classes=1,
                **(hp.model_kwargs or {}),
            )
        except OSError as error:
            raise EncoderWeightsError(
                download_help(hp.encoder_name, weights, str(error))
            ) from error
        if from_file:
            load_encoder_weights(self.model.encoder, Path(weights), in_channels)

    def configure_losses(self) -> None:
        """Build the loss terms named by ``loss``; their sum is the training loss."""
        hp = self.hparams
        terms = hp.loss.split("+")
        if hp.pos_weight is not None and "bce" not in terms:
            raise ConfigError(
                f"--model.pos_weight applies to BCE only, not to --model.loss {hp.loss}: "
                "drop --model.pos_weight or use --model.loss bce (or bce+dice)."
            )
        ignore_index = IGNORE_INDEX if hp.ignore_invalid else None
        factories = {
            "bce": lambda: BCEWithLogits(hp.pos_weight, ignore_index),
            "dice": lambda: smp.losses.DiceLoss(
                smp.losses.BINARY_MODE, from_logits=True, ignore_index=ignore_index
            ),
            "focal": lambda: smp.losses.FocalLoss(
                smp.losses.BINARY_MODE, ignore_index=ignore_index
            ),
        }
        self.criteria = nn.ModuleList(factories[term]() for term in terms)

    def configure_metrics(self, prefix: str, regions: list[str]) -> nn.ModuleDict:
        """One metric collection per region, keyed by region, logging ``prefix/region/name``.

        Validation AUPRC and AUROC are binned unless ``val_auprc="exact"`` (see
        :func:`~landslide_lit.metrics.region_metrics`).
        """
        hp = self.hparams
        binned = prefix == "val" and hp.val_auprc == "binned"
        return region_metrics(prefix, regions, binned, hp.auprc_bins)

    def setup(self, stage: str) -> None:
        """Build the metrics and loss means of this stage's evaluation regions."""
        if stage in METRIC_SPLIT:
            prefix = METRIC_SPLIT[stage]
            regions = dataloader_regions(self.trainer, EVALUATED_BY[stage])
            self.metrics[prefix] = self.configure_metrics(prefix, regions)
            self.losses[prefix] = nn.ModuleDict({r: BatchMean() for r in regions})

    def forward(self, image: Tensor) -> Tensor:
        """Logits (B, 1, H, W) of landslide for an image batch (B, C, H, W)."""
        return self.model(image)

    def compute_loss(self, logits: Tensor, batch: dict[str, Tensor]) -> Tensor:
        """Sum of the loss terms; pixels without SAR data are ignored if so configured."""
        target = batch["mask"]
        if self.hparams.ignore_invalid:
            target = target.masked_fill(~batch["valid"], IGNORE_INDEX)
        return sum(criterion(logits, target) for criterion in self.criteria)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        """Loss of one training batch, logged as ``train/loss``."""
        loss = self.compute_loss(self(batch["image"]), batch)
        # Reduced once, at epoch end; every rank runs the same batches (the training
        # sampler pads), so Lightning's sync_dist epoch mean is exact here.
        self.log(
            "train/loss",
            loss,
            on_step=False,
            on_epoch=True,
            prog_bar=True,
            sync_dist=True,
            batch_size=batch["image"].shape[0],
        )
        return loss

    def validation_step(
        self, batch: dict[str, Tensor], batch_idx: int, dataloader_idx: int = 0
    ) -> dict[str, Tensor]:
        """Update the metrics of the dataloader's region; the batch's scores (see ``_evaluate``)."""
        return self._evaluate("val", batch, dataloader_idx)

    def test_step(
        self, batch: dict[str, Tensor], batch_idx: int, dataloader_idx: int = 0
    ) -> dict[str, Tensor]:
        """Update the metrics of the dataloader's region; the batch's scores (see ``_evaluate``)."""
        return self._evaluate("test", batch, dataloader_idx)

    def _evaluate(
        self, prefix: str, batch: dict[str, Tensor], dataloader_idx: int
    ) -> dict[str, Tensor]:
        """Update loss and metrics; return the batch's per-pixel scores for callbacks.

        The returned dict (detached, on the device) holds ``probability`` (B, H, W) float32,
        ``target`` and ``valid`` (B, H, W) bool and ``origin`` (B, 2), which
        :class:`~landslide_lit.evaluation.EvaluationWriter` collects.
        """
        regions = list(self.metrics[prefix])
        if dataloader_idx >= len(regions):
            raise IndexError(
                f"{prefix} dataloader {dataloader_idx} has no region: the regions are {regions}."
            )
        region = regions[dataloader_idx]
        logits = self(batch["image"])
        loss = self.compute_loss(logits, batch)
        self.losses[prefix][region].update(loss, logits.shape[0])
        probability, target = logits.detach().float().sigmoid(), batch["mask"].long()
        scores = {
            "probability": probability[:, 0],
            "target": target[:, 0] > 0,
            "valid": batch["valid"][:, 0],
            "origin": batch["origin"],
        }
        if self.hparams.ignore_invalid:
            probability, target = probability[batch["valid"]], target[batch["valid"]]
        self.metrics[prefix][region].update(probability.flatten(), target.flatten())
        return scores

    def on_validation_epoch_end(self) -> None:
        """Log the validation metrics of every region, and ``val/auprc`` of the first.

        In ``fit`` (not its sanity check), also choose the first region's thresholds.
        """
        first = next(iter(self.metrics["val"]))
        trainer = self.trainer
        if trainer.state.fn == TrainerFn.FITTING and not trainer.sanity_checking:
            self.thresholds = self._validation_thresholds(first)
        values = self._log_metrics("val")
        self.log("val/auprc", values[f"val/{first}/auprc"], prog_bar=True, sync_dist=True)

    def _validation_thresholds(self, region: str) -> dict[str, Any]:
        """Operating points of ``region``'s validation curve, the same on every rank."""
        curve = self.metrics["val"][region]["auprc"]
        # Every rank takes part and reads the states reduced over all ranks.
        with curve.sync_context():
            if isinstance(curve, ProbabilityHistogram):
                found = histogram_operating_points(curve.counts.cpu().numpy(), curve.lower_edges())
                source = f"validation histogram, {curve.bins} bins"
            else:  # exact: every validation pixel
                states = (curve.preds, curve.target)
                found = operating_points(*(dim_zero_cat(s).cpu().numpy() for s in states))
                source = "validation pixels, exact"
        return stored_thresholds(
            found, region=region, split="val", epoch=self.current_epoch, source=source
        )

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Keep the validation thresholds (when chosen) with the weights."""
        if self.thresholds is not None:
            checkpoint["thresholds"] = self.thresholds

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Restore the validation thresholds; None from a checkpoint without them."""
        self.thresholds = checkpoint.get("thresholds")

    def on_test_epoch_end(self) -> None:
        """Log the test metrics of every region."""
        self._log_metrics("test")

    def _log_metrics(self, prefix: str) -> dict[str, Tensor]:
        values = {}
        for region, collection in self.metrics[prefix].items():
            values.update(collection.compute())
            collection.reset()
            values[f"{prefix}/{region}/loss"] = self.losses[prefix][region].compute()
            self.losses[prefix][region].reset()
        # compute() reduced every rank's states already; sync_dist averages equal values.
        self.log_dict(values, sync_dist=True)
        return values

    def predict_step(
        self, batch: dict[str, Tensor], batch_idx: int, dataloader_idx: int = 0
    ) -> dict[str, Tensor]:
        """Landslide probability (B, 1, H, W) float32, the batch's ``origin`` and, when it
        has them, ``valid`` and ``mask``: what ``maps.ProbabilityMapWriter`` blends.

        The forward runs in ``predict_precision`` and, with ``predict_channels_last``,
        channels-last (the network is converted at the first batch and stays so).
        """
        layout = (
            torch.channels_last if self.hparams.predict_channels_last else torch.contiguous_format
        )
        if self._layout != layout:
            self.model.to(memory_format=layout)
            self._layout = layout
        with self.predict_autocast():
            logits = self(batch["image"].contiguous(memory_format=layout))
        out = {"probability": logits.float().sigmoid(), "origin": batch["origin"]}
        return out | {key: batch[key] for key in ("valid", "mask") if key in batch}

    def predict_autocast(self) -> AbstractContextManager:
        """The autocast of ``predict_precision`` (see the class) on this module's device."""
        precision = self.hparams.predict_precision
        if precision == "auto":
            trainer_precision = "32-true" if self._trainer is None else self._trainer.precision
            native = self.device.type == "cpu" and native_cpu_bf16()
            precision = "bf16-mixed" if native and trainer_precision == "32-true" else None
        if precision is None:
            return nullcontext()
        if precision == "32-true":
            return torch.autocast(self.device.type, enabled=False)
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def configure_optimizers(self) -> OptimizerLRScheduler:
        """The optimiser, and the scheduler following ``scheduler_monitor`` if one is set."""
        optimizer = self.make_optimizer(self.parameters())
        if self.make_lr_scheduler is None:
            return optimizer
        scheduler = self.make_lr_scheduler(optimizer)
        monitor = self.hparams.scheduler_monitor
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "monitor": monitor},
        }

    @classmethod
    def load_from_checkpoint(
        cls, checkpoint_path: str | Path | IO[bytes], *args: Any, **kwargs: Any
    ) -> LandslideSegmenter:
        """Lightning's loader, but without fetching encoder weights: the checkpoint holds them.

        Pass ``encoder_weights=...`` to fetch them anyway.
        """
        kwargs.setdefault("encoder_weights", None)
        return super().load_from_checkpoint(checkpoint_path, *args, **kwargs)


def native_cpu_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX): only then is
    bfloat16 faster than float32 on it."""
    cpu = torch.cpu
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # private: may go
    return any(getattr(cpu, name, lambda: False)() for name in checks)
