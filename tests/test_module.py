"""Tests for the LightningModule: network, losses, per-region metrics, checkpoints, weights."""

import functools
import re
from pathlib import Path

import lightning as L
import pytest
import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from sklearn.metrics import (
    average_precision_score,
    f1_score,
    jaccard_score,
    roc_auc_score,
)
from torch.utils.data import DataLoader

from landslide_lit.encoders import EncoderWeightsError
from landslide_lit.errors import ConfigError
from landslide_lit.module import LandslideSegmenter

CHANNELS = ["vv_before", "vh_before", "vv_after", "vh_after"]
DEM = ["dem_aspect", "dem_slope_radians", "dem_curvature"]
# A timm test network: ~80k parameters, built in ~25 ms, ~10 ms forward+backward here.
TINY = {
    "encoder_name": "tu-test_resnet",
    "model_kwargs": {"encoder_depth": 3, "decoder_channels": [16, 8, 4]},
}
SIZE = 32


def make_model(channels: list[str] = CHANNELS, **kwargs) -> LandslideSegmenter:
    return LandslideSegmenter(channel_names=channels, **{**TINY, **kwargs})


def make_batch(seed: int = 0, batch: int = 2, channels: int = 4) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {
        "image": torch.randn(batch, channels, SIZE, SIZE, generator=gen),
        "mask": (torch.rand(batch, 1, SIZE, SIZE, generator=gen) < 0.2).float(),
        "valid": torch.rand(batch, 1, SIZE, SIZE, generator=gen) < 0.8,
        "origin": torch.randint(0, 1000, (batch, 2), generator=gen),
    }


def loader(batches: list[dict[str, torch.Tensor]]) -> DataLoader:
    return DataLoader(batches, batch_size=None)


class RegionDataModule(L.LightningDataModule):
    """Pre-made batches, one evaluation dataloader per region, like the real datamodule."""

    def __init__(self) -> None:
        super().__init__()
        self.regions = {"validate": ["hokkaido"], "test": ["talakmau", "hokkaido"]}
        self.batches = {
            "hokkaido": [make_batch(1), make_batch(2)],
            "talakmau": [make_batch(3), make_batch(4)],
        }

    def dataloader_regions(self, stage: str) -> list[str]:
        return self.regions[stage]

    def _loaders(self, stage: str) -> list[DataLoader]:
        return [loader(self.batches[r]) for r in self.regions[stage]]

    def train_dataloader(self) -> DataLoader:
        return loader([make_batch(5), make_batch(6)])

    def val_dataloader(self) -> list[DataLoader]:
        return self._loaders("validate")

    def test_dataloader(self) -> list[DataLoader]:
        return self._loaders("test")


def make_trainer(tmp_path: Path, checkpoint: bool = False) -> L.Trainer:
    return L.Trainer(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=checkpoint,
        enable_progress_bar=False,
        enable_model_summary=False,
        max_epochs=1,
        limit_train_batches=1,
        num_sanity_val_steps=0,
        default_root_dir=tmp_path,
    )


@pytest.mark.parametrize("channels", [CHANNELS, CHANNELS + DEM])
def test_forward_and_predict_shapes(channels: list[str]) -> None:
    model = make_model(channels).eval()
    batch = make_batch(channels=len(channels))
    assert model(batch["image"]).shape == (2, 1, SIZE, SIZE)
    unlabeled = {"image": batch["image"], "origin": batch["origin"]}
    out = model.predict_step(unlabeled, 0)
    assert out["probability"].shape == (2, 1, SIZE, SIZE)
    assert out["probability"].dtype == torch.float32
    assert out["probability"].min() >= 0 and out["probability"].max() <= 1
    assert torch.equal(out["origin"], batch["origin"])


def test_missing_channels_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="channel names"):
        LandslideSegmenter(**TINY)


@pytest.mark.parametrize("loss", ["bce", "dice", "focal", "bce+dice"])
def test_loss_ignores_invalid_pixels_exactly(loss: str) -> None:
    batch = make_batch()
    logits = torch.randn(2, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(7))
    changed = torch.where(batch["valid"], logits, 50.0)
    ignoring = make_model(loss=loss, ignore_invalid=True)
    counting = make_model(loss=loss)
    value = ignoring.compute_loss(logits, batch)
    assert torch.isfinite(value) and value > 0
    assert torch.equal(ignoring.compute_loss(changed, batch), value)
    assert not torch.equal(
        counting.compute_loss(changed, batch), counting.compute_loss(logits, batch)
    )


