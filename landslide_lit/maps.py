"""Whole-region landslide probability maps: overlapping windows blended and streamed to disk.

Each process adds its windows' probabilities, weighted by the blending weights of
:class:`~landslide_lit.data.windows.WindowPlan`, to a rolling band of rows one window high
and appends the rows no later window reaches to a spill file beside the output. A single
process writes each band of the map from there as soon as it is final, in a background
thread, while it goes on predicting, a block of :data:`~landslide_lit.map_files.BLOCK_COLUMNS`
columns at a time; under DDP the spill files are read back at the end, block by block,
summed over the processes (an all-reduce) and rank 0 writes. The files are
written under hidden names that carry the writer's process id and host
(``.<name>.pid<PID>-<HOST>.<suffix>``) and renamed when complete; those a killed process
left behind are removed by the next predict into the folder on that host. The files
(written by :mod:`landslide_lit.map_files`):

- ``<region>_landslide_probability.nc``: float32, compressed, on the cube's own y/x
  coordinates with its CRS (grid-mapping variable and attributes), NaN where the SAR
  channels have no data, provenance attributes (with the checkpoint's validation
  thresholds and the one applied); ``.zarr`` and a Cloud-Optimized GeoTIFF ``.tif`` (and
  its QGIS style ``.qml``) on request (GeoTIFF by default when rasterio is installed);
- at a threshold (``threshold``, by default the checkpoint's max-F1 one, resolved once at
  predict start): the landslide mask and polygons of
  :class:`~landslide_lit.products.ResponderProducts`, built from the same blocks;
- ``<region>_landslide_probability.png``: a downsampled quicklook in map coordinates,
  the predicted landslides and the mapped ones outlined;
- ``<region>_landslide_probability.json``: files, provenance, the landslides' summary
  and, when the cube has labels, the region's AUPRC over its valid pixels and the
  no-skill fraction.

An ensemble (:class:`~landslide_lit.ensemble.EnsembleSegmenter`, K members) predicts K
probabilities per window. Each member's weighted sums are kept apart (K sums per pixel
in the band and the spill file), so each member's map is blended exactly as a single
model's, and the map is their mean with their standard deviation beside it (see
:meth:`~landslide_lit.map_files.Block.from_sums`); one model's map is the same either way.

Memory holds the band one window high (K sums a pixel), whatever the region's height,
and the writers a block, whatever its width.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import queue
import threading
from collections.abc import Iterator
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.distributed as dist
from lightning.pytorch.callbacks import BasePredictionWriter

from landslide_lit.data.store import read_raw_rows, remove_stale_composites
from landslide_lit.data.windows import WindowDataset, WindowPlan
from landslide_lit.ensemble import EnsembleSegmenter, ensemble_size
from landslide_lit.errors import ConfigError
from landslide_lit.map_files import (
    BLOCK_COLUMNS,
    CHUNK,
    Block,
    Format,
    MapFiles,
    block_columns,
    map_grid,
)
from landslide_lit.owners import owner_tag, remove_stale
from landslide_lit.products import ProductOptions, ProductPaths, ResponderProducts, run_attributes
from landslide_lit.rasters import RESPONDER_EXTRA, Grid
from landslide_lit.thresholds import MAX_F1, ChosenThreshold, resolve_threshold
from landslide_lit.version import __version__

__all__ = [
    "DEFAULT_THRESHOLD",
    "MERGE_PIXELS",
    "PARTIAL_GLOB",
    "RESPONDER_MODULES",
    "ProbabilityMapWriter",
    "default_formats",
]

log = logging.getLogger(__name__)

MERGE_PIXELS = 1 << 22
"""Pixels per block when the spill files are merged and written (16 MiB of float32)."""
PARTIAL_GLOB = ".*.pid*-*.*"
"""Hidden spill and partial map files of a process (its owner tag in the name)."""
DEFAULT_THRESHOLD = MAX_F1
"""``--maps.threshold`` unless given: the checkpoint's max-F1 threshold."""
RESPONDER_MODULES = ("rasterio", "shapely", "pyogrio", "geopandas")
"""What the landslide mask and polygons need (the ``responder`` extra)."""


