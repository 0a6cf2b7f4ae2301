"""Datacube reading, composites, chips and the LightningDataModule.

The floor reads in the order data flows: ``cube`` (open and check a cube; ``chunks`` its
Zarr chunk files), ``settings`` and ``acquisitions`` (what a composite is made of, which
acquisitions), ``reading`` and ``composite`` (the before/after stack), ``stats``,
``chips`` and ``splits``, ``entries`` and ``cache`` (the chip cache), ``preparation``
(region -> chips), ``windows`` and ``store`` (whole-region prediction), ``options`` and
``datamodule``; ``synthetic`` makes cubes in the real schema.

The names below are importable from here; each is loaded on first use, so that importing
one module of the floor (``landslide_lit.data.cube``) does not import them all.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOMES = {
    "CompositeSettings": "settings",
    "resolve_channels": "settings",
    "Acquisitions": "acquisitions",
    "select_acquisitions": "acquisitions",
    "CubeError": "cube",
    "open_cube": "cube",
    "open_region_cube": "cube",
    "build_composite": "composite",
    "ChannelStats": "stats",
    "Chips": "chips",
    "extract_chips": "chips",
    "ChipDataset": "splits",
    "split_indices": "splits",
    "ChipCache": "cache",
    "ChipPreparer": "preparation",
    "WindowDataset": "windows",
    "WindowPlan": "windows",
    "LandslideDataModule": "datamodule",
    "make_synthetic_cube": "synthetic",
    "write_synthetic_cube": "synthetic",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
