"""Data-parallel runs: evaluation that gives one process's answer, reproducible training.

The datamodule shards its own loaders, so every process sees a share fixed by the run
seed, the epoch and its rank alone:

- evaluation (validate, test, predict): :class:`EvaluationShard` gives rank ``r`` the
  chips ``r, r + world, ...``; no chip is repeated or dropped, so metrics gathered over
  the ranks equal those of a single process (Lightning's own ``DistributedSampler``
  pads uneven sets with repeated chips); each rank predicts its own chips only;
- training: :func:`training_shard`, torch's ``DistributedSampler`` shuffled by
  ``(run seed, epoch)``; uneven sets are padded with up to ``world - 1`` chips from the
  start of the epoch's permutation, so every rank runs the same number of steps.

Both are ``DistributedSampler`` instances, which Lightning leaves in place whatever
``Trainer(use_distributed_sampler=...)`` says.

Augmentations draw from torch's global RNG, which ``seed_everything`` seeds alike on
every rank. :func:`seeded_rng` forks it around each augmented batch and seeds it from
:func:`batch_seed` (run seed, global rank, training batches seen so far): draws differ
between ranks, repeat run after run, resume with a checkpoint and leave the global RNG
as it was.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sized
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from lightning.fabric.utilities.rank_zero import rank_zero_only
from torch.utils.data import DataLoader, DistributedSampler

from landslide_lit.errors import ConfigError

__all__ = [
    "EvaluationShard",
    "ResumableLoader",
    "TrainingShard",
    "batch_seed",
    "fit_progress",
    "on_rank_zero",
    "rank_and_world",
    "run_seed",
    "seeded_rng",
    "training_batch_seed",
    "training_shard",
]


def run_seed() -> int:
    """The run's seed: ``PL_GLOBAL_SEED``, which ``seed_everything`` sets on every rank, or 0.

    Without a seed every rank must still agree on the training order, hence the fixed
    fallback (Lightning's own distributed sampler falls back to 0 too).
    """
    return int(os.environ.get("PL_GLOBAL_SEED", 0))


def rank_and_world(trainer: Any) -> tuple[int, int]:
    """``(global_rank, world_size)`` of a trainer; ``(0, 1)`` without one."""
    if trainer is None:
        return 0, 1
    return trainer.global_rank, trainer.world_size


def on_rank_zero() -> bool:
    """Whether this process is global rank 0, which alone says what every rank would repeat.

    Lightning's rank: read from the launcher's environment (``RANK``, ``LOCAL_RANK``,
    ``SLURM_PROCID``) at import, set by the strategy once the processes are started.
    """
    return getattr(rank_zero_only, "rank", 0) == 0


class EvaluationShard(DistributedSampler):
    """Rank ``rank``'s chips of an evaluation set: ``rank, rank + world, ...`` in order.

    Shards differ in length by at most one and together hold every index exactly once.
    Every rank needs at least one chip: a rank without batches would not join the
    collective reductions of the epoch's metrics and the others would wait forever.
    ``fix``: for predict windows, how to get more of them (said after the devices).
    """

    def __init__(self, dataset: Sized, num_replicas: int = 1, rank: int = 0, fix: str = "") -> None:
        if len(dataset) < num_replicas:
            what = "predict windows" if fix else "evaluation chips"
            raise ConfigError(
                f"{len(dataset)} {what} cannot be shared by {num_replicas} "
                "processes: every process needs at least one; use fewer devices "
                f"(--trainer.devices, --trainer.num_nodes){fix}"
            )
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False)
        self.num_samples = len(range(rank, len(dataset), num_replicas))
        self.total_size = len(dataset)

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.total_size, self.num_replicas))


class TrainingShard(DistributedSampler):
    """Rank ``rank``'s training chips: a permutation seeded ``seed + epoch``, dealt round-robin.

    Uneven sets are padded (never dropped): the first ``-len % world`` chips of the
    epoch's permutation are seen twice that epoch. ``skip`` items are left out of the
    next epoch only, to pick up an epoch where a checkpoint left it.
    """

    def __init__(self, dataset: Sized, num_replicas: int = 1, rank: int = 0, seed: int = 0):
        super().__init__(
            dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=False
        )
        self.skip = 0

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())
        start, self.skip = self.skip, 0
        return iter(indices[start:])


def training_shard(
    dataset: Sized, num_replicas: int = 1, rank: int = 0, seed: int = 0
) -> TrainingShard:
    """The training sampler of rank ``rank`` (see :class:`TrainingShard`)."""
    return TrainingShard(dataset, num_replicas=num_replicas, rank=rank, seed=seed)


class ResumableLoader(DataLoader):
    """A training loader that resumes mid-epoch exactly where its checkpoint was taken.

    Lightning saves and restores the state of loaders that have ``state_dict``: here
    the batches already done this epoch, which the next epoch's sampler skips (without
    state Lightning would replay the epoch's first batches). ``__iter__`` sets the
    sampler's epoch itself, because worker processes draw their indices before
    Lightning calls ``set_epoch``.

    Args:
        progress: returns (epoch, batches done in it) of the running fit.
    """

    def __init__(self, *args: Any, progress: Callable[[], tuple[int, int]], **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.progress = progress

    def state_dict(self) -> dict[str, int]:
        return {"batches_done": self.progress()[1]}

    def load_state_dict(self, state: dict[str, int]) -> None:
        done = int(state["batches_done"])
        self.sampler.skip = done * self.batch_size if done < len(self) else 0

    def __iter__(self) -> Iterator[Any]:
        self.sampler.set_epoch(self.progress()[0])
        return super().__iter__()


def fit_progress(trainer: Any) -> tuple[int, int]:
    """(epoch, batches done in it) of ``trainer``'s running fit; (0, 0) outside one."""
    loop = getattr(trainer, "fit_loop", None)
    if loop is None:
        return 0, 0
    return (
        loop.epoch_progress.current.processed,
        loop.epoch_loop.batch_progress.current.processed,
    )


def training_batch_seed(trainer: Any) -> int:
    """Seed of a training batch's draws: run seed, global rank, batches seen before it.

    The count is the fit loop's (restored from checkpoints); a trainer-like object
    without a rank or a fit loop counts as rank 0 from batch 0.
    """
    rank = getattr(trainer, "global_rank", 0)
    loop = getattr(trainer, "fit_loop", None)
    seen = 0 if loop is None else loop.epoch_loop.batch_progress.total.ready
    return batch_seed(run_seed(), rank, seen)


def batch_seed(seed: int, rank: int, batches_seen: int) -> int:
    """A 64-bit seed for one training batch, well mixed from its three non-negative inputs."""
    return int(np.random.SeedSequence((seed, rank, batches_seen)).generate_state(1, np.uint64)[0])


@contextmanager
def seeded_rng(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch's CPU generator and ``device``'s (when CUDA) inside; restore both after.

    Only the batch's own CUDA device is forked and seeded; on the CPU this costs a
    copy of the 5 kB generator state. Other accelerators' generators are left alone.
    """
    index = None
    if device.type == "cuda":
        index = torch.cuda.current_device() if device.index is None else device.index
    with torch.random.fork_rng(devices=[] if index is None else [index], device_type="cuda"):
        torch.random.default_generator.manual_seed(seed)
        if index is not None:
            torch.cuda.default_generators[index].manual_seed(seed)
        yield
