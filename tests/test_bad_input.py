"""Bad inputs and faults through the real entry point: one clear error each, sources untouched.

Every case runs ``landslide_lit.main.main`` in-process and checks: a non-zero exit, exactly
one ``error:`` line naming the option, file or variable (the case's expected text), no
traceback, and the source cubes' checksum unchanged. Cubes are tiny (32 x 32, made by code);
one tiny fit makes the checkpoint the checkpoint cases use.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

from landslide_lit.main import main
from landslide_lit.regions import get_region
from tests.conftest import TINY_MODEL
from tests.cubes import hand_cube
from tests.probability_maps import probability_field, write_map

REPO = Path(__file__).resolve().parents[1]
SIZE, CHIP = 32, 8
QUIET = [
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
    "--trainer.accelerator=cpu",
]


def good_cube() -> xr.Dataset:
    """A 32 x 32 Hokkaido-dated cube with a landslide pixel in every 8 x 8 chip."""
    ds = hand_cube(SIZE, SIZE)
    labels = np.zeros((SIZE, SIZE), np.float32)
    labels[3::CHIP, 3::CHIP] = 1
    return ds.assign(landslides=(("y", "x"), labels))


def write_root(root: Path, ds: xr.Dataset, region: str = "hokkaido") -> Path:
    """``ds`` as ``region``'s real cube (Zarr, 16 x 16 chunks) under the data root ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / Path(get_region(region).cube).name
    encoding = {name: {"chunks": (16, 16)[-ds[name].ndim :]} for name in ds.data_vars}
    for name in ds.data_vars:
        if ds[name].ndim == 3:
            encoding[name] = {"chunks": (1, 16, 16)}
    ds.to_zarr(path, mode="w", zarr_format=2, consolidated=True, encoding=encoding)
    return path


def fit_args(root: Path | str, *extra: str) -> list[str]:
    return [
        "fit",
        f"--data.root={root}",
        "--data.train_region=hokkaido",
        "--data.test_region=hokkaido",
        f"--data.chip_size={CHIP}",
        "--data.predict_overlap=2",
        "--data.batch_size=4",
        "--data.channels=sar",
        "--trainer.max_epochs=1",
        "--trainer.limit_train_batches=1",
        "--trainer.limit_val_batches=1",
        "--trainer.num_sanity_val_steps=0",
        *TINY_MODEL,
        *QUIET,
        *extra,
    ]


