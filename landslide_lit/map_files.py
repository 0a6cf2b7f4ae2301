"""The files of one region's probability map, written band by band of rows.

:class:`MapFiles` hands each final :class:`Band` to one writer per format (netCDF, zarr,
GeoTIFF) and to the reducers of the quicklook and the region score; on close it names
the finished files, draws the quicklook and writes the JSON summary. The writers fill
hidden partial files that carry the writing process's owner tag
(``.<region>_landslide_probability.pid<PID>-<HOST>.<suffix>``) and are renamed
into place when complete; :mod:`landslide_lit.maps` sweeps those a killed process left.

The map of an ensemble is the members' mean probability, with their standard deviation
as a second variable (``landslide_probability_std``) or GeoTIFF band (``std``).
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from pathlib import Path
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
import xarray as xr

from landslide_lit.atomic import write_atomically, write_json_atomically
from landslide_lit.data.cube import NETCDF_LOCK
from landslide_lit.data.windows import WindowDataset, WindowPlan
from landslide_lit.metrics import BinnedAveragePrecision
from landslide_lit.owners import owner_tag
from landslide_lit.rasters import CogWriter, Grid, cf_crs, write_style

__all__ = [
    "CHUNK",
    "CONVENTIONS",
    "QUICKLOOK_PIXELS",
    "STD_VARIABLE",
    "VARIABLE",
    "Band",
    "Format",
    "GeoTiffFile",
    "MapFiles",
    "NetCDFFile",
    "Quicklook",
    "RegionScore",
    "ZarrStore",
    "map_grid",
]

log = logging.getLogger(__name__)

Format = Literal["netcdf", "zarr", "geotiff"]
VARIABLE = "landslide_probability"
STD_VARIABLE = "landslide_probability_std"
"""An ensemble's standard deviation of the probability across its members."""
CONVENTIONS = "CF-1.8"
"""The metadata conventions of the netCDF and zarr maps (global ``Conventions``)."""
CHUNK = 256
"""Side of the output's compression chunks (and GeoTIFF tiles), in pixels."""
QUICKLOOK_PIXELS = 1024
"""Longest side of the quicklook's image, in map pixels."""


class Band:
    """Final rows [y0, y0 + len) of a map: probability (an ensemble's mean; NaN without
    data), its standard deviation across an ensemble's members (None for one model),
    valid, target."""

    def __init__(
        self,
        y0: int,
        probability: np.ndarray,
        valid: np.ndarray,
        target: np.ndarray,
        std: np.ndarray | None = None,
    ) -> None:
        self.y0, self.probability, self.valid, self.target = y0, probability, valid, target
        self.std = std

    @classmethod
    def from_sums(cls, y0: int, total: np.ndarray, flags: np.ndarray) -> Band:
        """Final rows from each member's summed weighted probabilities ``total``
        (rows, members, width) and the pixel flags.

        Each member's map is its sums clipped to [0, 1], as one model's; an ensemble's
        mean and (population) standard deviation are taken over these K values per pixel
        in float64, two-pass: exact up to the float32 they are stored in.
        """
        valid, target = (flags & 1) > 0, (flags & 2) > 0
        maps = np.clip(total, 0.0, 1.0)
        nan = np.float32(np.nan)
        if maps.shape[1] == 1:
            probability = np.where(valid, maps[:, 0], nan).astype(np.float32, copy=False)
            return cls(y0, probability, valid, target)
        mean = maps.mean(axis=1, dtype=np.float64)
        std = maps.std(axis=1, dtype=np.float64)
        return cls(
            y0,
            np.where(valid, mean, nan).astype(np.float32),
            valid,
            target,
            np.where(valid, std, nan).astype(np.float32),
        )


