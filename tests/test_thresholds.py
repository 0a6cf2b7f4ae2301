"""Operating points chosen on validation, kept with the model, and the threshold a map uses."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from landslide_lit import figures, precision
from landslide_lit.bootstrap import chip_draws
from landslide_lit.cli import run
from landslide_lit.errors import ConfigError
from landslide_lit.evaluation import EvaluationWriter, Scores
from landslide_lit.metrics import BinnedAveragePrecision, ProbabilityHistogram
from landslide_lit.module import LandslideSegmenter
from landslide_lit.precision import SortedPixels
from landslide_lit.runs import latest_best_checkpoint
from landslide_lit.thresholds import (
    MAX_F1,
    RULES,
    ChosenThreshold,
    histogram_operating_points,
    operating_point_intervals,
    operating_points,
    resolve_threshold,
    summarise_thresholds,
)
from tests.conftest import tiny_fit
from tests.test_module import RegionDataModule, make_model, make_trainer


def brute_force(scores, labels, weights=None) -> dict[str, tuple[float, float, float, float]]:
    """Each rule's (threshold, precision, recall, F1) by trying every distinct score."""
    weights = np.ones(len(scores)) if weights is None else weights
    keep = weights > 0
    scores, labels, weights = scores[keep], labels[keep].astype(bool), weights[keep]
    positives = (weights * labels).sum()
    rows = []
    for t in np.unique(scores)[::-1]:  # decreasing: ties keep the highest threshold
        tp = (weights * labels * (scores >= t)).sum()
        fp = (weights * ~labels * (scores >= t)).sum()
        if tp > 0:
            rows.append((float(t), tp / (tp + fp), tp / positives, 2 * tp / (tp + fp + positives)))
    best = {MAX_F1: max(rows, key=lambda r: r[3])} if rows else {}
    for target in (0.5, 0.7, 0.9):
        reaching = [r for r in rows if r[1] >= target]
        if reaching:  # highest recall, then highest precision (the highest threshold)
            best[f"precision@{target:g}"] = max(reaching, key=lambda r: (r[2], r[1]))
    return best


def assert_points_equal(found, expected) -> None:
    assert set(found.points) == set(expected)
    for rule, values in expected.items():
        point = found.points[rule]
        got = (point.threshold, point.precision, point.recall, point.f1)
        assert got == pytest.approx(values, abs=1e-12), rule


def test_operating_points_of_a_hand_made_curve():
    # thresholds 0.9, 0.8, 0.6 find 1, 2, 3 of the 3 landslide pixels; 0.7 one false alarm
    found = operating_points(np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4]), np.array([1, 1, 0, 1, 0, 0]))
    assert found.points[MAX_F1].threshold == 0.6
    assert found.points[MAX_F1].f1 == pytest.approx(6 / 7)
    assert found.points["precision@0.7"].threshold == 0.6  # precision 0.75, recall 1
    assert found.points["precision@0.9"].threshold == 0.8  # precision 1, recall 2/3
    assert found.max_precision == 1.0
    none = operating_points(np.array([0.9, 0.1]), np.array([0, 0]))
    assert none.points == {} and math.isnan(none.max_precision)


@pytest.mark.parametrize("decimals", [1, 2, 6])  # 1 and 2: many ties
def test_operating_points_equal_a_brute_force_sweep(decimals):
    rng = np.random.default_rng(decimals)
    for _ in range(20):
        n = int(rng.integers(2, 400))
        labels = rng.random(n) < rng.uniform(0.05, 0.5)
        labels[0] = True
        scores = np.round(rng.random(n) * 0.6 + labels * rng.uniform(0, 0.5), decimals)
        weights = (rng.random(n) > 0.2).astype(float)
        assert_points_equal(operating_points(scores, labels), brute_force(scores, labels))
        assert_points_equal(
            operating_points(scores, labels, weights), brute_force(scores, labels, weights)
        )
        found = operating_points(scores, labels)
        for rule in set(RULES) - set(found.points):  # unreached: above the highest precision
            assert float(rule.split("@")[1]) > found.max_precision


def histogram_of(scores: np.ndarray, labels: np.ndarray) -> ProbabilityHistogram:
    histogram = BinnedAveragePrecision()
    histogram.update(torch.from_numpy(scores), torch.from_numpy(labels))
    return histogram


