"""Ensembles: several models predict one region; the map holds their mean and std."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import xarray as xr
import yaml

from landslide_lit import maps
from landslide_lit.cli import run
from landslide_lit.data import windows as windows_module
from landslide_lit.data.datamodule import LandslideDataModule
from landslide_lit.data.synthetic import write_synthetic_cube
from landslide_lit.ensemble import EnsembleSegmenter
from landslide_lit.errors import ConfigError
from landslide_lit.main import main
from landslide_lit.maps import ProbabilityMapWriter
from landslide_lit.module import LandslideSegmenter
from landslide_lit.runs import (
    CheckpointError,
    ensemble_patterns,
    member_differences,
    restore_from_checkpoint,
)
from tests.conftest import tiny_fit

TINY = {
    "encoder_name": "tu-test_resnet",
    "model_kwargs": {"encoder_depth": 3, "decoder_channels": [16, 8, 4]},
}
NC, STD = "landslide_probability", "landslide_probability_std"


@pytest.fixture(scope="module")
def cube_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ensembles")
    write_synthetic_cube("talakmau", root=root, size=(300, 292), seed=1)
    return root


@pytest.fixture()
def small_bands(monkeypatch):
    """Bands of a few windows and merges of 256 rows: every streaming path runs."""
    monkeypatch.setattr(windows_module, "BAND_ROWS", 200)
    monkeypatch.setattr(maps, "MERGE_PIXELS", 1)


def datamodule(root: Path) -> LandslideDataModule:
    return LandslideDataModule(
        root=str(root),
        synthetic=True,
        train_region="talakmau",
        test_region="talakmau",
        channels="sar_dem",
        cache=False,
        batch_size=4,
    )


def model(seed: int) -> LandslideSegmenter:
    torch.manual_seed(seed)
    return LandslideSegmenter(channel_names=list(datamodule(Path()).channel_names), **TINY).eval()


def predict(module, root: Path, folder: Path, formats=("netcdf", "zarr")) -> Path:
    trainer = L.Trainer(
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        # these models were never validated: no thresholds, no mask (tests/test_predict_products.py)
        callbacks=[
            ProbabilityMapWriter(output_dir=str(folder), formats=list(formats), threshold="none")
        ],
    )
    trainer.predict(module, datamodule=datamodule(root))
    return folder / "talakmau_landslide_probability"


def read(stem: Path, variable: str = NC) -> np.ndarray:
    with xr.open_dataset(stem.with_suffix(".nc")) as written:
        return written[variable].values


def test_an_ensemble_of_one_is_the_single_model_bitwise(cube_root, tmp_path, small_bands):
    single = predict(model(0), cube_root, tmp_path / "single")
    ensemble = predict(EnsembleSegmenter([model(0)]), cube_root, tmp_path / "ensemble")
    for suffix in (".nc", ".zarr"):
        with (
            xr.open_dataset(single.with_suffix(suffix)) as a,
            xr.open_dataset(ensemble.with_suffix(suffix)) as b,
        ):
            assert set(a.data_vars) == set(b.data_vars) and STD not in b
            np.testing.assert_array_equal(a[NC].values, b[NC].values)
            assert str(a[NC].attrs) == str(b[NC].attrs)
    summaries = [json.loads(s.with_suffix(".json").read_text()) for s in (single, ensemble)]
    assert summaries[0]["auprc"] == summaries[1]["auprc"]
    assert "ensemble_size" not in summaries[1]


def test_two_identical_members_have_std_zero_and_the_same_mean(cube_root, tmp_path):
    single = predict(model(0), cube_root, tmp_path / "single", ["netcdf"])
    members = [model(0), model(0)]
    ensemble = predict(EnsembleSegmenter(members), cube_root, tmp_path / "ensemble", ["netcdf"])
    expected, mean, std = read(single), read(ensemble), read(ensemble, STD)
    np.testing.assert_array_equal(mean, expected)
    valid = np.isfinite(expected)
    assert valid.any() and (std[valid] == 0).all() and np.isnan(std[~valid]).all()


def test_two_members_mean_and_std_equal_numpy_over_their_single_maps(
    cube_root, tmp_path, small_bands
):
    """Each member's blended map kept apart (K sums a pixel) and combined per band equals
    the mean and std over the members' own maps, written by each alone."""
    formats = ["netcdf", "zarr", "geotiff"]
    singles = np.stack(
        [read(predict(model(s), cube_root, tmp_path / f"m{s}", formats)) for s in (0, 1)]
    )
    stem = predict(EnsembleSegmenter([model(0), model(1)]), cube_root, tmp_path / "e", formats)
    expected_mean = singles.astype(np.float64).mean(0).astype(np.float32)
    expected_std = singles.astype(np.float64).std(0).astype(np.float32)
    assert np.nanmax(expected_std) > 1e-3  # the members differ
    with (
        xr.open_dataset(stem.with_suffix(".nc")) as nc,
        xr.open_zarr(stem.with_suffix(".zarr")) as z,
    ):
        for written in (nc, z):
            np.testing.assert_array_equal(written[NC].values, expected_mean)
            np.testing.assert_array_equal(written[STD].values, expected_std)
            assert written[NC].attrs["cell_methods"] == "realization: mean"
            assert written[NC].attrs["ancillary_variables"] == STD
            assert written[STD].attrs["cell_methods"] == "realization: standard_deviation"
            assert written[STD].attrs["units"] == "1"
            assert written[STD].attrs["grid_mapping"] == "spatial_ref"
            assert written.attrs["ensemble_size"] == 2 and written.attrs["Conventions"] == "CF-1.8"
    summary = json.loads(stem.with_suffix(".json").read_text())
    assert summary["ensemble_size"] == 2 and "mean of 2 models" in summary["title"]
    rasterio = pytest.importorskip("rasterio")
    with rasterio.open(stem.with_suffix(".tif")) as tif:
        assert tif.count == 2 and tif.descriptions == ("mean", "std")
        np.testing.assert_array_equal(tif.read(1), expected_mean)
        np.testing.assert_array_equal(tif.read(2), expected_std)