def checksum(root: Path) -> str:
    """Hash of every file of the source cube stores under ``root`` (not synth's outputs)."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        sources = [part for part in path.relative_to(root).parts if part.endswith(".zarr")]
        if path.is_file() and sources and path.relative_to(root).parts[1:2] != ("synth",):
            digest.update(str(path.relative_to(root)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


@dataclass
class World:
    """What the cases point at: a good data root, a finished run, scratch folders."""

    good: Path
    run: Path
    ckpt: Path
    scratch: Path

    def root(self, name: str, change: Callable[[xr.Dataset], xr.Dataset] | None = None) -> Path:
        """A data root holding the good cube, changed by ``change``."""
        root = self.scratch / name
        if not root.exists():
            write_root(root, change(good_cube()) if change else good_cube())
        return root

    def store(self, name: str) -> Path:
        return self.root(name) / Path(get_region("hokkaido").cube).name

    def folder(self, name: str) -> Path:
        """An empty scratch folder (a data root without cubes)."""
        folder = self.scratch / name
        folder.mkdir(parents=True, exist_ok=True)
        return folder


@pytest.fixture(scope="session")
def world(tmp_path_factory) -> World:
    base = tmp_path_factory.mktemp("bad_input")
    good = base / "good"
    write_root(good, good_cube())
    run = base / "run"
    run.mkdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(run)
        main(fit_args(good))
    (ckpt,) = (run / "runs").rglob("best-*.ckpt")
    return World(good=good, run=run, ckpt=ckpt, scratch=base / "scratch")


@dataclass
class Case:
    """One bad input: the command line (from the world), the text the error must contain."""

    name: str
    args: Callable[[World], list[str]]
    expect: str
    prepare: Callable[[World], None] = lambda w: None
    env: dict[str, str] = field(default_factory=dict)
    cwd: str = "empty"  # "empty": a fresh folder; "run": the finished run's folder


def _chunk_files(store: Path, variable: str) -> list[Path]:
    return sorted(p for p in (store / variable).iterdir() if not p.name.startswith("."))


def drop_chunk(w: World) -> None:
    _chunk_files(w.store("missing_chunk"), "vv")[0].unlink()


def corrupt_chunk(w: World) -> None:
    _chunk_files(w.store("corrupt_chunk"), "vv")[0].write_bytes(b"not a compressed chunk")


def corrupt_store(w: World) -> None:
    (w.store("corrupt_store") / ".zmetadata").write_text("{ not json")


def duplicated(ds: xr.Dataset) -> xr.Dataset:
    """Timestep 3 stored twice, the copy with the other orbit: no exact reading.

    (A copy that agrees is used once, with a warning: tests/test_cube.py.)
    """
    copy = ds.isel(timestep=[3])
    copy = copy.assign_coords({"sat:orbit_state": ("timestep", ["a"])})
    # only the variables along timestep are concatenated, whatever xarray's default
    return xr.concat(
        [ds, copy], "timestep", data_vars="minimal", coords="minimal", compat="override"
    )


def mixed_time_zones(ds: xr.Dataset) -> xr.Dataset:
    stamps = [
        f"{t}T00:00:00{'+09:00' if i % 2 else ''}"  # aware and naive: no exact reading
        for i, t in enumerate(ds["timestep"].dt.strftime("%Y-%m-%d").values)
    ]
    return ds.assign_coords(timestep=np.array(stamps, dtype=object))


def region_file(w: World, name: str, body: dict) -> str:
    path = w.scratch / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"data": {"test_region": body}}))
    return str(path)


REGION = {"name": "mine", "cube": "mine.zarr", "event_start": "2020-01-01"}


def save_truncated(w: World) -> None:
    (w.scratch / "truncated.ckpt").write_bytes(w.ckpt.read_bytes()[:2000])


def save_foreign(w: World) -> None:
    torch.save({"state_dict": {}}, w.scratch / "foreign.ckpt")


def save_unreachable(w: World) -> None:
    """The checkpoint, its validation never reaching precision 0.9 (highest 0.6)."""
    checkpoint = torch.load(w.ckpt, weights_only=False)
    checkpoint["thresholds"]["operating_points"].pop("precision@0.9", None)
    checkpoint["thresholds"]["max_precision"] = 0.6
    torch.save(checkpoint, w.scratch / "unreachable.ckpt")


def save_without_thresholds(w: World) -> None:
    """The checkpoint as a landslide-lit before validation thresholds saved it."""
    checkpoint = torch.load(w.ckpt, weights_only=False)
    del checkpoint["thresholds"]
    torch.save(checkpoint, w.scratch / "no_thresholds.ckpt")


def runs_is_a_file(w: World) -> None:
    Path("runs").write_text("not a folder")


def existing_synthetic(w: World) -> None:
    main(
        ["synth", "--region", "talakmau", "--root", str(w.scratch / "synth"), "--size", "32", "32"]
    )


def probability_map(w: World, crs: bool = True) -> Path:
    """A tiny predict map (netCDF) under the scratch folder, with or without its CRS."""
    folder = w.folder("maps_crs" if crs else "maps_no_crs")
    stem = folder / "testland_landslide_probability"
    if not stem.with_suffix(".nc").exists():
        write_map(folder, probability_field(SIZE, SIZE), formats=["netcdf"], crs=crs)
    return stem.with_suffix(".nc")


def evaluate(w: World, command: str, *extra: str) -> list[str]:
    return [command, "--ckpt_path", str(w.ckpt), f"--data.root={w.good}", *QUIET, *extra]


def predict_with(w: World, checkpoint: str, *extra: str) -> list[str]:
    """predict the good cube with the scratch folder's ``checkpoint``."""
    path = str(w.scratch / checkpoint)
    return [
        "predict",
        "--ckpt_path",
        path,
        f"--data.root={w.good}",
        "--region=hokkaido",
        *QUIET,
        *extra,
    ]


