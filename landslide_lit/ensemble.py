"""Several trained models that predict one region together: ``predict --ensemble``.

:class:`EnsembleSegmenter` forwards each member over the same batch and hands the map
writer every member's probability (``(B, K, H, W)``); the writer blends each member's map
exactly as a single model's and writes their mean and standard deviation (see
:mod:`landslide_lit.maps`). Under the CLI the first member is the ``--ckpt_path`` that
Lightning restores (with the data module's state); :meth:`EnsembleSegmenter.on_load_checkpoint`
puts the other members' weights, read from their checkpoints, beside it in the state dict
that Lightning then loads strictly.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn

from landslide_lit.runs import read_checkpoint

__all__ = ["EnsembleSegmenter", "ensemble_size"]


class EnsembleSegmenter(L.LightningModule):
    """Members (LightningModules with a ``predict_step`` giving ``probability``
    ``(B, 1, H, W)``) that predict together; predict only.

    Args:
        members: the models, first member first.
        checkpoints: the members' checkpoint files, in the same order; when given, a
            ``trainer.predict(ckpt_path=checkpoints[0])`` loads every member's weights
            (the other files are read by :meth:`on_load_checkpoint`).
    """

    def __init__(
        self,
        members: Sequence[L.LightningModule],
        checkpoints: Sequence[str | os.PathLike] | None = None,
    ) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        if checkpoints is not None and len(checkpoints) != len(members):
            raise ValueError(f"{len(members)} members but {len(checkpoints)} checkpoints")
        self.members = nn.ModuleList(members)
        self.checkpoints = None if checkpoints is None else [str(c) for c in checkpoints]

    @property
    def thresholds(self) -> Any:
        """The first member's ``thresholds`` (chosen on its validation), or None.

        The ensemble's mean map is thresholded with them: an approximation, since the
        mean of several models is better calibrated than one of them; re-validating the
        ensemble would choose its own.
        """
        return getattr(self.members[0], "thresholds", None)

    def predict_step(
        self, batch: dict[str, Tensor], batch_idx: int, dataloader_idx: int = 0
    ) -> dict[str, Tensor]:
        """The first member's prediction with every member's ``probability``, ``(B, K, H, W)``."""
        outputs = [m.predict_step(batch, batch_idx, dataloader_idx) for m in self.members]
        probability = torch.cat([out["probability"] for out in outputs], dim=1)
        return outputs[0] | {"probability": probability}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Turn the first member's checkpoint into the whole ensemble's.

        Lightning calls this with the ``ckpt_path`` checkpoint, then loads its
        ``state_dict`` strictly: every member's weights must be there, under
        ``members.<k>.``. Each member's own hook sees its own checkpoint first.
        """
        if self.checkpoints is None:
            raise ValueError("EnsembleSegmenter was built without its members' checkpoints")
        state = {}
        for k, member in enumerate(self.members):
            own = checkpoint if k == 0 else read_checkpoint(self.checkpoints[k], "--ensemble")
            member.on_load_checkpoint(own)
            state.update({f"members.{k}.{key}": v for key, v in own["state_dict"].items()})
        checkpoint["state_dict"] = state


def ensemble_size(module: L.LightningModule) -> int:
    """How many models predict in ``module``: its members, or 1."""
    return len(module.members) if isinstance(module, EnsembleSegmenter) else 1
