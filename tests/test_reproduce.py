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
from landslide_lit.errors import ConfigError
from landslide_lit.experiments import table1_report as report
from landslide_lit.experiments import transfer as transfer_module
from landslide_lit.experiments.cells import Bootstrap, Cell
from landslide_lit.experiments.paper import PAPER_TABLE1
from landslide_lit.experiments.study import ARRAY_TASK_VARIABLE, Setup
from landslide_lit.experiments.table1 import main as reproduce_main
from landslide_lit.experiments.transfer import main as transfer_main
from landslide_lit.main import main
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
        main(["reproduce", *reproduce_args(synthetic_root, output, "t1")])
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
        main(["reproduce", "--help"])
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
    main(["transfer", *args, "--regions", *regions])
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
    main(["demo", "--root", synthetic_root, "--output", "out", "--max_epochs", "1", *extra])
    table = (tmp_path / "out" / "metrics.md").read_text()
    assert "| region | chips | split | AUPRC | 95% CI | no skill | AUPRC / no skill |" in table
    assert table.count("| hokkaido |") == 2 and table.count("| talakmau |") == 1
    assert (tmp_path / "out" / "predictions.png").stat().st_size > 0
    assert (tmp_path / "out" / "evaluation" / "test_talakmau" / "pr_curve.png").is_file()
    maps = tmp_path / "out" / "predictions"
    assert {"talakmau_landslide_probability.nc", "talakmau_landslide_probability.png"} <= {
        p.name for p in maps.iterdir()
    }


def test_only_runs_one_run_and_a_plain_rerun_writes_the_tables(
    synthetic_root, tmp_path, monkeypatch, capsys
):
    """Two array tasks (--only, $SLURM_ARRAY_TASK_ID) run one run each, no tables; a plain
    rerun runs nothing and tabulates."""
    monkeypatch.delenv(ARRAY_TASK_VARIABLE, raising=False)
    args = reproduce_args(synthetic_root, tmp_path, "array", "--configs", "sar", "sar_dem")
    folder = tmp_path / "array"
    assert reproduce_main([*args, "--only", "1"]) is None
    assert (folder / "sar_dem" / "seed_42" / "result.json").is_file()
    assert not (folder / "sar").exists() and not (folder / "table.md").exists()

    monkeypatch.setenv(ARRAY_TASK_VARIABLE, "0")
    assert reproduce_main(args) is None
    assert (folder / "sar" / "seed_42" / "result.json").is_file()
    assert not (folder / "table.md").exists()
    monkeypatch.setenv(ARRAY_TASK_VARIABLE, "2")
    with pytest.raises(ConfigError, match=r"SLURM_ARRAY_TASK_ID 2: the grid has 2 runs"):
        reproduce_main(args)
    capsys.readouterr()
    reproduce_main(["--list", *args])
    listed = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
    assert [(k, label, state) for k, label, _, state in listed] == [
        ("0", "sar seed 42", "finished"),
        ("1", "sar_dem seed 42", "finished"),
    ]

    monkeypatch.delenv(ARRAY_TASK_VARIABLE)

    def no_runs(arguments):
        raise AssertionError(f"a finished run was run again: {arguments[:1]}")

    monkeypatch.setattr(cli_module, "run", no_runs)
    assert reproduce_main(args) == folder / "table.md"
    rows = read_csv(folder / "table.csv")
    configs = ["sar", "sar", "sar_dem", "sar_dem", "no_skill", "no_skill"]
    assert [r["config"] for r in rows] == configs


def test_list_numbers_the_transfer_grid_without_cubes(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(ARRAY_TASK_VARIABLE, raising=False)
    args = ["--root", str(tmp_path), "--output", str(tmp_path), "--seeds", "2"]
    assert transfer_main([*args, "--regions", "hokkaido", "kaikoura", "--list"]) is None
    listed = [line.split("\t")[:2] for line in capsys.readouterr().out.splitlines()]
    assert listed == [
        ["0", "train hokkaido seed 42"],
        ["1", "train hokkaido seed 43"],
        ["2", "train kaikoura seed 42"],
        ["3", "train kaikoura seed 43"],
    ]
    assert not (tmp_path / "transfer").exists()  # listing writes nothing


def make_cell(mean: float, std: float = float("nan"), **changes) -> Cell:
    values = {"low": 0.5, "high": 0.7, "per_seed": (mean,), "no_skill": 0.1, "chips": 3}
    return Cell(mean=mean, std=std, pixels=3 * 128 * 128, **{**values, **changes})


def test_a_cell_prints_its_mean_std_interval_and_lift():
    cell = make_cell(0.61234, 0.0123, per_seed=(0.6, 0.62))
    assert (cell.mean_std(), cell.interval()) == ("0.612 ± 0.012", "[0.500, 0.700]")
    assert cell.lift == pytest.approx(6.1234)
    one_seed = make_cell(0.6, low=float("nan"))
    assert (one_seed.mean_std(), one_seed.interval()) == ("0.600", "-")
    baseline = cell.no_skill_cell()
    assert (baseline.mean, baseline.per_seed, baseline.chips) == (0.1, (), 3)
    assert baseline.interval() == "-" and baseline.mean_std() == "0.100"
    assert transfer_module.cell_text(cell, diagonal=True) == "**0.612 ± 0.012 [0.500, 0.700] 6.1x**"


def test_table1_rows_of_known_cells():
    setup = Setup(Path("/x"), Path("/data"), False, [42, 43], [], [], "none")
    columns = report.columns("hokkaido", "talakmau")
    cells = {
        ("sar", columns[0].key): make_cell(0.6, 0.01),
        ("sar", columns[1].key): make_cell(0.4, 0.02, no_skill=0.05),
    }
    table = report.Table1(
        setup, Bootstrap(100, 0, "bca"), ("sar",), columns, cells, "hokkaido", "talakmau"
    )
    assert report.config_row(table, "sar") == (
        "| SAR | 0.600 ± 0.010 | [0.500, 0.700] | 0.618 | 0.400 ± 0.020 | [0.500, 0.700] | 0.421 |"
    )
    assert report.no_skill_row(table) == "| no skill | 0.100 |  | 0.092 | 0.050 |  | 0.062 |"
    rows = report.csv_rows(table)
    assert [(r["config"], r["region"], r["n_seeds"], r["seeds"]) for r in rows] == [
        ("sar", "hokkaido", 1, "42 43"),
        ("sar", "talakmau", 1, "42 43"),
        ("no_skill", "hokkaido", 0, ""),
        ("no_skill", "talakmau", 0, ""),
    ]
    assert report.difference_text((0.02, 0.01, 0.03)) == "+0.020 [+0.010, +0.030] *"
    assert report.difference_text((0.02, -0.01, 0.05)) == "+0.020 [-0.010, +0.050]"
