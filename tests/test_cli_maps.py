"""The map writer's options on the command line and in configs: ``--maps.*``."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from landslide_lit.cli import run
from landslide_lit.errors import ConfigError
from landslide_lit.maps import ProbabilityMapWriter
from landslide_lit.runs import restore_from_checkpoint
from tests.conftest import tiny_fit

QUIET = ["--trainer.enable_progress_bar=false", "--data.synthetic=true", "--region=talakmau"]
DEFAULT_PRODUCTS = {"threshold": "max_f1", "min_area_m2": 0.0, "simplify": 0.0, "geojson": False}
OLD_CALLBACKS = [  # trainer.callbacks of a config.yaml saved before --maps.*
    {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint"},
    {"class_path": "landslide_lit.maps.ProbabilityMapWriter", "init_args": {}},
    {"class_path": "landslide_lit.evaluation.EvaluationWriter"},
]


@pytest.fixture(scope="module")
def checkpoint(synthetic_root, tmp_path_factory) -> str:
    workdir = tmp_path_factory.mktemp("fit")
    cli = tiny_fit(workdir, synthetic_root)
    return str(workdir / cli.trainer.checkpoint_callback.best_model_path)


def map_writers(cli) -> list[ProbabilityMapWriter]:
    return [c for c in cli.trainer.callbacks if isinstance(c, ProbabilityMapWriter)]


def written(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


def test_maps_options_from_the_command_line(checkpoint, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "maps"
    cli = run(
        [
            "predict",
            "--ckpt_path",
            checkpoint,
            *QUIET,
            f"--maps.output_dir={out}",
            "--maps.formats=[zarr]",
            "--maps.quicklook=false",
        ]
    )
    (writer,) = map_writers(cli)
    assert writer.formats == ["zarr"] and not writer.quicklook
    assert written(out) == {
        "talakmau_landslide_probability.zarr",
        "talakmau_landslide_probability.json",
        # the default threshold: the checkpoint's max-F1 one
        "talakmau_landslide_mask.tif",
        "talakmau_landslide_mask.qml",
        "talakmau_landslides.gpkg",
    }
    saved = yaml.safe_load((Path(cli.trainer.log_dir) / "config.yaml").read_text())
    assert saved["maps"] == {
        "output_dir": str(out),
        "formats": ["zarr"],
        "quicklook": False,
        **DEFAULT_PRODUCTS,
    }
    assert all("ProbabilityMapWriter" not in str(c) for c in saved["trainer"]["callbacks"])


def test_maps_options_from_a_config(checkpoint, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "maps"
    config = tmp_path / "maps.yaml"
    config.write_text(yaml.safe_dump({"maps": {"output_dir": str(out), "formats": ["netcdf"]}}))
    run(["predict", "--ckpt_path", checkpoint, "--config", str(config), *QUIET])
    assert "talakmau_landslide_probability.nc" in written(out)
    assert not any(
        name.startswith("talakmau_landslide_probability.") and name.endswith((".zarr", ".tif"))
        for name in written(out)
    )


def test_print_config_shows_the_maps_options(capsys):
    with pytest.raises(SystemExit):
        run(["predict", "--maps.formats=[netcdf]", "--print_config"])
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["maps"] == {
        "output_dir": None,
        "formats": ["netcdf"],
        "quicklook": True,
        **DEFAULT_PRODUCTS,
    }
    assert printed["ensemble"] is None


def test_an_old_configs_map_writer_is_used_once(checkpoint, tmp_path, monkeypatch):
    """A config saved before --maps.* lists the writer in trainer.callbacks: with the
    maps settings it is the same writer, and there is one."""
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "old.yaml"
    config.write_text(yaml.safe_dump({"trainer": {"callbacks": OLD_CALLBACKS}}))
    cli = run(["predict", "--ckpt_path", checkpoint, "--config", str(config), *QUIET])
    assert len(map_writers(cli)) == 1
    assert any(type(c).__name__ == "EvaluationWriter" for c in cli.trainer.callbacks)


def test_an_old_configs_map_writer_with_other_settings_is_one_clear_error(
    checkpoint, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    callbacks = [dict(c) for c in OLD_CALLBACKS]
    callbacks[1]["init_args"] = {"formats": ["zarr"]}
    config = tmp_path / "old.yaml"
    config.write_text(yaml.safe_dump({"trainer": {"callbacks": callbacks}}))
    with pytest.raises(
        ConfigError, match=r"trainer.callbacks lists .*ProbabilityMapWriter.*`maps:`"
    ):
        run(["predict", "--ckpt_path", checkpoint, "--config", str(config), *QUIET])
    assert not (tmp_path / "runs").exists()  # before any work


def test_fit_validate_test_still_run_with_the_maps_callback(checkpoint, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cli = run(["test", "--ckpt_path", checkpoint, *QUIET, "--trainer.limit_test_batches=1"])
    assert len(map_writers(cli)) == 1 and "test/talakmau/auprc" in cli.trainer.callback_metrics


def test_the_checkpoints_settings_hold_no_maps_options(checkpoint):
    args, _ = restore_from_checkpoint(["predict", "--ckpt_path", checkpoint])
    assert not [a for a in args if a.startswith(("--maps", "--ensemble"))]
