"""`landslide-lit reproduce`, `transfer` and `demo`, end to end on tiny synthetic cubes.

One epoch of two batches, one seed, a tiny encoder: the point is the tables, the figures
and the resume machinery, not the scores.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import lightning as L
import pytest

import landslide_lit.cli as cli_module
from landslide_lit.cli import run
from landslide_lit.errors import ConfigError
from landslide_lit.experiments.table1 import PAPER_TABLE1
from landslide_lit.experiments.table1 import main as reproduce_main
from landslide_lit.experiments.transfer import main as transfer_main
from tests.conftest import TINY_MODEL

TINY_RUN = [
    *TINY_MODEL,
    "--model.encoder_weights=null",
    "--trainer.max_epochs=1",
    "--trainer.limit_train_batches=2",
    "--trainer.enable_progress_bar=false",
    "--trainer.accelerator=cpu",
]
CONFIGS = ("sar", "sar_dem", "sar_aug", "sar_dem_aug")
COLUMNS = [
    "config",
    "inputs",
    "region",
    "split",
    "n_seeds",
    "seeds",
    "auprc_mean",
    "auprc_std",
    "ci95_low",
    "ci95_high",
    "auprc_per_seed",
    "no_skill",
    "paper_auprc",
    "chips",
    "pixels",
    "synthetic",
]


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as file:
        return list(csv.DictReader(file))


def reproduce_args(root: str, output: Path, name: str, *extra: str) -> list[str]:
    return [
        "--synthetic",
        "--root",
        root,
        "--seeds",
        "1",
        "--output",
        str(output),
        "--name",
        name,
        "--bootstrap",
        "100",
        *TINY_RUN,
        *extra,
    ]


@pytest.fixture(scope="module")
def table1(synthetic_root, tmp_path_factory):
    output = tmp_path_factory.mktemp("results")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(output)
        run(["reproduce", *reproduce_args(synthetic_root, output, "t1")])
    return output / "t1"


def test_table_has_the_configs_no_skill_and_paper_values(table1):
    rows = read_csv(table1 / "table.csv")
    assert list(rows[0]) == COLUMNS
    assert [(r["config"], r["region"]) for r in rows] == [
        *((c, region) for c in CONFIGS for region in ("hokkaido", "talakmau")),
        ("no_skill", "hokkaido"),
        ("no_skill", "talakmau"),
    ]
    for row in rows[:-2]:
        assert float(row["ci95_low"]) <= float(row["auprc_mean"]) <= float(row["ci95_high"])
        assert float(row["paper_auprc"]) == PAPER_TABLE1[row["config"]][row["region"]]
        assert row["n_seeds"] == "1" and row["seeds"] == "42" and row["synthetic"] == "True"
    assert [r["paper_auprc"] for r in rows[-2:]] == ["0.092", "0.062"]
    table = (table1 / "table.md").read_text()
    assert "SYNTHETIC CUBES" in table
    assert "95% CI: BCa interval of the seed-mean AUPRC" in table  # --bootstrap-method
    lines = [line for line in table.splitlines() if line.startswith("| ")]
    assert lines[0].split(" | ")[1:4] == [
        "hokkaido validation (train region)",
        "95% CI",
        "published",
    ]
    assert [line.split(" | ")[0] for line in lines[1:6]] == [
        "| SAR",
        "| SAR & DEM",
        "| SAR (AUG)",
        "| SAR & DEM (AUG)",
        "| no skill",
    ]
    assert "0.618" in lines[1] and "0.456" in lines[3]
    assert len(read_csv(table1 / "differences.csv")) == 8  # 4 comparisons x 2 regions


def test_runs_keep_their_evaluations_and_figures(table1):
    for name in ("table.png", "pr_val_hokkaido.png", "pr_test_talakmau.png"):
        assert (table1 / name).stat().st_size > 0
    run_folder = table1 / "sar_dem_aug" / "seed_42"
    result = json.loads((run_folder / "result.json").read_text())
    assert set(result["evaluations"]) == {"val_hokkaido", "test_talakmau"}
    for key in result["evaluations"]:
        folder = run_folder / "evaluation" / key
        for name in ("metrics.json", "pr_curve.png", "predictions.png", "scores.npz"):
            assert (folder / name).is_file()
    assert (run_folder / result["best_checkpoint"]).is_file()


def test_rerun_skips_finished_runs(table1, synthetic_root, monkeypatch):
    def no_runs(args):
        raise AssertionError(f"a finished run was run again: {args[:1]}")

    monkeypatch.setattr(cli_module, "run", no_runs)
    before = (table1 / "table.csv").read_text()
    (table1 / "table.csv").unlink()
    reproduce_main(reproduce_args(synthetic_root, table1.parent, "t1"))
    assert (table1 / "table.csv").read_text() == before
    with pytest.raises(ConfigError, match="other settings"):
        reproduce_main(reproduce_args(synthetic_root, table1.parent, "t1", "--data.stride=64"))


class CrashAtEpoch(L.Callback):
    """Stands in for a kill after the first epoch's checkpoints."""

    def __init__(self, epoch: int = 1) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch:
            raise RuntimeError("simulated kill")


