"""Exact AUPRC, PR curves, the chip bootstrap and the EvaluationWriter callback."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from scipy.stats import norm
from sklearn.metrics import average_precision_score, precision_recall_curve

from landslide_lit import precision
from landslide_lit.bootstrap import bootstrap_replicates, chip_bootstrap, paired_difference
from landslide_lit.cli import run
from landslide_lit.errors import ConfigError
from landslide_lit.evaluation import EvaluationWriter, Scores, summarise
from landslide_lit.precision import average_precision, no_skill, precision_recall_points
from landslide_lit.runs import latest_best_checkpoint
from tests.conftest import tiny_fit


def random_case(rng, n, decimals):
    labels = rng.random(n) < 0.15
    labels[0] = True
    scores = np.round(rng.random(n) * 0.7 + labels * 0.3, decimals).astype(np.float32)
    return scores, labels


@pytest.mark.parametrize("decimals", [1, 2, 6])  # 1 and 2: many ties
def test_average_precision_equals_sklearn(decimals):
    rng = np.random.default_rng(decimals)
    for _ in range(10):
        scores, labels = random_case(rng, int(rng.integers(2, 2000)), decimals)
        weights = rng.random(scores.size) * (rng.random(scores.size) > 0.3)
        weights[0] = 1.0
        assert average_precision(scores, labels) == pytest.approx(
            average_precision_score(labels, scores), abs=1e-12
        )
        assert average_precision(scores, labels, weights) == pytest.approx(
            average_precision_score(labels, scores, sample_weight=weights), abs=1e-12
        )


def test_average_precision_edge_cases():
    assert average_precision([0.3, 0.3, 0.3], [1, 0, 0]) == pytest.approx(1 / 3)
    assert average_precision([0.9, 0.1], [1, 0]) == 1.0
    assert np.isnan(average_precision([0.9, 0.1], [0, 0]))
    assert no_skill([1, 0, 0, 0]) == 0.25
    assert no_skill([1, 0, 0, 0], [1, 0, 0, 1]) == 0.5
    with pytest.raises(ValueError, match="NaN"):
        average_precision([np.nan, 0.1], [1, 0])


def test_precision_recall_points_equal_sklearn_and_thin_out():
    rng = np.random.default_rng(0)
    scores, labels = random_case(rng, 500, 2)
    precision, recall, thresholds = precision_recall_points(scores, labels, max_points=None)
    expected_p, expected_r, expected_t = precision_recall_curve(labels, scores)
    # sklearn: increasing thresholds plus the (precision 1, recall 0) end point
    np.testing.assert_allclose(precision, expected_p[:-1][::-1])
    np.testing.assert_allclose(recall, expected_r[:-1][::-1])
    np.testing.assert_allclose(thresholds, expected_t[::-1])
    scores, labels = random_case(rng, 20000, 6)
    precision, recall, _ = precision_recall_points(scores, labels, max_points=200)
    assert len(precision) <= 200 and recall[-1] == 1 and np.all(np.diff(recall) >= 0)


def chips(rng, n=12, size=16, seeds=1):
    target = rng.random((n, size, size)) < rng.uniform(0.02, 0.3, (n, 1, 1))
    target[:, 0, 0] = True
    probabilities = [
        np.clip(rng.normal(0.3 + 0.3 * target, 0.25), 0, 1).round(3).astype(np.float32)
        for _ in range(seeds)
    ]
    return probabilities, target


@pytest.mark.parametrize("dense", [True, False])
def test_bootstrap_replicates_equal_sklearn_on_the_resampled_chips(dense, monkeypatch):
    """Each replicate's weighted cumulative sums give sklearn's AP of the drawn chips."""
    if not dense:
        monkeypatch.setattr(precision, "DENSE_ENTRIES", 0)
    rng = np.random.default_rng(1)
    (probability,), target = chips(rng)
    weights = (rng.random(target.shape) > 0.1).astype(float)
    per_seed, values = bootstrap_replicates(
        probability, target, weights, replicates=8, seed=5, block_bytes=1
    )
    assert per_seed[0] == pytest.approx(
        average_precision_score(target.ravel(), probability.ravel(), sample_weight=weights.ravel())
    )
    n = len(target)
    draws = np.random.default_rng(5).multinomial(n, np.full(n, 1 / n), size=8)
    for counts, value in zip(draws, values, strict=True):
        drawn = np.repeat(np.arange(n), counts)
        expected = average_precision_score(
            target[drawn].ravel(), probability[drawn].ravel(), sample_weight=weights[drawn].ravel()
        )
        assert value == pytest.approx(expected, abs=1e-12)


def test_interval_contains_the_estimate_and_repeats():
    rng = np.random.default_rng(2)
    (probability,), target = chips(rng, n=30)
    interval = chip_bootstrap(probability, target, replicates=300)
    assert interval.low < interval.estimate < interval.high
    assert interval.estimate == pytest.approx(
        average_precision_score(target.ravel(), probability.ravel())
    )
    assert chip_bootstrap(probability, target, replicates=300) == interval
    assert chip_bootstrap(probability, target, replicates=300, seed=1) != interval
    assert interval.chips == 30 and interval.replicates == 300 and interval.failed == 0
    none = chip_bootstrap(probability, target, replicates=0)
    assert np.isnan(none.low) and none.estimate == interval.estimate


def test_several_seeds_are_resampled_jointly():
    rng = np.random.default_rng(3)
    probabilities, target = chips(rng, n=20, seeds=3)
    joint = chip_bootstrap(probabilities, target, replicates=200)
    singles = [chip_bootstrap(p, target, replicates=200) for p in probabilities]
    assert joint.per_seed == tuple(s.estimate for s in singles)
    assert joint.estimate == pytest.approx(np.mean(joint.per_seed))
    assert joint.low <= joint.estimate <= joint.high
    # same draws for every seed: the replicates of the mean are the means of the replicates
    _, mean_values = bootstrap_replicates(probabilities, target, replicates=50)
    each = [bootstrap_replicates(p, target, replicates=50)[1] for p in probabilities]
    np.testing.assert_allclose(mean_values, np.mean(each, 0))
    assert paired_difference(probabilities, probabilities, target, replicates=50) == (0, 0, 0)
    better = [np.where(target, 1.0, p).astype(np.float32) for p in probabilities]
    difference, low, high = paired_difference(better, probabilities, target, replicates=100)
    assert 0 < low <= difference <= high


def test_bca_interval_is_efrons_formula_with_the_chip_jackknife():
    """BCa from the replicates and the leave-one-chip-out AUPRCs, written out by hand."""
    rng = np.random.default_rng(6)
    (probability,), target = chips(rng, n=15)
    interval = chip_bootstrap(probability, target, replicates=400, seed=3)
    assert interval.method == "bca" and interval.note is None
    _, values = bootstrap_replicates(probability, target, replicates=400, seed=3)
    estimate = average_precision_score(target.ravel(), probability.ravel())
    left_out = [(np.delete(target, i, 0), np.delete(probability, i, 0)) for i in range(15)]
    jackknife = np.array([average_precision_score(t.ravel(), p.ravel()) for t, p in left_out])
    z0 = norm.ppf(((values < estimate).sum() + (values <= estimate).sum()) / (2 * values.size))
    u = jackknife.mean() - jackknife
    acceleration = (u**3).sum() / (6 * ((u**2).sum()) ** 1.5)
    z = norm.ppf([0.025, 0.975])
    quantiles = norm.cdf(z0 + (z0 + z) / (1 - acceleration * (z0 + z)))
    expected = np.quantile(values, quantiles)
    assert (interval.low, interval.high) == pytest.approx(tuple(expected), abs=1e-10)
    percentile = chip_bootstrap(probability, target, replicates=400, seed=3, method="percentile")
    assert (percentile.low, percentile.high) == pytest.approx(
        tuple(np.percentile(values, [2.5, 97.5])), abs=1e-12
    )
    assert (percentile.low, percentile.high) != (interval.low, interval.high)


@pytest.mark.parametrize("method", ["bca", "percentile"])
def test_degenerate_cases_give_a_note_not_a_warning(method):
    rng = np.random.default_rng(7)
    (probability,), target = chips(rng, n=6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        same = chip_bootstrap(
            np.repeat(probability[:1], 6, 0), np.repeat(target[:1], 6, 0), method=method
        )
        assert same.low == same.high == same.estimate and "do not vary" in same.note
        one = chip_bootstrap(probability[:1], target[:1], method=method)
        assert one.low == one.high == one.estimate and "one chip" in one.note
        none = chip_bootstrap(probability, np.zeros_like(target), method=method)
        assert np.isnan([none.estimate, none.low, none.high]).all()
        assert "no landslide pixel" in none.note
        alone = target.copy()
        alone[1:] = False  # every landslide pixel in one chip: no jackknife without it
        lonely = chip_bootstrap(probability, alone, replicates=200, method=method)
        if method == "bca":
            assert np.isnan(lonely.low) and "percentile" in lonely.note
        else:
            assert lonely.low < lonely.high and lonely.note is None
        assert paired_difference(probability, probability, target, method=method) == (0, 0, 0)


def test_metrics_record_the_bootstrap_method():
    rng = np.random.default_rng(8)
    (probability,), target = chips(rng, n=8)
    origin = np.stack([np.arange(8) * 16, np.zeros(8, int)], 1)
    scores = Scores(probability, target, np.ones_like(target), origin)
    assert summarise(scores, replicates=50)["bootstrap"]["method"] == "BCa"
    percentile = summarise(scores, replicates=50, method="percentile")
    assert percentile["bootstrap"]["method"] == "percentile"
    assert percentile["bootstrap"]["note"] is None
    with pytest.raises(ConfigError, match="bootstrap_method='basic': use 'bca' or 'percentile'"):
        EvaluationWriter(bootstrap_method="basic")


def test_scores_concatenate_in_origin_order_and_round_trip(tmp_path):
    rng = np.random.default_rng(4)
    (probability,), target = chips(rng, n=4, size=2)
    origin = np.array([[128, 0], [0, 128], [0, 0], [128, 128]])
    parts = [
        Scores(probability[i : i + 2], target[i : i + 2], target[i : i + 2], origin[i : i + 2])
        for i in (0, 2)
    ]
    joined = Scores.concatenate(parts[::-1])
    assert joined.origin.tolist() == [[0, 0], [0, 128], [128, 0], [128, 128]]
    np.testing.assert_array_equal(joined.probability[0], probability[2])
    loaded = Scores.load(joined.save(tmp_path / "scores.npz"))
    for name in ("probability", "target", "valid", "origin"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(joined, name))
    assert joined.most_affected(1).tolist() == [int(np.argmax(joined.target.sum((1, 2))))]


# -- the callback, through the command line --------------------------------------------


# synthetic is never restored from a checkpoint: each evaluation asks for it
SYNTHETIC = ["--data.synthetic=true"]


@pytest.fixture(scope="module")
def fitted(synthetic_root, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("evaluation_run")
    tiny_fit(workdir, synthetic_root)
    return workdir, latest_best_checkpoint(workdir)


def test_test_writes_metrics_curve_and_panels_next_to_its_logs(fitted, monkeypatch):
    workdir, checkpoint = fitted
    monkeypatch.chdir(workdir)
    cli = run(["test", "--region", "talakmau", "--trainer.enable_progress_bar=false", *SYNTHETIC])
    folder = workdir / cli.trainer.log_dir / "evaluation" / "test_talakmau"
    metrics = json.loads((folder / "metrics.json").read_text())
    logged = cli.trainer.callback_metrics
    assert metrics["auprc"] == pytest.approx(float(logged["test/talakmau/auprc"]), abs=1e-6)
    assert metrics["no_skill"] == pytest.approx(float(logged["test/talakmau/no_skill"]))
    low, high = metrics["auprc_ci95"]
    assert low <= metrics["auprc"] <= high and metrics["bootstrap"]["method"] == "BCa"
    assert metrics["checkpoint"] == str(checkpoint.resolve())
    assert metrics["chips"] == len(cli.datamodule.chips(cli.datamodule.test_region))
    assert metrics["pixels"] == metrics["chips"] * 128 * 128
    assert metrics["split"] == "test" and metrics["synthetic"] is True
    # thresholds of these chips, and the validation thresholds the checkpoint keeps
    assert metrics["thresholds"]["operating_points"]["max_f1"]["reachable"]
    assert metrics["checkpoint_thresholds"]["split"] == "val"
    for name in ("pr_curve.png", "predictions.png", "scores.npz"):
        assert (folder / name).stat().st_size > 0
    scores = Scores.load(folder / "scores.npz")
    assert average_precision(scores.probability, scores.target) == pytest.approx(metrics["auprc"])


def test_validate_without_logger_writes_to_the_default_root_dir(fitted, tmp_path, monkeypatch):
    workdir, checkpoint = fitted
    monkeypatch.chdir(workdir)
    cli = run(
        [
            "validate",
            "--ckpt_path",
            str(checkpoint),
            "--trainer.logger=false",
            f"--trainer.default_root_dir={tmp_path}",
            "--trainer.enable_progress_bar=false",
            *SYNTHETIC,
        ]
    )
    folder = tmp_path / "evaluation" / "val_hokkaido"
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["split"] == "validation"
    assert metrics["chips"] == len(cli.datamodule.splits()["val"])
    # the logged validation AUPRC is binned (reads low by up to ~1.3e-4); ours is exact
    assert metrics["auprc"] == pytest.approx(
        float(cli.trainer.callback_metrics["val/hokkaido/auprc"]), abs=2e-4
    )
    scores = Scores.load(folder / "scores.npz")
    assert metrics["auprc"] == pytest.approx(
        average_precision_score(scores.target.ravel(), scores.probability.ravel())
    )


def test_ddp_spawn_writes_what_one_process_writes(fitted, tmp_path, monkeypatch):
    """Two processes gather their chips to rank 0: the same metrics.json and scores."""
    workdir, checkpoint = fitted
    monkeypatch.chdir(workdir)
    common = [
        "test",
        "--ckpt_path",
        str(checkpoint),
        "--region",
        "talakmau",
        "--trainer.logger=false",
        "--trainer.enable_progress_bar=false",
        "--data.batch_size=2",
        "--trainer.accelerator=cpu",
        *SYNTHETIC,
    ]
    run([*common, f"--trainer.default_root_dir={tmp_path / 'one'}"])
    spawned = ["--trainer.strategy=ddp_spawn", "--trainer.devices=2"]
    run([*common, *spawned, f"--trainer.default_root_dir={tmp_path / 'two'}"])
    one, two = (tmp_path / name / "evaluation" / "test_talakmau" for name in ("one", "two"))
    metrics = [json.loads((folder / "metrics.json").read_text()) for folder in (one, two)]
    for key in ("chips", "pixels", "landslide_pixels", "no_skill"):
        assert metrics[0][key] == metrics[1][key]
    assert metrics[1]["auprc"] == pytest.approx(metrics[0]["auprc"], abs=1e-6)
    assert metrics[1]["auprc_ci95"] == pytest.approx(metrics[0]["auprc_ci95"], abs=1e-6)
    scores = [Scores.load(folder / "scores.npz") for folder in (one, two)]
    np.testing.assert_array_equal(scores[0].origin, scores[1].origin)
    np.testing.assert_allclose(scores[0].probability, scores[1].probability, atol=1e-6)