def test_bce_with_ignore_invalid_is_the_mean_over_valid_pixels() -> None:
    batch = make_batch()
    logits = torch.randn(2, 1, SIZE, SIZE)
    valid = batch["valid"]
    model = make_model(ignore_invalid=True, pos_weight=3.0)
    expected = F.binary_cross_entropy_with_logits(
        logits[valid], batch["mask"][valid], pos_weight=torch.tensor(3.0)
    )
    torch.testing.assert_close(model.compute_loss(logits, batch), expected)


def test_pos_weight_needs_bce() -> None:
    with pytest.raises(ValueError, match="pos_weight"):
        make_model(loss="dice", pos_weight=2.0)


def test_metrics_match_sklearn_with_ties() -> None:
    gen = torch.Generator().manual_seed(0)
    target = (torch.rand(3000, generator=gen) < 0.1).long()
    # Rounded scores: many ties, within and across classes, and exactly 0.5.
    preds = ((torch.rand(3000, generator=gen) + 0.3 * target) * 10).round().clamp(max=10) / 10
    metrics = make_model(val_auprc="exact").configure_metrics("val", ["r"])["r"]
    for part in range(3):
        metrics.update(
            preds[part * 1000 : (part + 1) * 1000], target[part * 1000 : (part + 1) * 1000]
        )
    values = {k: v.item() for k, v in metrics.compute().items()}
    hard = (preds > 0.5).numpy()
    assert values["val/r/auprc"] == pytest.approx(average_precision_score(target, preds), abs=1e-6)
    assert values["val/r/auroc"] == pytest.approx(roc_auc_score(target, preds), abs=1e-6)
    assert values["val/r/f1"] == pytest.approx(f1_score(target, hard), abs=1e-6)
    assert values["val/r/iou"] == pytest.approx(jaccard_score(target, hard), abs=1e-6)
    assert values["val/r/no_skill"] == pytest.approx(target.float().mean().item())


@pytest.mark.parametrize("ignore_invalid", [False, True])
def test_fit_and_test_log_per_region_metrics(tmp_path: Path, ignore_invalid: bool) -> None:
    model, data = make_model(ignore_invalid=ignore_invalid), RegionDataModule()
    trainer = make_trainer(tmp_path)
    trainer.fit(model, data)
    metrics = trainer.callback_metrics
    names = ["loss", "auprc", "auroc", "f1", "iou", "no_skill"]
    assert {"train/loss", "val/auprc"} | {f"val/hokkaido/{n}" for n in names} <= set(metrics)
    assert metrics["val/auprc"] == metrics["val/hokkaido/auprc"]

    trainer.test(model, data, verbose=False)
    metrics = trainer.callback_metrics
    assert {f"test/{r}/{n}" for r in ("talakmau", "hokkaido") for n in names} <= set(metrics)
    # The logged AUPRC is scikit-learn's over every (valid) pixel of the region's chips.
    model.eval()
    batches = data.batches["talakmau"]
    with torch.no_grad():
        probs = torch.cat([model(b["image"]).sigmoid() for b in batches])
    target = torch.cat([b["mask"] for b in batches])
    keep = (
        torch.cat([b["valid"] for b in batches])
        if ignore_invalid
        else torch.ones_like(target, dtype=bool)
    )
    expected = average_precision_score(target[keep].numpy(), probs[keep].numpy())
    assert metrics["test/talakmau/auprc"].item() == pytest.approx(expected, abs=1e-6)
    assert metrics["test/talakmau/no_skill"].item() == pytest.approx(target[keep].mean().item())


def test_without_datamodule_the_region_is_all(tmp_path: Path) -> None:
    trainer = make_trainer(tmp_path)
    trainer.validate(make_model(), loader([make_batch()]), verbose=False)
    assert {"val/all/auprc", "val/all/no_skill", "val/auprc"} <= set(trainer.callback_metrics)


@pytest.mark.parametrize(
    "optimizer", [torch.optim.Adam, functools.partial(torch.optim.Adam, lr=0.01)]
)
def test_checkpoint_round_trip(tmp_path: Path, optimizer) -> None:
    model = make_model(optimizer=optimizer, lr_scheduler=torch.optim.lr_scheduler.ReduceLROnPlateau)
    trainer = make_trainer(tmp_path, checkpoint=True)
    trainer.fit(model, RegionDataModule())
    path = trainer.checkpoint_callback.best_model_path
    loaded = LandslideSegmenter.load_from_checkpoint(path)
    assert loaded.hparams == model.hparams
    image = make_batch(9)["image"]
    model.eval(), loaded.eval()
    assert torch.equal(model(image), loaded(image))