class MapFiles:
    """The files of one region's map, written band by band.

    They are written under hidden temporary names and renamed to
    ``<region>_landslide_probability.*`` by :meth:`close`, so an interrupted predict
    leaves nothing that looks like a finished map.
    """

    def __init__(
        self,
        folder: Path,
        windows: WindowDataset,
        attrs: dict[str, Any],
        formats: list[Format],
        quicklook: bool,
        members: int = 1,
    ) -> None:
        self.region, self.attrs, self.members = windows.region.name, attrs, members
        self.stem = folder / f"{self.region}_landslide_probability"
        self.partial = folder / f".{self.region}_landslide_probability.{owner_tag()}.partial"
        sinks = {"netcdf": NetCDFFile, "zarr": ZarrStore, "geotiff": GeoTiffFile}
        std = members > 1  # an ensemble's maps hold the members' standard deviation too
        self.sinks: list[Any] = [sinks[f](self.partial, windows, attrs, std) for f in formats]
        self.look = Quicklook(windows.plan) if quicklook else None
        self.score = RegionScore() if windows.has_labels else None
        log.info("%s: writing the landslide probability map to %s.*", self.region, self.stem)

    def add(self, band: Band) -> None:
        for sink in self.sinks:
            sink.write(band)
        for reducer in filter(None, (self.look, self.score)):
            reducer.add(band)

    def close(self, trainer: L.Trainer) -> None:
        """Finish the files, the quicklook and the JSON summary; log the region's AUPRC."""
        region = self.region
        metrics = self.score.metrics() if self.score is not None else {}
        if metrics:
            log.info(
                "%s: region AUPRC %.4f over %d valid pixels (no skill %.4f)",
                region,
                metrics["auprc"],
                metrics["valid_pixels"],
                metrics["no_skill"],
            )
            for logger in trainer.loggers:
                logger.log_metrics(
                    {f"predict/{region}/{k}": metrics[k] for k in ("auprc", "no_skill")}, step=0
                )
                logger.save()
        extra = {f"region_{k}": v for k, v in metrics.items()}
        files = [self._publish(sink.close(extra)) for sink in self.sinks]
        if self.look is not None:
            png = self.stem.with_suffix(".png")
            files.append(self.look.save(png, region, metrics.get("auprc"), self.members))
        summary = {"region": region, **metrics, "files": [p.name for p in files], **self.attrs}
        json_path = write_json_atomically(self.stem.with_suffix(".json"), summary, default=str)
        for path in [*files, json_path]:
            log.info("%s: wrote %s", region, path)

    def _publish(self, path: Path) -> Path:
        """Rename a finished partial file (or zarr folder) to its final name.

        Not :func:`~landslide_lit.atomic.write_atomically`: a partial file is filled band
        by band for the whole predict under a name with its owner tag, which the sweep of
        a killed process's files recognises; publishing it is the rename alone.
        """
        final = self.stem.with_suffix(path.suffix)
        if final.is_dir():  # a previous run's zarr store
            shutil.rmtree(final)
        os.replace(path, final)
        return final

    def abandon(self) -> None:
        """Remove the unfinished files."""
        for sink in self.sinks:
            sink.abandon()


def _variable_attrs(windows: WindowDataset, std: bool = False) -> dict[str, Any]:
    """CF attributes of the probability (no CF standard name fits a probability of this).

    ``std``: the probability is an ensemble's mean, its standard deviation beside it
    (``cell_methods`` over ``realization``, the CF standard name of an ensemble member).
    """
    attrs: dict[str, Any] = {
        "long_name": "landslide probability",
        "units": "1",
        "valid_range": np.array([0.0, 1.0], np.float32),
    }
    if std:
        attrs.update(
            {
                "long_name": "landslide probability, mean of the ensemble's members",
                "cell_methods": "realization: mean",
                "ancillary_variables": STD_VARIABLE,
            }
        )
    if windows.grid_mapping:
        attrs["grid_mapping"] = windows.grid_mapping
    return attrs