def test_the_ensemble_uses_its_first_members_thresholds():
    first, second = model(0), model(1)
    assert EnsembleSegmenter([first, second]).thresholds is None
    first.thresholds = {"max_f1": 0.4}
    second.thresholds = {"max_f1": 0.6}
    assert EnsembleSegmenter([first, second]).thresholds == {"max_f1": 0.4}


# -- the command line -----------------------------------------------------------------

QUIET = ["--trainer.enable_progress_bar=false", "--data.synthetic=true", "--region=talakmau"]


@pytest.fixture(scope="module")
def checkpoints(synthetic_root, tmp_path_factory) -> dict[str, Path]:
    """A fit's best checkpoint, another with other weights, and misfits."""
    workdir = tmp_path_factory.mktemp("fit")
    cli = tiny_fit(workdir, synthetic_root)
    first = workdir / cli.trainer.checkpoint_callback.best_model_path
    state = torch.load(first, weights_only=False)
    paths = {"a": first}

    def save(name: str, change) -> None:
        changed = copy.deepcopy(state)
        change(changed)
        paths[name] = workdir / f"{name}.ckpt"
        torch.save(changed, paths[name])

    def other_weights(c):
        torch.manual_seed(1)
        for key, value in c["state_dict"].items():
            if value.is_floating_point():
                c["state_dict"][key] = value + 0.05 * torch.randn_like(value)

    def other_network(c):
        c["hyper_parameters"]["encoder_name"] = "resnet18"
        c["hyper_parameters"]["channel_names"] = c["hyper_parameters"]["channel_names"][:4]

    def other_train_region(c):
        c["datamodule_hyper_parameters"]["norm_stats"] = "train"

    save("copy", lambda c: None)
    save("b", other_weights)
    save("network", other_network)
    save("norm", other_train_region)
    return paths


def cli_map(workdir: Path, *args: str) -> Path:
    cli = run(["predict", *args, *QUIET])
    return workdir / cli.trainer.log_dir / "predictions" / "talakmau_landslide_probability"


