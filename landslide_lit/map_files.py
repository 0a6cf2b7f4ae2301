"""The files of one region's probability map, written block by block.

:class:`MapFiles` hands each final :class:`Block` to one writer per format (netCDF, zarr,
GeoTIFF), to the responder products (mask and polygons, when given) and to the reducers of
the quicklook and the region score; on close it completes every file, draws the
quicklook, renames the files into place and writes the JSON summary last. The writers fill
hidden partial files that carry the writing process's owner tag
(``.<region>_landslide_probability.pid<PID>-<HOST>.<suffix>``), renamed only once all
of them are complete; :mod:`landslide_lit.maps` sweeps those a killed process left.

The map of an ensemble is the members' mean probability, with their standard deviation
as a second variable (``landslide_probability_std``) or GeoTIFF band (``std``).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

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
    "BLOCK_COLUMNS",
    "CHUNK",
    "CHUNK_CACHE_BYTES",
    "CONVENTIONS",
    "QUICKLOOK_PIXELS",
    "SCORE_PIXELS",
    "STD_VARIABLE",
    "VARIABLE",
    "Block",
    "Format",
    "GeoTiffFile",
    "MapFiles",
    "NetCDFFile",
    "Products",
    "Quicklook",
    "RegionScore",
    "ZarrStore",
    "block_columns",
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
BLOCK_COLUMNS = 4 * CHUNK
"""Columns of the blocks a map is written in (a whole number of chunks): its bands of
rows go to the files a block at a time, so the writers' memory is the same however wide
the region."""
QUICKLOOK_PIXELS = 1024
"""Longest side of the quicklook's image, in map pixels."""
CHUNK_CACHE_BYTES = 4 << 20
"""netCDF's cache of a map variable's chunks (a block's chunks, with room): by default
64 MiB, which kept up to that many of the written chunks, so predict's peak grew with the
region's area."""
SCORE_PIXELS = 1 << 16
"""Pixels of a block the region score counts at a time (bounded temporaries)."""


def block_columns(width: int) -> list[slice]:
    """The columns of each block of a band of rows, from the left."""
    return [slice(x0, min(x0 + BLOCK_COLUMNS, width)) for x0 in range(0, width, BLOCK_COLUMNS)]


class Block:
    """A final block of a map, at row ``y0`` and column ``x0``: probability (an ensemble's
    mean; NaN without data), its standard deviation across an ensemble's members (None for
    one model), valid, target.

    A map comes block by block in order: band by band of rows from the top, each band's
    blocks (all of its rows) from the left.
    """

    def __init__(
        self,
        y0: int,
        x0: int,
        probability: np.ndarray,
        valid: np.ndarray,
        target: np.ndarray,
        std: np.ndarray | None = None,
    ) -> None:
        self.y0, self.x0 = y0, x0
        self.probability, self.valid, self.target, self.std = probability, valid, target, std

    @property
    def rows(self) -> slice:
        return slice(self.y0, self.y0 + self.probability.shape[0])

    @property
    def columns(self) -> slice:
        return slice(self.x0, self.x0 + self.probability.shape[1])

    @classmethod
    def from_sums(cls, y0: int, x0: int, total: np.ndarray, flags: np.ndarray) -> Block:
        """The block from each member's summed weighted probabilities ``total``
        (rows, members, columns; clipped in place) and the pixel flags.

        Each member's map is its sums clipped to [0, 1], as one model's; an ensemble's
        mean and (population) standard deviation are taken over these K values per pixel
        in float64, two-pass: exact up to the float32 they are stored in.
        """
        valid, target = (flags & 1) > 0, (flags & 2) > 0
        maps = np.clip(total, 0.0, 1.0, out=total)  # in place: one block the less
        nan = np.float32(np.nan)
        if maps.shape[1] == 1:
            probability = maps[:, 0]  # in place too: the block's one float copy is the sums'
            probability[~valid] = nan
            return cls(y0, x0, probability, valid, target)
        mean = maps.mean(axis=1, dtype=np.float64)
        std = maps.std(axis=1, dtype=np.float64)
        return cls(
            y0,
            x0,
            np.where(valid, mean, nan).astype(np.float32),
            valid,
            target,
            np.where(valid, std, nan).astype(np.float32),
        )

    @classmethod
    def joined(cls, blocks: list[Block]) -> Block:
        """The blocks of one band of rows, side by side, as one block."""
        parts = [[getattr(b, name) for b in blocks] for name in ("probability", "valid", "target")]
        std = None if blocks[0].std is None else np.hstack([b.std for b in blocks])
        return cls(blocks[0].y0, blocks[0].x0, *(np.hstack(p) for p in parts), std)


