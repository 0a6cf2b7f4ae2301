"""`landslide-lit polygonize`: the mask and polygons of an existing map at another threshold.

Reads a probability map written by ``predict`` (``.nc``, or the ``.tif`` GeoTIFF) block by
block, as predict writes it, without the model, and feeds it to
:class:`~landslide_lit.products.ResponderProducts`, the code path of ``predict``'s own
products: the same threshold gives the same mask and polygons. ``--threshold`` is a
probability in [0, 1], or the name of a validation threshold (``max_f1``,
``precision@0.7``) when the map carries them (its ``thresholds`` attribute: JSON mapping
each rule to its value, or to an object whose ``threshold`` is the value).

Outputs go to ``--out FILE.gpkg`` (and ``FILE_mask.tif``, ``FILE.json``) or, without it,
beside the map as ``<region>_landslide_mask.tif``, ``<region>_landslides.gpkg`` and
``<region>_landslides.json``; existing outputs of those names are replaced, the map never.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from landslide_lit.argv import ArgumentParser
from landslide_lit.atomic import write_json_atomically
from landslide_lit.errors import ConfigError
from landslide_lit.map_files import CHUNK, VARIABLE, Block, block_columns
from landslide_lit.owners import remove_stale
from landslide_lit.products import ProductOptions, ProductPaths, ResponderProducts, run_attributes
from landslide_lit.rasters import Grid, cf_crs, require
from landslide_lit.thresholds import ChosenThreshold

__all__ = ["main"]

_PROG = "landslide-lit polygonize"
_MAP_SUFFIX = f"_{VARIABLE}"


def _parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog=_PROG,
        description="Threshold an existing landslide probability map (from predict) into a "
        "landslide mask (Cloud-Optimized GeoTIFF) and landslide polygons with areas "
        "(GeoPackage), without the model.",
    )
    parser.add_argument(
        "map", metavar="MAP", help="the map: <region>_landslide_probability.nc or .tif"
    )
    parser.add_argument(
        "--threshold",
        required=True,
        metavar="T",
        help="landslide where probability >= T: a number in [0, 1], or a validation "
        "threshold the map carries (max_f1, precision@0.7)",
    )
    parser.add_argument(
        "--min-area-m2",
        type=_non_negative,
        default=0.0,
        metavar="A",
        help="drop landslides smaller than A m² (default 0)",
    )
    parser.add_argument(
        "--simplify",
        type=_non_negative,
        default=0.0,
        metavar="M",
        help="simplify outlines with tolerance M map units, topology preserved; areas stay "
        "the pixels' (default 0: exact pixel outlines)",
    )
    parser.add_argument(
        "--out",
        metavar="FILE.gpkg",
        help="the polygons (FILE_mask.tif and FILE.json beside it; default: beside the map)",
    )
    parser.add_argument(
        "--geojson", action="store_true", help="also write FILE.geojson (EPSG:4326, RFC 7946)"
    )
    return parser


def _non_negative(text: str) -> float:
    """An option's value: a finite number >= 0 (argparse names the option)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 <= value < math.inf:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number >= 0")
    return value


def main(args: list[str]) -> None:
    """`landslide-lit polygonize MAP --threshold T [...]` (see the module)."""
    options = _parser().parse_args(args)
    source = _open_map(Path(options.map))
    try:
        _polygonize(source, options)
    finally:
        source.close()


def _polygonize(source: _Map, options) -> None:
    threshold = _threshold(options.threshold, source)
    paths = _paths(options.out, source)
    for path in (paths.mask, paths.polygons):
        remove_stale(path.parent, f".{path.stem}.pid*-*")
    products = ResponderProducts(
        paths,
        source.grid,
        threshold,
        run_attributes(source.attrs),  # as predict gives its polygons
        ProductOptions(options.min_area_m2, options.simplify, options.geojson),
    )
    try:
        for block in source.blocks():
            products.add(block)
        summary = products.close()
    except BaseException:
        products.abandon()
        raise
    summary_path = paths.polygons.with_suffix(".json")
    summary = {"map": str(source.path), **summary}
    summary["files"].append(summary_path.name)
    write_json_atomically(summary_path, summary)
    _report(summary, paths.polygons.parent)


