"""Whole-region landslide probability maps: overlapping windows blended and streamed to disk.

Each process adds its windows' probabilities, weighted by the blending weights of
:class:`~landslide_lit.data.windows.WindowPlan`, to a rolling band of rows one window high
and appends the rows no later window reaches to a spill file beside the output. A single
process writes each band of the map from there as soon as it is final, in a background
thread, while it goes on predicting; under DDP the spill files are read back at the end,
band by band, summed over the processes (an all-reduce) and rank 0 writes. The files are
written under hidden names that carry the writer's process id and host
(``.<name>.pid<PID>-<HOST>.<suffix>``) and renamed when complete; those a killed process
left behind are removed by the next predict into the folder on that host:

- ``<region>_landslide_probability.nc``: float32, compressed, on the cube's own y/x
  coordinates with its CRS (grid-mapping variable and attributes), NaN where the SAR
  channels have no data, provenance attributes; ``.zarr`` and a GeoTIFF ``.tif`` on request
  (GeoTIFF by default when rioxarray is installed);
- ``<region>_landslide_probability.png``: a downsampled quicklook;
- ``<region>_landslide_probability.json``: files, provenance and, when the cube has
  labels, the region's AUPRC over its valid pixels and the no-skill fraction.

Memory holds a few bands of rows, whatever the region's height.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import os
import queue
import shutil
import threading
from collections.abc import Iterator
from importlib.util import find_spec
from pathlib import Path
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
import torch.distributed as dist
import xarray as xr
from lightning.pytorch.callbacks import BasePredictionWriter
from xarray.backends.netCDF4_ import NETCDF4_PYTHON_LOCK as _NETCDF_LOCK

from landslide_lit import __version__
from landslide_lit.data.store import read_raw_rows, remove_stale_composites
from landslide_lit.data.windows import WindowDataset, WindowPlan
from landslide_lit.errors import ConfigError
from landslide_lit.module import BinnedAveragePrecision
from landslide_lit.owners import owner_tag, remove_stale

log = logging.getLogger(__name__)

Format = Literal["netcdf", "zarr", "geotiff"]
VARIABLE = "landslide_probability"
CHUNK = 256
"""Side of the output's compression chunks (and GeoTIFF tiles), in pixels."""
MERGE_PIXELS = 1 << 22
"""Pixels per band when the spill files are merged and written (16 MiB of float32)."""
QUICKLOOK_PIXELS = 1024
"""Longest side of the quicklook's image, in map pixels."""
PARTIAL_GLOB = ".*.pid*-*.*"
"""Hidden spill and partial map files of a process (its owner tag in the name)."""


def default_formats() -> list[Format]:
    """netCDF, and GeoTIFF when rioxarray is installed."""
    return ["netcdf", "geotiff"] if find_spec("rioxarray") else ["netcdf"]


