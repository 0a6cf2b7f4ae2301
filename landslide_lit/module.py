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

Metrics are computed over all pixels of a region's chips at epoch end; with
``ignore_invalid`` only over pixels with SAR data. Under DDP each process evaluates its
own chips (the datamodule shards them without repeats) and the metric states are
gathered or summed, so the figures equal a single process's.
"""

from __future__ import annotations

import difflib
import os
import socket
from pathlib import Path
from typing import IO, Any, Literal

import lightning as L
import segmentation_models_pytorch as smp
import timm
import torch
import torch.nn.functional as F
from huggingface_hub import constants as hub_constants
from huggingface_hub import try_to_load_from_cache
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities.types import OptimizerLRScheduler
from safetensors.torch import load_file
from torch import Tensor, nn
from torchmetrics import Metric, MetricCollection
from torchmetrics.classification import (
    BinaryAUROC,
    BinaryAveragePrecision,
    BinaryF1Score,
    BinaryJaccardIndex,
)

from landslide_lit.errors import ConfigError, LandslideLitError

Loss = Literal["bce", "dice", "focal", "bce+dice"]

IGNORE_INDEX = -1
"""Target value of pixels left out of the loss when ``ignore_invalid`` is set."""

# Trainer stage -> (metric prefix, stage passed to ``dataloader_regions``).
_EVAL_STAGES = {
    "fit": ("val", "validate"),
    "validate": ("val", "validate"),
    "test": ("test", "test"),
}


class EncoderWeightsError(LandslideLitError, RuntimeError):
    """Encoder weights could not be downloaded or read from a local file."""


class PositiveFraction(Metric):
    """Fraction of positive target pixels: the AUPRC of a classifier without skill."""

    full_state_update = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("positives", torch.tensor(0), dist_reduce_fx="sum")
        self.add_state("total", torch.tensor(0), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Count the positive pixels of ``target``; ``preds`` is unused."""
        self.positives += target.sum()
        self.total += target.numel()

    def compute(self) -> Tensor:
        """The fraction of positive pixels seen since the last reset."""
        return self.positives / self.total


