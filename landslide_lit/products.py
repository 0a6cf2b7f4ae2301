"""What a responder loads: a landslide mask and landslide polygons, built block by block.

:class:`ResponderProducts` is the one code path of ``predict`` (fed by the map writer as
the map streams) and ``polygonize`` (fed from a finished map). Given the map's blocks (in
order) and a threshold, it writes:

- ``<region>_landslide_mask.tif``: uint8 Cloud-Optimized GeoTIFF, 1 landslide
  (probability >= threshold), 0 not, 255 no SAR data (the raster's nodata), and its QGIS
  style ``<region>_landslide_mask.qml``. The mask is the thresholded map, every pixel;
  the minimum area applies to the polygons only (a block is written before it is known how
  large its landslides will grow);
- ``<region>_landslides.gpkg``: layer ``landslides`` in the map's CRS, one polygon per
  4-connected landslide (:mod:`landslide_lit.polygons`) with ``area_m2``, ``pixels``,
  ``p_mean``, ``p_max``, the threshold, its rule and the run's attributes;
- ``<region>_landslides.geojson`` on request (EPSG:4326, as RFC 7946 requires);

and :meth:`~ResponderProducts.close` returns a summary: the number of landslides, their
total area and their areas by mean probability. Every file is filled under a hidden name
carrying the process's owner tag; :meth:`~ResponderProducts.finish` completes them all
there and :meth:`~ResponderProducts.publish` renames them into place, so a failure on the
way leaves none that looks finished (``predict`` publishes them with the map).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np

from landslide_lit.errors import ConfigError
from landslide_lit.map_files import QUICKLOOK_PIXELS, Block
from landslide_lit.polygons import CONNECTIVITY, LAYER, Landslide, LandslideLayer, Polygonizer
from landslide_lit.rasters import CogWriter, Grid, partial_path, publish, write_style
from landslide_lit.thresholds import ChosenThreshold

__all__ = [
    "ATTRIBUTES",
    "MASK_NODATA",
    "P_MEAN_CLASSES",
    "ChosenThreshold",
    "ProductOptions",
    "ProductPaths",
    "ResponderProducts",
    "run_attributes",
]

log = logging.getLogger(__name__)

MASK_NODATA = 255
"""The mask's value where the map has no SAR data."""
P_MEAN_CLASSES = (0.5, 0.7, 0.9)
"""Inner edges of the summary's classes of landslides by mean probability (those above
the threshold; the first class starts at the threshold, the last ends at 1)."""


ATTRIBUTES = ("checkpoint", "before_acquisitions", "after_acquisitions")
"""The map's attributes every polygon carries (with the threshold and its rule)."""


def run_attributes(attrs: dict[str, Any]) -> dict[str, str]:
    """The polygons' run attributes (:data:`ATTRIBUTES`) among a map's ``attrs``; empty ones
    are left out, as GeoTIFF tags leave them out (no checkpoint: no ``checkpoint``)."""
    return {key: str(attrs[key]) for key in ATTRIBUTES if attrs.get(key) not in (None, "")}


@dataclass(frozen=True)
class ProductOptions:
    """``min_area_m2``: smaller landslides are dropped from the polygons; ``simplify``:
    tolerance of the outlines' topology-preserving simplification in map units (0: exact
    pixel outlines; areas stay those of the pixels); ``geojson``: also write GeoJSON."""

    min_area_m2: float = 0.0
    simplify: float = 0.0
    geojson: bool = False


@dataclass(frozen=True)
class ProductPaths:
    """Where the mask and the polygons go (the GeoJSON beside the GeoPackage)."""

    mask: Path
    polygons: Path

    @property
    def geojson(self) -> Path:
        return self.polygons.with_suffix(".geojson")

    @classmethod
    def for_region(cls, folder: Path, region: str) -> ProductPaths:
        """``<region>_landslide_mask.tif`` and ``<region>_landslides.gpkg`` in ``folder``."""
        folder = Path(folder)
        return cls(folder / f"{region}_landslide_mask.tif", folder / f"{region}_landslides.gpkg")

    @classmethod
    def for_polygons(cls, polygons: Path) -> ProductPaths:
        """``FILE.gpkg`` and, beside it, ``FILE_mask.tif``."""
        polygons = Path(polygons)
        return cls(polygons.with_name(f"{polygons.stem}_mask.tif"), polygons)