class ProbabilityMapWriter(BasePredictionWriter):
    """Writes ``predict`` output as one whole-region map per region (see the module).

    Args:
        output_dir: folder of the outputs (default: ``predictions/`` in the run's log
            folder).
        formats: any of ``netcdf``, ``zarr``, ``geotiff`` (default: netCDF, plus GeoTIFF
            when rioxarray is installed: ``pip install landslide-lit[geotiff]``).
        quicklook: also draw ``<region>_landslide_probability.png``.
    """

    def __init__(
        self,
        output_dir: str | None = None,
        formats: list[Format] | None = None,
        quicklook: bool = True,
    ) -> None:
        super().__init__(write_interval="batch")
        self.output_dir = output_dir
        self.formats = default_formats() if formats is None else list(dict.fromkeys(formats))
        if not self.formats:
            raise ConfigError(
                "ProbabilityMapWriter formats is empty: give netcdf, zarr and/or geotiff"
            )
        if "geotiff" in self.formats and not find_spec("rioxarray"):
            raise ConfigError(
                "formats includes geotiff, which needs rioxarray: "
                "pip install 'landslide-lit[geotiff]' (or drop geotiff)"
            )
        self.quicklook = quicklook
        self._spills: dict[int, _Spill] = {}
        self._followers: dict[int, _Follower] = {}
        self._folder = Path(".")

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # The maps are the output: kept, every window's probabilities would fill the memory.
        trainer.predict_loop.return_predictions = False
        # trainer.log_dir is a collective under DDP: every rank asks
        self._folder = Path(self.output_dir or Path(trainer.log_dir or ".") / "predictions")
        self._folder.mkdir(parents=True, exist_ok=True)
        # what killed predicts of this host left behind
        remove_stale(self._folder, PARTIAL_GLOB)
        remove_stale_composites()
        self._spills, self._followers = {}, {}

    def _spill(self, trainer: L.Trainer, dataloader_idx: int) -> _Spill:
        if dataloader_idx not in self._spills:
            windows = _windows(trainer, dataloader_idx)
            name = f".{windows.region.name}.rank{trainer.global_rank}.{owner_tag()}.partial"
            stem = self._folder / name
            spill = self._spills[dataloader_idx] = _Spill(windows.plan, stem)
            if trainer.world_size == 1:  # the rows no later window reaches are final
                files = self._files(trainer, windows)
                self._followers[dataloader_idx] = _Follower(spill, files)
        return self._spills[dataloader_idx]

    def _files(self, trainer: L.Trainer, windows: WindowDataset) -> _MapFiles:
        return _MapFiles(self._folder, windows, _provenance(trainer, windows), self)

    def write_on_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        prediction: dict[str, torch.Tensor],
        batch_indices: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        spill = self._spill(trainer, dataloader_idx)
        probability = prediction["probability"][:, 0].cpu().numpy()
        size = probability.shape[1:]
        valid = prediction["valid"][:, 0].cpu().numpy() if "valid" in prediction else None
        target = (prediction["mask"][:, 0] > 0).cpu().numpy() if "mask" in prediction else None
        for i, (y, x) in enumerate(prediction["origin"].tolist()):
            spill.add(
                y,
                x,
                probability[i],
                np.ones(size, bool) if valid is None else valid[i],
                np.zeros(size, bool) if target is None else target[i],
            )
        if dataloader_idx in self._followers:
            self._followers[dataloader_idx].advance()

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        loaders = trainer.predict_dataloaders
        count = len(loaders) if isinstance(loaders, list | tuple) else 1
        for idx in range(count):
            spill = self._spill(trainer, idx)
            try:
                if idx in self._followers:  # one process: written while predicting
                    self._followers[idx].finish().close(trainer)
                    del self._followers[idx]
                    continue
                spill.close()
                bands = _merged(spill, pl_module.device)
                if not trainer.is_global_zero:
                    for _ in bands:  # every rank joins each band's all-reduce
                        pass
                    continue
                files = self._files(trainer, _windows(trainer, idx))
                try:
                    for band in bands:
                        files.add(band)
                    files.close(trainer)
                except BaseException:
                    files.abandon()
                    raise
            finally:
                spill.remove()
        self._spills = {}

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        """Leave no spill files, and no map files that look finished, behind."""
        for follower in self._followers.values():
            follower.abandon()
        for spill in self._spills.values():
            spill.remove()
        self._spills, self._followers = {}, {}


