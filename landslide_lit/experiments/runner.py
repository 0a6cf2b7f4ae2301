"""The resumable runner of `reproduce` and `transfer`: one folder per run, result markers.

Every run gets its own folder under the experiment folder ``OUTPUT/NAME/``, in which the
runner works (it is the run's working directory, so ``fit --ckpt_path last`` finds the
run's own ``runs/``):

* ``runs/landslide/version_N/``: the fit (checkpoints, ``metrics.csv``, ``config.yaml``);
* ``fit.json`` (:data:`FIT_MARKER`): written when the fit finished, with its best checkpoint;
* ``evaluation/<val|test>_<region>/``: what ``validate``/``test`` of the best checkpoint
  write (``metrics.json``, ``pr_curve.png``, ``predictions.png``, ``scores.npz``);
* ``result.json`` (:data:`RESULT_MARKER`): written last and atomically, with every
  evaluation's metrics: a run with it is finished and skipped by a rerun. A run without it
  resumes: a fit without ``fit.json`` continues from its ``last.ckpt``
  (``fit --ckpt_path last``), evaluations are redone.

Runs write only inside their own folders, so separate processes may run different runs of
one experiment at once (a SLURM job array, :meth:`Runner.run_only`).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from landslide_lit import cli
from landslide_lit.atomic import write_json_atomically
from landslide_lit.checkpointing import last_checkpoint
from landslide_lit.encoders import EncoderWeightsError
from landslide_lit.runs import latest_best_checkpoint
from landslide_lit.stages import METRIC_SPLIT, Command

__all__ = [
    "FIT_MARKER",
    "RESULT_MARKER",
    "EvaluationSpec",
    "RunSpec",
    "Runner",
    "progress",
    "working_directory",
]

FIT_MARKER = "fit.json"
RESULT_MARKER = "result.json"


@dataclass(frozen=True)
class EvaluationSpec:
    """``validate`` or ``test`` of a run's best checkpoint on one region."""

    command: Command
    region: str

    @property
    def key(self) -> str:
        """``<val|test>_<region>``: the evaluation's folder and its key in the result."""
        return f"{METRIC_SPLIT[self.command]}_{self.region}"


@dataclass(frozen=True)
class RunSpec:
    """One fit and its evaluations, in ``folder`` (relative to the experiment folder)."""

    folder: str
    label: str
    fit_args: tuple[str, ...]
    evaluations: tuple[EvaluationSpec, ...]
    info: dict[str, Any] = field(default_factory=dict, compare=False)