def test_interrupted_fit_resumes_from_last_checkpoint(synthetic_root, tmp_path, monkeypatch):
    args = reproduce_args(
        synthetic_root, tmp_path, "resume", "--configs", "sar", "--trainer.max_epochs=2"
    )
    real_run = cli_module.run

    def crashing(arguments):
        if arguments[0] == "fit":
            crash = {"class_path": "tests.test_reproduce.CrashAtEpoch"}
            arguments = [*arguments, f"--trainer.callbacks+={json.dumps(crash)}"]
        return real_run(arguments)

    monkeypatch.setattr(cli_module, "run", crashing)
    with pytest.raises(RuntimeError, match="simulated kill"):
        reproduce_main(args)
    folder = tmp_path / "resume" / "sar" / "seed_42"
    assert not (folder / "fit.json").exists() and not (folder / "result.json").exists()
    assert (folder / "runs/landslide/version_0/checkpoints/last.ckpt").is_file()

    monkeypatch.setattr(cli_module, "run", real_run)
    reproduce_main(args)
    assert json.loads((folder / "fit.json").read_text())["resumed"] is True
    assert [p.name for p in (folder / "runs/landslide").iterdir()] == ["version_0"]
    logged = read_csv(folder / "runs/landslide/version_0/metrics.csv")
    assert {row["epoch"] for row in logged if row.get("val/auprc")} == {"0", "1"}
    assert (folder / "result.json").is_file()


def test_missing_real_cubes_and_reserved_options_are_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"hokkaido_japan\.zarr.*talakmau_indonesia\.zarr"):
        reproduce_main(["--root", str(tmp_path), "--output", str(tmp_path)])
    with pytest.raises(ConfigError, match="--synthetic"):
        transfer_main(["--root", str(tmp_path), "--regions", "hokkaido", "kaikoura"])
    with pytest.raises(ConfigError, match="use --root"):
        reproduce_main(["--synthetic", "--data.root=elsewhere"])
    with pytest.raises(SystemExit) as help_exit:
        run(["reproduce", "--help"])
    assert help_exit.value.code == 0


@pytest.fixture(scope="module")
def four_regions(synthetic_root, tmp_path_factory):
    """A data root with the tiny Hokkaido and Talakmau cubes and tiny Kaikoura, Puerto Rico."""
    from landslide_lit.data.synthetic import write_synthetic_cube

    root = tmp_path_factory.mktemp("four_regions")
    (root / "synthetic").mkdir()
    for cube in Path(synthetic_root, "synthetic").iterdir():
        os.symlink(cube, root / "synthetic" / cube.name)
    for region in ("kaikoura", "puerto_rico"):
        write_synthetic_cube(region, root=root, size=(384, 384), seed=1)
    return str(root)


def test_transfer_matrix_over_four_regions(four_regions, tmp_path):
    regions = ["hokkaido", "talakmau", "kaikoura", "puerto_rico"]
    args = reproduce_args(four_regions, tmp_path, "transfer")
    run(["transfer", *args, "--regions", *regions])
    folder = tmp_path / "transfer"
    rows = read_csv(folder / "matrix.csv")
    assert [(r["train_region"], r["test_region"]) for r in rows] == [
        (a, b) for a in regions for b in regions
    ]
    for row in rows:
        assert row["split"] == (
            "held-out test" if row["train_region"] == row["test_region"] else "all chips"
        )
        assert float(row["ci95_low"]) <= float(row["auprc_mean"]) <= float(row["ci95_high"])
        ratio = float(row["auprc_mean"]) / float(row["no_skill"])
        assert float(row["auprc_over_no_skill"]) == pytest.approx(ratio, rel=1e-4)
    # each test region's no skill is the same whichever region trained (same chips)
    for test in regions:
        off = {r["no_skill"] for r in rows if r["test_region"] == test != r["train_region"]}
        assert len(off) == 1
    matrix = (folder / "matrix.md").read_text()
    assert "| train \\ test | hokkaido | talakmau | kaikoura | puerto_rico |" in matrix
    assert "| no skill (all chips) |" in matrix and "SYNTHETIC CUBES" in matrix
    assert (folder / "matrix.png").stat().st_size > 0


def test_demo_table_has_intervals(synthetic_root, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    extra = [*TINY_MODEL, "--trainer.limit_train_batches=2", "--trainer.enable_progress_bar=false"]
    run(["demo", "--root", synthetic_root, "--output", "out", "--max_epochs", "1", *extra])
    table = (tmp_path / "out" / "metrics.md").read_text()
    assert "| region | chips | split | AUPRC | 95% CI | no skill | AUPRC / no skill |" in table
    assert table.count("| hokkaido |") == 2 and table.count("| talakmau |") == 1
    assert (tmp_path / "out" / "predictions.png").stat().st_size > 0
    assert (tmp_path / "out" / "evaluation" / "test_talakmau" / "pr_curve.png").is_file()
    maps = tmp_path / "out" / "predictions"
    assert {"talakmau_landslide_probability.nc", "talakmau_landslide_probability.png"} <= {
        p.name for p in maps.iterdir()
    }