class _MapFiles:
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
        writer: ProbabilityMapWriter,
    ) -> None:
        self.region, self.attrs = windows.region.name, attrs
        self.stem = folder / f"{self.region}_landslide_probability"
        self.partial = folder / f".{self.region}_landslide_probability.{owner_tag()}.partial"
        sinks = {"netcdf": _NetCDF, "zarr": _Zarr, "geotiff": _GeoTiff}
        self.sinks: list[Any] = [sinks[f](self.partial, windows, attrs) for f in writer.formats]
        self.look = _Quicklook(windows.plan) if writer.quicklook else None
        self.score = _RegionScore() if windows.has_labels else None
        log.info("%s: writing the landslide probability map to %s.*", self.region, self.stem)

    def add(self, band: _Band) -> None:
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
            files.append(
                self.look.save(self.stem.with_suffix(".png"), region, metrics.get("auprc"))
            )
        summary = {"region": region, **metrics, "files": [p.name for p in files], **self.attrs}
        json_path = self.stem.with_suffix(".json")
        json_path.write_text(json.dumps(summary, indent=2, default=str) + "\n")
        for path in [*files, json_path]:
            log.info("%s: wrote %s", region, path)

    def _publish(self, path: Path) -> Path:
        final = self.stem.with_suffix(path.suffix)
        if final.is_dir():  # a previous run's zarr store
            shutil.rmtree(final)
        os.replace(path, final)
        return final

    def abandon(self) -> None:
        """Remove the unfinished files."""
        for sink in self.sinks:
            sink.abandon()


class _Follower:
    """Writes the map of a single process while it predicts.

    Each band of CHUNK rows goes, as soon as no later window reaches it, to a background thread
    that reads it back from the spill file and writes it to the map files, so compressing
    and writing overlap the forward instead of following it.
    """

    def __init__(self, spill: _Spill, files: _MapFiles) -> None:
        self.spill, self.files = spill, files
        self.queued = 0  # rows handed to the thread, CHUNK at a time: each chunk written once
        self.bands: queue.Queue[int | None] = queue.Queue()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="map-writer", daemon=True)
        self.thread.start()

    def advance(self) -> None:
        """Queue the bands whose rows are all final; raise the thread's error, if any."""
        self._raise_failure()
        height = self.spill.plan.height
        while self.queued < height and self.spill.top >= min(self.queued + CHUNK, height):
            self.bands.put(self.queued)
            self.queued += CHUNK

    def finish(self) -> _MapFiles:
        """Write the last bands and wait for the thread: the files, ready to close."""
        self.spill.close()
        self.advance()
        self.bands.put(None)
        self.thread.join()
        self._raise_failure()
        return self.files

    def _raise_failure(self) -> None:
        if self.error is not None:
            raise RuntimeError(f"writing the map of {self.files.region} failed") from self.error

    def abandon(self) -> None:
        self.bands.put(None)
        self.thread.join()
        self.files.abandon()

    def _run(self) -> None:
        height = self.spill.plan.height
        try:
            # as predict's thread: the region score's states were made in inference mode
            with torch.inference_mode():
                for y0 in iter(self.bands.get, None):
                    total, flags = self.spill.read(y0, min(y0 + CHUNK, height))
                    self.files.add(_band(y0, total, flags))
        except BaseException as error:  # raised in the main thread by advance/finish
            self.error = error
            for _ in iter(self.bands.get, None):  # let finish() return
                pass


def _windows(trainer: L.Trainer, dataloader_idx: int) -> WindowDataset:
    loaders = trainer.predict_dataloaders
    loader = loaders[dataloader_idx] if isinstance(loaders, list | tuple) else loaders
    if not isinstance(loader.dataset, WindowDataset):
        raise TypeError(
            "ProbabilityMapWriter maps the windows of LandslideDataModule's predict "
            f"loaders; got a {type(loader.dataset).__name__}"
        )
    return loader.dataset


def _provenance(trainer: L.Trainer, windows: WindowDataset) -> dict[str, Any]:
    """Attributes of a map: the composite's (the cube's, the dates used) and the run's."""
    datamodule = trainer.datamodule
    stats = datamodule.region_stats(windows.region) if datamodule is not None else None
    attrs = dict(windows.attrs)
    attrs.update(
        {
            "title": f"Landslide probability, {windows.region.name}",
            "source_cube": str(windows.path),
            "checkpoint": str(trainer.ckpt_path or ""),
            "channels": ",".join(windows.channels),
            "window_size": windows.plan.size,
            "window_overlap": windows.plan.overlap,
            "blending": "raised-cosine ramp over the overlap, normalised by summed weights",
            "history": f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%dT%H:%M:%SZ} "
            f"landslide-lit {__version__} predict",
        }
    )
    if stats is not None:
        attrs["norm_stats"] = getattr(datamodule, "norm_stats", "")
        attrs["norm_mean"] = list(stats.mean)
        attrs["norm_std"] = list(stats.std)
    return attrs