def _report(summary: dict[str, Any], folder: Path) -> None:
    print(
        f"threshold {summary['threshold']:g} ({summary['threshold_rule']}, "
        f"{summary['threshold_source']}): {summary['landslides']} landslides, "
        f"{summary['area_m2'] / 1e4:.2f} ha"
    )
    for row in summary["by_p_mean"]:
        print(f"  p_mean {row['p_mean']}: {row['landslides']}, {row['area_m2'] / 1e4:.2f} ha")
    for name in summary["files"]:
        print(f"wrote {folder / name}")


# -- the map ---------------------------------------------------------------------------


@dataclass
class _Map:
    """An open probability map: its grid, attributes and a reader of its blocks."""

    path: Path
    grid: Grid
    attrs: dict[str, Any]
    read: Any  # (rows, columns): slices -> float32 pixels, NaN without data
    close: Any  # () -> None

    @property
    def region(self) -> str:
        stem = self.path.stem
        return stem[: -len(_MAP_SUFFIX)] if stem.endswith(_MAP_SUFFIX) else stem

    def blocks(self) -> Iterator[Block]:
        """The map in blocks of CHUNK rows and BLOCK_COLUMNS columns, as predict writes it."""
        for y0 in range(0, self.grid.height, CHUNK):
            rows = slice(y0, min(y0 + CHUNK, self.grid.height))
            for columns in block_columns(self.grid.width):
                pixels = self.read(rows, columns).astype(np.float32, copy=False)
                valid = np.isfinite(pixels)
                if ((pixels[valid] < 0) | (pixels[valid] > 1)).any():
                    raise ConfigError(
                        f"{self.path}: values outside [0, 1] in rows {rows.start}-"
                        f"{rows.stop - 1}: not a landslide probability map ({VARIABLE})"
                    )
                yield Block(y0, columns.start, pixels, valid, np.zeros(pixels.shape, bool))


def _open_map(path: Path) -> _Map:
    if not path.is_file():
        raise ConfigError(
            f"{path}: no such map file; give the .nc or .tif landslide probability map "
            "that predict wrote"
        )
    readers = {".nc": _netcdf_map, ".tif": _geotiff_map, ".tiff": _geotiff_map}
    if path.suffix.lower() not in readers:
        raise ConfigError(
            f"{path}: polygonize reads netCDF (.nc) or GeoTIFF (.tif) probability maps"
        )
    source = readers[path.suffix.lower()](path)
    if source.grid.crs is None:
        source.close()
        raise ConfigError(
            f"{path} has no CRS, so its landslides have no place or area: polygonize needs a "
            "map with one (predict writes the cube's CRS; a cube without one gives maps "
            "without one: add its CRS to the cube and predict again)"
        )
    return source


def _netcdf_map(path: Path) -> _Map:
    import netCDF4

    try:
        ds = netCDF4.Dataset(path)
    except OSError as error:
        raise ConfigError(f"{path}: not a readable netCDF file ({error})") from None
    try:
        return _netcdf_grid(path, ds)
    except BaseException:
        ds.close()
        raise


def _netcdf_grid(path: Path, ds) -> _Map:
    if VARIABLE not in ds.variables:
        names = ", ".join(ds.variables) or "none"
        raise ConfigError(
            f"{path}: no variable {VARIABLE!r} (it has: {names}): not a landslide "
            "probability map written by predict"
        )
    var = ds[VARIABLE]
    var.set_auto_mask(False)  # the fill value is NaN: no data stays NaN
    if var.ndim != 2 or any(d not in ds.variables for d in var.dimensions):
        raise ConfigError(
            f"{path}: {VARIABLE} must be 2-D with y/x coordinate variables "
            f"(it has dimensions {var.dimensions})"
        )
    y, x = var.dimensions
    mapping_name = getattr(var, "grid_mapping", None)
    mapping = ds[mapping_name].__dict__ if mapping_name in ds.variables else {}
    attrs = ds.__dict__
    crs = cf_crs(mapping, attrs.get("crs"))
    grid = Grid.from_coordinates(ds[x][:], ds[y][:], crs, where=str(path))
    return _Map(
        path, grid, dict(attrs), lambda rows, columns: np.asarray(var[rows, columns]), ds.close
    )