class ResponderProducts:
    """The mask and polygons of one map at one threshold, built block by block (see module).

    Args:
        paths: the output files.
        grid: the map's grid (a CRS is required).
        threshold: pixels with probability >= ``threshold.value`` are landslides.
        attributes: the run's attributes every polygon carries (checkpoint, dates...).
        options: minimum area, simplification, GeoJSON.

    Attributes:
        preview: the kept landslides rasterised on the quicklook's grid (every
            ``preview_step``-th row and column of the map, a cell set where a kept polygon
            touches it), for the quicklook to outline them.
    """

    def __init__(
        self,
        paths: ProductPaths,
        grid: Grid,
        threshold: ChosenThreshold,
        attributes: dict[str, str | int | float] | None = None,
        options: ProductOptions | None = None,
    ) -> None:
        if not 0.0 <= threshold.value <= 1.0:
            raise ConfigError(
                f"threshold {threshold.value} ({threshold.source}) is outside [0, 1]: "
                "it is a landslide probability"
            )
        self.paths, self.grid, self.threshold = paths, grid, threshold
        self.options = options or ProductOptions()
        self.polygonizer = Polygonizer(grid, self.options.min_area_m2, self.options.simplify)
        run = {"threshold": threshold.value, "threshold_rule": threshold.rule}
        run.update(attributes or {})
        self.layer = LandslideLayer(
            paths.polygons,
            grid.crs,
            run,
            geojson=paths.geojson if self.options.geojson else None,
        )
        self.mask = CogWriter(
            partial_path(paths.mask),
            grid,
            "uint8",
            MASK_NODATA,
            descriptions=("landslide_mask",),
            tags={
                **{k: str(v) for k, v in run.items()},
                "threshold_source": threshold.source,
                "values": f"1 landslide (probability >= threshold), 0 not, {MASK_NODATA} no data",
            },
            resampling="nearest",
        )
        step = max(1, math.ceil(max(grid.height, grid.width) / QUICKLOOK_PIXELS))
        self.preview_step = step
        self.preview = np.zeros((math.ceil(grid.height / step), math.ceil(grid.width / step)), bool)
        self.inner = [e for e in P_MEAN_CLASSES if e > threshold.value]
        self.count = np.zeros(len(self.inner) + 1, np.int64)
        self.area = np.zeros(len(self.inner) + 1, np.float64)
        self._summary: dict[str, Any] = {}  # by finish()

    def add(self, block: Block) -> None:
        """The map's next block (in order: see :class:`~landslide_lit.map_files.Block`)."""
        landslide = block.valid & (block.probability >= self.threshold.value)
        # uint8 throughout: a where() of bools and 255 would make int64, 8 bytes a pixel
        mask = np.where(block.valid, landslide.view(np.uint8), np.uint8(MASK_NODATA))
        self.mask.write(block.y0, mask, block.x0)
        self._keep(self.polygonizer.add(block.y0, landslide, block.probability, block.x0))

    def _keep(self, landslides: list[Landslide]) -> None:
        if not landslides:
            return
        import shapely
        from affine import Affine
        from rasterio.features import rasterize

        classes = np.searchsorted(self.inner, [s.p_mean for s in landslides], side="right")
        np.add.at(self.count, classes, 1)
        np.add.at(self.area, classes, [s.area_m2 for s in landslides])
        t, step = self.grid.transform, self.preview_step  # the map's, with pixels step wide
        outlines = np.array([s.geometry for s in landslides], dtype=object)
        if step > 1:  # no detail finer than the preview's cells: far fewer vertices to burn
            # without keeping topology: burning needs no valid polygons, and keeping it costs
            # minutes on one landslide with 10^5 holes (0.03 s without); a landslide that
            # collapses (smaller than a cell) is burnt as it is, so it stays visible
            tolerance = step * math.sqrt(abs(t.a * t.e - t.b * t.d))
            simplified = shapely.simplify(outlines, tolerance, preserve_topology=False)
            outlines = np.where(shapely.is_empty(simplified), outlines, simplified)
        self.preview |= rasterize(
            outlines,
            out_shape=self.preview.shape,
            transform=Affine(t.a * step, t.b * step, t.c, t.d * step, t.e * step, t.f),
            all_touched=self.preview_step > 1,  # small landslides stay visible
            dtype=np.uint8,
        ).astype(bool)
        self.layer.add(landslides)

    def close(self) -> dict[str, Any]:
        """:meth:`finish` and :meth:`publish`; the summary (see the module)."""
        summary = self.finish()
        self.publish()
        return summary

    def finish(self) -> dict[str, Any]:
        """Complete every file under its hidden name; the summary (see the module)."""
        self._keep(self.polygonizer.finish())
        self.mask.close()
        self.layer.finish()
        files = [self.paths.mask, self.paths.mask.with_suffix(".qml"), self.paths.polygons]
        if self.options.geojson:
            files.append(self.paths.geojson)
        self._summary = self.summary([path.name for path in files])
        return self._summary

    def publish(self) -> list[Path]:
        """Rename the finished files into place (the mask's QGIS style beside it); the files."""
        mask = publish(self.mask.path, self.paths.mask)
        files = [mask, write_style(mask, "mask"), *self.layer.publish()]
        summary = self._summary
        log.info(
            "%d landslides (%.0f m²) at threshold %g (%s, %s) in %s",
            summary["landslides"],
            summary["area_m2"],
            self.threshold.value,
            self.threshold.rule,
            self.threshold.source,
            self.paths.polygons,
        )
        return files

    def summary(self, files: list[str]) -> dict[str, Any]:
        bounds = [self.threshold.value, *self.inner, 1.0]
        classes = []
        for i, (low, high) in enumerate(pairwise(bounds)):
            closing = "]" if i == len(self.inner) else ")"
            classes.append(
                {
                    "p_mean": f"[{low:g}, {high:g}{closing}",
                    "landslides": int(self.count[i]),
                    "area_m2": float(self.area[i]),
                }
            )
        return {
            "threshold": self.threshold.value,
            "threshold_rule": self.threshold.rule,
            "threshold_source": self.threshold.source,
            "landslides": int(self.count.sum()),
            "area_m2": float(self.area.sum()),
            "by_p_mean": classes,
            "connectivity": CONNECTIVITY,
            "min_area_m2": self.options.min_area_m2,
            "simplify": self.options.simplify,
            "layer": LAYER,
            "files": files,
        }

    def abandon(self) -> None:
        """Remove the unfinished files."""
        self.mask.abandon()
        self.layer.abandon()