# -- per-rank accumulation ----------------------------------------------------------


class _Spill:
    """One process's weighted probability sums and pixel flags, spilled row by row to disk.

    Windows arrive in plan order (row by row), so when a window starting at row ``y``
    comes, rows above ``y`` are final for this process: they go to the files and the
    in-memory band (one window high) moves down. Flags: bit 0 valid, bit 1 landslide.
    """

    def __init__(self, plan: WindowPlan, stem: Path) -> None:
        self.plan = plan
        self.paths = (stem.with_suffix(".sum"), stem.with_suffix(".flags"))
        self.buffers = (
            np.zeros((plan.size, plan.width), np.float32),
            np.zeros((plan.size, plan.width), np.uint8),
        )
        self.files = [path.open("wb") for path in self.paths]
        self.top = 0

    def add(
        self, y: int, x: int, probability: np.ndarray, valid: np.ndarray, target: np.ndarray
    ) -> None:
        self._flush(y)
        weight = self.plan.weight(y, x)
        h, w = weight.shape
        total, flags = self.buffers
        total[:h, x : x + w] += probability[:h, :w] * weight
        flags[:h, x : x + w] |= valid[:h, :w].astype(np.uint8) | (
            target[:h, :w].astype(np.uint8) << 1
        )

    def _flush(self, end: int) -> None:
        """Write rows [top, end) and move the band down to start at ``end``."""
        n = end - self.top
        if n <= 0:
            return
        k = min(n, self.plan.size)
        for buffer, file in zip(self.buffers, self.files, strict=True):
            file.write(buffer[:k].tobytes())
            file.seek((n - k) * buffer[0].nbytes, 1)  # rows no window of ours reached: zeros
            buffer[: len(buffer) - k] = buffer[k:]
            buffer[len(buffer) - k :] = 0
            file.flush()  # readable by the map writer's thread
        self.top = end

    def close(self) -> None:
        if self.files[0].closed:
            return
        self._flush(self.plan.height)
        for buffer, file in zip(self.buffers, self.files, strict=True):
            file.truncate(self.plan.height * buffer[0].nbytes)
            file.close()

    def read(self, y0: int, y1: int) -> tuple[np.ndarray, np.ndarray]:
        """Rows [y0, y1) of the sums and the flags."""
        return tuple(
            read_raw_rows(path, buffer.dtype.type, (self.plan.width,), y0, y1)
            for path, buffer in zip(self.paths, self.buffers, strict=True)
        )

    def remove(self) -> None:
        for file in self.files:
            file.close()
        for path in self.paths:
            path.unlink(missing_ok=True)


class _Band:
    """Final rows [y0, y0 + len) of a map: probability (NaN without data), valid, target."""

    def __init__(self, y0: int, probability: np.ndarray, valid: np.ndarray, target: np.ndarray):
        self.y0, self.probability, self.valid, self.target = y0, probability, valid, target