class Products(Protocol):
    """What :class:`MapFiles` asks of the responder products
    (:class:`~landslide_lit.products.ResponderProducts`): fed every block, completed under
    hidden names, then published with the map; a preview of the kept landslides on the
    quicklook's grid."""

    preview: np.ndarray
    preview_step: int

    def add(self, block: Block) -> None: ...

    def finish(self) -> dict[str, Any]: ...

    def publish(self) -> list[Path]: ...

    def abandon(self) -> None: ...


class MapFiles:
    """The files of one region's map, written block by block (see :class:`Block`).

    They are written under hidden temporary names and renamed to
    ``<region>_landslide_probability.*`` (and the ``products``' names) by :meth:`close`
    once all are complete, so an interrupted predict leaves nothing that looks like a
    finished map. ``products``: the landslide mask and polygons, fed the same blocks (the
    ensemble's mean), their summary merged into the JSON.
    """

    def __init__(
        self,
        folder: Path,
        windows: WindowDataset,
        attrs: dict[str, Any],
        formats: list[Format],
        quicklook: bool,
        members: int = 1,
        products: Products | None = None,
    ) -> None:
        self.region, self.attrs, self.members = windows.region.name, attrs, members
        self.stem = folder / f"{self.region}_landslide_probability"
        self.partial = folder / f".{self.region}_landslide_probability.{owner_tag()}.partial"
        sinks = {"netcdf": NetCDFFile, "zarr": ZarrStore, "geotiff": GeoTiffFile}
        std = members > 1  # an ensemble's maps hold the members' standard deviation too
        self.products = products
        self.sinks: list[Any] = []
        try:
            for name in formats:
                self.sinks.append(sinks[name](self.partial, windows, attrs, std))
        except BaseException:
            self.abandon()
            raise
        self.look = Quicklook(windows, attrs) if quicklook else None
        self.score = RegionScore() if windows.has_labels else None
        log.info("%s: writing the landslide probability map to %s.*", self.region, self.stem)

    def add(self, block: Block) -> None:
        for sink in self.sinks:
            sink.write(block)
        for reducer in filter(None, (self.products, self.look, self.score)):
            reducer.add(block)

    def close(self, trainer: L.Trainer) -> None:
        """Complete the files, draw the quicklook, publish them all, write the JSON summary
        last; log the region's AUPRC."""
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
        finished = [sink.close(extra) for sink in self.sinks]
        landslides = self.products.finish() if self.products is not None else {}
        files = []
        if self.look is not None:
            png = self.stem.with_suffix(".png")
            preview = None if self.products is None else self.products.preview
            auprc = metrics.get("auprc")
            files.append(self.look.save(png, region, auprc, self.members, preview, landslides))
        for sink, path in zip(self.sinks, finished, strict=True):
            files.append(self._publish(path))
            if isinstance(sink, GeoTiffFile):  # its QGIS style, named after the map
                files.append(write_style(files[-1], "probability"))
        if self.products is not None:
            files.extend(self.products.publish())
        summary = {
            "region": region,
            **metrics,
            **self.attrs,
            **{k: v for k, v in landslides.items() if k != "files"},
            "files": [p.name for p in files] + [self.stem.with_suffix(".json").name],
        }
        json_path = write_json_atomically(self.stem.with_suffix(".json"), summary, default=str)
        for path in [*files, json_path]:
            log.info("%s: wrote %s", region, path)

    def _publish(self, path: Path) -> Path:
        """Rename a finished partial file (or zarr folder) to its final name.

        Not :func:`~landslide_lit.atomic.write_atomically`: a partial file is filled block
        by block for the whole predict under a name with its owner tag, which the sweep of
        a killed process's files recognises; publishing it is the rename alone.
        """
        final = self.stem.with_suffix(path.suffix)
        if final.is_dir():  # a previous run's zarr store
            shutil.rmtree(final)
        os.replace(path, final)
        return final

    def abandon(self) -> None:
        """Remove the unfinished files."""
        for part in [*self.sinks, self.products]:
            if part is not None:
                part.abandon()


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
    """``.nc``: netCDF4 (CF-1.8), the map compressed in CHUNK-square chunks, written block
    by block.

    Every netCDF call holds :data:`~landslide_lit.data.cube.NETCDF_LOCK`: the netCDF-C
    library is not thread-safe and netCDF4-python releases the GIL in its calls, while
    the blocks are written in the map writer's thread, other regions' maps in others, and
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
        self.dims = (y, x)
        self.banded = []  # 2-D coordinates (e.g. lat/lon), written with the map's blocks
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
        variable = self.ds.createVariable(
            name,
            "f4",
            dims,
            zlib=True,
            complevel=4,
            shuffle=True,
            chunksizes=(min(CHUNK, plan.height), min(CHUNK, plan.width)),
            fill_value=np.float32(np.nan),
        )
        variable.set_var_chunk_cache(size=CHUNK_CACHE_BYTES, preemption=1.0)  # written: out
        return variable

    def write(self, block: Block) -> None:
        y, x = self.dims
        where = {y: block.rows, x: block.columns}
        coords = [(name, coord.isel(where, missing_dims="ignore")) for name, coord in self.banded]
        with NETCDF_LOCK:
            self.var[block.rows, block.columns] = block.probability
            if self.std is not None:
                self.std[block.rows, block.columns] = block.std
            for name, coord in coords:
                self.ds[name][tuple(where.get(d, slice(None)) for d in coord.dims)] = coord.values
            self.ds.sync()  # compress the block's chunks now, not all of them at close

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
    """``.zarr``: the map appended band by band of rows along y (its blocks joined),
    consolidated at the end (CF attributes, as the netCDF map)."""

    def __init__(
        self, stem: Path, windows: WindowDataset, attrs: dict[str, Any], std: bool = False
    ) -> None:
        self.path = stem.with_suffix(".zarr")
        self.windows, self.std, self.started = windows, std, False
        self.attrs = _netcdf_attrs({**attrs, "Conventions": CONVENTIONS})
        self.band: list[Block] = []  # the blocks of the band of rows being written

    def write(self, block: Block) -> None:
        self.band.append(block)
        if block.columns.stop == self.windows.plan.width:
            band, self.band = Block.joined(self.band), []
            self._append(band)

    def _append(self, band: Block) -> None:
        y, x = self.windows.dims
        variables = {
            VARIABLE: xr.Variable((y, x), band.probability, _variable_attrs(self.windows, self.std))
        }
        if self.std:
            variables[STD_VARIABLE] = xr.Variable((y, x), band.std, _std_attrs(self.windows))
        # not the cube's codecs
        coords = self.windows.grid.isel({y: band.rows}).drop_encoding().coords
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
    """GeoTIFF tags: the netCDF attributes' values as text (JSON for mappings)."""
    return {k: str(v) for k, v in _netcdf_attrs(attrs).items()}


