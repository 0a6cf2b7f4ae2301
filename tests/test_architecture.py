"""The package's floors, checked by import-linter's contracts in pyproject.toml."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
# In a process of its own: import-linter configures logging with dictConfig, which would
# silence every logger that already exists in this one (the package's included).
LINT = (
    "import sys; from importlinter.cli import lint_imports; "
    f"sys.exit(lint_imports(config_filename={str(PYPROJECT)!r}, no_cache=True, no_logo=True))"
)


def test_import_contracts_hold():
    """Layers follow the data flow, the library never imports experiments, no cycles."""
    done = subprocess.run([sys.executable, "-c", LINT], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_subpackage_is_installed():
    """A normal (non-editable) ``pip install`` ships every subpackage listed in pyproject."""
    import pytest

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    listed = set(tomllib.loads(PYPROJECT.read_text())["tool"]["setuptools"]["packages"])
    root = PYPROJECT.parent
    found = {
        ".".join(init.parent.relative_to(root).parts)
        for init in (root / "landslide_lit").rglob("__init__.py")
    }
    assert found <= listed, f"add to [tool.setuptools] packages: {sorted(found - listed)}"
