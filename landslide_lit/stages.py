"""One vocabulary for the stages of a run, defined here and nowhere else.

* A **command** is what the user runs and what Lightning passes to ``setup``/``teardown``
  as ``stage``: ``fit``, ``validate``, ``test``, ``predict``.
* A **split** is a part of the train region's chips, and the prefix of logged metrics:
  ``train``, ``val``, ``test``.
"""

from __future__ import annotations

from typing import Literal

from lightning.pytorch.trainer.states import RunningStage

Command = Literal["fit", "validate", "test", "predict"]
Split = Literal["train", "val", "test"]
SPLITS: tuple[Split, ...] = ("train", "val", "test")

EVALUATED_BY: dict[Command, Command] = {
    "fit": "validate",
    "validate": "validate",
    "test": "test",
    "predict": "predict",
}
"""The command whose regions a command's evaluation loaders hold (fit validates)."""

METRIC_SPLIT: dict[Command, Split] = {"fit": "val", "validate": "val", "test": "test"}
"""The metric prefix of a command's evaluation loaders."""

COMMAND_OF_RUNNING_STAGE: dict[RunningStage, Command] = {
    RunningStage.TRAINING: "fit",
    RunningStage.SANITY_CHECKING: "validate",
    RunningStage.VALIDATING: "validate",
    RunningStage.TESTING: "test",
    RunningStage.PREDICTING: "predict",
}
"""The command a running Lightning stage belongs to (sanity checks validate)."""
