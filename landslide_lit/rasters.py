"""Cloud-Optimized GeoTIFFs written band by band of rows, and QGIS styles beside them.

:class:`CogWriter` fills a tiled GeoTIFF beside its output as rows arrive, then, on
:meth:`~CogWriter.close`, builds its overviews and copies it into a Cloud-Optimized
GeoTIFF with GDAL's COG driver (tiles of :data:`TILE` pixels, deflate with the
floating-point predictor for floats and horizontal differencing for integers, the
overviews, the CRS, transform, nodata, tags and band descriptions). :func:`write_style`
writes the QGIS ``.qml`` that QGIS loads as the default style of a raster of the same base
name. :class:`Grid` is a map's pixel grid (shape, affine transform, CRS), read from the CF
coordinates of a cube or a map by :meth:`Grid.from_coordinates`.

rasterio (and through it GDAL) is imported only when a file is written:
:func:`require` turns its absence into one error naming the extra to install.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

import numpy as np

from landslide_lit.atomic import write_text_atomically
from landslide_lit.errors import ConfigError
from landslide_lit.owners import owner_tag

__all__ = [
    "RESPONDER_EXTRA",
    "TILE",
    "CogWriter",
    "Grid",
    "cf_crs",
    "overview_factors",
    "partial_path",
    "publish",
    "require",
    "write_style",
]

TILE = 256
"""Side of the COG's tiles (and of the temporary GeoTIFF's), in pixels."""

CACHE_MB = 16
"""GDAL's block cache while a COG is written, its overviews built and it is copied: by
default it may take 5 % of the machine's memory, and it kept the whole raster (29 MiB for
a float band of 1344 x 5376 px) as the blocks came and again while the COG was closed, so
predict's peak grew with the region's area; the bound costs the close about 10 % (1.13 ->
1.25 s at that size)."""
RESPONDER_EXTRA = "pip install 'landslide-lit[responder]'"


def require(module: str, purpose: str) -> ModuleType:
    """Import ``module`` (an optional dependency), or say which extra ``purpose`` needs."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ConfigError(
            f"{purpose} needs {module.split('.')[0]}, which is not installed: {RESPONDER_EXTRA}"
        ) from error


def partial_path(path: Path) -> Path:
    """The hidden name, tagged with this process, under which ``path`` is filled.

    Predict's sweep of files left by killed processes recognises the tag.
    """
    return path.with_name(f".{path.stem}.{owner_tag()}{path.suffix}")


def publish(partial: Path, final: Path) -> Path:
    """Rename a finished partial file to its final name (replacing an older one); ``final``."""
    os.replace(partial, final)
    return final


@dataclass(frozen=True)
class Grid:
    """A map's pixel grid: ``height`` x ``width`` pixels, the affine ``transform`` of
    pixel (column, row) to map coordinates (of pixel corners, rasterio's convention) and the
    ``crs`` (WKT, ``EPSG:n`` or anything rasterio and pyproj read; None when unknown)."""

    height: int
    width: int
    transform: Any  # affine.Affine
    crs: str | None

    @classmethod
    def from_coordinates(
        cls, x: np.ndarray, y: np.ndarray, crs: str | None, where: str = "the map"
    ) -> Grid:
        """The grid of CF pixel-centre coordinates ``x`` and ``y`` (1-D, evenly spaced)."""
        from affine import Affine  # rasterio's dependency

        steps = []
        for name, values in (("x", x), ("y", y)):
            values = np.asarray(values, np.float64)
            if values.ndim != 1 or len(values) < 2:
                raise ConfigError(
                    f"{where}: coordinate {name} must be 1-D with at least 2 values to give "
                    f"the pixel grid (it has shape {values.shape})"
                )
            step = (values[-1] - values[0]) / (len(values) - 1)
            if step == 0 or not np.allclose(np.diff(values), step, rtol=1e-6, atol=0):
                raise ConfigError(
                    f"{where}: coordinate {name} is not evenly spaced, so the map has no "
                    "affine pixel grid (GeoTIFF, mask and polygons need one)"
                )
            steps.append(step)
        (dx, dy), x0, y0 = steps, float(x[0]), float(y[0])
        transform = Affine(dx, 0.0, x0 - dx / 2, 0.0, dy, y0 - dy / 2)
        return cls(len(y), len(x), transform, crs)