def test_histogram_points_are_those_of_scores_rounded_down_to_a_bin_edge():
    rng = np.random.default_rng(0)
    labels = rng.random(200_000) < 0.1
    scores = (1 / (1 + np.exp(-rng.normal(-2 + 3 * labels, 1.5)))).astype(np.float32)
    histogram = histogram_of(scores, labels)
    edges = histogram.lower_edges()
    found = histogram_operating_points(histogram.counts.numpy(), edges)
    # each pixel's bin, as the histogram finds it (float32 logits), and its lower edge
    span, bins = histogram.logit_range, histogram.bins
    logit = torch.logit(torch.from_numpy(scores)).clamp(-span, span)
    index = ((logit + span) * (bins / (2 * span))).long().clamp(0, bins - 1).numpy()
    assert found == operating_points(edges[index], labels)
    # F1 is flat near its maximum: the max-F1 threshold may move, its F1 hardly
    exact = operating_points(scores, labels)
    assert set(found.points) == set(exact.points) == set(RULES)
    assert found.points[MAX_F1].f1 == pytest.approx(exact.points[MAX_F1].f1, abs=1e-4)
    for target in (0.5, 0.7, 0.9):
        rule = f"precision@{target}"
        assert found.points[rule].recall == pytest.approx(exact.points[rule].recall, abs=1e-3)


def test_histogram_thresholds_are_the_bin_edge_below_the_exact_ones():
    """Scores one to a bin: the histogram's points are the exact ones, within one bin."""
    rng = np.random.default_rng(1)
    labels = rng.random(50_000) < 0.2
    levels = np.linspace(0.01, 0.99, 2000, dtype=np.float32)  # 5e-4 apart: bins are finer
    scores = levels[np.clip(rng.normal(600 + 700 * labels, 400), 0, 1999).astype(int)]
    histogram = histogram_of(scores, labels)
    edges = histogram.lower_edges()
    found = histogram_operating_points(histogram.counts.numpy(), edges)
    exact = operating_points(scores, labels)
    assert set(found.points) == set(exact.points) == set(RULES)
    for rule, point in exact.points.items():
        binned = found.points[rule]
        assert binned.threshold == edges[np.searchsorted(edges, point.threshold, "right") - 1]
        assert point.threshold - binned.threshold < 1.3e-4  # one bin at most
        assert (binned.precision, binned.recall, binned.f1) == pytest.approx(
            (point.precision, point.recall, point.f1), abs=1e-12
        )


def chips(rng, n=30, size=16):
    target = rng.random((n, size, size)) < rng.uniform(0.02, 0.3, (n, 1, 1))
    target[:, 0, 0] = True
    probability = np.clip(rng.normal(0.3 + 0.35 * target, 0.2), 0, 1).round(3)
    return probability.astype(np.float32), target


@pytest.mark.parametrize("dense", [True, False])
def test_each_replicate_chooses_the_points_of_its_drawn_chips(dense, monkeypatch):
    if not dense:
        monkeypatch.setattr(precision, "DENSE_ENTRIES", 0)
    rng = np.random.default_rng(1)
    probability, target = chips(rng, n=8)
    weights = (rng.random(target.shape) > 0.1).astype(float)
    curve = SortedPixels.of_chips(probability, target, weights)
    assert (curve.dense is not None) == dense
    for counts in chip_draws(8, 4, seed=3):
        drawn = np.repeat(np.arange(8), counts.astype(int))
        expected = brute_force(
            probability[drawn].ravel(), target[drawn].ravel(), weights[drawn].ravel()
        )
        interval = operating_point_intervals(curve, counts[None], block_bytes=1)
        for rule in RULES:
            bounds = [interval[rule][name] for name in ("threshold", "precision", "recall", "f1")]
            if rule in expected:
                assert [low for low, _ in bounds] == pytest.approx(expected[rule], abs=1e-12)
                assert [high for _, high in bounds] == pytest.approx(expected[rule], abs=1e-12)
            else:
                assert interval[rule]["replicates_reaching"] == 0


def test_intervals_contain_the_point_and_bracket_it():
    probability, target = chips(np.random.default_rng(2))
    summary = summarise_thresholds(probability, target, None, chip_draws(30, 300, 0))
    assert summary["interval"]["replicates"] == 300
    for rule in RULES:
        point = summary["operating_points"][rule]
        assert point["reachable"] and point["replicates_reaching"] > 200
        for name in ("threshold", "precision", "recall", "f1"):
            low, high = point["ci95"][name]
            assert 0 <= low <= point[name] <= high <= 1, (rule, name)
        assert point["ci95"]["threshold"][0] < point["ci95"]["threshold"][1]
        if rule != MAX_F1:  # each replicate's point reaches the target
            assert point["ci95"]["precision"][0] >= float(rule.split("@")[1])
    # every replicate drawing every chip once: the interval is the point itself
    same = summarise_thresholds(probability, target, None, np.ones((5, 30)))
    for rule in RULES:
        point = same["operating_points"][rule]
        assert point["ci95"]["threshold"] == [point["threshold"]] * 2
    none = summarise_thresholds(probability, target, None, np.zeros((0, 30)))
    assert all(math.isnan(v) for v in none["operating_points"][MAX_F1]["ci95"]["f1"])