def test_predict_ensemble_mean_and_std_equal_the_members_maps(checkpoints, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    a, b = (str(checkpoints[k]) for k in "ab")
    singles = np.stack([read(cli_map(tmp_path, "--ckpt_path", path)) for path in (a, b)])
    stem = cli_map(tmp_path, "--ckpt_path", a, "--ensemble", b)
    np.testing.assert_array_equal(read(stem), singles.astype(np.float64).mean(0).astype(np.float32))
    np.testing.assert_array_equal(
        read(stem, STD), singles.astype(np.float64).std(0).astype(np.float32)
    )
    with xr.open_dataset(stem.with_suffix(".nc")) as written:
        assert json.loads(written.attrs["ensemble_checkpoints"]) == [a, b]
        assert written.attrs["checkpoint"] == a
    # a glob naming both, without --ckpt_path: the same members, the first file first
    again = cli_map(tmp_path, "--ensemble", str(checkpoints["a"].parent / "[ab]*.ckpt"), b)
    assert sorted(map(str, checkpoints["a"].parent.glob("[ab]*.ckpt")))[0] == a
    np.testing.assert_array_equal(read(again, STD), read(stem, STD))


def test_an_ensemble_of_two_copies_has_std_zero(checkpoints, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    a, copy_ = str(checkpoints["a"]), str(checkpoints["copy"])
    single = read(cli_map(tmp_path, "--ckpt_path", a))
    stem = cli_map(tmp_path, "--ckpt_path", a, "--ensemble", copy_, a)  # a: counted once
    np.testing.assert_array_equal(read(stem), single)
    assert np.nanmax(read(stem, STD)) == 0
    with xr.open_dataset(stem.with_suffix(".nc")) as written:
        assert written.attrs["ensemble_size"] == 2


def test_mismatched_members_are_one_clear_error(checkpoints, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    args = [str(checkpoints[k]) for k in ("a", "network", "norm")]
    with pytest.raises(SystemExit) as stop:
        main(["predict", "--ckpt_path", args[0], "--ensemble", *args[1:], *QUIET])
    error = capsys.readouterr().err
    assert stop.value.code == 2 and error.startswith("error: the --ensemble members do not")
    assert error.count("error:") == 1
    assert f"{args[1]}: channels" in error and "encoder_name 'resnet18'" in error
    assert f"{args[2]}: norm_stats 'train', the first member 'region'" in error
    assert not (tmp_path / "runs").exists()  # found before any work


def test_ensemble_errors_name_the_option(checkpoints, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    a = str(checkpoints["a"])
    with pytest.raises(CheckpointError, match=r"--ensemble .*nothing\*\.ckpt matches no file"):
        run(["predict", "--ckpt_path", a, "--ensemble", str(tmp_path / "nothing*.ckpt")])
    with pytest.raises(CheckpointError, match=r"checkpoint not found: .*gone.ckpt \(--ensemble\)"):
        run(["predict", "--ckpt_path", a, "--ensemble", str(tmp_path / "gone.ckpt")])
    with pytest.raises(ConfigError, match="--ensemble applies to predict only, not to test"):
        run(["test", "--ckpt_path", a, "--ensemble", str(checkpoints["b"]), *QUIET])


def test_members_trained_on_other_statistics_differ():
    def checkpoint(region: str, mean: float) -> dict:
        return {
            "hyper_parameters": {"channel_names": ["vv"]},
            "datamodule_hyper_parameters": {"norm_stats": "train"},
            "LandslideDataModule": {
                "train_region": region,
                "train_stats": {"mean": [mean], "std": [1.0]},
            },
        }

    first = checkpoint("hokkaido", 0.5)
    assert member_differences(first, checkpoint("hokkaido", 0.5 * (1 + 1e-9))) == []
    (other_values,) = member_differences(first, checkpoint("hokkaido", 0.6))
    assert "other statistics of train region 'hokkaido'" in other_values
    (other_region,) = member_differences(first, checkpoint("talakmau", 0.5))
    assert "train region 'talakmau'" in other_region and "'hokkaido'" in other_region


def test_an_ensemble_config_file_names_its_members(checkpoints, tmp_path):
    a, b = str(checkpoints["a"]), str(checkpoints["b"])
    config = tmp_path / "ensemble.yaml"
    config.write_text(yaml.safe_dump({"ensemble": [a, b]}))
    args, _ = restore_from_checkpoint(["predict", "--config", str(config)])
    assert args[-3:] == ["--ckpt_path", a, "--model.encoder_weights=null"]  # the first member
    config.write_text(yaml.safe_dump({"ckpt_path": b, "ensemble": [a]}))
    args, _ = restore_from_checkpoint(["predict", "--config", str(config)])
    assert "--ckpt_path" not in args  # the config's, read by the parser
    assert ensemble_patterns(["predict", "--config", str(config), "--ensemble", b]) == [b]
