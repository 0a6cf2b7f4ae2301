"""The package as a user meets it: the module entry point and synthetic cubes on first use."""

from __future__ import annotations

import logging
import subprocess
import sys

from landslide_lit.data.cube import open_region_cube
from landslide_lit.data.datamodule import LandslideDataModule
from landslide_lit.regions import get_region


def test_python_dash_m_is_the_command():
    result = subprocess.run(
        [sys.executable, "-m", "landslide_lit", "synth", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "--region" in result.stdout and "landslide-lit synth" in result.stdout


def test_reading_a_synthetic_cube_says_so(synthetic_root, caplog):
    with caplog.at_level(logging.INFO, logger="landslide_lit"):
        open_region_cube(get_region("talakmau"), synthetic_root, synthetic=True)
    assert "SYNTHETIC cube (preset talakmau, seed 0)" in caplog.text


def test_missing_synthetic_cubes_are_generated_on_first_use(tmp_path):
    datamodule = LandslideDataModule(
        train_region="kaikoura", test_region="kaikoura", root=str(tmp_path), synthetic=True
    )
    datamodule.prepare_data()
    cube = tmp_path / "synthetic" / "kaikoura_newzealand.zarr"
    assert (cube / ".zmetadata").is_file()
    assert len(datamodule.chips(datamodule.train_region)) > 0
