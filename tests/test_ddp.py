"""Data-parallel runs give the single-process answer (2 CPU processes, gloo).

Evaluation is sharded without repeats, so validation and test metrics under DDP equal a
single process's for the same checkpoint; training shards are disjoint and augmentation
draws differ between ranks yet repeat for a seed; binned validation AUPRC stays close to
the exact one.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import numpy as np
import pytest
import torch
import xarray as xr
from lightning.pytorch.trainer.states import RunningStage
from torchmetrics.classification import BinaryAUROC, BinaryAveragePrecision

from landslide_lit.augment import SarAugmentation
from landslide_lit.cli import run
from landslide_lit.data.datamodule import LandslideDataModule
from landslide_lit.distributed import EvaluationShard, training_shard
from landslide_lit.evaluation import Scores
from landslide_lit.metrics import BinnedAUROC, BinnedAveragePrecision
from landslide_lit.runs import latest_best_checkpoint
from landslide_lit.thresholds import histogram_operating_points
from tests.conftest import TINY_MODEL

TWO_PROCESSES = ["--trainer.accelerator=cpu", "--trainer.devices=2"]
# Every valid chip in batches of 2: 3 validation chips, 9 test chips, uneven over 2 ranks.
# synthetic is never restored from a checkpoint: an evaluation asks for it itself
EVALUATION = ["--trainer.enable_progress_bar=false", "--data.batch_size=2", "--data.synthetic=true"]
NAMES = ("auprc", "auroc", "f1", "iou", "no_skill", "loss")


class RecordChips(L.Callback):
    """Saves the origins of the chips each rank saw to ``folder/<stage>-<rank>.pt`` (and,
    after fit, each rank's validation thresholds to ``folder/thresholds-<rank>.json``)."""

    def __init__(self, folder: str) -> None:
        self.folder = Path(folder)
        self.seen: dict[str, list[torch.Tensor]] = defaultdict(list)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.seen["train"].append(batch["origin"])

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dl_idx=0) -> None:
        if not trainer.sanity_checking:
            self.seen["val"].append(batch["origin"])

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dl_idx=0) -> None:
        self.seen["test"].append(batch["origin"])

    def teardown(self, trainer, pl_module, stage: str) -> None:
        for name, origins in self.seen.items():
            torch.save(torch.cat(origins), self.folder / f"{name}-{trainer.global_rank}.pt")
        if stage == "fit":
            path = self.folder / f"thresholds-{trainer.global_rank}.json"
            path.write_text(json.dumps(pl_module.thresholds))


def recorder(folder: Path) -> str:
    spec = {"class_path": f"{__name__}.RecordChips", "init_args": {"folder": str(folder)}}
    return f"--trainer.callbacks+={json.dumps(spec)}"


def seen_by_rank(folder: Path, stage: str) -> list[set[tuple[int, int]]]:
    """The chip origins each rank saw in ``stage``, checking that no rank saw one twice."""
    ranks = []
    for rank in (0, 1):
        origins = [tuple(o) for o in torch.load(folder / f"{stage}-{rank}.pt").tolist()]
        assert len(set(origins)) == len(origins), f"rank {rank} saw a {stage} chip twice"
        ranks.append(set(origins))
    return ranks


def scores(metrics: dict, prefix: str) -> dict[str, float]:
    """``{name: value}`` of the (one) region's ``prefix/<region>/<name>`` metrics."""
    parts = {key: key.split("/") for key in metrics}
    return {
        part[2]: float(metrics[key])
        for key, part in parts.items()
        if len(part) == 3 and part[0] == prefix and part[2] in NAMES
    }


def scores_of(cli, prefix: str) -> dict[str, float]:
    return scores(cli.trainer.callback_metrics, prefix)


def assert_same_scores(got: dict[str, float], expected: dict[str, float]) -> None:
    assert set(got) == set(expected) == set(NAMES)
    for name in NAMES:
        assert got[name] == pytest.approx(expected[name], abs=1e-6), name


@pytest.fixture(scope="module")
def ddp_fit(synthetic_root, tmp_path_factory):
    """A one-epoch fit on two spawned processes: its folder (with the chips each rank
    saw), its CLI and its best checkpoint."""
    workdir = tmp_path_factory.mktemp("ddp_fit")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(workdir)
        cli = run(
            [
                "fit",
                "--config",
                "demo.yaml",
                f"--data.root={synthetic_root}",
                "--data.keep=valid",
                "--trainer.max_epochs=1",
                "--trainer.limit_train_batches=2",
                "--trainer.strategy=ddp_spawn",
                *TWO_PROCESSES,
                *EVALUATION,
                *TINY_MODEL,
                recorder(workdir),
            ]
        )
    return workdir, cli, latest_best_checkpoint(workdir)


def evaluate(checkpoint: Path, command: str, folder: Path, *extra: str):
    """Run ``command`` on ``checkpoint`` with ``folder`` as working directory; the CLI."""
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)
        return run([command, "--ckpt_path", str(checkpoint), *EVALUATION, *extra])