def cf_crs(mapping: Mapping[str, Any], fallback: str | None = None) -> str | None:
    """The CRS of a CF grid-mapping variable's attributes (``crs_wkt``, GDAL's
    ``spatial_ref``, else its CF parameters), or ``fallback`` (a ``crs`` attribute)."""
    wkt = mapping.get("crs_wkt") or mapping.get("spatial_ref")
    if wkt:
        return str(wkt)
    if "grid_mapping_name" in mapping:
        pyproj = require("pyproj", "reading a CF grid mapping")
        return pyproj.CRS.from_cf(dict(mapping)).to_wkt()
    return None if fallback is None else str(fallback)


def overview_factors(height: int, width: int) -> list[int]:
    """Decimation factors 2, 4, 8... until the smallest overview fits in one tile."""
    factors, factor = [], 2
    while max(height, width) / (factor // 2) > TILE:
        factors.append(factor)
        factor *= 2
    return factors


class CogWriter:
    """A Cloud-Optimized GeoTIFF at ``path``, written block by block (any order).

    Blocks go into a tiled, deflate-compressed GeoTIFF beside ``path`` (named after it, so a
    sweep of ``path``'s owner tag removes it too); :meth:`close` adds its overviews
    (``resampling``: ``average`` for continuous values, ``nearest`` for classes) and copies
    it into ``path`` with GDAL's COG driver, which keeps the overviews, the tags and band
    descriptions. ``path`` is written in place: give it a hidden partial name
    (:func:`partial_path`) and :func:`publish` it when it is finished.

    Args:
        path: the COG to write.
        grid: its pixel grid, CRS and transform.
        dtype: numpy dtype of its pixels (float: predictor 3, integer: predictor 2).
        nodata: the value of pixels without data (NaN for floats).
        count: number of bands; ``descriptions`` names them.
        tags: dataset metadata (strings).
    """

    def __init__(
        self,
        path: Path,
        grid: Grid,
        dtype: str | np.dtype,
        nodata: float | int,
        *,
        count: int = 1,
        descriptions: tuple[str, ...] = (),
        tags: dict[str, str] | None = None,
        resampling: Literal["average", "nearest"] = "average",
    ) -> None:
        rasterio = require("rasterio", "a Cloud-Optimized GeoTIFF")
        self.path, self.grid, self.resampling = Path(path), grid, resampling
        self.tiles = self.path.with_name(f"{self.path.stem}.tiles{self.path.suffix}")
        self.floating = np.issubdtype(np.dtype(dtype), np.floating)
        self.dst = rasterio.open(
            self.tiles,
            "w",
            driver="GTiff",
            height=grid.height,
            width=grid.width,
            count=count,
            dtype=np.dtype(dtype).name,
            crs=grid.crs,
            transform=grid.transform,
            nodata=nodata,
            tiled=True,
            blockxsize=TILE,
            blockysize=TILE,
            compress="deflate",
            zlevel=1,  # a temporary file: fast, the COG is compressed again
            predictor=3 if self.floating else 2,
            bigtiff="IF_SAFER",
        )
        for index, description in enumerate(descriptions, start=1):
            self.dst.set_band_description(index, description)
        self.tags = dict(tags or {})

    def write(self, y0: int, pixels: np.ndarray, x0: int = 0) -> None:
        """The block at row ``y0``, column ``x0`` of every band: ``(rows, columns)`` or
        ``(count, rows, columns)``."""
        from rasterio.windows import Window

        pixels = pixels if pixels.ndim == 3 else pixels[None]
        window = Window(x0, y0, pixels.shape[2], pixels.shape[1])
        with _bounded_cache():  # the blocks written before go to the file, not stay
            self.dst.write(pixels, list(range(1, len(pixels) + 1)), window=window)

    def update_tags(self, tags: dict[str, str]) -> None:
        """Add metadata known only at the end (the region's score, the run's summary)."""
        self.tags.update(tags)

    def close(self) -> Path:
        """Build the overviews, write the COG at ``path``, remove the temporary file."""
        try:
            with _bounded_cache():
                self._close_into_cog()
        except BaseException:
            self.abandon()
            raise
        self.tiles.unlink()
        return self.path

    def _close_into_cog(self) -> None:
        """:meth:`close`'s work, in GDAL's environment."""
        import rasterio.shutil
        from rasterio.enums import Resampling

        self.dst.update_tags(**self.tags)
        factors = overview_factors(self.grid.height, self.grid.width)
        if factors:
            self.dst.build_overviews(factors, Resampling[self.resampling])
        self.dst.close()
        rasterio.shutil.copy(
            self.tiles,
            self.path,
            driver="COG",
            BLOCKSIZE=TILE,
            COMPRESS="DEFLATE",
            PREDICTOR="FLOATING_POINT" if self.floating else "STANDARD",
            OVERVIEWS="FORCE_USE_EXISTING",  # those built above, from the full resolution
            BIGTIFF="IF_SAFER",
        )

    def abandon(self) -> None:
        """Remove what was written."""
        if not self.dst.closed:
            self.dst.close()
        self.tiles.unlink(missing_ok=True)
        self.path.unlink(missing_ok=True)


def _bounded_cache() -> Any:
    """GDAL's environment with its block cache bounded to :data:`CACHE_MB`."""
    import rasterio

    return rasterio.Env(GDAL_CACHEMAX=CACHE_MB)


# -- QGIS styles ---------------------------------------------------------------------------

# Probability 0..1: transparent at 0, then yellow to dark red (ColorBrewer YlOrRd), which
# reads on satellite imagery and basemaps alike.
_RAMP = [
    (0.0, "#ffffcc", 0),
    (0.1, "#ffeda0", 140),
    (0.3, "#fed976", 200),
    (0.5, "#fd8d3c", 230),
    (0.7, "#e31a1c", 255),
    (0.9, "#b10026", 255),
    (1.0, "#800026", 255),
]
_MASK = [(1, "#e31a1c", 255, "landslide"), (0, "#000000", 0, "no landslide")]

_QML = """<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>
<qgis version="3.28" styleCategories="Symbology">
  <pipe>
{renderer}
  </pipe>
  <blendMode>0</blendMode>
</qgis>
"""


def _probability_renderer() -> str:
    items = "\n".join(
        f'            <item value="{v}" label="{v:g}" color="{c}" alpha="{a}"/>'
        for v, c, a in _RAMP
    )
    return (
        '    <rasterrenderer type="singlebandpseudocolor" band="1" opacity="1" alphaBand="-1"'
        ' classificationMin="0" classificationMax="1" nodataColor="">\n'
        "      <rasterTransparency/>\n"
        "      <rastershader>\n"
        '        <colorrampshader colorRampType="INTERPOLATED" classificationMode="1"'
        ' clip="0" minimumValue="0" maximumValue="1">\n'
        f"{items}\n"
        "        </colorrampshader>\n"
        "      </rastershader>\n"
        "    </rasterrenderer>"
    )


def _mask_renderer() -> str:
    entries = "\n".join(
        f'        <paletteEntry value="{v}" color="{c}" alpha="{a}" label="{label}"/>'
        for v, c, a, label in _MASK
    )
    return (
        '    <rasterrenderer type="paletted" band="1" opacity="1" alphaBand="-1"'
        ' nodataColor="">\n'
        "      <rasterTransparency/>\n"
        "      <colorPalette>\n"
        f"{entries}\n"
        "      </colorPalette>\n"
        "    </rasterrenderer>"
    )


def write_style(raster: Path, kind: Literal["probability", "mask"]) -> Path:
    """Write ``raster``'s QGIS style (``.qml``, same base name) for its ``kind``; the path.

    ``probability``: a ramp over 0..1, transparent at 0; ``mask``: 1 red, 0 transparent
    (255, no data, is the raster's nodata and transparent in QGIS anyway).
    """
    renderer = _probability_renderer() if kind == "probability" else _mask_renderer()
    return write_text_atomically(Path(raster).with_suffix(".qml"), _QML.format(renderer=renderer))