CASES = [
    # -- the data root and the cube ------------------------------------------------
    Case("missing cube", lambda w: fit_args(w.folder("empty_root")), "hokkaido_japan.zarr"),
    Case("root typo", lambda w: fit_args(str(w.good) + "x"), "--data.root"),
    Case(
        "root is a file",
        lambda w: fit_args(w.good / "hokkaido_japan.zarr" / ".zmetadata"),
        "--data.root",
    ),
    Case("root is the store", lambda w: fit_args(w.good / "hokkaido_japan.zarr"), "--data.root"),
    Case(
        "corrupt store",
        lambda w: fit_args(w.root("corrupt_store")),
        "hokkaido_japan.zarr",
        prepare=corrupt_store,
    ),
    Case(
        "missing variable", lambda w: fit_args(w.root("no_vh", lambda d: d.drop_vars("vh"))), "vh"
    ),
    Case(
        "missing chunk files", lambda w: fit_args(w.root("missing_chunk")), "vv", prepare=drop_chunk
    ),
    Case("corrupt chunk", lambda w: fit_args(w.root("corrupt_chunk")), "vv", prepare=corrupt_chunk),
    Case("duplicated timesteps", lambda w: fit_args(w.root("dup", duplicated)), "2018-09-03"),
    Case("mixed time zones", lambda w: fit_args(w.root("tz", mixed_time_zones)), "timestep"),
    Case("vv in dB", lambda w: fit_args(w.root("db", lambda d: d.assign(vv=-10 - d.vv))), "vv"),
    Case(
        "empty before window",
        lambda w: fit_args(w.root("late", lambda d: d.isel(timestep=slice(5, None)))),
        "before",
    ),
    Case(
        "orbit filter without orbits",
        lambda w: fit_args(w.root("no_orbit", lambda d: d.drop_vars("sat:orbit_state"))),
        "orbit",
    ),
    Case(
        "labels all zero",
        lambda w: fit_args(w.root("no_pos", lambda d: d.assign(landslides=0 * d.landslides))),
        "landslides",
    ),
    Case(
        "labels all NaN",
        lambda w: fit_args(w.root("nan_pos", lambda d: d.assign(landslides=d.landslides * np.nan))),
        "landslides",
    ),
    Case(
        "cube smaller than a chip",
        lambda w: fit_args(w.good, "--data.chip_size=64"),
        "--data.chip_size",
    ),
    Case(
        "test without labels",
        lambda w: evaluate(
            w,
            "test",
            f"--data.root={w.root('unlabelled', lambda d: d.drop_vars('landslides'))}",
            "--region=hokkaido",
        ),
        "predict",
    ),
    Case(
        "validate without labels",
        lambda w: evaluate(
            w,
            "validate",
            f"--data.root={w.root('unlabelled', lambda d: d.drop_vars('landslides'))}",
        ),
        "predict",
    ),
    # -- regions -------------------------------------------------------------------------
    Case("unknown region", lambda w: fit_args(w.good, "--data.test_region=nowhere"), "nowhere"),
    Case("--region unknown", lambda w: evaluate(w, "test", "--region=hokaido"), "hokaido"),
    Case(
        "region mapping without event_end",
        lambda w: fit_args(w.good, "--config", region_file(w, "no_end", REGION)),
        "event_end",
    ),
    Case(
        "region mapping reversed dates",
        lambda w: fit_args(
            w.good, "--config", region_file(w, "reversed", {**REGION, "event_end": "2019-01-01"})
        ),
        "event_end",
    ),
    Case(
        "region mapping bad date",
        lambda w: fit_args(
            w.good, "--config", region_file(w, "bad_date", {**REGION, "event_end": "2020-13-01"})
        ),
        "event_end",
    ),
    Case(
        "region mapping bad orbit",
        lambda w: fit_args(
            w.good,
            "--config",
            region_file(w, "bad_orbit", {**REGION, "event_end": "2020-02-01", "orbit": "up"}),
        ),
        "orbit",
    ),
    Case("--region file missing", lambda w: evaluate(w, "test", "--region=some.yaml"), "some.yaml"),
    # -- options ---------------------------------------------------------------------------
    Case("stride 0", lambda w: fit_args(w.good, "--data.stride=0"), "--data.stride"),
    Case("chip_size 0", lambda w: fit_args(w.good, "--data.chip_size=0"), "--data.chip_size"),
    Case(
        "chip_size negative", lambda w: fit_args(w.good, "--data.chip_size=-5"), "--data.chip_size"
    ),
    Case("batch_size 0", lambda w: fit_args(w.good, "--data.batch_size=0"), "--data.batch_size"),
    Case(
        "split fractions",
        lambda w: fit_args(w.good, "--data.split_fractions=[0.5,0.5,0.5]"),
        "split_fractions",
    ),
    Case(
        "composite before 0",
        lambda w: fit_args(w.good, "--data.composite.before=0"),
        "--data.composite.before",
    ),
    Case(
        "composite after 0",
        lambda w: fit_args(w.good, "--data.composite.after=0"),
        "--data.composite.after",
    ),
    Case("no channels", lambda w: fit_args(w.good, "--data.channels=[]"), "channels"),
    Case("unknown channel", lambda w: fit_args(w.good, "--data.channels=[vv_before,foo]"), "foo"),
    Case("unknown keep", lambda w: fit_args(w.good, "--data.keep=all"), "--data.keep"),
    Case(
        "chip_size not a number",
        lambda w: fit_args(w.good, "--data.chip_size=big"),
        "--data.chip_size",
    ),
    Case(
        "max_epochs not a number",
        lambda w: fit_args(w.good, "--trainer.max_epochs=abc"),
        "--trainer.max_epochs",
    ),
    Case(
        "option typo", lambda w: fit_args(w.good, "--trainer.max_epoch=3"), "--trainer.max_epochs"
    ),
    Case("option abbreviated", lambda w: fit_args(w.good, "--trainer.max_e=3"), "--trainer.max_e"),
    Case("unknown option", lambda w: fit_args(w.good, "--data.chipsize=8"), "--data.chip_size"),
    Case("stray value", lambda w: [*fit_args(w.good), "extra"], "extra"),
    Case(
        "yaml key typo",
        lambda w: fit_args(w.good, "--config", _yaml(w, "typo", {"trainer": {"max_epoch": 3}})),
        "typo.yaml",
    ),
    Case(
        "yaml not a mapping",
        lambda w: fit_args(w.good, "--config", _yaml(w, "list", [1, 2])),
        "list.yaml",
    ),
    Case("unknown config", lambda w: ["fit", "--config", "nope.yaml"], "nope.yaml"),
    Case("unknown command", lambda w: ["fitt"], "fit"),
    Case("no command", lambda w: [], "command"),
    Case("unknown loss", lambda w: fit_args(w.good, "--model.loss=l2"), "--model.loss"),
    Case("unknown arch", lambda w: fit_args(w.good, "--model.arch=Unett"), "--model.arch"),
    Case(
        "unknown encoder",
        lambda w: fit_args(w.good, "--model.encoder_name=resnet5"),
        "--model.encoder_name",
    ),
    Case(
        "unknown weights",
        lambda w: fit_args(
            w.good, "--model.encoder_name=resnet18", "--model.encoder_weights=imagenett"
        ),
        "--model.encoder_weights",
    ),
    Case(
        "pos_weight without bce",
        lambda w: fit_args(w.good, "--model.loss=dice", "--model.pos_weight=2"),
        "--model.pos_weight",
    ),
    Case(
        "encoder weights file missing",
        lambda w: fit_args(
            w.good, "--model.encoder_name=resnet18", "--model.encoder_weights=nowhere/enc.pth"
        ),
        "nowhere/enc.pth",
    ),
    Case(
        "offline imagenet weights",
        lambda w: fit_args(
            w.scratch / "empty_root",
            "--model.encoder_name=resnet18",
            "--model.encoder_weights=imagenet",
        ),
        "--model.encoder_weights null",
        env={"HF_HUB_OFFLINE": "1"},
    ),
    Case(
        "headline offline without cubes",
        lambda w: [
            "fit",
            "--config",
            str(REPO / "configs" / "sar_dem_aug.yaml"),
            f"--data.root={w.scratch / 'empty_root'}",
        ],
        "hokkaido_japan.zarr",
        env={"HF_HUB_OFFLINE": "1"},
    ),
    # -- checkpoints -----------------------------------------------------------------------
    Case(
        "checkpoint missing",
        lambda w: [*evaluate(w, "test")[:2], str(w.scratch / "nope.ckpt")],
        "nope.ckpt",
    ),
    Case(
        "checkpoint truncated",
        lambda w: ["test", "--ckpt_path", str(w.scratch / "truncated.ckpt")],
        "truncated.ckpt",
        prepare=save_truncated,
    ),
    Case(
        "checkpoint foreign",
        lambda w: ["test", "--ckpt_path", str(w.scratch / "foreign.ckpt")],
        "foreign.ckpt",
        prepare=save_foreign,
    ),
    Case("checkpoint is a folder", lambda w: ["test", "--ckpt_path", str(w.run)], "best-"),
    Case(
        "checkpoint other channels",
        lambda w: evaluate(w, "test", "--data.channels=sar_dem"),
        "--data.channels",
    ),
    Case(
        "checkpoint other encoder",
        lambda w: evaluate(w, "test", "--model.encoder_name=resnet18"),
        "--model.encoder_name",
    ),
    Case(
        "fit resume other channels",
        lambda w: fit_args(w.good, "--ckpt_path", str(w.ckpt), "--data.channels=sar_dem"),
        "--data.channels",
    ),
    Case(
        "fit resume other arch",
        lambda w: fit_args(w.good, "--ckpt_path", str(w.ckpt), "--model.arch=FPN"),
        "--model.arch",
    ),
    Case("ckpt_path without value", lambda w: ["test", "--ckpt_path"], "--ckpt_path"),
    Case(
        "fit ckpt_path without value", lambda w: [*fit_args(w.good), "--ckpt_path"], "--ckpt_path"
    ),
    Case(
        "no run to take a checkpoint from",
        lambda w: ["predict", "--region=hokkaido"],
        "--ckpt_path",
    ),
    # -- outputs ---------------------------------------------------------------------------
    Case("runs folder is a file", lambda w: fit_args(w.good), "runs", prepare=runs_is_a_file),
    Case(
        "default_root_dir is a file",
        lambda w: fit_args(
            w.good, f"--trainer.default_root_dir={w.good / 'hokkaido_japan.zarr' / '.zmetadata'}"
        ),
        "--trainer.default_root_dir",
    ),
    Case(
        "synth onto an existing cube",
        lambda w: [
            "synth",
            "--region",
            "talakmau",
            "--root",
            str(w.scratch / "synth"),
            "--size",
            "32",
            "32",
        ],
        "--overwrite",
        prepare=existing_synthetic,
    ),
    Case(
        "synth size too small",
        lambda w: [
            "synth",
            "--region",
            "talakmau",
            "--root",
            str(w.scratch / "synth_small"),
            "--size",
            "4",
            "4",
        ],
        "--size",
    ),
    Case(
        "synth size not a number",
        lambda w: ["synth", "--region", "talakmau", "--size", "a", "b"],
        "--size",
    ),
    Case("synth unknown region", lambda w: ["synth", "--region", "nowhere"], "--region"),
    Case("cache unknown action", lambda w: ["cache", "purge"], "purge"),
    Case(
        "cache clear of a missing root",
        lambda w: ["cache", "clear", "--root", str(w.scratch / "no_such_root")],
        "--root",
    ),
    Case("reproduce zero seeds", lambda w: ["reproduce", "--seeds", "0"], "--seeds"),
    # -- predict's landslide mask and polygons (--maps.*) --------------------------------
    Case(
        "predict threshold outside [0, 1]",
        lambda w: evaluate(w, "predict", "--region=hokkaido", "--maps.threshold=1.5"),
        "--maps.threshold 1.5",
    ),
    Case(
        "predict threshold unknown rule",
        lambda w: evaluate(w, "predict", "--region=hokkaido", "--maps.threshold=best"),
        "--maps.threshold best",
    ),
    Case(
        "predict precision target not stored",
        lambda w: evaluate(w, "predict", "--region=hokkaido", "--maps.threshold=precision@0.8"),
        "precision@0.8",
    ),
    Case(
        "predict unreachable precision",
        lambda w: predict_with(w, "unreachable.ckpt", "--maps.threshold=precision@0.9"),
        "never reached it (highest precision 0.600)",
        prepare=save_unreachable,
    ),
    Case(
        "predict checkpoint without thresholds",
        lambda w: predict_with(w, "no_thresholds.ckpt"),
        "no_thresholds.ckpt holds no thresholds",
        prepare=save_without_thresholds,
    ),
    Case(
        "predict negative minimum area",
        lambda w: evaluate(w, "predict", "--region=hokkaido", "--maps.min_area_m2=-5"),
        "--maps.min_area_m2",
    ),
    # -- polygonize ------------------------------------------------------------------------
    Case(
        "polygonize threshold outside [0, 1]",
        lambda w: ["polygonize", str(probability_map(w)), "--threshold", "1.5"],
        "--threshold 1.5",
    ),
    Case(
        "polygonize map without CRS",
        lambda w: ["polygonize", str(probability_map(w, crs=False)), "--threshold", "0.5"],
        "no CRS",
    ),
    Case(
        "polygonize missing map",
        lambda w: ["polygonize", str(w.scratch / "nowhere.nc"), "--threshold", "0.5"],
        "nowhere.nc",
    ),
]


