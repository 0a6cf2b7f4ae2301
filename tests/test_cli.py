"""The command line, run in-process on tiny synthetic cubes with a tiny model."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
import yaml

from landslide_lit.argv import bundled_config_dir, resolve_bundled_configs
from landslide_lit.cli import run
from landslide_lit.data.composite import build_composite
from landslide_lit.data.cube import CubeError, open_region_cube
from landslide_lit.errors import ConfigError
from landslide_lit.main import COMMANDS, main, user_error
from landslide_lit.runs import CheckpointError, latest_best_checkpoint
from tests.conftest import TINY_MODEL

QUIET = ["--trainer.enable_progress_bar=false"]
TABLE1 = ("sar.yaml", "sar_dem.yaml", "sar_aug.yaml", "sar_dem_aug.yaml")


def fit_args(root: str, *extra: str) -> list[str]:
    return [
        "fit",
        "--config",
        "demo.yaml",
        f"--data.root={root}",
        "--trainer.max_epochs=1",
        "--trainer.limit_train_batches=2",
        "--trainer.enable_progress_bar=false",
        *TINY_MODEL,
        *extra,
    ]


@pytest.fixture(scope="module")
def trained_run(synthetic_root, tmp_path_factory):
    """A finished SAR & DEM (AUG) fit run in its own working directory."""
    workdir = tmp_path_factory.mktemp("run")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(workdir)
        cli = run(fit_args(synthetic_root))
    return workdir, cli


def test_configs_are_found_by_name_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in (*TABLE1, "demo.yaml", "cpu.yaml", "gpu.yaml", "multi_gpu.yaml"):
        resolved = resolve_bundled_configs(["fit", "--config", name])
        assert Path(resolved[2]) == bundled_config_dir() / name and Path(resolved[2]).is_file()
    assert (
        resolve_bundled_configs(["fit", "--config=sar"])[1]
        == f"--config={bundled_config_dir()}/sar.yaml"
    )
    local = tmp_path / "sar.yaml"
    local.write_text("trainer: {max_epochs: 1}\n")
    assert resolve_bundled_configs(["fit", "--config", "sar.yaml"])[2] == "sar.yaml"
    with pytest.raises(ConfigError, match="--config nope.yaml.*bundled configs: cpu.yaml, demo"):
        resolve_bundled_configs(["fit", "--config", "nope.yaml"])


def test_table1_configs_differ_only_in_inputs_and_augmentation():
    configs = {name: yaml.safe_load((bundled_config_dir() / name).read_text()) for name in TABLE1}
    reference = configs["sar.yaml"]
    for name, config in configs.items():
        for section in ("data", "model", "trainer"):
            differing = {
                key
                for key in set(config[section]) | set(reference[section])
                if config[section].get(key) != reference[section].get(key)
            }
            assert differing <= {"channels", "augment"}, (name, section, differing)
    assert configs["sar_dem_aug.yaml"]["data"]["channels"] == "sar_dem"
    assert configs["sar_dem_aug.yaml"]["data"]["augment"] == {}
    assert configs["sar.yaml"]["data"]["augment"] is None


def test_help_and_print_config_list_the_choices(capsys):
    with pytest.raises(SystemExit):
        run(["fit", "--help"])
    help_text = capsys.readouterr().out
    assert "--data.channels" in help_text and "--region" in help_text
    assert "{bce,dice,focal,bce+dice}" in help_text
    with pytest.raises(SystemExit):
        run(["fit", "--config", "sar_dem_aug.yaml", "--print_config"])
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["data"]["channels"] == "sar_dem"
    assert printed["data"]["augment"]["init_args"]["noise"]["std"] > 0


EVERY_COMMAND = {
    *("fit", "validate", "test", "predict"),
    *("synth", "demo", "cache", "reproduce", "transfer", "polygonize", "cube"),
}


def test_help_lists_every_command_with_what_it_does(capsys):
    for args in (["--help"], ["-h"]):
        with pytest.raises(SystemExit) as stop:
            main(args)
        out = capsys.readouterr().out
        described = {line.split()[0] for line in out.splitlines() if len(line.split()) > 3}
        assert stop.value.code == 0 and described >= EVERY_COMMAND
        assert "`landslide-lit COMMAND --help`" in out
    assert len(COMMANDS) == len(EVERY_COMMAND)
    with pytest.raises(SystemExit) as stop:  # no command at all: the same list, on stderr
        main([])
    assert stop.value.code == 2 and "transfer" in capsys.readouterr().err


def test_help_and_the_package_import_neither_torch_nor_lightning():
    code = (
        "import sys\n"
        "import landslide_lit\n"
        "from landslide_lit.main import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print(sorted({'torch', 'lightning'} & set(sys.modules)))\n"
        "print(all(getattr(landslide_lit, name) for name in landslide_lit.__all__))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.splitlines()[-2:] == ["[]", "True"], result.stderr


def test_fit_writes_checkpoints_logs_and_config(trained_run):
    workdir, cli = trained_run
    run_dir = workdir / cli.trainer.log_dir
    assert (run_dir / "config.yaml").is_file() and (run_dir / "metrics.csv").is_file()
    assert any(run_dir.glob("events.out.tfevents.*"))
    best = latest_best_checkpoint(workdir)
    assert best.parent.resolve() == (run_dir / "checkpoints").resolve()
    assert best.name.startswith("best-")
    state = torch.load(best, map_location="cpu", weights_only=False)
    datamodule_state = state["LandslideDataModule"]
    assert datamodule_state["channels"][-1] == "dem_curvature"
    assert len(datamodule_state["train_stats"]["mean"]) == 7


def test_rerun_in_the_same_folder_does_not_crash(synthetic_root, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first = run(fit_args(synthetic_root, "--trainer.limit_val_batches=1"))
    second = run(fit_args(synthetic_root, "--trainer.limit_val_batches=1"))
    assert first.trainer.log_dir != second.trainer.log_dir


def test_test_uses_latest_run_and_restores_its_settings(
    trained_run, synthetic_root, monkeypatch, caplog
):
    workdir, _ = trained_run
    monkeypatch.chdir(workdir)
    # No --ckpt_path, no --config, not even the data root: all come from the checkpoint;
    # synthetic cubes only because this command line asks for them.
    cli = run(["test", "--region", "talakmau", "--data.synthetic=true", *QUIET])
    assert cli.datamodule.channel_names[-1] == "dem_curvature"
    assert cli.datamodule.test_region.name == "talakmau"
    metrics = cli.trainer.callback_metrics
    assert 0 <= float(metrics["test/talakmau/auprc"]) <= 1
    assert 0 < float(metrics["test/talakmau/no_skill"]) < 0.5
    assert "using checkpoint" in caplog.text and "best-" in caplog.text


def test_test_on_the_train_region_uses_its_held_out_split(trained_run, monkeypatch):
    workdir, fit = trained_run
    monkeypatch.chdir(workdir)
    cli = run(["test", "--region", "hokkaido", "--data.synthetic=true", *QUIET])
    held_out = set(fit.datamodule.splits()["test"].tolist())
    assert set(cli.datamodule.datasets["test"][0].indices.tolist()) == held_out
    assert "test/hokkaido/auprc" in cli.trainer.callback_metrics


def test_validate_scores_the_validation_split(trained_run, monkeypatch):
    workdir, _ = trained_run
    monkeypatch.chdir(workdir)
    cli = run(["validate", "--data.synthetic=true", *QUIET])
    assert "val/hokkaido/auprc" in cli.trainer.callback_metrics


def test_command_line_model_options_beat_the_checkpoints(trained_run, tmp_path, monkeypatch):
    workdir, fit = trained_run
    monkeypatch.chdir(workdir)
    # A checkpoint trained from ImageNet weights must not fetch them again to evaluate.
    checkpoint = torch.load(fit.trainer.checkpoint_callback.best_model_path, weights_only=False)
    checkpoint["hyper_parameters"]["encoder_weights"] = "imagenet"
    pretrained = tmp_path / "pretrained.ckpt"
    torch.save(checkpoint, pretrained)
    cli = run(
        [
            "validate",
            "--ckpt_path",
            str(pretrained),
            "--model.val_auprc=exact",
            "--data.synthetic=true",
            *QUIET,
            "--trainer.logger=false",
        ]
    )
    assert cli.model.hparams.encoder_weights is None
    assert cli.model.hparams.val_auprc == "exact"


def test_predict_maps_the_whole_region(trained_run, synthetic_root, monkeypatch):
    workdir, _ = trained_run
    monkeypatch.chdir(workdir)
    cli = run(["predict", "--region", "talakmau", "--data.synthetic=true", *QUIET])
    assert cli.trainer.predict_loop.predictions == []  # streamed to disk, not kept
    # the map lies on the cube's own grid, NaN exactly where the SAR composite has no data
    folder = workdir / cli.trainer.log_dir / "predictions"
    cube = open_region_cube(cli.datamodule.test_region, synthetic_root, synthetic=True)
    with xr.open_dataset(folder / "talakmau_landslide_probability.nc") as written:
        probability = written["landslide_probability"].values
        np.testing.assert_array_equal(written["y"].values, cube["y"].values)
        np.testing.assert_array_equal(written["x"].values, cube["x"].values)
        assert written.attrs["crs"] == cube.attrs["crs"]
        assert written.attrs["checkpoint"].endswith(".ckpt")
    dm = cli.datamodule
    composite = build_composite(cube, dm.test_region, dm.channel_names, dm.composite)
    has_data = np.isfinite(composite["image"].values[dm.sar_channel_indices]).all(0)
    assert (~has_data).any()
    np.testing.assert_array_equal(np.isnan(probability), ~has_data)
    assert ((probability[has_data] >= 0) & (probability[has_data] <= 1)).all()
    summary = json.loads((folder / "talakmau_landslide_probability.json").read_text())
    assert 0 < summary["no_skill"] < 1 and 0 < summary["auprc"] <= 1
    assert summary["valid_pixels"] == has_data.sum()
    for suffix in (".png", ".tif"):
        assert (folder / f"talakmau_landslide_probability{suffix}").stat().st_size > 0


def test_synthetic_is_not_restored_from_the_checkpoint(trained_run, monkeypatch):
    workdir, _ = trained_run
    monkeypatch.chdir(workdir)
    # trained on synthetic cubes; without --data.synthetic the real cube is looked for
    with pytest.raises(CubeError, match="datacube for region 'talakmau' not found"):
        run(["test", "--region", "talakmau", *QUIET])


def test_checkpoint_with_other_channels_is_a_clear_error(trained_run, monkeypatch):
    workdir, _ = trained_run
    monkeypatch.chdir(workdir)
    with pytest.raises(CheckpointError, match=r"trained on channels \[.*dem_curv.*--data.chan"):
        run(["test", "--data.channels", "sar"])


def test_no_run_to_find_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointError, match="no fit run found.*landslide-lit fit"):
        run(["test", "--region", "talakmau"])
    with pytest.raises(SystemExit) as stop:
        main(["test"])
    assert stop.value.code == 2
    assert capsys.readouterr().err.startswith("error: no --ckpt_path given")


def test_truncated_or_foreign_checkpoint_is_a_clear_error(trained_run, tmp_path, monkeypatch):
    workdir, _ = trained_run
    monkeypatch.chdir(tmp_path)
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(latest_best_checkpoint(workdir).read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="truncated or not a PyTorch checkpoint"):
        run(["test", "--ckpt_path", str(truncated)])
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(CheckpointError, match="not written by landslide-lit"):
        run(["test", "--ckpt_path", str(foreign)])


def test_synth_command_writes_the_real_file_name(tmp_path, capsys):
    main(["synth", "--region", "talakmau", "--root", str(tmp_path), "--size", "64", "64"])
    path = tmp_path / "synthetic" / "talakmau_indonesia.zarr"
    assert path.is_dir() and capsys.readouterr().out.strip() == str(path)
    main(
        [
            "synth",
            "--region",
            "talakmau",
            "--root",
            str(tmp_path),
            "--size",
            "64",
            "64",
            "--format",
            "netcdf",
        ]
    )
    assert (tmp_path / "synthetic" / "talakmau_indonesia.nc").is_file()


def test_missing_cube_is_one_line_not_a_traceback(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stop:
        main(["fit", f"--data.root={tmp_path}", "--trainer.fast_dev_run=true", *TINY_MODEL])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: datacube for region 'hokkaido' not found") and "zenodo" in err
    assert err.count("error:") == 1 and "Traceback" not in err


def test_traceback_switch_shows_the_traceback(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LANDSLIDE_LIT_TRACEBACK", "1")
    with pytest.raises(CheckpointError, match="no fit run found"):
        main(["test"])


def test_cache_clear_command(synthetic_root, tmp_path, capsys):
    from landslide_lit.data.datamodule import LandslideDataModule

    datamodule = LandslideDataModule(root=str(tmp_path), synthetic=True)
    (tmp_path / "synthetic").symlink_to(Path(synthetic_root) / "synthetic")
    datamodule.chips(datamodule.test_region)
    assert len(list((tmp_path / ".chip_cache").iterdir())) == 1
    main(["cache", "clear", "--root", str(tmp_path)])
    assert "removed 1 cache entries" in capsys.readouterr().out
    assert not list((tmp_path / ".chip_cache").iterdir())


def test_best_checkpoint_comes_from_the_monitoring_callback(tmp_path):
    folder = tmp_path / "runs" / "landslide" / "version_0" / "checkpoints"
    folder.mkdir(parents=True)
    best, last = folder / "best-epoch03.ckpt", folder / "last.ckpt"
    callbacks = {
        # the unmonitored `last` callback first: its best_model_path is its latest save
        "ModelCheckpoint{'monitor': None}": {"monitor": None, "best_model_path": str(last)},
        "ModelCheckpoint{'monitor': 'val/auprc'}": {
            "monitor": "val/auprc",
            "best_model_path": str(best),
        },
    }
    for path in (best, last):
        torch.save(
            {"state_dict": {}, "datamodule_hyper_parameters": {}, "callbacks": callbacks}, path
        )
    assert latest_best_checkpoint(tmp_path) == best


def test_unwritable_output_folder_is_a_clear_error(synthetic_root, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    access = os.access  # as root every folder is writable: say this one is not
    monkeypatch.setattr(
        "os.access", lambda path, mode: Path(path) != tmp_path and access(path, mode)
    )
    with pytest.raises(ConfigError, match=r"--trainer.default_root_dir \..*is not writable"):
        run(fit_args(synthetic_root))
    assert not (tmp_path / "runs").exists()


def test_full_disk_and_wrapped_errors_are_user_errors():
    full = OSError(errno.ENOSPC, "No space left on device", "runs/x/last.ckpt")
    assert "runs/x/last.ckpt" in str(user_error(full)) and "disk is full" in str(user_error(full))
    cause = CheckpointError("checkpoint not found: x.ckpt")
    try:
        try:
            raise cause
        except CheckpointError as error:
            raise RuntimeError("a callback failed") from error
    except RuntimeError as wrapped:
        assert user_error(wrapped) is cause
    assert user_error(RuntimeError("a bug")) is None


def test_parse_errors_name_the_key_the_file_and_the_closest_key(tmp_path, capsys):
    typo = tmp_path / "typo.yaml"
    typo.write_text("trainer:\n  max_epoch: 3\n")
    cases = {
        ("fit", "--config", str(typo)): f"unknown key 'trainer.max_epoch' in {typo}; did you "
        "mean trainer.max_epochs?",
        ("fit", "--trainer.max_epoch=3"): "unknown option --trainer.max_epoch; did you mean "
        "--trainer.max_epochs?",
        ("fit", "--trainer.max_epochs=abc"): "--trainer.max_epochs: expected int or null, got abc",
        ("fit", "--ckpt_path"): "--ckpt_path needs a value",
        ("fitt",): "unknown command 'fitt'; did you mean fit?",
    }
    for args, message in cases.items():
        with pytest.raises(SystemExit) as stop:
            main(list(args))
        err = capsys.readouterr().err
        assert stop.value.code == 2 and err == f"error: {message}" + err[len(message) + 7 :]
        assert err.count("error:") == 1 and "Traceback" not in err