def default_formats() -> list[Format]:
    """netCDF, and the GeoTIFF when rasterio is installed."""
    return ["netcdf", "geotiff"] if find_spec("rasterio") else ["netcdf"]


def _missing(modules: tuple[str, ...]) -> list[str]:
    return [name for name in modules if find_spec(name) is None]


class ProbabilityMapWriter(BasePredictionWriter):
    """Writes ``predict`` output as one whole-region map per region (see the module).

    Args:
        output_dir: folder of the outputs (default: ``predictions/`` in the run's log
            folder).
        formats: any of ``netcdf``, ``zarr``, ``geotiff`` (default: netCDF, plus the
            GeoTIFF when rasterio is installed: ``pip install 'landslide-lit[responder]'``).
        quicklook: also draw ``<region>_landslide_probability.png``.
        threshold: the landslide mask and polygons mark pixels with probability >= it:
            ``max_f1`` (default) or ``precision@P`` (P 0.5, 0.7 or 0.9), chosen on
            validation and stored in the checkpoint; a probability in [0, 1]; or
            ``none``: the probability map alone. Without the ``responder`` extra the
            default writes the probability map alone, with a warning.
        min_area_m2: landslides smaller than this are left out of the polygons (not of
            the mask).
        simplify: tolerance of the outlines' topology-preserving simplification, in map
            units (0: exact pixel outlines; areas stay those of the pixels).
        geojson: also write ``<region>_landslides.geojson`` (EPSG:4326).
    """

    def __init__(
        self,
        output_dir: str | None = None,
        formats: list[Format] | None = None,
        quicklook: bool = True,
        threshold: str | float = DEFAULT_THRESHOLD,
        min_area_m2: float = 0.0,
        simplify: float = 0.0,
        geojson: bool = False,
    ) -> None:
        super().__init__(write_interval="batch")
        self.output_dir = output_dir
        self.formats = default_formats() if formats is None else list(dict.fromkeys(formats))
        if not self.formats:
            raise ConfigError(
                "ProbabilityMapWriter formats is empty: give netcdf, zarr and/or geotiff"
            )
        if "geotiff" in self.formats and _missing(("rasterio",)):
            raise ConfigError(
                "--maps.formats includes geotiff, which needs rasterio (not installed): "
                f"{RESPONDER_EXTRA} (or drop geotiff)"
            )
        self.quicklook = quicklook
        self.threshold = str(threshold).strip()
        self.options = _product_options(self.threshold, min_area_m2, simplify, geojson)
        self._check_extra()
        self._spills: dict[int, _Spill] = {}
        self._followers: dict[int, _Follower] = {}
        self._folder = Path(".")
        self._members = 1
        self._chosen: ChosenThreshold | None = None
        self._grids: dict[int, Grid | None] = {}  # per region: None without products

    @property
    def wants_products(self) -> bool:
        """Whether the mask and polygons are asked for (by a threshold other than none)."""
        return self.threshold.lower() != "none"

    def choose_threshold(
        self, stored: dict[str, Any] | None, checkpoint: str = ""
    ) -> ChosenThreshold | None:
        """The threshold of the mask and polygons (None: the probability map alone).

        ``stored``: the checkpoint's validation thresholds. An error for a bad
        ``threshold`` or a rule the checkpoint lacks; None without the responder extra
        (only the default can come here without it).
        """
        if not self.wants_products or _missing(RESPONDER_MODULES):
            return None
        return resolve_threshold(self.threshold, stored, checkpoint=checkpoint)

    def _by_default(self) -> bool:
        """Whether the mask and polygons come by default, not asked for by an option."""
        return self.threshold == DEFAULT_THRESHOLD and self.options == ProductOptions()

    def _check_extra(self) -> None:
        """Products asked for explicitly without the responder extra: one error, now."""
        missing = _missing(RESPONDER_MODULES)
        if missing and self.wants_products and not self._by_default():
            raise ConfigError(
                f"--maps.threshold {self.threshold} (with --maps.min_area_m2, --maps.simplify, "
                "--maps.geojson) asks for the landslide mask and polygons, which need "
                f"{', '.join(missing)} (not installed): {RESPONDER_EXTRA}; or "
                "--maps.threshold none for the probability map alone"
            )

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # The maps are the output: kept, every window's probabilities would fill the memory.
        trainer.predict_loop.return_predictions = False
        # trainer.log_dir is a collective under DDP: every rank asks
        self._folder = Path(self.output_dir or Path(trainer.log_dir or ".") / "predictions")
        self._folder.mkdir(parents=True, exist_ok=True)
        if trainer.local_rank == 0:  # what killed predicts of this host left: one sweep a host
            remove_stale(self._folder, PARTIAL_GLOB)
            remove_stale_composites()
        self._spills, self._followers = {}, {}
        self._members = ensemble_size(pl_module)
        checkpoint = str(trainer.ckpt_path or "")
        self._chosen = self.choose_threshold(getattr(pl_module, "thresholds", None), checkpoint)
        self._grids = {idx: self._grid(trainer, idx) for idx in range(_loader_count(trainer))}
        if trainer.is_global_zero:
            self._say_threshold()

    def _say_threshold(self) -> None:
        """Log the threshold of the mask and polygons and where it came from."""
        chosen = self._chosen
        if chosen is not None:
            log.info(
                "landslide mask and polygons at threshold %.4g (%s): %s",
                chosen.value,
                chosen.rule,
                chosen.source,
            )
        elif not self.wants_products:
            log.info("--maps.threshold none: the probability map alone, no mask or polygons")
        else:
            log.warning(
                "no landslide mask or polygons: they need %s (not installed): %s. "
                "Writing the probability map alone",
                ", ".join(_missing(RESPONDER_MODULES)),
                RESPONDER_EXTRA,
            )

    def _grid(self, trainer: L.Trainer, idx: int) -> Grid | None:
        """The pixel grid of loader ``idx``'s map when it gets a mask and polygons.

        A cube without a CRS or an even grid cannot have them: an error where they were
        asked for explicitly, else a warning and the probability map alone.
        """
        if self._chosen is None:
            return None
        windows = _windows(trainer, idx)
        problem = None
        try:
            grid = map_grid(windows, windows.attrs)
        except ConfigError as error:
            problem = str(error)
        else:
            if grid.crs is None:
                problem = f"{windows.path} has no CRS, so its landslides have no place or area"
        if problem is None:
            return grid
        if not self._by_default():
            raise ConfigError(
                f"--maps.threshold {self.threshold}: no landslide mask or polygons for "
                f"{windows.region.name}: {problem}. Add a CRS to the cube, or "
                "--maps.threshold none for the probability map alone"
            )
        if trainer.is_global_zero:
            log.warning(
                "%s: no landslide mask or polygons: %s; writing the probability map alone",
                windows.region.name,
                problem,
            )
        return None

    def _spill(self, trainer: L.Trainer, dataloader_idx: int) -> _Spill:
        if dataloader_idx not in self._spills:
            windows = _windows(trainer, dataloader_idx)
            name = f".{windows.region.name}.rank{trainer.global_rank}.{owner_tag()}.partial"
            stem = self._folder / name
            spill = self._spills[dataloader_idx] = _Spill(windows.plan, stem, self._members)
            if trainer.world_size == 1:  # the rows no later window reaches are final
                files = self._files(trainer, dataloader_idx)
                self._followers[dataloader_idx] = _Follower(spill, files)
        return self._spills[dataloader_idx]

    def _files(self, trainer: L.Trainer, idx: int) -> MapFiles:
        windows, grid = _windows(trainer, idx), self._grids.get(idx)
        chosen = self._chosen if grid is not None else None  # None: no mask or polygons
        attrs = _provenance(trainer, windows, chosen)
        products = None
        if grid is not None and chosen is not None:
            paths = ProductPaths.for_region(self._folder, windows.region.name)
            attributes = run_attributes(attrs)
            products = ResponderProducts(paths, grid, chosen, attributes, self.options)
        return MapFiles(
            self._folder,
            windows,
            attrs,
            self.formats,
            self.quicklook,
            self._members,
            products,
        )

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
        probability = prediction["probability"].cpu().numpy()  # (B, members, H, W)
        if probability.shape[1] != self._members:
            raise ValueError(
                f"predict_step gave {probability.shape[1]} probabilities a pixel for a model "
                f"of {self._members}: probability must be (B, members, H, W)"
            )
        size = probability.shape[2:]
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
        for idx in range(_loader_count(trainer)):
            spill = self._spill(trainer, idx)
            try:
                if idx in self._followers:  # one process: written while predicting
                    self._followers[idx].finish().close(trainer)
                    del self._followers[idx]
                    continue
                spill.close()
                blocks = _merged(spill, pl_module.device)
                if not trainer.is_global_zero:
                    for _ in blocks:  # every rank joins each block's all-reduce
                        pass
                    continue
                files = self._files(trainer, idx)
                try:
                    for block in blocks:
                        files.add(block)
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