def _yaml(w: World, name: str, content) -> str:
    path = w.scratch / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content))
    return str(path)


def test_cases_are_distinct():
    names = [case.name for case in CASES]
    assert len(set(names)) == len(names) >= 50


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_is_one_clear_error(case: Case, world: World, tmp_path, monkeypatch, capfd):
    world.scratch.mkdir(exist_ok=True)
    monkeypatch.chdir(world.run if case.cwd == "run" else tmp_path)
    monkeypatch.delenv("LANDSLIDE_LIT_TRACEBACK", raising=False)
    monkeypatch.setenv("LANDSLIDE_LIT_DATA", str(world.scratch / "empty_root"))
    for name, value in case.env.items():
        monkeypatch.setenv(name, value)
        if name == "HF_HUB_OFFLINE":  # read by huggingface_hub at import
            monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
            monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path))
    case.prepare(world)
    args = case.args(world)
    before = checksum(world.scratch.parent)
    code, crash = None, None
    try:
        main(args)
    except SystemExit as stop:
        code = stop.code
    except Exception as error:  # a traceback: what this test reports
        crash = error
    out, err = capfd.readouterr()
    if isinstance(code, str):  # what the interpreter does with SystemExit("message")
        code, err = 1, err + code + "\n"
    changed = checksum(world.scratch.parent) != before
    assert crash is None, f"[traceback] {type(crash).__name__}: {crash}"
    assert code not in (None, 0), f"[exit 0] {args}\n{err[-2000:]}"
    assert not changed, "[wrote] a source cube changed"
    assert "Traceback" not in out + err, f"[traceback] {err[-2000:]}"
    assert err.count("error:") == 1 and case.expect in err, f"[unclear] {err[-2000:]}"