def test_metrics_json_holds_the_thresholds_of_the_valid_pixels(tmp_path):
    rng = np.random.default_rng(4)
    probability, target = chips(rng)
    probability = np.minimum(probability, 0.9)
    valid = rng.random(target.shape) > 0.3
    probability[~valid] = 0.99  # confident false alarms where there is no SAR data
    target[~valid] = False
    scores = Scores(probability, target, valid, np.arange(60).reshape(30, 2))
    writer = EvaluationWriter(bootstrap=50, panels=0, save_scores=False)
    folder = writer.write_region(
        tmp_path, scores, region="r", stage="test", split="test", ignore_invalid=True
    )
    metrics = json.loads((folder / "metrics.json").read_text())
    thresholds = metrics["thresholds"]
    assert thresholds["convention"] == "landslide where probability >= threshold"
    assert "test chips" in thresholds["note"] and thresholds["interval"]["replicates"] == 50
    expected = operating_points(probability, target, valid.astype(float))
    for rule, point in thresholds["operating_points"].items():
        if rule in expected.points:
            assert point["threshold"] == expected.points[rule].threshold
            assert point["recall"] == pytest.approx(expected.points[rule].recall)
            assert len(point["ci95"]["recall"]) == 2
        else:
            assert point == {"reachable": False, "max_precision": expected.max_precision}
    # the false alarms without SAR data would cap precision below 0.9
    assert operating_points(probability, target).max_precision < 0.9 < expected.max_precision
    assert (folder / "pr_curve.png").stat().st_size > 0


def test_the_pr_curve_marks_the_operating_points(tmp_path, monkeypatch):
    drawn = []
    monkeypatch.setattr(figures, "_save", lambda fig, path: drawn.append(fig) or Path(path))
    point = {"threshold": 0.43, "precision": 0.62, "recall": 0.55, "f1": 0.58}
    figures.plot_pr_curves(
        {"r": (np.array([1.0, 0.5]), np.array([0.0, 1.0]), 0.6, None)},
        {"r": 0.1},
        tmp_path / "pr.png",
        operating_points={"r": {"max_f1": point, "precision@0.7": {**point, "precision": 0.7}}},
    )
    legend = [text.get_text() for text in drawn[0].axes[0].get_legend().get_texts()]
    assert "max F1 0.58 at p >= 0.43" in legend and "precision@0.7 at p >= 0.43" in legend
    markers = [line for line in drawn[0].axes[0].get_lines() if line.get_marker() == "*"]
    assert [tuple(m.get_xydata()[0]) for m in markers] == [(0.55, 0.62)]


def test_unreachable_targets_are_marked_with_the_highest_precision(tmp_path):
    rng = np.random.default_rng(5)
    target = rng.random((6, 8, 8)) < 0.3
    probability = rng.random(target.shape).astype(np.float32)  # no skill
    probability[0, 0, :5], target[0, 0, :5] = 1.0, False  # false alarms first
    summary = summarise_thresholds(probability, target, None, chip_draws(6, 20, 0))
    points = summary["operating_points"]
    assert points["precision@0.9"] == {
        "reachable": False,
        "max_precision": summary["max_precision"],
    }
    assert summary["max_precision"] < 0.9


# -- fit keeps them, validate and test leave them ---------------------------------------


def test_fit_keeps_the_first_validation_regions_points_and_evaluations_leave_them(tmp_path):
    data = RegionDataModule()
    model = make_model(val_auprc="exact")
    trainer = make_trainer(tmp_path)
    trainer.fit(model, data)
    stored = model.thresholds
    assert stored["region"] == "hokkaido" and stored["epoch"] == 0 and stored["split"] == "val"
    assert stored["source"] == "validation pixels, exact"
    model.eval()
    with torch.no_grad():
        batches = data.batches["hokkaido"]
        scores = torch.cat([model(b["image"]).sigmoid() for b in batches]).numpy()
    labels = torch.cat([b["mask"] for b in batches]).numpy()
    expected = operating_points(scores, labels)
    assert stored["operating_points"] == {r: p.as_dict() for r, p in expected.points.items()}
    json.dumps(stored)  # JSON-able
    for evaluate in (trainer.validate, trainer.test):
        evaluate(model, data, verbose=False)
        assert model.thresholds is stored


@pytest.fixture(scope="module")
def fitted(synthetic_root, tmp_path_factory):
    """A one-epoch fit of the tiny model on the synthetic cubes: folder and best checkpoint."""
    workdir = tmp_path_factory.mktemp("thresholds_fit")
    tiny_fit(workdir, synthetic_root)
    return workdir, latest_best_checkpoint(workdir)