class GeoTiffFile:
    """``.tif``: a float32 Cloud-Optimized GeoTIFF with the cube's CRS and transform.

    Tiles of CHUNK pixels, deflate with the floating-point predictor, NaN nodata and
    averaged overviews (:class:`~landslide_lit.rasters.CogWriter`), the map's attributes
    as tags; :class:`MapFiles` writes its QGIS style ``<region>_landslide_probability.qml``
    beside the published map.
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

    def write(self, block: Block) -> None:
        pixels = np.stack([block.probability, block.std]) if self.std else block.probability
        self.cog.write(block.y0, pixels, block.x0)

    def close(self, attrs: dict[str, Any]) -> Path:
        self.cog.update_tags(_tags(attrs))
        return self.cog.close()

    def abandon(self) -> None:
        self.cog.abandon()


class Quicklook:
    """Every ``step``-th row and column of the map (and labels), for a PNG of bounded size,
    drawn in map coordinates (the cube's x/y) when the cube has 1-D ones."""

    def __init__(self, windows: WindowDataset, attrs: dict[str, Any]) -> None:
        plan = windows.plan
        self.step = max(1, math.ceil(max(plan.height, plan.width) / QUICKLOOK_PIXELS))
        shape = (math.ceil(plan.height / self.step), math.ceil(plan.width / self.step))
        self.probability = np.full(shape, np.nan, np.float32)
        self.target = np.zeros(shape, bool)
        self.axes = _MapAxes.of(windows, attrs)

    def add(self, block: Block) -> None:
        rows, columns = (
            np.arange((-start) % self.step, size, self.step)
            for start, size in zip((block.y0, block.x0), block.probability.shape, strict=True)
        )
        cells = np.ix_((block.y0 + rows) // self.step, (block.x0 + columns) // self.step)
        self.probability[cells] = block.probability[np.ix_(rows, columns)]
        self.target[cells] = block.target[np.ix_(rows, columns)]

    def save(
        self,
        path: Path,
        region: str,
        auprc: float | None,
        members: int = 1,
        predicted: np.ndarray | None = None,
        landslides: dict[str, Any] | None = None,
    ) -> Path:
        """The PNG; ``members``: an ensemble's, whose mean probability it shows;
        ``predicted``: the predicted landslides on the quicklook's grid (the products'
        preview), outlined, and ``landslides`` their summary."""
        from matplotlib.figure import Figure
        from matplotlib.patches import Patch

        height, width = self.probability.shape
        inches = 8 / max(height, width)  # the longer side 8 in, however elongated the region
        figure = Figure(figsize=(max(width * inches, 4), height * inches + 1.2))
        axes = figure.add_subplot()
        extent = self.axes.extent
        image = axes.imshow(
            self.probability, cmap="magma", vmin=0, vmax=1, interpolation="nearest", extent=extent
        )
        figure.colorbar(image, ax=axes, label="landslide probability", shrink=0.8)
        title = f"{region}: landslide probability"
        if members > 1:
            title += f", mean of {members} models"
        legend = []
        if predicted is not None and landslides is not None:
            if predicted.shape != self.probability.shape:
                raise ValueError(
                    f"the predicted landslides' preview {predicted.shape} is not on the "
                    f"quicklook's grid {self.probability.shape}"
                )
            classes = " · ".join(
                f"{c['p_mean']}: {c['landslides']}" for c in landslides["by_p_mean"]
            )
            label = (
                f"predicted landslides (p ≥ {landslides['threshold']:.3g}, "
                f"{landslides['threshold_rule']}): {landslides['landslides']}, "
                f"{landslides['area_m2'] / 1e4:.2f} ha\nby mean probability {classes}"
            )
            legend.append(Patch(facecolor="none", edgecolor=PREDICTED_COLOUR, label=label))
            _outline(axes, predicted, PREDICTED_COLOUR, extent)
        if self.target.any():
            legend.append(
                Patch(facecolor="none", edgecolor=MAPPED_COLOUR, label="mapped landslides (labels)")
            )
            _outline(axes, self.target, MAPPED_COLOUR, extent)
        left, right, bottom, top = image.get_extent()  # the map's, whatever the outlines
        axes.set_xlim(left, right)
        axes.set_ylim(bottom, top)
        if auprc is not None:
            title += f"\nregion AUPRC {auprc:.3f}"
        axes.set_title(title)
        if legend:
            axes.legend(
                handles=legend, loc="upper center", bbox_to_anchor=(0.5, -0.12), fontsize="small"
            )
        xlabel, ylabel = self.axes.labels(self.step)
        axes.set_xlabel(xlabel)
        axes.set_ylabel(ylabel)
        return write_atomically(
            path, lambda temporary: figure.savefig(temporary, dpi=100, bbox_inches="tight")
        )


PREDICTED_COLOUR = "#39ff14"
"""Outlines of the predicted landslides on the quicklook (green)."""
MAPPED_COLOUR = "#00e5ff"
"""Outlines of the mapped landslides (the cube's labels) on the quicklook (cyan)."""


def _outline(axes: Any, mask: np.ndarray, colour: str, extent: Any) -> None:
    """Outline the cells set in ``mask`` in ``colour``: vector lines along the cells' edges,
    visible however much the figure shrinks the image (one-cell landslides too)."""
    if not mask.any():
        return
    # a zero border closes outlines at the map's edge; levels at 0.5 run between cells
    padded = np.pad(mask.astype(np.float32), 1)
    height, width = mask.shape
    if extent is None:
        extent = (-0.5, width - 0.5, height - 0.5, -0.5)
    left, right, bottom, top = extent
    dx, dy = (right - left) / width, (top - bottom) / height
    padded_extent = (left - dx, right + dx, bottom - dy, top + dy)
    axes.contour(
        padded,
        levels=[0.5],
        colors=[colour],
        linewidths=1.0,
        origin="upper",
        extent=padded_extent,
    )


@dataclass(frozen=True)
class _MapAxes:
    """The quicklook's axes: the map's ``extent`` in its x/y coordinates (None: pixel
    axes), whether they are longitude/latitude, their unit and the CRS's name."""

    extent: tuple[float, float, float, float] | None = None
    geographic: bool = False
    unit: str = "m"
    crs_name: str = ""

    @classmethod
    def of(cls, windows: WindowDataset, attrs: dict[str, Any]) -> _MapAxes:
        """From the cube's 1-D x/y coordinates (pixel centres), their CF attributes and the
        CRS; pixel axes without such coordinates."""
        y, x = windows.dims
        grid = windows.grid
        if not all(n in grid.coords and grid[n].ndim == 1 and grid[n].size > 1 for n in (x, y)):
            return cls()
        xs, ys = (np.asarray(grid[n].values, np.float64) for n in (x, y))
        dx, dy = ((v[-1] - v[0]) / (len(v) - 1) for v in (xs, ys))
        # the outer edges of the first and last pixels; imshow puts row 0 at the extent's top
        extent = (xs[0] - dx / 2, xs[-1] + dx / 2, ys[-1] + dy / 2, ys[0] - dy / 2)
        x_attrs = grid[x].attrs
        units = str(x_attrs.get("units", ""))
        crs_text = _crs_text(windows, attrs)
        crs = _pyproj_crs(crs_text)
        if x_attrs.get("standard_name") == "longitude" or units.startswith("degree"):
            geographic = True
        elif crs is not None:
            geographic = bool(crs.is_geographic)
        else:  # without pyproj: what the WKT says
            geographic = crs_text.lstrip().upper().startswith(("GEOGCS", "GEOGCRS"))
        if crs is not None:
            name = str(crs.name)
        else:
            found = re.match(r'\s*\w+\["([^"]+)"', crs_text)
            name = found.group(1) if found else crs_text[:60]
        unit = {"metre": "m", "meter": "m", "metres": "m", "meters": "m"}.get(units, units or "m")
        return cls(extent, geographic, unit, name)

    def labels(self, step: int) -> tuple[str, str]:
        """The x and y axis labels."""
        if self.extent is None:
            return f"x (pixels / {step})", f"y (pixels / {step})"
        crs = f", {self.crs_name}" if self.crs_name else ""
        if self.geographic:
            return f"longitude (°{crs})", "latitude (°)"
        return f"easting ({self.unit}{crs})", f"northing ({self.unit})"


def _crs_text(windows: WindowDataset, attrs: dict[str, Any]) -> str:
    """The cube's CRS as text (WKT, ``EPSG:n``...), '' when it has none."""
    name = windows.grid_mapping
    mapping = windows.grid[name].attrs if name and name in windows.grid.variables else {}
    return str(mapping.get("crs_wkt") or mapping.get("spatial_ref") or attrs.get("crs") or "")


def _pyproj_crs(text: str) -> Any:
    """pyproj's CRS of ``text``; None without pyproj (the responder extra brings it) or
    when it cannot read it (the quicklook then names the axes from the coordinates)."""
    if not text:
        return None
    try:
        from pyproj import CRS
        from pyproj.exceptions import CRSError
    except ImportError:
        return None
    try:
        return CRS.from_user_input(text)
    except CRSError:
        return None


class RegionScore:
    """Region AUPRC over valid pixels in constant memory (a probability histogram).

    A block is counted :data:`SCORE_PIXELS` pixels at a time: the histogram's update makes
    about 40 bytes of temporaries a pixel. The counts are integers, the same in any order.
    """

    def __init__(self) -> None:
        self.auprc = BinnedAveragePrecision(sync_on_compute=False)
        self.valid = self.positive = 0

    def add(self, block: Block) -> None:
        probability, valid, target = (
            a.reshape(-1) for a in (block.probability, block.valid, block.target)
        )
        for start in range(0, len(probability), SCORE_PIXELS):
            part = slice(start, start + SCORE_PIXELS)
            kept = valid[part]
            scores = torch.from_numpy(probability[part][kept])
            labels = torch.from_numpy(target[part][kept])
            self.auprc.update(scores, labels)
            self.valid += int(labels.numel())
            self.positive += int(labels.sum())

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