def _merge_rows(width: int) -> int:
    """Rows per merged band: a multiple of the output chunk, about MERGE_PIXELS pixels."""
    return max(CHUNK, MERGE_PIXELS // width // CHUNK * CHUNK)


def _merged(spill: _Spill, device: torch.device) -> Iterator[_Band]:
    """The map band by band, every process's sums added (each band is a collective)."""
    plan = spill.plan
    distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
    step = _merge_rows(plan.width)
    for y0 in range(0, plan.height, step):
        total, flags = spill.read(y0, min(y0 + step, plan.height))
        if distributed:
            parts = [torch.from_numpy(a).to(device) for a in (total, flags)]
            dist.all_reduce(parts[0], op=dist.ReduceOp.SUM)
            dist.all_reduce(parts[1], op=dist.ReduceOp.MAX)  # a pixel's flags agree where set
            total, flags = (p.cpu().numpy() for p in parts)
        yield _band(y0, total, flags)


def _band(y0: int, total: np.ndarray, flags: np.ndarray) -> _Band:
    """Final rows from the summed weighted probabilities and the pixel flags."""
    valid, target = (flags & 1) > 0, (flags & 2) > 0
    probability = np.where(valid, np.clip(total, 0.0, 1.0), np.float32(np.nan))
    return _Band(y0, probability.astype(np.float32, copy=False), valid, target)


# -- outputs --------------------------------------------------------------------------


def _variable_attrs(windows: WindowDataset) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        "long_name": "landslide probability",
        "units": "1",
        "valid_range": np.array([0.0, 1.0], np.float32),
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


class _NetCDF:
    """``.nc``: netCDF4, the map compressed in CHUNK-square chunks, written band by band.

    Every netCDF call holds xarray's netCDF lock, since xarray may read a netCDF cube in
    another thread meanwhile; coordinates are read from the cube before taking it.
    """

    def __init__(self, stem: Path, windows: WindowDataset, attrs: dict[str, Any]) -> None:
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
        with _NETCDF_LOCK:
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
            self.var = self.ds.createVariable(
                VARIABLE,
                "f4",
                (y, x),
                zlib=True,
                complevel=4,
                shuffle=True,
                chunksizes=(min(CHUNK, plan.height), min(CHUNK, plan.width)),
                fill_value=np.float32(np.nan),
            )
            self.var.setncatts(_netcdf_attrs(_variable_attrs(windows)))
            self.ds.setncatts(_netcdf_attrs(attrs))

    def write(self, band: _Band) -> None:
        rows = slice(band.y0, band.y0 + len(band.probability))
        coords = [(name, coord.isel({self.y: rows}).values) for name, coord in self.banded]
        with _NETCDF_LOCK:
            self.var[rows, :] = band.probability
            for name, values in coords:
                self.ds[name][rows] = values
            self.ds.sync()  # compress the band's chunks now, not all of them at close

    def close(self, attrs: dict[str, Any]) -> Path:
        with _NETCDF_LOCK:
            self.ds.setncatts(_netcdf_attrs(attrs))
            self.ds.close()
        return self.path

    def abandon(self) -> None:
        with _NETCDF_LOCK:
            if self.ds.isopen():
                self.ds.close()
        self.path.unlink(missing_ok=True)


class _Zarr:
    """``.zarr``: the map appended band by band along y, consolidated at the end."""

    def __init__(self, stem: Path, windows: WindowDataset, attrs: dict[str, Any]) -> None:
        self.path = stem.with_suffix(".zarr")
        self.windows, self.attrs, self.started = windows, _netcdf_attrs(attrs), False

    def write(self, band: _Band) -> None:
        y, x = self.windows.dims
        rows = slice(band.y0, band.y0 + len(band.probability))
        var = xr.Variable((y, x), band.probability, _variable_attrs(self.windows))
        coords = self.windows.grid.isel({y: rows}).drop_encoding().coords  # not the cube's codecs
        ds = xr.Dataset({VARIABLE: var}, coords=coords)
        if self.started:
            ds.to_zarr(self.path, append_dim=y, consolidated=True)
            return
        ds.attrs = self.attrs
        chunks = (min(CHUNK, self.windows.plan.height), min(CHUNK, self.windows.plan.width))
        ds.to_zarr(self.path, mode="w", consolidated=True, encoding={VARIABLE: {"chunks": chunks}})
        self.started = True

    def close(self, attrs: dict[str, Any]) -> Path:
        import zarr

        group = zarr.open_group(self.path, mode="r+")
        group.attrs.update(_netcdf_attrs(attrs))
        zarr.consolidate_metadata(self.path)
        return self.path

    def abandon(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


class _GeoTiff:
    """``.tif``: tiled, deflate-compressed float32 GeoTIFF with the cube's CRS and transform.

    rioxarray reads the CRS (the grid-mapping variable, else the cube's ``crs``
    attribute) and the affine transform from the coordinates; rasterio writes the bands.
    """

    def __init__(self, stem: Path, windows: WindowDataset, attrs: dict[str, Any]) -> None:
        import rasterio
        import rioxarray  # noqa: F401 - the .rio accessor

        self.path = stem.with_suffix(".tif")
        plan, (y, x) = windows.plan, windows.dims
        empty = np.broadcast_to(np.float32(0), (plan.height, plan.width))
        template = xr.DataArray(
            empty, dims=(y, x), coords=windows.grid.coords, attrs=_variable_attrs(windows)
        ).rio.set_spatial_dims(x_dim=x, y_dim=y)
        crs = template.rio.crs or attrs.get("crs")
        if crs is None:
            log.warning("%s: the cube has no CRS; the GeoTIFF has none either", self.path)
        tiles = {}
        if min(plan.height, plan.width) >= CHUNK:
            tiles = {"tiled": True, "blockxsize": CHUNK, "blockysize": CHUNK}
        self.dst = rasterio.open(
            self.path,
            "w",
            driver="GTiff",
            height=plan.height,
            width=plan.width,
            count=1,
            dtype="float32",
            crs=crs,
            transform=template.rio.transform(),
            nodata=np.nan,
            compress="deflate",
            **tiles,
        )
        self.tags = {k: str(v) for k, v in attrs.items() if isinstance(v, str | int | float)}

    def write(self, band: _Band) -> None:
        from rasterio.windows import Window

        rows, width = band.probability.shape
        self.dst.write(band.probability, 1, window=Window(0, band.y0, width, rows))

    def close(self, attrs: dict[str, Any]) -> Path:
        self.dst.update_tags(**self.tags, **{k: str(v) for k, v in attrs.items()})
        self.dst.close()
        return self.path

    def abandon(self) -> None:
        self.dst.close()
        self.path.unlink(missing_ok=True)


class _Quicklook:
    """Every ``step``-th row and column of the map (and labels), for a PNG of bounded size."""

    def __init__(self, plan: WindowPlan) -> None:
        self.step = max(1, math.ceil(max(plan.height, plan.width) / QUICKLOOK_PIXELS))
        shape = (math.ceil(plan.height / self.step), math.ceil(plan.width / self.step))
        self.probability = np.full(shape, np.nan, np.float32)
        self.target = np.zeros(shape, bool)

    def add(self, band: _Band) -> None:
        rows = np.arange((-band.y0) % self.step, len(band.probability), self.step)
        out = (band.y0 + rows) // self.step
        self.probability[out] = band.probability[rows, :: self.step]
        self.target[out] = band.target[rows, :: self.step]

    def save(self, path: Path, region: str, auprc: float | None) -> Path:
        from matplotlib.figure import Figure
        from scipy.ndimage import binary_erosion

        height, width = self.probability.shape
        inches = 8 / max(height, width)  # the longer side 8 in, however elongated the region
        figure = Figure(figsize=(max(width * inches, 4), height * inches + 0.6))
        axes = figure.add_subplot()
        image = axes.imshow(self.probability, cmap="magma", vmin=0, vmax=1, interpolation="nearest")
        figure.colorbar(image, ax=axes, label="landslide probability", shrink=0.8)
        title = f"{region}: landslide probability"
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
        figure.savefig(path, dpi=100, bbox_inches="tight")
        return path


class _RegionScore:
    """Region AUPRC over valid pixels in constant memory (a probability histogram)."""

    def __init__(self) -> None:
        self.auprc = BinnedAveragePrecision(sync_on_compute=False)
        self.valid = self.positive = 0

    def add(self, band: _Band) -> None:
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