def test_thresholds_survive_the_checkpoint_round_trip(fitted, tmp_path, monkeypatch):
    workdir, checkpoint = fitted
    stored = torch.load(checkpoint, map_location="cpu", weights_only=True)["thresholds"]
    assert stored["region"] == "hokkaido" and stored["split"] == "val"
    assert stored["epoch"] == 0 and stored["source"] == "validation histogram, 65536 bins"
    assert MAX_F1 in stored["operating_points"]
    assert LandslideSegmenter.load_from_checkpoint(checkpoint).thresholds == stored

    # validate scores the same pixels: their histogram gives the stored points, and the
    # stored points are left as they were
    monkeypatch.chdir(workdir)
    cli = run(
        [
            "validate",
            "--ckpt_path",
            str(checkpoint),
            "--trainer.logger=false",
            f"--trainer.default_root_dir={tmp_path}",
            "--trainer.enable_progress_bar=false",
            "--data.synthetic=true",
        ]
    )
    assert cli.model.thresholds == stored
    folder = tmp_path / "evaluation" / "val_hokkaido"
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["checkpoint_thresholds"] == stored
    assert set(metrics["thresholds"]["operating_points"]) == set(RULES)
    pixels = Scores.load(folder / "scores.npz")
    histogram = histogram_of(pixels.probability.ravel(), pixels.target.ravel())
    found = histogram_operating_points(histogram.counts.numpy(), histogram.lower_edges())
    assert stored["operating_points"] == {r: p.as_dict() for r, p in found.points.items()}


def test_a_checkpoint_without_thresholds_loads_with_none(fitted, tmp_path):
    checkpoint = torch.load(fitted[1], map_location="cpu", weights_only=True)
    del checkpoint["thresholds"]
    torch.save(checkpoint, tmp_path / "old.ckpt")
    assert LandslideSegmenter.load_from_checkpoint(tmp_path / "old.ckpt").thresholds is None


# -- resolve_threshold ------------------------------------------------------------------

STORED = {
    "region": "hokkaido",
    "split": "val",
    "epoch": 7,
    "source": "validation histogram, 65536 bins",
    "operating_points": {
        "max_f1": {"threshold": 0.43, "precision": 0.62, "recall": 0.55, "f1": 0.58},
        "precision@0.5": {"threshold": 0.3, "precision": 0.5, "recall": 0.7, "f1": 0.58},
        "precision@0.7": {"threshold": 0.6, "precision": 0.71, "recall": 0.4, "f1": 0.51},
    },
    "max_precision": 0.834,
}


def test_resolve_threshold_forms():
    chosen = resolve_threshold("max_f1", STORED, checkpoint="/runs/best-epoch07.ckpt")
    assert chosen == ChosenThreshold(
        0.43,
        "max_f1",
        "max-F1 threshold of hokkaido validation, epoch 7, stored in best-epoch07.ckpt "
        "(precision 0.62, recall 0.55)",
    )
    assert resolve_threshold("precision@0.7", STORED).value == 0.6
    assert resolve_threshold("precision@.70", STORED).rule == "precision@0.7"
    assert resolve_threshold("0.42", None) == ChosenThreshold(
        0.42, "fixed", "fixed threshold given by --maps.threshold"
    )
    assert resolve_threshold(0, None).value == 0.0 and resolve_threshold(1.0, None).value == 1
    assert resolve_threshold("none", STORED) is None
    assert resolve_threshold(None, STORED) is None


@pytest.mark.parametrize(
    ("spec", "stored", "message"),
    [
        ("1.5", STORED, r"--maps.threshold 1.5: a threshold is a probability in \[0, 1\]"),
        (-0.1, STORED, r"probability in \[0, 1\]"),
        ("nan", STORED, r"probability in \[0, 1\]"),
        (True, STORED, "not a threshold"),
        ("best", STORED, r"unknown threshold; use max_f1, precision@P .* or none"),
        ("precision@1.2", STORED, r"precision target must be a number in \(0, 1\]"),
        ("precision@x", STORED, "precision target"),
        ("precision@0.9", STORED, r"never reached it \(highest precision 0.834\).*Stored: max_f1"),
        ("precision@0.8", STORED, "stores the precision targets precision@0.5, precision@0.7"),
        ("max_f1", None, r"best.ckpt holds no thresholds.*--maps.threshold 0.5.*none"),
        ("max_f1", {**STORED, "operating_points": {}}, "no landslide pixel"),
    ],
)
def test_resolve_threshold_errors(spec, stored, message):
    with pytest.raises(ConfigError, match=message):
        resolve_threshold(spec, stored, checkpoint="runs/best.ckpt")


def test_resolve_threshold_names_the_option():
    with pytest.raises(ConfigError, match="^--threshold 2"):
        resolve_threshold("2", None, option="--threshold")