def _geotiff_map(path: Path) -> _Map:
    rasterio = require("rasterio", "reading a GeoTIFF map")
    from rasterio.windows import Window

    try:
        src = rasterio.open(path)
    except rasterio.errors.RasterioIOError as error:
        raise ConfigError(f"{path}: not a readable GeoTIFF ({error})") from None
    if VARIABLE in src.descriptions:
        band = src.descriptions.index(VARIABLE) + 1
    elif src.count == 1 and np.issubdtype(np.dtype(src.dtypes[0]), np.floating):
        band = 1  # a map written before bands were named
    else:
        raise ConfigError(
            f"{path}: no band {VARIABLE!r} (bands: {src.descriptions}, {src.dtypes}): not a "
            "landslide probability map written by predict"
        )
    nodata = src.nodata

    def read(rows: slice, columns: slice) -> np.ndarray:
        window = Window.from_slices(rows, columns)
        pixels = src.read(band, window=window).astype(np.float32)
        if nodata is not None and not math.isnan(nodata):
            pixels[pixels == nodata] = np.nan
        return pixels

    crs = src.crs.to_wkt() if src.crs else None
    grid = Grid(src.height, src.width, src.transform, crs)
    return _Map(path, grid, dict(src.tags()), read, src.close)


# -- threshold and outputs ---------------------------------------------------------------


def _threshold(text: str, source: _Map) -> ChosenThreshold:
    try:
        value = float(text)
    except ValueError:
        return _rule(text, source)
    if not 0.0 <= value <= 1.0:
        raise ConfigError(
            f"--threshold {text}: outside [0, 1]; it is a landslide probability "
            "(pixels with probability >= T are landslides)"
        )
    return ChosenThreshold(value, "fixed", f"--threshold {text}")


def _rule(rule: str, source: _Map) -> ChosenThreshold:
    """The validation threshold named ``rule`` among those the map carries."""
    name = source.path.name
    text = source.attrs.get("thresholds")
    if not text:
        raise ConfigError(
            f"--threshold {rule}: {name} carries no validation thresholds (no 'thresholds' "
            "attribute), so a rule name cannot be looked up: give a number in [0, 1]"
        )
    try:
        rules = json.loads(text)
        values = {k: float(v["threshold"] if isinstance(v, dict) else v) for k, v in rules.items()}
    except (ValueError, TypeError, KeyError, AttributeError):
        raise ConfigError(
            f"{name}: its 'thresholds' attribute is not JSON mapping rules to thresholds: "
            f"{text[:200]}"
        ) from None
    if rule not in values:
        raise ConfigError(
            f"--threshold {rule}: not among the thresholds {name} carries "
            f"({', '.join(values) or 'none'}); give one of them or a number in [0, 1]"
        )
    checkpoint = source.attrs.get("checkpoint") or "the model"
    return ChosenThreshold(values[rule], rule, f"{rule} on validation of {checkpoint} ({name})")


def _paths(out: str | None, source: _Map) -> ProductPaths:
    if out is None:
        paths = ProductPaths.for_region(source.path.parent, source.region)
        print(f"no --out: writing beside the map, in {source.path.parent}")
    else:
        polygons = Path(out)
        if polygons.suffix.lower() != ".gpkg":
            raise ConfigError(f"--out {out}: give a GeoPackage file name ending in .gpkg")
        if polygons.is_dir():
            raise ConfigError(f"--out {out} is a folder; give a file name ending in .gpkg")
        polygons.parent.mkdir(parents=True, exist_ok=True)
        paths = ProductPaths.for_polygons(polygons)
    outputs = (paths.mask, paths.polygons, paths.geojson, paths.polygons.with_suffix(".json"))
    kept = source.path.resolve()  # the map and its siblings (predict's summary, quicklook)
    if any(
        p.resolve() == kept or p.resolve().with_suffix("") == kept.with_suffix("") for p in outputs
    ):
        raise ConfigError(
            f"an output would replace the map {source.path} or its files: give --out another name"
        )
    return paths
