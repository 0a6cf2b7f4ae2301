"""The cluster path on a real SLURM: `scripts/slurm/train.sbatch` as users submit it.

Run by `make cluster-test`, which starts a throwaway one-node cluster
(`scripts/slurm/local_cluster.sh`) and sets ``LANDSLIDE_LIT_SLURM_TESTS``; skipped
elsewhere. The jobs are tiny CPU fits on the synthetic cubes, with the options a user
would pass (tasks, CPUs, no GPU, a config file), never edits of the script.
"""

from __future__ import annotations

import csv
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from landslide_lit.checkpointing import last_checkpoint
from tests.test_ddp import assert_same_scores, evaluate, scores, scores_of
from tests.test_faults import metrics_of

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "slurm" / "train.sbatch"
STEPS_PER_EPOCH = 5  # 5 training chips in batches of 1
JOB_SECONDS = 600


def _cluster_problem() -> str | None:
    """Why the SLURM tests cannot run here, or None."""
    if not os.environ.get("LANDSLIDE_LIT_SLURM_TESTS"):
        return (
            "needs a SLURM cluster to submit to: `make cluster-test` starts a local one "
            "and runs these tests (or set LANDSLIDE_LIT_SLURM_TESTS=1 on a cluster)"
        )
    if shutil.which("sbatch") is None or shutil.which("sacct") is None:
        return "LANDSLIDE_LIT_SLURM_TESTS is set but sbatch or sacct is not on PATH"
    return None


pytestmark = [
    pytest.mark.slurm,
    pytest.mark.skipif(_cluster_problem() is not None, reason=str(_cluster_problem())),
]


def _job_environment(**variables: str) -> dict[str, str]:
    """The environment a job inherits (sbatch exports it): this checkout's package first."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    return {
        **os.environ,
        "PATH": path,
        "PYTHONPATH": str(REPO),
        "OMP_NUM_THREADS": "1",
        **variables,
    }


def submit(submit_dir: Path, options: list[str], config: Path) -> str:
    """Submit train.sbatch from ``submit_dir`` with sbatch ``options``; the job id."""
    submit_dir.mkdir(parents=True, exist_ok=True)
    env = _job_environment(CONFIG="demo.yaml", EXTRA=f"--config {config}")
    result = subprocess.run(
        ["sbatch", "--parsable", *options, str(SCRIPT)],
        cwd=submit_dir,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.strip().split(";")[0]


def _job_state(job_id: str) -> dict[str, str]:
    """``scontrol show job`` as a dict (JobState, Restarts, ...); empty once SLURM forgot it."""
    shown = subprocess.run(
        ["scontrol", "-o", "show", "job", job_id], capture_output=True, text=True
    )
    return dict(re.findall(r"(\w+)=(\S*)", shown.stdout)) if shown.returncode == 0 else {}


def wait_for(job_ids: list[str], requeued_minutes: int | None = None) -> None:
    """Wait until none of ``job_ids`` is pending or running any more.

    ``requeued_minutes``: once a job has been requeued, raise its time limit to that, so
    that its next start ends the fit instead of being signalled again (the signal comes
    at a fixed time after each start; a longer ``--time`` would do the same).
    """
    deadline = time.monotonic() + JOB_SECONDS
    extended: set[str] = set()
    while time.monotonic() < deadline:
        states = {job: _job_state(job) for job in job_ids}
        for job, state in states.items():
            if requeued_minutes and job not in extended and state.get("Restarts", "0") != "0":
                limit = f"TimeLimit={requeued_minutes}"
                subprocess.run(["scontrol", "update", f"JobId={job}", limit], check=True)
                extended.add(job)
        if all(
            state.get("JobState") not in ("PENDING", "RUNNING", "COMPLETING", "REQUEUED")
            for state in states.values()
        ):
            return
        time.sleep(1)
    subprocess.run(["scancel", *job_ids])
    pytest.fail(f"jobs {job_ids} did not end within {JOB_SECONDS} s")


def accounting(job_id: str) -> list[tuple[str, str, str]]:
    """(step, state, exit code) of every attempt of ``job_id``, oldest first (sacct)."""
    result = subprocess.run(
        ["sacct", "--duplicates", "-n", "-P", "-j", job_id, "-o", "JobID,State,ExitCode"],
        capture_output=True,
        text=True,
        check=True,
    )
    return [tuple(line.split("|")) for line in result.stdout.splitlines()]


def write_config(path: Path, root: str, max_epochs: int) -> Path:
    """The user's own config file (passed in EXTRA): a tiny deterministic fit on the CPU."""
    path.write_text(
        f"""\
trainer:
  accelerator: cpu
  precision: 32-true
  sync_batchnorm: false
  deterministic: true
  max_epochs: {max_epochs}
  enable_progress_bar: false
model:
  encoder_name: tu-test_resnet
  model_kwargs: {{encoder_depth: 3, decoder_channels: [16, 8, 4]}}
data:
  root: {root}
  batch_size: 1
  augment: {{}}
"""
    )
    return path


