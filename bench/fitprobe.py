"""A callback that times a real ``landslide-lit fit`` and runs a bare PyTorch loop beside it.

Added to the fit with ``--trainer.callbacks+=`` (see ``train_throughput.py``). Beside
the fit, in the same process, it runs a bare loop: its own copy of the same network, an
optimiser of the same class and settings as the fit's, the same training chips,
standardised once up front with the data module's own ``standardise``, shuffled, in
batches of the same size, BCE on logits, no Lightning. The two alternate step by step:
after each training step of the fit (``on_train_batch_end``) it runs one bare step, so
load from elsewhere falls on both alike, and the bare steps' time is taken out of the
fit's. When the fit augments, the bare loop augments each batch the same way (the data
module's own augmentation, seeded per batch) before its step, timed apart: the fit is
compared with a bare loop doing the same work, and the augmentation's share of a step
is measured on the same batches.

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
        self.now = {"start": now, "bare": [], "augment": [], "fit_batches": [], "mark": now}
        order = torch.randperm(
            len(self.images), generator=torch.Generator().manual_seed(trainer.current_epoch)
        )
        self.bare_batches = list(order.split(self.batch_size))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        """One bare step right after each fit step: the two alternate step by step."""
        if self.optimizer is None:  # the fit's optimiser class and settings
            fitted = trainer.optimizers[0]
            self.optimizer = type(fitted)(self.model.parameters(), **fitted.defaults)
        self.now["fit_batches"].append(time.perf_counter() - self.now["mark"])
        if self.bare_batches:
            rows = self.bare_batches.pop(0)
            seed = trainer.current_epoch * 1000 + batch_idx
            step, augment = self._bare_step(rows, seed)
            self.now["bare"].append(step)
            if augment is not None:
                self.now["augment"].append(augment)
        self.now["mark"] = time.perf_counter()

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking and "start" in self.now:
            self.now["val"] = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        end = time.perf_counter()
        start, val = self.now["start"], self.now.get("val", end)
        bare, augment = self.now["bare"], self.now["augment"]
        while self.bare_batches:  # a fit epoch with fewer batches (none in this benchmark)
            step, extra = self._bare_step(self.bare_batches.pop(0), len(bare))
            bare.append(step)
            augment += [] if extra is None else [extra]
        inside = sum(bare) + sum(augment)
        self.epochs.append(
            {
                "chips": len(self.images),
                # the bare steps ran inside the fit's training loop: their time is not the fit's
                "fit_train_s": val - start - inside,
                "fit_val_ckpt_s": end - val,
                "fit_other_s": 0.0,
                "fit_batch_s": self.now["fit_batches"],
                "bare_s": inside,
                "bare_noaug_s": sum(bare),
                "bare_step_s": bare,
                "augment_s": augment,
            }
        )
        self.after_bare = time.perf_counter()

    def _bare_step(self, rows: torch.Tensor, seed: int) -> tuple[float, float | None]:
        """One bare step on chips ``rows``; with augmentation on, the batch is augmented
        first (the data module's own augmentation, seeded per batch), timed apart."""
        model, optimizer = self.model.train(), self.optimizer
        image, mask = self.images[rows], self.masks[rows]
        augment = None
        if self.augmentation is not None:
            start = time.perf_counter()
            with seeded_rng(seed, image.device):
                image, mask, _ = self.augmentation(image, mask, self.valid[rows])
            augment = time.perf_counter() - start
        start = time.perf_counter()
        loss = F.binary_cross_entropy_with_logits(model(image), mask)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return time.perf_counter() - start, augment

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.after_bare is not None:
            self.epochs[-1]["fit_other_s"] += time.perf_counter() - self.after_bare
        self.out.write_text(
            json.dumps({"setup_s": self.setup_seconds, "epochs": self.epochs}, indent=1)
        )