class _Follower:
    """Writes the map of a single process while it predicts.

    Each band of CHUNK rows goes, as soon as no later window reaches it, to a background thread
    that reads it back from the spill file a block at a time and writes it to the map
    files, so compressing and writing overlap the forward instead of following it.
    """

    def __init__(self, spill: _Spill, files: MapFiles) -> None:
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

    def finish(self) -> MapFiles:
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
                    rows = slice(y0, min(y0 + CHUNK, height))
                    for columns in block_columns(self.spill.plan.width):
                        total, flags = self.spill.read(rows, columns)
                        self.files.add(Block.from_sums(y0, columns.start, total, flags))
        except BaseException as error:  # raised in the main thread by advance/finish
            self.error = error
            for _ in iter(self.bands.get, None):  # let finish() return
                pass


def _product_options(
    threshold: str, min_area_m2: float, simplify: float, geojson: bool
) -> ProductOptions:
    """The polygons' options, checked (finite, >= 0; none of them with no polygons)."""
    for option, value in (("min_area_m2", min_area_m2), ("simplify", simplify)):
        if not 0 <= value < math.inf:  # NaN too
            raise ConfigError(f"--maps.{option} {value}: give a number >= 0 (0: off)")
    options = ProductOptions(float(min_area_m2), float(simplify), bool(geojson))
    if threshold.lower() == "none" and options != ProductOptions():
        raise ConfigError(
            "--maps.threshold none turns the landslide polygons off, so --maps.min_area_m2, "
            "--maps.simplify and --maps.geojson have nothing to apply to: give a threshold "
            "(e.g. --maps.threshold max_f1) or drop them"
        )
    return options


