"""A callback that times a real ``landslide-lit fit`` and runs a bare PyTorch loop beside it.

Added to the fit with ``--trainer.callbacks+=`` (see ``train_throughput.py``). After each
training epoch of the fit (and its validation and checkpoints) it runs one epoch of a
bare loop in the same process: its own copy of the same network, an optimiser of the
same class and settings as the fit's, the same training chips, standardised once up
front with the data module's own ``standardise``, shuffled, in batches of the same size,
BCE on logits, no augmentation, no Lightning. So the two sides alternate epoch by epoch
(fit, bare, fit, bare, ...) under the same load. During the bare epoch it also times the
data module's augmentation on each batch, apart from the step.

Per fit epoch it records the training loop (first training batch fetched to the start
of validation: loading, transfer, standardisation, augmentation, step, optimiser,
logging), the validation loop with the checkpoints saved after it, and the rest of the
epoch's bookkeeping.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import lightning as L
import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F

from landslide_lit.distributed import seeded_rng


class InterleavedBareLoop(L.Callback):
    def __init__(self, out: str) -> None:
        self.out = Path(out)
        self.epochs: list[dict] = []
        self.now: dict = {}
        self.after_bare: float | None = None
        self.fit_start = time.perf_counter()

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.setup_seconds = time.perf_counter() - self.fit_start
        dm = trainer.datamodule
        region = dm.train_region
        chips = dm.chips(region)
        index = dm.splits()["train"]
        raw = {"image": chips.images[index], "origin": chips.origins[index]}
        raw["target"] = chips.targets[index]
        batch = dm.standardise(raw, region)
        self.images, self.masks, self.valid = batch["image"], batch["mask"], batch["valid"]
        self.batch_size = dm.batch_size
        hp = pl_module.hparams
        self.model = smp.create_model(
            hp.arch,
            encoder_name=hp.encoder_name,
            encoder_weights=None,
            in_channels=len(hp.channel_names),
            classes=1,
            **(hp.model_kwargs or {}),
        ).to(pl_module.device)
        self.model.load_state_dict(pl_module.model.state_dict())
        self.optimizer = None
        self.augmentation = dm.augmentation

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        now = time.perf_counter()
        if self.after_bare is not None:
            self.epochs[-1]["fit_other_s"] += now - self.after_bare
        self.now = {"start": now}

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking and "start" in self.now:
            self.now["val"] = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        end = time.perf_counter()
        start, val = self.now["start"], self.now.get("val", end)
        record = {
            "chips": len(self.images),
            "fit_train_s": val - start,
            "fit_val_ckpt_s": end - val,
            "fit_other_s": 0.0,
        }
        if self.optimizer is None:  # the fit's optimiser class and settings
            fitted = trainer.optimizers[0]
            self.optimizer = type(fitted)(self.model.parameters(), **fitted.defaults)
        record.update(self._bare_epoch(trainer.current_epoch))
        self.epochs.append(record)
        self.after_bare = time.perf_counter()

    def _bare_epoch(self, epoch: int) -> dict:
        model, optimizer = self.model.train(), self.optimizer
        order = torch.randperm(len(self.images), generator=torch.Generator().manual_seed(epoch))
        steps, augment = [], []
        wall = 0.0
        for first in range(0, len(order), self.batch_size):
            rows = order[first : first + self.batch_size]
            start = time.perf_counter()
            image, mask = self.images[rows], self.masks[rows]
            loss = F.binary_cross_entropy_with_logits(model(image), mask)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            steps.append(time.perf_counter() - start)
            wall += steps[-1]
            if self.augmentation is not None:  # timed apart, not part of the bare epoch
                start = time.perf_counter()
                with seeded_rng(epoch * 1000 + first, image.device):
                    self.augmentation(image, mask, self.valid[rows])
                augment.append(time.perf_counter() - start)
        return {"bare_s": wall, "bare_step_s": steps, "augment_s": augment}

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.after_bare is not None:
            self.epochs[-1]["fit_other_s"] += time.perf_counter() - self.after_bare
        self.out.write_text(
            json.dumps({"setup_s": self.setup_seconds, "epochs": self.epochs}, indent=1)
        )