class BatchMean(Metric):
    """Mean of per-batch values weighted by batch size, with sums reduced across ranks.

    Logs the evaluation loss: Lightning's own ``sync_dist`` epoch mean floors the summed
    batch sizes when ranks ran different numbers of chips (Lightning issue #21859).
    """

    full_state_update = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("total", torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("weight", torch.tensor(0.0), dist_reduce_fx="sum")

    def update(self, value: Tensor, batch_size: int) -> None:
        """Add a batch's mean ``value`` over ``batch_size`` items."""
        self.total += value.detach().float() * batch_size
        self.weight += batch_size

    def compute(self) -> Tensor:
        """The mean over every item seen since the last reset."""
        return self.total / self.weight


class _ProbabilityHistogram(Metric):
    """Pixel counts per probability bin and class: constant memory, summed across ranks.

    ``bins`` bins split logit(p) equally over [-16, 16], i.e. p from 1.1e-7 to
    1 - 1.1e-7 (sigmoids in float32 hardly get closer to 1); the end bins also take
    the tails. Logit bins are fine near 0 and 1, where trained models put most pixels,
    and 1.2e-4 wide in p around 0.5 with the default 65536 bins. Curves use the bins'
    lower edges as thresholds: they are the exact curves of the probabilities rounded
    down to a bin edge, so a metric differs from its exact value only where scores of
    both classes share a bin. ``update`` takes probabilities and 0/1 targets.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    logit_range = 16.0

    def __init__(self, bins: int = 65536, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if bins < 2:
            raise ConfigError(f"--model.auprc_bins {bins}: need at least 2 bins")
        self.bins = bins
        # counts[c, k]: pixels of class c in bin k
        self.add_state("counts", torch.zeros(2, bins, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Count ``preds`` (probabilities) per bin and ``target`` class."""
        span = self.logit_range
        logit = torch.logit(preds.detach().flatten().float()).clamp_(-span, span)
        index = ((logit + span) * (self.bins / (2 * span))).long().clamp_(0, self.bins - 1)
        index += target.flatten().long() * self.bins
        self.counts += torch.bincount(index, minlength=2 * self.bins).view(2, self.bins)

    def _rates(self) -> tuple[Tensor, Tensor, Tensor]:
        """True and false positives above each threshold, highest first, and all positives."""
        above = self.counts.flip(1).cumsum(1).double()
        return above[1], above[0], above[1, -1]


class BinnedAveragePrecision(_ProbabilityHistogram):
    """Average precision from a probability histogram (0 without positive pixels).

    Measured against the exact ``BinaryAveragePrecision`` with the default 65536 bins:
    it reads low by at most 1.3e-4 over 1M-pixel sets with 5 % positives (scores of
    untrained to very confident models) and by 3e-5 on a trained tiny U-Net's 2.4M
    Hokkaido and 1M Talakmau pixels. Its state is 1 MB whatever the number of pixels
    (the exact one keeps 12 bytes a pixel on every device and gathers them all).
    """

    def compute(self) -> Tensor:
        """Sum over thresholds of precision times the recall gained there."""
        tp, fp, positives = self._rates()
        precision = tp / (tp + fp).clamp_min(1)
        gained = torch.diff(tp, prepend=tp.new_zeros(1)) / positives.clamp_min(1)
        return (precision * gained).sum().float()


class BinnedAUROC(_ProbabilityHistogram):
    """Area under the ROC curve from a probability histogram (0 without either class).

    Within 5e-6 of the exact ``BinaryAUROC`` in the measurements of
    :class:`BinnedAveragePrecision`.
    """

    def compute(self) -> Tensor:
        """Trapezoidal area under (false positive rate, true positive rate)."""
        tp, fp, positives = self._rates()
        zero = tp.new_zeros(1)
        tpr = torch.cat([zero, tp / positives.clamp_min(1)])
        fpr = torch.cat([zero, fp / fp[-1].clamp_min(1)])
        return torch.trapezoid(tpr, fpr).float()


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


# Proxy variables the hub client honours: a direct connection test says nothing then.
_PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")
_HUB_TIMEOUT_S = 10


def check_model_names(arch: str, encoder_name: str, weights: str | None) -> None:
    """One clear error for an architecture, encoder or weights name smp does not know."""
    archs = [a.__name__ for a in smp.MODEL_ARCHITECTURES_MAPPING.values()]
    if arch.lower() not in smp.MODEL_ARCHITECTURES_MAPPING:
        raise ConfigError(_unknown_name("--model.arch", arch, archs))
    if encoder_name.startswith("tu-"):
        if not timm.is_model(encoder_name[3:].split(".")[0]):
            raise ConfigError(
                _unknown_name(
                    "--model.encoder_name",
                    encoder_name,
                    [f"tu-{m}" for m in timm.list_models()],
                    "tu-<timm model name>",
                )
            )
        return
    encoders = smp.encoders.encoders
    if encoder_name not in encoders:
        raise ConfigError(_unknown_name("--model.encoder_name", encoder_name, list(encoders)))
    known = list(encoders[encoder_name]["pretrained_settings"])
    if weights is not None and not _is_file_name(weights) and weights not in known:
        raise ConfigError(
            _unknown_name(
                "--model.encoder_weights", weights, known, f"null, a file path or {known}"
            )
        )


def _unknown_name(option: str, value: str, known: list[str], choices: str = "") -> str:
    """``option VALUE is unknown; did you mean ...?`` with the closest known names."""
    close = difflib.get_close_matches(value, known, n=3, cutoff=0.6)
    hint = f"; did you mean {' or '.join(close)}?" if close else ""
    listed = choices or (", ".join(known) if len(known) <= 20 else f"{len(known)} names")
    return f"{option} {value!r} is unknown{hint} Choose from {listed}."


def check_weights_reachable(encoder_name: str, weights: str) -> None:
    """Raise ``OSError`` at once when smp's pretrained weights are neither cached nor reachable.

    Without network the hub client retries for about half a minute before it gives up;
    one connection attempt says the same in milliseconds (or ``_HUB_TIMEOUT_S``).
    """
    settings = smp.encoders.encoders.get(encoder_name, {}).get("pretrained_settings", {})
    if weights not in settings:
        return  # timm encoders fetch their own weights
    repo, revision = settings[weights]["repo_id"], settings[weights]["revision"]
    files = ("config.json", "model.safetensors")
    if all(isinstance(try_to_load_from_cache(repo, f, revision=revision), str) for f in files):
        return
    if hub_constants.HF_HUB_OFFLINE:
        raise OSError(f"HF_HUB_OFFLINE is set and {repo} is not in the Hugging Face cache")
    if any(os.environ.get(name) for name in _PROXY_VARIABLES):
        return
    host = hub_constants.ENDPOINT.split("://")[-1].split("/")[0].split(":")[0]
    try:
        socket.create_connection((host, 443), timeout=_HUB_TIMEOUT_S).close()
    except OSError as error:
        raise OSError(f"cannot reach {host}: {error}") from error


def _is_file_name(weights: str) -> bool:
    """Whether ``encoder_weights`` names a local file rather than smp weights (``imagenet``)."""
    path = Path(weights)
    return bool(path.suffix) or len(path.parts) > 1


def load_encoder_weights(encoder: nn.Module, path: Path, in_channels: int) -> None:
    """Load a 3-channel encoder state dict from ``path`` and adapt it to ``in_channels``.

    The file holds an smp encoder's ``state_dict()`` (``torch.save`` or ``.safetensors``,
    as smp's hub files) or a torchvision ResNet's, whose ``fc.*`` classifier is dropped.
    The first convolution is then widened the way smp adapts its pretrained weights.
    """
    if not hasattr(encoder, "set_in_channels"):
        raise EncoderWeightsError(
            f"Loading encoder weights from a file needs one of smp's own encoders, "
            f"not {type(encoder).__name__}; {path} was not loaded."
        )
    if not path.is_file():
        raise EncoderWeightsError(
            f"encoder weights file {path} (--model.encoder_weights) does not exist. Give the "
            "path of an encoder state dict, or train from scratch with "
            "--model.encoder_weights null."
        )
    try:
        if path.suffix == ".safetensors":
            state = load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # any unreadable file: say which one
        raise EncoderWeightsError(f"Could not read encoder weights from {path}: {error}") from error
    expected = encoder.state_dict().keys()
    state = {k: v for k, v in state.items() if k in expected or not k.startswith("fc.")}
    missing, unexpected = sorted(expected - state.keys()), sorted(state.keys() - expected)
    if missing or unexpected:
        raise EncoderWeightsError(
            f"{path} does not fit encoder {type(encoder).__name__}: "
            f"{len(missing)} missing keys {missing[:3]}, "
            f"{len(unexpected)} unexpected keys {unexpected[:3]}."
        )
    try:
        encoder.load_state_dict(state)
    except RuntimeError as error:
        raise EncoderWeightsError(f"{path} does not fit the encoder: {error}") from error
    encoder.set_in_channels(in_channels, pretrained=True)


class LandslideSegmenter(L.LightningModule):
    """Pixel-wise landslide segmentation with a segmentation-models-pytorch network.

    Args:
        channel_names: names of the input channels, linked from the datamodule; sets the
            number of input channels.
        arch: smp architecture name, e.g. ``Unet``, ``UnetPlusPlus``, ``FPN``.
        encoder_name: smp encoder name, e.g. ``resnet50`` or a timm ``tu-...`` name.
        encoder_weights: ``None`` trains from scratch; an smp weights name (``imagenet``) is
            downloaded from the Hugging Face hub; a file path loads a local 3-channel encoder
            state dict (see :func:`load_encoder_weights`).
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
            across processes; see :class:`BinnedAveragePrecision`) or ``exact`` (every
            pixel kept on every device and gathered at epoch end). Test metrics are
            always exact.
        auprc_bins: probability bins of the binned validation metrics.
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
    ) -> None:
        super().__init__()
        # Factories stay out of the checkpoint: classes and partials would not load with
        # torch.load(weights_only=True). LightningCLI's saved config keeps them.
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler"])
        self.make_optimizer = optimizer
        self.make_lr_scheduler = lr_scheduler
        self.metrics = nn.ModuleDict()
        self.losses = nn.ModuleDict()
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
        from_file = weights is not None and _is_file_name(weights)
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
            raise EncoderWeightsError(self._download_help(str(error))) from error
        if from_file:
            load_encoder_weights(self.model.encoder, Path(weights), in_channels)

    def _download_help(self, reason: str) -> str:
        """How to proceed when pretrained encoder weights cannot be downloaded."""
        hp = self.hparams
        return (
            f"Could not download {hp.encoder_weights!r} weights for encoder "
            f"{hp.encoder_name!r} ({reason.splitlines()[0]}).\n"
            "Train from scratch with --model.encoder_weights null, or load a local file with "
            "--model.encoder_weights /path/to/encoder.pth. Make that file on a machine with "
            'network:\n  python -c "import torch, segmentation_models_pytorch as smp; '
            f"torch.save(smp.encoders.get_encoder('{hp.encoder_name}', "
            f"weights='{hp.encoder_weights}').state_dict(), 'encoder.pth')\"\n"
            "(for smp's own encoders; a torchvision ResNet state dict works too). When loading "
            "a checkpoint, pass "
            "--model.encoder_weights null: the checkpoint holds the weights."
        )

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

        Validation AUPRC and AUROC are binned unless ``val_auprc="exact"``; the two binned
        metrics share one histogram (a torchmetrics compute group), as the exact ones share
        their stored pixels.
        """
        hp = self.hparams
        if prefix == "val" and hp.val_auprc == "binned":
            curves = {
                "auprc": BinnedAveragePrecision(hp.auprc_bins),
                "auroc": BinnedAUROC(hp.auprc_bins),
            }
        else:
            curves = {
                "auprc": BinaryAveragePrecision(thresholds=None),
                "auroc": BinaryAUROC(thresholds=None),
            }
        metrics = MetricCollection(
            {
                **curves,
                "f1": BinaryF1Score(threshold=0.5),
                "iou": BinaryJaccardIndex(threshold=0.5),
                "no_skill": PositiveFraction(),
            }
        )
        return nn.ModuleDict({r: metrics.clone(prefix=f"{prefix}/{r}/") for r in regions})

    def setup(self, stage: str) -> None:
        """Build the metrics and loss means of this stage's evaluation regions."""
        if stage in _EVAL_STAGES:
            prefix, loader_stage = _EVAL_STAGES[stage]
            regions = self._regions(loader_stage)
            self.metrics[prefix] = self.configure_metrics(prefix, regions)
            self.losses[prefix] = nn.ModuleDict({r: BatchMean() for r in regions})

    def _regions(self, stage: str) -> list[str]:
        """Region names of the datamodule's dataloaders, or ``["all"]`` without them."""
        datamodule = self.trainer.datamodule
        if datamodule is None or not hasattr(datamodule, "dataloader_regions"):
            return ["all"]
        return list(datamodule.dataloader_regions(stage))

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
        """Log the validation metrics of every region, and ``val/auprc`` of the first."""
        values = self._log_metrics("val")
        first = next(iter(self.metrics["val"]))
        self.log("val/auprc", values[f"val/{first}/auprc"], prog_bar=True, sync_dist=True)

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
        has them, ``valid`` and ``mask``: what ``maps.ProbabilityMapWriter`` blends."""
        out = {"probability": self(batch["image"]).float().sigmoid(), "origin": batch["origin"]}
        return out | {key: batch[key] for key in ("valid", "mask") if key in batch}

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
