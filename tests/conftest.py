"""Shared fixtures: tiny synthetic cubes and a tiny model, made once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Two OpenMP threads fight with everything else on a 2-core CI machine.
os.environ.setdefault("OMP_NUM_THREADS", "1")

TINY_MODEL = [
    "--model.encoder_name=tu-test_resnet",
    '--model.model_kwargs={"encoder_depth": 3, "decoder_channels": [16, 8, 4]}',
]


def tiny_fit(workdir: Path, data_root: str):
    """Run a one-epoch, two-batch fit of the tiny model (demo.yaml) in ``workdir``; its CLI."""
    from landslide_lit.cli import run

    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(workdir)
        return run(
            [
                "fit",
                "--config=demo.yaml",
                f"--data.root={data_root}",
                "--trainer.max_epochs=1",
                "--trainer.limit_train_batches=2",
                "--trainer.enable_progress_bar=false",
                *TINY_MODEL,
            ]
        )


SIZES = {"hokkaido": (512, 512), "talakmau": (400, 392)}  # not whole chips: edges stay uncovered


@pytest.fixture(scope="session", autouse=True)
def user_cache_folder(tmp_path_factory) -> None:
    """Chip caches that fall back to the per-user folder stay inside the test session."""
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("user_cache"))


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> str:
    """A data root with small synthetic Hokkaido and Talakmau cubes under synthetic/."""
    from landslide_lit.data.synthetic import write_synthetic_cube

    root = tmp_path_factory.mktemp("data")
    for region, size in SIZES.items():
        write_synthetic_cube(region, root=root, size=size, seed=0)
    return str(root)