def weights(workdir: Path) -> dict[str, torch.Tensor]:
    """The weights of the newest last checkpoint under ``workdir``."""
    path = last_checkpoint(workdir)
    return torch.load(path, map_location="cpu", weights_only=False)["state_dict"]


def stopped_epochs(output: str) -> set[int]:
    """The epochs in which the fit stopped on SIGTERM mid-epoch (their train/loss averages
    only the batches after the restart)."""
    return {int(e) for e in re.findall(r"fit stopped by SIGTERM in epoch (\d+)", output)}


def assert_same_fit(run_dir: Path, reference_dir: Path, output: str, steps: int) -> None:
    """``run_dir`` holds one run, which ended with the uninterrupted run's weights and metrics."""
    assert [p.name for p in run_dir.glob("runs/landslide/*")] == ["version_0"]
    final = torch.load(last_checkpoint(run_dir), map_location="cpu", weights_only=False)
    assert final["global_step"] == steps
    expected, got = weights(reference_dir), final["state_dict"]
    assert all(torch.equal(value, got[key]) for key, value in expected.items())
    (run,) = run_dir.glob("runs/landslide/version_*")
    (reference_run,) = reference_dir.glob("runs/landslide/version_*")
    reference = metrics_of(reference_run)
    partial = {(epoch, "train/loss") for epoch in stopped_epochs(output)}
    compared = {k: v for k, v in reference.items() if k not in partial}
    assert {k: metrics_of(run).get(k) for k in compared} == compared
    # every epoch validated once: a restart from scratch would have appended its epochs again
    assert validated_epochs(run) == sorted({epoch for epoch, _ in reference})


def validated_epochs(run: Path) -> list[int]:
    """The epochs of the validation rows in ``run``'s metrics.csv, in order."""
    with (run / "metrics.csv").open(newline="") as file:
        return [int(row["epoch"]) for row in csv.DictReader(file) if row.get("val/auprc")]


def resumed_start(output: str, job: str) -> str:
    """The output of the job's second start, which must have resumed from a checkpoint."""
    starts = re.findall(rf"job {job} start (\d+)", output)
    assert starts == ["0", "1"], output[-5000:]
    resumed = output.split(f"job {job} start 1")[1]
    assert "no checkpoint under" not in resumed
    assert re.search(r"Restoring states from the checkpoint path at \S+\.ckpt", resumed), resumed
    return resumed


ONE_TASK = ["--nodes=1", "--ntasks-per-node=1", "--cpus-per-task=1", "--gpus-per-node=0"]
TWO_TASKS = ["--nodes=1", "--ntasks-per-node=2", "--cpus-per-task=1", "--gpus-per-node=0"]
# SIGUSR1 between 30 and 60 s after the start: SLURM checks time limits every 30 s and
# sends the signal at the first check that finds less than (30 + 30) s left
SIGNALLED = ["--time=2", "--signal=B:USR1@30"]
TOO_FAST = "(a fit that ended before SLURM's warning needs more epochs on this machine)\n"
# still training a minute after the start on an idle 2-core machine
EPOCHS = 800  # 4000 steps
DDP_EPOCHS = 400