class Runner:
    """Runs :class:`RunSpec` s, skipping finished ones and resuming the others.

    Args:
        folder: the experiment folder (``OUTPUT/NAME``).
        evaluation_args: options added to every validate/test command.
    """

    def __init__(self, folder: Path, evaluation_args: Sequence[str] = ()) -> None:
        self.folder = folder
        self.evaluation_args = list(evaluation_args)
        self._started = time.perf_counter()
        self._work_seconds = 0.0
        self._work_done = 0

    def finished(self, spec: RunSpec) -> bool:
        """Whether ``spec``'s result marker exists."""
        return (self.folder / spec.folder / RESULT_MARKER).exists()

    def run_all(self, specs: Sequence[RunSpec]) -> list[dict[str, Any]]:
        """Every run in order; their results."""
        total = len(specs)
        finished = sum(map(self.finished, specs))
        progress(f"{total} runs in {self.folder}: {finished} finished, {total - finished} to do")
        return [
            self.run_one(spec, index, total, total - index) for index, spec in enumerate(specs, 1)
        ]

    def run_only(self, specs: Sequence[RunSpec], only: int) -> dict[str, Any]:
        """Run ``specs[only]`` (0-based) alone; its result."""
        progress(f"run {only} of 0-{len(specs) - 1} in {self.folder} (--only {only})")
        return self.run_one(specs[only], only + 1, len(specs), 0)

    def run_one(self, spec: RunSpec, index: int, total: int, after: int) -> dict[str, Any]:
        """Run ``spec`` (the ``index``-th of ``total``, ``after`` more to come); its result."""
        folder = self.folder / spec.folder
        marker = folder / RESULT_MARKER
        if marker.exists():
            progress(f"[{index}/{total}] {spec.label}: finished earlier, skipped")
            return json.loads(marker.read_text())
        started = time.perf_counter()

        def say(step: str) -> None:
            progress(f"[{index}/{total}] {spec.label}: {step} {self._clock(after + 1)}")

        folder.mkdir(parents=True, exist_ok=True)
        with working_directory(folder):
            if not (folder / FIT_MARKER).exists():
                self._fit(spec, folder, say)
            fit = json.loads((folder / FIT_MARKER).read_text())
            checkpoint = folder / fit["best_checkpoint"]
            evaluations = {}
            for evaluation in spec.evaluations:
                say(f"{evaluation.command} on {evaluation.region}")
                evaluations[evaluation.key] = self._evaluate(checkpoint, evaluation, folder)
        result = {
            **spec.info,
            "label": spec.label,
            "best_checkpoint": fit["best_checkpoint"],
            "fit_args": list(spec.fit_args),
            "evaluations": evaluations,
            "seconds": round(time.perf_counter() - started + fit.get("seconds", 0.0), 1),
        }
        write_json_atomically(marker, result)
        self._work_seconds += time.perf_counter() - started
        self._work_done += 1
        progress(
            f"[{index}/{total}] {spec.label}: done, "
            + ", ".join(f"{k} AUPRC {v['auprc']:.3f}" for k, v in evaluations.items())
            + f" {self._clock(after)}"
        )
        return result

    def _fit(self, spec: RunSpec, folder: Path, say: Callable[[str], None]) -> None:
        resume = last_checkpoint(folder) is not None
        say("resuming the fit from last.ckpt" if resume else "fitting")
        started = time.perf_counter()
        args = ["fit", *spec.fit_args, *(["--ckpt_path", "last"] if resume else [])]
        try:
            cli.run(args)  # looked up when called: tests replace it
        except EncoderWeightsError as error:
            raise EncoderWeightsError(
                f"{error}\nFinished runs are kept: rerun the same command to continue."
            ) from None
        best = latest_best_checkpoint(folder)
        write_json_atomically(
            folder / FIT_MARKER,
            {
                "best_checkpoint": str(best.resolve().relative_to(folder.resolve())),
                "seconds": round(time.perf_counter() - started, 1),
                "resumed": resume,
            },
        )

    def _evaluate(
        self, checkpoint: Path, evaluation: EvaluationSpec, folder: Path
    ) -> dict[str, Any]:
        output = folder / "evaluation" / evaluation.key
        (output / "metrics.json").unlink(missing_ok=True)
        cli.run(
            [
                evaluation.command,
                "--ckpt_path",
                str(checkpoint),
                "--region",
                evaluation.region,
                *self.evaluation_args,
                "--trainer.logger",
                "false",
                "--trainer.default_root_dir",
                str(folder),
            ]
        )
        if not (output / "metrics.json").exists():
            raise RuntimeError(
                f"{evaluation.command} on {evaluation.region} wrote no {output}/metrics.json; "
                "is the EvaluationWriter callback among --trainer.callbacks?"
            )
        metrics = json.loads((output / "metrics.json").read_text())
        metrics["folder"] = str(output.relative_to(folder))
        return metrics

    def _clock(self, remaining: int) -> str:
        elapsed = time.perf_counter() - self._started
        text = f"(elapsed {_duration(elapsed)}"
        if self._work_done:
            text += f", ETA {_duration(self._work_seconds / self._work_done * remaining)}"
        return text + ")"


@contextlib.contextmanager
def working_directory(folder: Path) -> Iterator[None]:
    """Run inside ``folder``: fits find and resume their runs relative to it.

    The default loggers write to ``runs/`` under the working directory and
    ``--ckpt_path last`` looks for runs there, so the run's folder must be the working
    directory while it fits.
    """
    previous = Path.cwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(previous)


def progress(line: str) -> None:
    """A progress line on stderr."""
    print(f"[landslide-lit] {line}", file=sys.stderr, flush=True)


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