def test_ddp_fit_trains_on_disjoint_shards_and_validates_every_chip_once(ddp_fit, tmp_path):
    workdir, fit, checkpoint = ddp_fit
    train = seen_by_rank(workdir, "train")
    assert len(train[0]) == len(train[1]) == 4 and not train[0] & train[1]
    val = seen_by_rank(workdir, "val")
    assert not val[0] & val[1]
    assert len(val[0] | val[1]) == len(fit.datamodule.splits()["val"]) == 3
    # validation inside the DDP fit scored the checkpoint as one process does
    single = evaluate(checkpoint, "validate", tmp_path)
    assert_same_scores(scores_of(fit, "val"), scores_of(single, "val"))


def test_ddp_fit_stores_the_thresholds_of_every_ranks_pixels(ddp_fit, tmp_path):
    """Every rank chose the same operating points, from the histogram of all ranks' chips."""
    workdir, _, checkpoint = ddp_fit
    ranks = [json.loads((workdir / f"thresholds-{r}.json").read_text()) for r in (0, 1)]
    stored = torch.load(checkpoint, map_location="cpu", weights_only=True)["thresholds"]
    assert ranks[0] == ranks[1] == stored and stored["operating_points"]
    evaluate(checkpoint, "validate", tmp_path)
    (folder,) = tmp_path.glob("runs/landslide/version_*/evaluation/val_hokkaido")
    pixels = Scores.load(folder / "scores.npz")
    histogram = BinnedAveragePrecision()
    histogram.update(torch.from_numpy(pixels.probability), torch.from_numpy(pixels.target))
    found = histogram_operating_points(histogram.counts.numpy(), histogram.lower_edges())
    assert stored["operating_points"] == {r: p.as_dict() for r, p in found.points.items()}