def test_a_job_signalled_before_its_time_limit_requeues_and_resumes_to_the_same_result(
    synthetic_root, tmp_path
):
    config = write_config(tmp_path / "tiny.yaml", synthetic_root, max_epochs=EPOCHS)
    reference = submit(tmp_path / "reference", [*ONE_TASK, "--time=10"], config)
    job = submit(tmp_path / "requeued", [*ONE_TASK, *SIGNALLED], config)
    wait_for([job, reference], requeued_minutes=10)
    output = (tmp_path / "requeued" / f"landslide-lit-{job}.out").read_text()
    first = output.split(f"job {job} start 1")[0]
    # the warning reached the script, which requeued; the requeue's SIGTERM stopped the
    # fit mid-training after a batch, with last.ckpt saved and exit status 143
    assert f"job {job}: time limit near, requeueing" in first, TOO_FAST + output[-5000:]
    assert re.search(r"error: fit stopped by SIGTERM in epoch \d+ after batch \d+", first)
    assert "task 0: Exited with exit code 143" in first
    resumed = resumed_start(output, job)
    assert "resuming from runs/landslide/version_0/checkpoints/last.ckpt" in resumed
    run_dir = tmp_path / "requeued" / "jobs" / job
    reference_dir = tmp_path / "reference" / "jobs" / reference
    assert_same_fit(run_dir, reference_dir, output, EPOCHS * STEPS_PER_EPOCH)
    assert accounting(job) == [
        (job, "REQUEUED", "0:0"),
        (f"{job}.batch", "CANCELLED", "0:15"),  # the script, ended by the requeue's SIGTERM
        (f"{job}.0", "FAILED", "15:0"),  # the fit's exit status 143
        (job, "COMPLETED", "0:0"),
        (f"{job}.batch", "COMPLETED", "0:0"),
        (f"{job}.0", "COMPLETED", "0:0"),
    ]
    assert [state for _, state, _ in accounting(reference)] == ["COMPLETED"] * 3


def test_a_two_task_job_trains_with_ddp_and_tests_as_one_process_does(synthetic_root, tmp_path):
    """srun starts 2 ranks that find each other (ranks, world size, master address from
    SLURM); signalled mid-training, both stop, the job requeues and resumes; its test
    under 2 tasks scores as one process does."""
    config = write_config(tmp_path / "tiny.yaml", synthetic_root, max_epochs=DDP_EPOCHS)
    with config.open("a") as file:
        file.write("  keep: valid\n")  # a validation and a test chip for each rank
    job = submit(tmp_path / "ddp", [*TWO_TASKS, *SIGNALLED], config)
    run_dir = tmp_path / "ddp" / "jobs" / job
    test_command = "srun landslide-lit test --trainer.accelerator cpu --trainer.devices 2 "
    test_command += "--trainer.strategy ddp --data.synthetic true --data.batch_size 2"
    tested = subprocess.run(
        [
            "sbatch",
            "--parsable",
            f"--dependency=afterok:{job}",
            *TWO_TASKS,
            "--time=10",
            f"--chdir={run_dir}",
            "--output=test-%j.out",
            "--wrap",
            test_command,
        ],
        cwd=tmp_path / "ddp",
        env=_job_environment(),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    wait_for([job, tested], requeued_minutes=10)
    output = (tmp_path / "ddp" / f"landslide-lit-{job}.out").read_text()
    first = output.split(f"job {job} start 1")[0]
    for rank in (0, 1):
        assert f"Initializing distributed: GLOBAL_RANK: {rank}, MEMBER: {rank + 1}/2" in first
    assert f"job {job}: time limit near, requeueing" in first, TOO_FAST + output[-5000:]
    if "stopped by SIGTERM during validate" not in first:
        # stopped in training: both ranks after the same batch, last.ckpt saved together
        # (srun says "tasks 0-1: Exited with exit code 143", or one line a task)
        exited = re.findall(r"tasks? ([\d-]+): Exited with exit code 143", first)
        assert exited in (["0-1"], ["0", "1"], ["1", "0"]), output[-5000:]
        pattern = r"error: fit stopped by SIGTERM in epoch \d+ after batch \d+"
        (stop,) = set(re.findall(pattern, first))
        assert first.count(stop) == 2
    # in validation the ranks may disagree on the batch to stop at (docs/cluster.md): one
    # can fail in the next collective; the job is requeued all the same and resumes from
    # the last complete last.ckpt
    resumed = resumed_start(output, job)
    assert "Starting with 2 processes" in resumed
    assert validated_epochs(run_dir / "runs/landslide/version_0") == list(range(DDP_EPOCHS))
    assert [state for _, state, _ in accounting(job)] == [
        *("REQUEUED", "CANCELLED", "FAILED"),
        *("COMPLETED", "COMPLETED", "COMPLETED"),
    ]

    tested_output = (run_dir / f"test-{tested}.out").read_text()
    assert [state for _, state, _ in accounting(tested)] == ["COMPLETED"] * 3, tested_output
    checkpoint = run_dir / re.search(r"using checkpoint (\S+)", tested_output).group(1)
    with (run_dir / "runs/landslide/version_1/metrics.csv").open(newline="") as file:
        logged = {k: v for row in csv.DictReader(file) for k, v in row.items() if v}
    single = scores_of(evaluate(checkpoint, "test", tmp_path), "test")
    assert_same_scores(scores(logged, "test"), single)