def _loader_count(trainer: L.Trainer) -> int:
    loaders = trainer.predict_dataloaders
    return len(loaders) if isinstance(loaders, list | tuple) else 1


def _windows(trainer: L.Trainer, dataloader_idx: int) -> WindowDataset:
    loaders = trainer.predict_dataloaders
    loader = loaders[dataloader_idx] if isinstance(loaders, list | tuple) else loaders
    if not isinstance(loader.dataset, WindowDataset):
        raise TypeError(
            "ProbabilityMapWriter maps the windows of LandslideDataModule's predict "
            f"loaders; got a {type(loader.dataset).__name__}"
        )
    return loader.dataset


def _provenance(
    trainer: L.Trainer, windows: WindowDataset, chosen: ChosenThreshold | None
) -> dict[str, Any]:
    """Attributes of a map: the composite's (the cube's, the dates used) and the run's:
    the checkpoint's validation thresholds (``thresholds``: each rule's operating point,
    which ``polygonize --threshold RULE`` reads) and the one its mask applies."""
    datamodule = trainer.datamodule
    stats = datamodule.region_stats(windows.region) if datamodule is not None else None
    attrs = dict(windows.attrs)
    model = trainer.lightning_module
    members = ensemble_size(model)
    attrs.update(
        {
            "title": f"Landslide probability, {windows.region.name}"
            + (f", mean of {members} models" if members > 1 else ""),
            "source_cube": str(windows.path),
            "checkpoint": str(trainer.ckpt_path or ""),
            "channels": ",".join(windows.channels),
            "window_shape": list(windows.plan.shape),
            "window_overlap": windows.plan.overlap,
            "blending": "raised-cosine ramp over the overlap, normalised by summed weights",
            "history": f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%dT%H:%M:%SZ} "
            f"landslide-lit {__version__} predict",
        }
    )
    if members > 1:
        attrs["ensemble_size"] = members
        if isinstance(model, EnsembleSegmenter) and model.checkpoints is not None:
            attrs["ensemble_checkpoints"] = list(model.checkpoints)
    stored = getattr(model, "thresholds", None)
    if stored and stored.get("operating_points"):
        attrs["thresholds"] = stored["operating_points"]
        attrs["thresholds_chosen_on"] = (
            f"{stored.get('region', '?')} {stored.get('split', 'val')} split, epoch "
            f"{stored.get('epoch', '?')}: {stored.get('source', '?')}"
        )
    if chosen is not None:
        attrs.update(
            threshold=chosen.value, threshold_rule=chosen.rule, threshold_source=chosen.source
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
    in-memory band (one window high) moves down. Each row holds one sum per member and
    pixel (``(members, width)``). Flags: bit 0 valid, bit 1 landslide.
    """

    def __init__(self, plan: WindowPlan, stem: Path, members: int = 1) -> None:
        self.plan = plan
        self.rows = plan.shape[0]  # the band one window high
        self.paths = (stem.with_suffix(".sum"), stem.with_suffix(".flags"))
        self.buffers = (
            np.zeros((self.rows, members, plan.width), np.float32),
            np.zeros((self.rows, plan.width), np.uint8),
        )
        self.files = [path.open("wb") for path in self.paths]
        self.top = 0

    def add(
        self, y: int, x: int, probability: np.ndarray, valid: np.ndarray, target: np.ndarray
    ) -> None:
        """One window at (y, x): ``probability`` (members, H, W), ``valid`` and ``target``."""
        self._flush(y)
        weight = self.plan.weight(y, x)
        h, w = weight.shape
        total, flags = self.buffers
        total[:h, :, x : x + w] += probability[:, :h, :w].transpose(1, 0, 2) * weight[:, None]
        flags[:h, x : x + w] |= valid[:h, :w].astype(np.uint8) | (
            target[:h, :w].astype(np.uint8) << 1
        )

    def _flush(self, end: int) -> None:
        """Write rows [top, end) and move the band down to start at ``end``."""
        n = end - self.top
        if n <= 0:
            return
        k = min(n, self.rows)
        for buffer, file in zip(self.buffers, self.files, strict=True):
            file.write(buffer[:k])  # its memory, not a copy the width of the region
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

    def read(self, rows: slice, columns: slice) -> tuple[np.ndarray, np.ndarray]:
        """A block of the sums (rows, members, columns) and the flags (rows, columns)."""
        return tuple(
            read_raw_rows(path, buffer.dtype.type, buffer.shape[1:], rows.start, rows.stop, columns)
            for path, buffer in zip(self.paths, self.buffers, strict=True)
        )

    def remove(self) -> None:
        for file in self.files:
            file.close()
        for path in self.paths:
            path.unlink(missing_ok=True)


def _merge_rows(members: int) -> int:
    """Rows per merged block: a multiple of the output chunk, blocks of about MERGE_PIXELS
    sums."""
    return max(CHUNK, MERGE_PIXELS // (BLOCK_COLUMNS * members) // CHUNK * CHUNK)


def _merged(spill: _Spill, device: torch.device) -> Iterator[Block]:
    """The map block by block, every process's sums added (each block is a collective)."""
    plan = spill.plan
    distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
    step = _merge_rows(spill.buffers[0].shape[1])
    for y0 in range(0, plan.height, step):
        rows = slice(y0, min(y0 + step, plan.height))
        for columns in block_columns(plan.width):
            total, flags = spill.read(rows, columns)
            if distributed:
                parts = [torch.from_numpy(a).to(device) for a in (total, flags)]
                dist.all_reduce(parts[0], op=dist.ReduceOp.SUM)
                dist.all_reduce(parts[1], op=dist.ReduceOp.MAX)  # a pixel's flags agree
                total, flags = (p.cpu().numpy() for p in parts)
            yield Block.from_sums(y0, columns.start, total, flags)
