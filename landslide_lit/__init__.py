"""landslide-lit: map landslides in Sentinel-1 SAR datacubes with PyTorch Lightning.

The public names below load on first use (PEP 562 ``__getattr__``): ``import landslide_lit``
and ``landslide-lit --help`` stay fast, without importing torch, Lightning or xarray.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from landslide_lit.version import __version__

# public name -> the module that defines it
_LAZY = {
    "CompositeSettings": "landslide_lit.data.composite",
    "ConfigError": "landslide_lit.errors",
    "LandslideDataModule": "landslide_lit.data.datamodule",
    "LandslideLitError": "landslide_lit.errors",
    "LandslideSegmenter": "landslide_lit.module",
    "REGIONS": "landslide_lit.regions",
    "Region": "landslide_lit.regions",
    "get_region": "landslide_lit.regions",
}

__all__ = [
    "REGIONS",
    "CompositeSettings",
    "ConfigError",
    "LandslideDataModule",
    "LandslideLitError",
    "LandslideSegmenter",
    "Region",
    "__version__",
    "get_region",
]

if TYPE_CHECKING:
    from landslide_lit.data.composite import CompositeSettings
    from landslide_lit.data.datamodule import LandslideDataModule
    from landslide_lit.errors import ConfigError, LandslideLitError
    from landslide_lit.module import LandslideSegmenter
    from landslide_lit.regions import REGIONS, Region, get_region


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'landslide_lit' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value  # the next access is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