def _std_attrs(windows: WindowDataset) -> dict[str, Any]:
    """CF attributes of an ensemble's standard deviation (population: over its K members)."""
    attrs: dict[str, Any] = {
        "long_name": "standard deviation of the landslide probability across the ensemble's "
        "members",
        "units": "1",
        "cell_methods": "realization: standard_deviation",
        "valid_range": np.array([0.0, 0.5], np.float32),  # of values in [0, 1]
    }
    if windows.grid_mapping:
        attrs["grid_mapping"] = windows.grid_mapping
    return attrs


def _netcdf_attrs(attrs: dict[str, Any]) -> dict[str, Any]:
    """Attribute values netCDF can hold: numbers, strings and arrays of numbers."""
    safe = {}
    for key, value in attrs.items():
        if value is None:
            continue
        if isinstance(value, bool | np.bool_):
            value = int(value)
        elif isinstance(value, dict) or (
            isinstance(value, list | tuple) and not all(isinstance(v, int | float) for v in value)
        ):
            value = json.dumps(value, default=str)
        safe[key] = value
    return safe


class NetCDFFile:
    """``.nc``: netCDF4 (CF-1.8), the map compressed in CHUNK-square chunks, written band
    by band.

    Every netCDF call holds :data:`~landslide_lit.data.cube.NETCDF_LOCK`: the netCDF-C
    library is not thread-safe and netCDF4-python releases the GIL in its calls, while
    the bands are written in the map writer's thread, other regions' maps in others, and
    the main thread may read a netCDF cube through xarray meanwhile (which
    :func:`~landslide_lit.data.cube.open_cube` gives the same lock). Coordinates are read
    from the cube before taking it.
    """

    def __init__(
        self, stem: Path, windows: WindowDataset, attrs: dict[str, Any], std: bool = False
    ) -> None:
        import netCDF4

        self.path = stem.with_suffix(".nc")
        plan, (y, x) = windows.plan, windows.dims
        self.y = y
        self.banded = []  # 2-D coordinates (e.g. lat/lon), written with the map's bands
        coords = []
        for name, var in windows.grid.variables.items():
            encoded = xr.conventions.encode_cf_variable(var, name=name)
            banded = y in encoded.dims and encoded.ndim > 1
            if banded:
                self.banded.append((name, windows.grid[name]))
            coords.append((name, encoded, None if banded else encoded.values))
        with NETCDF_LOCK:
            self.ds = netCDF4.Dataset(self.path, "w", format="NETCDF4")
            self.ds.createDimension(y, plan.height)
            self.ds.createDimension(x, plan.width)
            for name, encoded, values in coords:
                var_attrs = dict(encoded.attrs)
                fill = var_attrs.pop("_FillValue", None)
                dtype = encoded.dtype.newbyteorder("=")  # zarr v2 stores big-endian; same values
                out = self.ds.createVariable(name, dtype, encoded.dims, fill_value=fill)
                out.setncatts(_netcdf_attrs(var_attrs))
                if values is not None:
                    out[...] = values
            self.var = self._map_variable(VARIABLE, (y, x), plan)
            self.var.setncatts(_netcdf_attrs(_variable_attrs(windows, std)))
            self.std = self._map_variable(STD_VARIABLE, (y, x), plan) if std else None
            if self.std is not None:
                self.std.setncatts(_netcdf_attrs(_std_attrs(windows)))
            self.ds.setncatts(_netcdf_attrs({**attrs, "Conventions": CONVENTIONS}))

    def _map_variable(self, name: str, dims: tuple[str, str], plan: WindowPlan) -> Any:
        return self.ds.createVariable(
            name,
            "f4",
            dims,
            zlib=True,
            complevel=4,
            shuffle=True,
            chunksizes=(min(CHUNK, plan.height), min(CHUNK, plan.width)),
            fill_value=np.float32(np.nan),
        )

    def write(self, band: Band) -> None:
        rows = slice(band.y0, band.y0 + len(band.probability))
        coords = [(name, coord.isel({self.y: rows}).values) for name, coord in self.banded]
        with NETCDF_LOCK:
            self.var[rows, :] = band.probability
            if self.std is not None:
                self.std[rows, :] = band.std
            for name, values in coords:
                self.ds[name][rows] = values
            self.ds.sync()  # compress the band's chunks now, not all of them at close

    def close(self, attrs: dict[str, Any]) -> Path:
        with NETCDF_LOCK:
            self.ds.setncatts(_netcdf_attrs(attrs))
            self.ds.close()
        return self.path

    def abandon(self) -> None:
        with NETCDF_LOCK:
            if self.ds.isopen():
                self.ds.close()
        self.path.unlink(missing_ok=True)


