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
is measured on the same batches. After the fit's validation, the bare loop runs the
same validation forward: the network in eval mode under ``torch.inference_mode`` over
the validation chips (standardised up front) in batches of the same size.

Per fit epoch (from one ``on_train_epoch_start`` to the next, or to the end of the fit,
after the strategy's teardown has waited for checkpoint writes) it records where the
time goes, the bare loop's time taken out (keys of :data:`PHASES`), and the time
spent in a few functions inside those phases (:data:`INSIDE`), by wrapping them on
their objects.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from pathlib import Path

import lightning as L
import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F

from landslide_lit.distributed import seeded_rng

PHASES = {
    "loader_start": "loader start and first batch (iterator, fetch, standardise, augment)",
    "steps": "training steps (forward, backward, optimiser)",
    "between_steps": "after each training step (next batch, callbacks, logging, progress bar)",
    "validation": "validation loop (forward, loss, metric updates)",
    "validation_end": "validation epoch end (metrics, thresholds, logging)",
    "epoch_end": "epoch end to next epoch (checkpoints, loggers, progress bar)",
}
"""Phases of a fit epoch, in order; together they are the whole epoch."""

INSIDE = {
    "save_checkpoint": "checkpoint saves (state dump + write, or snapshot)",
    "checkpoint_wait": "waiting for background checkpoint writes",
    "thresholds": "validation thresholds (65536-bin histogram)",
    "log_metrics": "loggers' writes (TensorBoard, CSV)",
}
"""Functions timed inside the phases: key -> what."""


class InterleavedBareLoop(L.Callback):
    def __init__(self, out: str) -> None:
        self.out = Path(out)
        self.epochs: list[dict] = []
        self.now: dict = {}
        self.fit_start = time.perf_counter()
        self.inside: dict[str, float] = defaultdict(float)

    # -- set-up -------------------------------------------------------------------

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.setup_seconds = time.perf_counter() - self.fit_start
        dm = trainer.datamodule
        region = dm.train_region
        chips = dm.chips(region)
        splits = dm.splits()
        self.images, self.masks, self.valid = self._standardised(dm, chips, splits["train"])
        self.val_images = self._standardised(dm, chips, splits["val"])[0]
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
        self._wrap(trainer, "save_checkpoint", "save_checkpoint")
        self._wrap(trainer.strategy.checkpoint_io, "wait", "checkpoint_wait")
        self._wrap(pl_module, "_validation_thresholds", "thresholds")
        for logger in trainer.loggers:
            self._wrap(logger, "log_metrics", "log_metrics")
            self._wrap(logger, "save", "log_metrics")

    @staticmethod
    def _standardised(dm, chips, index) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        raw = {"image": chips.images[index], "origin": chips.origins[index]}
        raw["target"] = chips.targets[index]
        batch = dm.standardise(raw, dm.train_region)
        return batch["image"], batch["mask"], batch["valid"]

    def _wrap(self, owner: object, name: str, key: str) -> None:
        """Add the time of ``owner.name(...)`` to ``self.inside[key]`` (if it has one)."""
        function = getattr(owner, name, None)
        if function is None:
            return
        inside = self.inside

        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                inside[key] += time.perf_counter() - start

        setattr(owner, name, timed)

    # -- the fit's epoch ------------------------------------------------------------

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        now = time.perf_counter()
        self._close_epoch(now)
        self.now = {
            "start": now,
            "mark": now,
            "phase": "loader_start",
            "phases": defaultdict(float),
            "bare": [],
            "augment": [],
            "bare_val": 0.0,
            "fit_batches": [],
            "inside_at_start": dict(self.inside),
        }
        order = torch.randperm(
            len(self.images), generator=torch.Generator().manual_seed(trainer.current_epoch)
        )
        self.bare_batches = list(order.split(self.batch_size))

    def _enter(self, phase: str, now: float | None = None) -> float:
        """End the running phase now; ``phase`` starts."""
        now = time.perf_counter() if now is None else now
        self.now["phases"][self.now["phase"]] += now - self.now["mark"]
        self.now["phase"], self.now["mark"] = phase, now
        return now

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.now["step_start"] = self._enter("steps")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        """One bare step right after each fit step: the two alternate step by step."""
        now = self._enter("between_steps")
        self.now["fit_batches"].append(now - self.now["step_start"])
        if self.optimizer is None:  # the fit's optimiser class and settings
            fitted = trainer.optimizers[0]
            self.optimizer = type(fitted)(self.model.parameters(), **fitted.defaults)
        if self.bare_batches:
            rows = self.bare_batches.pop(0)
            step, augment = self._bare_step(rows, trainer.current_epoch * 1000 + batch_idx)
            self.now["bare"].append(step)
            if augment is not None:
                self.now["augment"].append(augment)
        self.now["mark"] = time.perf_counter()  # the bare step is not the fit's

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking and "start" in self.now:
            self._enter("validation")

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # callbacks' epoch-end hooks run before the module's (metrics, thresholds, logging)
        if not trainer.sanity_checking and "start" in self.now:
            self._enter("validation_end")

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or "start" not in self.now:
            return
        self._enter("epoch_end")
        self.now["bare_val"] = self._bare_validation()
        self.now["mark"] = time.perf_counter()  # the bare forward is not the fit's

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        while self.bare_batches:  # a fit epoch with fewer batches (none in this benchmark)
            step, extra = self._bare_step(self.bare_batches.pop(0), len(self.now["bare"]))
            self.now["bare"].append(step)
            self.now["augment"] += [] if extra is None else [extra]
        self._enter("epoch_end")

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # after the strategy's teardown: the last checkpoint writes are waited for
        self._close_epoch(time.perf_counter())
        self.out.write_text(
            json.dumps({"setup_s": self.setup_seconds, "epochs": self.epochs}, indent=1)
        )

    def _close_epoch(self, now: float) -> None:
        if not self.now:
            return
        self._enter("epoch_end", now)
        phases = dict(self.now["phases"])
        bare, augment = self.now["bare"], self.now["augment"]
        start_inside = self.now["inside_at_start"]
        self.epochs.append(
            {
                "chips": len(self.images),
                "val_chips": len(self.val_images),
                "phases_s": phases,
                "inside_s": {k: v - start_inside.get(k, 0.0) for k, v in self.inside.items()},
                "fit_epoch_s": sum(phases.values()),
                # the training loop: epoch start to the start of validation
                "fit_train_s": sum(
                    phases.get(k, 0.0) for k in ("loader_start", "steps", "between_steps")
                ),
                "fit_batch_s": self.now["fit_batches"],
                "bare_s": sum(bare) + sum(augment),
                "bare_noaug_s": sum(bare),
                "bare_val_s": self.now["bare_val"],
                "bare_step_s": bare,
                "augment_s": augment,
            }
        )
        self.now = {}

    # -- the bare loop ----------------------------------------------------------------

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

    def _bare_validation(self) -> float:
        """The validation forward of the bare loop: every validation chip, in batches."""
        model = self.model.eval()
        start = time.perf_counter()
        with torch.inference_mode():
            for batch in self.val_images.split(self.batch_size):
                model(batch)
        return time.perf_counter() - start