@pytest.fixture(scope="module")
def resnet18_state() -> dict[str, torch.Tensor]:
    return smp.encoders.get_encoder("resnet18", weights=None).state_dict()


@pytest.mark.parametrize("form", ["smp.pth", "torchvision.pth", "smp.safetensors"])
def test_encoder_weights_from_file(tmp_path: Path, resnet18_state, form: str) -> None:
    path = tmp_path / f"encoder-{form}"
    if form == "torchvision.pth":
        fc = {"fc.weight": torch.zeros(1000, 512), "fc.bias": torch.zeros(1000)}
        torch.save({**resnet18_state, **fc}, path)
    elif form == "smp.pth":
        torch.save(resnet18_state, path)
    else:
        save_file(resnet18_state, path)
    model = make_model(
        encoder_name="resnet18", encoder_weights=str(path), model_kwargs=TINY["model_kwargs"]
    )
    encoder = model.model.encoder
    torch.testing.assert_close(
        encoder.layer1[0].conv1.weight, resnet18_state["layer1.0.conv1.weight"]
    )
    # smp's pretrained adaptation: channel i copies RGB channel i % 3, scaled by 3 / 4.
    conv1 = resnet18_state["conv1.weight"]
    torch.testing.assert_close(encoder.conv1.weight, conv1[:, [0, 1, 2, 0]] * 3 / 4)


def test_checkpoint_loads_without_the_encoder_weights_file(tmp_path: Path, resnet18_state) -> None:
    weights = tmp_path / "encoder.pth"
    torch.save(resnet18_state, weights)
    model = make_model(
        encoder_name="resnet18", encoder_weights=str(weights), model_kwargs=TINY["model_kwargs"]
    )
    trainer = make_trainer(tmp_path)
    trainer.validate(model, loader([make_batch()]), verbose=False)
    trainer.save_checkpoint(tmp_path / "model.ckpt")
    weights.unlink()
    loaded = LandslideSegmenter.load_from_checkpoint(tmp_path / "model.ckpt")
    image = make_batch(9)["image"]
    model.eval(), loaded.eval()
    assert torch.equal(model(image), loaded(image))


def test_encoder_weights_file_errors_name_the_file(tmp_path: Path, resnet18_state) -> None:
    kwargs = {"encoder_name": "resnet18", "model_kwargs": TINY["model_kwargs"]}
    missing = tmp_path / "missing.pth"
    with pytest.raises(EncoderWeightsError, match="missing.pth"):
        make_model(encoder_weights=str(missing), **kwargs)
    wrong = tmp_path / "wrong.pth"
    state = dict(resnet18_state)
    state["extra.weight"] = state.pop("layer1.0.conv1.weight")
    torch.save(state, wrong)
    with pytest.raises(EncoderWeightsError, match=r"wrong.pth.*1 missing.*1 unexpected"):
        make_model(encoder_weights=str(wrong), **kwargs)


def test_offline_imagenet_download_error(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(EncoderWeightsError, match="encoder_weights null") as error:
        make_model(encoder_name="resnet18", encoder_weights="imagenet")
    assert "--model.encoder_weights /path/to/encoder.pth" in str(error.value)


def test_unreachable_hub_fails_at_once_without_the_hub_client(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path))
    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)

    def no_network(*args, **kwargs):
        raise OSError("Name or service not known")

    def no_download(*args, **kwargs):
        raise AssertionError("the hub client was asked: it retries for half a minute")

    monkeypatch.setattr("socket.create_connection", no_network)
    monkeypatch.setattr("segmentation_models_pytorch.encoders.hf_hub_download", no_download)
    with pytest.raises(EncoderWeightsError, match="(?s)cannot reach huggingface.co.*weights null"):
        make_model(encoder_name="resnet18", encoder_weights="imagenet")


@pytest.mark.parametrize(
    ("kwargs", "option"),
    [
        ({"arch": "Unett"}, "--model.arch 'Unett' is unknown; did you mean Unet"),
        ({"encoder_name": "resnet5"}, "--model.encoder_name 'resnet5' is unknown"),
        ({"encoder_name": "tu-resnet5"}, "--model.encoder_name 'tu-resnet5' is unknown"),
        ({"encoder_name": "resnet18", "encoder_weights": "imagenett"}, "did you mean imagenet"),
        ({"loss": "dice", "pos_weight": 2.0}, "--model.pos_weight applies to BCE only"),
    ],
)
def test_unknown_network_names_are_config_errors(kwargs, option) -> None:
    with pytest.raises(ConfigError, match=re.escape(option)):
        make_model(**kwargs)