class ZarrStore:
    """``.zarr``: the map appended band by band along y, consolidated at the end (CF
    attributes, as the netCDF map)."""

    def __init__(
        self, stem: Path, windows: WindowDataset, attrs: dict[str, Any], std: bool = False
    ) -> None:
        self.path = stem.with_suffix(".zarr")
        self.windows, self.std, self.started = windows, std, False
        self.attrs = _netcdf_attrs({**attrs, "Conventions": CONVENTIONS})

    def write(self, band: Band) -> None:
        y, x = self.windows.dims
        rows = slice(band.y0, band.y0 + len(band.probability))
        variables = {
            VARIABLE: xr.Variable((y, x), band.probability, _variable_attrs(self.windows, self.std))
        }
        if self.std:
            variables[STD_VARIABLE] = xr.Variable((y, x), band.std, _std_attrs(self.windows))
        coords = self.windows.grid.isel({y: rows}).drop_encoding().coords  # not the cube's codecs
        ds = xr.Dataset(variables, coords=coords)
        if self.started:
            ds.to_zarr(self.path, append_dim=y, consolidated=True)
            return
        ds.attrs = self.attrs
        chunks = (min(CHUNK, self.windows.plan.height), min(CHUNK, self.windows.plan.width))
        encoding = {name: {"chunks": chunks} for name in variables}
        ds.to_zarr(self.path, mode="w", consolidated=True, encoding=encoding)
        self.started = True

    def close(self, attrs: dict[str, Any]) -> Path:
        import zarr

        group = zarr.open_group(self.path, mode="r+")
        # all of them: xarray's appends of the later bands replaced the first band's
        group.attrs.update({**self.attrs, **_netcdf_attrs(attrs)})
        zarr.consolidate_metadata(self.path)
        return self.path

    def abandon(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def map_grid(windows: WindowDataset, attrs: dict[str, Any]) -> Grid:
    """The map's pixel grid: the cube's y/x coordinates and its CRS (the grid-mapping
    variable, else the cube's ``crs`` attribute)."""
    y, x = windows.dims
    name = windows.grid_mapping
    mapping = windows.grid[name].attrs if name and name in windows.grid.variables else {}
    crs = cf_crs(mapping, attrs.get("crs"))
    where = str(windows.path)
    return Grid.from_coordinates(windows.grid[x].values, windows.grid[y].values, crs, where)


def _tags(attrs: dict[str, Any]) -> dict[str, str]:
    return {k: str(v) for k, v in attrs.items() if isinstance(v, str | int | float)}


class GeoTiffFile:
    """``.tif``: a float32 Cloud-Optimized GeoTIFF with the cube's CRS and transform.

    Tiles of CHUNK pixels, deflate with the floating-point predictor, NaN nodata and
    averaged overviews (:class:`~landslide_lit.rasters.CogWriter`), the map's attributes
    as tags; and its QGIS style ``<region>_landslide_probability.qml`` beside the map.
    """

    def __init__(
        self, stem: Path, windows: WindowDataset, attrs: dict[str, Any], std: bool = False
    ) -> None:
        self.path = stem.with_suffix(".tif")
        grid = map_grid(windows, attrs)
        if grid.crs is None:
            log.warning("%s: the cube has no CRS; the GeoTIFF has none either", self.path)
        self.std = std  # ensemble: band 2 the members' standard deviation
        self.cog = CogWriter(
            self.path,
            grid,
            "float32",
            np.nan,
            count=2 if std else 1,
            descriptions=("mean", "std") if std else (VARIABLE,),
            tags=_tags(attrs),
        )
        # the name MapFiles publishes the map under: the style is named after it
        self.published = stem.parent / f"{windows.region.name}_{VARIABLE}.tif"

    def write(self, band: Band) -> None:
        rows = np.stack([band.probability, band.std]) if self.std else band.probability
        self.cog.write(band.y0, rows)

    def close(self, attrs: dict[str, Any]) -> Path:
        self.cog.update_tags({k: str(v) for k, v in attrs.items()})
        path = self.cog.close()
        write_style(self.published, "probability")
        return path

    def abandon(self) -> None:
        self.cog.abandon()


class Quicklook:
    """Every ``step``-th row and column of the map (and labels), for a PNG of bounded size."""

    def __init__(self, plan: WindowPlan) -> None:
        self.step = max(1, math.ceil(max(plan.height, plan.width) / QUICKLOOK_PIXELS))
        shape = (math.ceil(plan.height / self.step), math.ceil(plan.width / self.step))
        self.probability = np.full(shape, np.nan, np.float32)
        self.target = np.zeros(shape, bool)

    def add(self, band: Band) -> None:
        rows = np.arange((-band.y0) % self.step, len(band.probability), self.step)
        out = (band.y0 + rows) // self.step
        self.probability[out] = band.probability[rows, :: self.step]
        self.target[out] = band.target[rows, :: self.step]

    def save(self, path: Path, region: str, auprc: float | None, members: int = 1) -> Path:
        """The PNG; ``members``: an ensemble's, whose mean probability it shows."""
        from matplotlib.figure import Figure
        from scipy.ndimage import binary_erosion

        height, width = self.probability.shape
        inches = 8 / max(height, width)  # the longer side 8 in, however elongated the region
        figure = Figure(figsize=(max(width * inches, 4), height * inches + 0.6))
        axes = figure.add_subplot()
        image = axes.imshow(self.probability, cmap="magma", vmin=0, vmax=1, interpolation="nearest")
        figure.colorbar(image, ax=axes, label="landslide probability", shrink=0.8)
        title = f"{region}: landslide probability"
        if members > 1:
            title += f", mean of {members} models"
        if self.target.any():  # outlines: landslide pixels with a neighbour outside
            outline = self.target & ~binary_erosion(self.target, border_value=1)
            overlay = np.zeros((height, width, 4), np.float32)
            overlay[outline] = (0.0, 1.0, 1.0, 1.0)
            axes.imshow(overlay, interpolation="nearest")
            title += " (cyan: mapped landslides)"
        if auprc is not None:
            title += f"\nregion AUPRC {auprc:.3f}"
        axes.set_title(title)
        axes.set_xlabel(f"x (pixels / {self.step})")
        axes.set_ylabel(f"y (pixels / {self.step})")
        return write_atomically(
            path, lambda temporary: figure.savefig(temporary, dpi=100, bbox_inches="tight")
        )


class RegionScore:
    """Region AUPRC over valid pixels in constant memory (a probability histogram)."""

    def __init__(self) -> None:
        self.auprc = BinnedAveragePrecision(sync_on_compute=False)
        self.valid = self.positive = 0

    def add(self, band: Band) -> None:
        probability = torch.from_numpy(band.probability[band.valid])
        target = torch.from_numpy(band.target[band.valid])
        self.auprc.update(probability, target)
        self.valid += int(target.numel())
        self.positive += int(target.sum())

    def metrics(self) -> dict[str, Any]:
        if self.valid == 0:
            return {}
        return {
            "auprc": float(self.auprc.compute()),
            "no_skill": self.positive / self.valid,
            "valid_pixels": self.valid,
            "landslide_pixels": self.positive,
            "auprc_method": f"binned ({self.auprc.bins} logit bins), valid pixels",
        }