@pytest.mark.parametrize("command", ["validate", "test"])
def test_ddp_spawn_evaluation_equals_one_process(ddp_fit, command, tmp_path):
    checkpoint = ddp_fit[2]
    prefix = "val" if command == "validate" else "test"
    exact = "--model.val_auprc=exact"  # the gathered per-pixel states, in validation too
    single = evaluate(checkpoint, command, tmp_path, exact)
    ddp = ["--trainer.strategy=ddp_spawn", *TWO_PROCESSES, recorder(tmp_path)]
    spawned = evaluate(checkpoint, command, tmp_path, exact, *ddp)
    assert_same_scores(scores_of(spawned, prefix), scores_of(single, prefix))
    ranks = seen_by_rank(tmp_path, prefix)
    n = len(single.datamodule.datasets[prefix][0])
    assert not ranks[0] & ranks[1] and len(ranks[0] | ranks[1]) == n
    assert (len(ranks[0]), len(ranks[1])) == ((n + 1) // 2, n // 2)


def test_ddp_command_in_a_subprocess_equals_one_process(ddp_fit, tmp_path):
    checkpoint = ddp_fit[2]
    single = scores_of(evaluate(checkpoint, "test", tmp_path), "test")
    command = [sys.executable, "-m", "landslide_lit", "test", "--ckpt_path", str(checkpoint)]
    command += ["--trainer.strategy=ddp", *TWO_PROCESSES, *EVALUATION]
    folder = tmp_path / "ddp"
    folder.mkdir()
    done = subprocess.run(command, cwd=folder, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    (metrics_csv,) = folder.glob("runs/landslide/version_*/metrics.csv")
    with metrics_csv.open() as file:
        logged = {k: v for row in csv.DictReader(file) for k, v in row.items() if v}
    assert_same_scores(scores(logged, "test"), single)


# -- samplers -----------------------------------------------------------------


@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_evaluation_shards_hold_every_chip_once(world):
    for n in range(world, 12):
        shards = [EvaluationShard(range(n), world, rank) for rank in range(world)]
        indices = [i for shard in shards for i in shard]
        assert sorted(indices) == list(range(n))
        assert [len(list(s)) for s in shards] == [len(s) for s in shards]
        assert max(map(len, shards)) - min(map(len, shards)) <= 1
    with pytest.raises(ValueError, match="evaluation chips .* at least one"):
        EvaluationShard(range(world - 1), world, 0)
    fix = ", or smaller windows (--data.predict_window, now 512)"
    with pytest.raises(ValueError, match=r"predict windows .*--data.predict_window, now 512\)$"):
        EvaluationShard(range(world - 1), world, 0, fix)


def test_training_order_depends_only_on_seed_epoch_and_rank():
    def order(seed: int, epoch: int, rank: int, world: int = 2) -> list[int]:
        sampler = training_shard(range(11), world, rank, seed=seed)
        sampler.set_epoch(epoch)
        return list(sampler)

    assert order(42, 3, 0) == order(42, 3, 0) and order(42, 3, 0) != order(42, 4, 0)
    assert order(42, 3, 0) != order(7, 3, 0)
    both = order(42, 3, 0) + order(42, 3, 1)
    assert len(both) == 12 and set(both) == set(range(11))  # one chip padded, none dropped
    assert sorted(order(42, 3, 0, world=1)) == list(range(11))


# -- augmentation -------------------------------------------------------------


def training_trainer(rank: int, batches_seen: int) -> SimpleNamespace:
    """The parts of a fitting Trainer the datamodule reads."""
    progress = SimpleNamespace(total=SimpleNamespace(ready=batches_seen))
    return SimpleNamespace(
        training=True,
        state=SimpleNamespace(stage=RunningStage.TRAINING),
        global_rank=rank,
        fit_loop=SimpleNamespace(epoch_loop=SimpleNamespace(batch_progress=progress)),
    )


def test_augmentation_draws_differ_between_ranks_and_repeat_for_a_seed(synthetic_root, monkeypatch):
    dm = LandslideDataModule(root=synthetic_root, synthetic=True, augment=SarAugmentation())
    chips = dm.chips(dm.train_region)
    raw = {"image": chips.images[:4], "target": chips.targets[:4], "origin": chips.origins[:4]}

    def augmented(seed: int, rank: int, batches_seen: int) -> torch.Tensor:
        monkeypatch.setenv("PL_GLOBAL_SEED", str(seed))
        dm.trainer = training_trainer(rank, batches_seen)
        torch.manual_seed(rank * 1000 + batches_seen)  # the global RNG must not matter
        state = torch.get_rng_state()
        image = dm.on_after_batch_transfer(dict(raw), 0)["image"]
        assert torch.equal(torch.get_rng_state(), state)  # and is left as it was
        return image

    first = augmented(seed=42, rank=0, batches_seen=5)
    assert torch.equal(first, augmented(seed=42, rank=0, batches_seen=5))
    for other in (augmented(42, 1, 5), augmented(42, 0, 6), augmented(7, 0, 5)):
        assert not torch.equal(first, other)


# -- binned AUPRC -------------------------------------------------------------


def skilled_scores(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Probabilities of a confident, skilled model over ``n`` pixels, 5 % positive."""
    gen = torch.Generator().manual_seed(seed)
    target = (torch.rand(n, generator=gen) < 0.05).long()
    logit = 3 * (2.5 * target + torch.randn(n, generator=gen)) - 3
    return logit.sigmoid(), target


def computed(metric, preds: torch.Tensor, target: torch.Tensor) -> float:
    metric.update(preds, target)
    return metric.compute().item()


def test_binned_auprc_and_auroc_are_close_to_exact():
    preds, target = skilled_scores(1_000_000, seed=0)
    exact = computed(BinaryAveragePrecision(thresholds=None), preds, target)
    binned = computed(BinnedAveragePrecision(), preds, target)
    assert exact - 1.5e-4 <= binned <= exact  # reads low: ties within a bin
    exact_roc = computed(BinaryAUROC(thresholds=None), preds, target)
    assert computed(BinnedAUROC(), preds, target) == pytest.approx(exact_roc, abs=5e-6)
    # scores in distinct bins (ties included) give the exact values
    rounded = (preds * 20).round() / 20
    assert computed(BinnedAveragePrecision(), rounded, target) == pytest.approx(
        computed(BinaryAveragePrecision(thresholds=None), rounded, target), abs=1e-6
    )


def test_binned_states_add_up_across_ranks():
    preds, target = skilled_scores(10_000, seed=1)
    whole, halves = BinnedAveragePrecision(), [BinnedAveragePrecision() for _ in range(2)]
    whole.update(preds, target)
    for rank, metric in enumerate(halves):
        metric.update(preds[rank::2], target[rank::2])
    assert torch.equal(halves[0].counts + halves[1].counts, whole.counts)


def test_ddp_predict_writes_one_map_equal_to_one_process(ddp_fit, tmp_path):
    """Windows sharded over 2 ranks, spilled per rank, merged band by band by all-reduce."""
    checkpoint = ddp_fit[2]
    maps, summaries = {}, {}
    for name, extra in (("single", []), ("ddp", ["--trainer.strategy=ddp_spawn", *TWO_PROCESSES])):
        folder = tmp_path / name
        folder.mkdir()
        # 128-pixel windows: several per rank on this small region (512 would give one)
        evaluate(
            checkpoint, "predict", folder, "--region=talakmau", "--data.predict_window=128", *extra
        )
        (path,) = folder.glob("runs/landslide/version_*/predictions/talakmau_*.nc")
        with xr.open_dataset(path) as written:
            maps[name] = written["landslide_probability"].values
        summaries[name] = json.loads(path.with_suffix(".json").read_text())
        assert not list(path.parent.glob(".*partial*"))  # spill files removed
    np.testing.assert_allclose(maps["ddp"], maps["single"], atol=1e-6)
    np.testing.assert_array_equal(np.isnan(maps["ddp"]), np.isnan(maps["single"]))
    assert np.isfinite(maps["ddp"]).any()
    assert summaries["ddp"]["auprc"] == pytest.approx(summaries["single"]["auprc"], abs=1e-6)
