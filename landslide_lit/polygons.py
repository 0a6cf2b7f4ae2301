"""Landslide polygons from a thresholded map, built block by block.

A landslide is a 4-connected area of landslide pixels (pixels that share an edge; two
pixels touching at a corner only are two landslides). Four-connectivity is GDAL's and
``rasterio.features.shapes``' default, and it makes every landslide one valid polygon
(possibly with holes); the same connectivity labels the pixels and traces the outlines.

:class:`Polygonizer` takes the map's blocks in order: bands of rows from the top, each
band's blocks of columns from the left. It labels each block's components, traces their
outlines in pixel coordinates (exact integers, so pieces of one landslide in two blocks
share their seam edges exactly), and joins the components that touch across the seams
with the components still open from the blocks above and to the left (a union-find over
the frontier: each column's lowest row seen and the last block's last column, so a
U-shape whose arms join further down is one landslide). A component that does not reach
the frontier cannot grow: it is finished at once, its pieces merged into one polygon and
mapped to map coordinates. Memory holds one block, the frontier and the open components;
blocks are labelled :data:`PART_PIXELS` pixels at a time, however large the map.

Areas: ``area_m2`` is the number of pixels times the pixel area for a projected CRS (exact
in the CRS's plane, whatever its linear unit), and the geodesic area of the pixel outline
on the CRS's ellipsoid for a geographic CRS (lon/lat). Both are computed before any
simplification, which changes outlines only: areas stay those of the pixels.

:class:`LandslideLayer` writes the polygons to a GeoPackage layer ``landslides`` in the
map's CRS (in batches, under a hidden name renamed when complete), and on request a copy
as GeoJSON, which RFC 7946 requires in WGS 84 longitude/latitude (EPSG:4326): that copy
is reprojected.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage, sparse
from scipy.sparse.csgraph import connected_components

from landslide_lit.errors import ConfigError
from landslide_lit.rasters import Grid, partial_path, publish, require

__all__ = ["CONNECTIVITY", "LAYER", "PART_PIXELS", "Landslide", "LandslideLayer", "Polygonizer"]

CONNECTIVITY = 4
"""Pixels of one landslide share an edge (see the module)."""
LAYER = "landslides"
"""The GeoPackage layer of the polygons."""
PART_PIXELS = 1 << 18
"""Most pixels the polygonizer labels at once (about 20 bytes of temporaries each)."""
_STRUCTURE = ndimage.generate_binary_structure(2, 1)  # 4-connectivity
_PURPOSE = "landslide polygons"


@dataclass(frozen=True)
class Landslide:
    """One landslide: its outline in map coordinates and what its pixels say."""

    geometry: Any  # shapely Polygon
    pixels: int
    area_m2: float
    p_mean: float
    p_max: float


class _Components:
    """Components of landslide pixels: pixel counts, probability sums and maxima, pieces."""

    def __init__(self, pixels=(), p_sum=(), p_max=(), pieces=()) -> None:
        self.pixels = np.asarray(pixels, np.int64)
        self.p_sum = np.asarray(p_sum, np.float64)
        self.p_max = np.asarray(p_max, np.float64)
        self.pieces: list[list[Any]] = list(pieces)

    def __len__(self) -> int:
        return len(self.pixels)

    def take(self, index: np.ndarray) -> _Components:
        return _Components(
            self.pixels[index],
            self.p_sum[index],
            self.p_max[index],
            [self.pieces[i] for i in index],
        )

    @staticmethod
    def join(parts: list[_Components], groups: np.ndarray, count: int) -> _Components:
        """The ``count`` components that the concatenated ``parts`` form by ``groups``."""
        pixels = np.concatenate([p.pixels for p in parts])
        p_sum = np.concatenate([p.p_sum for p in parts])
        p_max = np.concatenate([p.p_max for p in parts])
        pieces: list[list[Any]] = [[] for _ in range(count)]
        for group, found in zip(groups, (x for p in parts for x in p.pieces), strict=True):
            pieces[group].extend(found)
        out_max = np.full(count, -np.inf)
        np.maximum.at(out_max, groups, p_max)
        return _Components(
            np.bincount(groups, pixels, count).astype(np.int64),
            np.bincount(groups, p_sum, count),
            out_max,
            pieces,
        )


class Polygonizer:
    """Landslide polygons of a map whose blocks arrive in order (see the module).

    Blocks come band by band of rows from the top, each band's blocks from the left;
    a band may be one block as wide as the map.

    Args:
        grid: the map's pixel grid and CRS (a CRS is required: areas need one).
        min_area_m2: landslides smaller than this are dropped.
        simplify: tolerance of a topology-preserving simplification of each outline, in
            map units (0: the exact pixel outlines).
    """

    def __init__(self, grid: Grid, min_area_m2: float = 0.0, simplify: float = 0.0) -> None:
        self.shapely = require("shapely", _PURPOSE)
        require("rasterio", _PURPOSE)
        if min_area_m2 < 0 or simplify < 0:
            raise ConfigError(
                f"the minimum area ({min_area_m2}) and the simplification tolerance "
                f"({simplify}) cannot be negative"
            )
        self.grid, self.min_area_m2, self.simplify = grid, min_area_m2, simplify
        self.pixel_area, self.geod = _pixel_area(grid)
        t = grid.transform
        self.to_map = [t.a, t.b, t.d, t.e, t.c, t.f]  # shapely's affine_transform order
        self.open = _Components()
        # the frontier later blocks can reach, as open components (-1: none): each column's
        # lowest row seen, and the last block's last column (its band's rows)
        self.bottom = np.full(grid.width, -1, np.int64)
        self.right = np.full(0, -1, np.int64)
        self.band = (0, 0)  # rows of the current band
        self.next_column = 0  # where the band's next block starts (0: a new band)

    def add(
        self, y0: int, landslide: np.ndarray, probability: np.ndarray, x0: int = 0
    ) -> list[Landslide]:
        """The block at row ``y0``, column ``x0``: landslide pixels and probabilities; the
        finished landslides.

        Labelled and traced :data:`PART_PIXELS` pixels at a time (blocks of whole columns):
        the temporaries (labels, GDAL's copies, outlines) stay as large whatever the
        map's size, and the landslides are the same whatever the blocks (only their order
        changes).
        """
        rows, columns = landslide.shape
        top, bottom = self.band
        if self.next_column:  # the band's next block: the same rows
            expected, fits = (
                f"row {top}, column {self.next_column}, {bottom - top} rows",
                ((y0, x0, rows) == (top, self.next_column, bottom - top)),
            )
        else:
            expected, fits = f"row {bottom}, column 0", (y0, x0) == (bottom, 0)
        if not fits or rows < 1 or not 0 < columns <= self.grid.width - x0:
            raise ValueError(
                "blocks must come in order, band by band from the top and each band's "
                f"blocks from the left, within the map's {self.grid.width} columns: expected "
                f"{expected}; got row {y0}, column {x0}, {rows} x {columns}"
            )
        self.band = (y0, y0 + rows)
        step = max(1, PART_PIXELS // rows)
        found = []
        for left in range(0, columns, step):
            part = np.s_[:, left : left + step]
            found += self._add_block(y0, x0 + left, landslide[part], probability[part])
        return found

    def _add_block(
        self, y0: int, x0: int, landslide: np.ndarray, probability: np.ndarray
    ) -> list[Landslide]:
        """:meth:`add` for a block of at most :data:`PART_PIXELS` pixels (or one column)."""
        x1 = x0 + landslide.shape[1]
        last = x1 == self.grid.width  # the band's last block: nothing to its right
        self.next_column = 0 if last else x1
        labels, count = ndimage.label(landslide, _STRUCTURE)
        k = len(self.open)
        if k + count == 0:  # nothing open, nothing here: the frontier stays empty
            self.right = np.full(0 if last else len(landslide), -1, np.int64)
            return []
        block = self._components(y0, x0, labels, count, probability)
        # nodes: the open components (0..k-1), then this block's (k..k+count-1)
        nodes = np.concatenate([[-1], np.arange(k, k + count)])  # by label (0: none)
        above, beside = self.bottom[x0:x1], self.right if x0 else np.full(0, -1)
        edges = [
            (old[(old >= 0) & (new > 0)], nodes[new[(old >= 0) & (new > 0)]])
            for old, new in ((above, labels[0]), (beside, labels[: len(beside), 0]))
        ]
        sources, targets = (np.concatenate(e) for e in zip(*edges, strict=True))
        graph = sparse.coo_matrix(
            (np.ones(len(sources)), (sources, targets)), shape=(k + count, k + count)
        )
        groups_count, groups = connected_components(graph, directed=False)
        joined = _Components.join([self.open, block], groups, groups_count)
        # the new frontier: this block's last row and column, and the rest of the old one
        # (-1, no component, indexes the last group; np.where puts -1 back in its place)
        frontier = np.where(self.bottom >= 0, groups[self.bottom], -1)
        frontier[x0:x1] = np.where(labels[-1] > 0, groups[nodes[labels[-1]]], -1)
        right = np.full(0, -1, np.int64)
        if not last:
            right = np.where(labels[:, -1] > 0, groups[nodes[labels[:, -1]]], -1)
        growing = np.zeros(groups_count, bool)
        for ids in (frontier, right):
            growing[ids[ids >= 0]] = True
        renumber = np.cumsum(growing) - 1
        self.bottom = np.where(frontier >= 0, renumber[frontier], -1)
        self.right = np.where(right >= 0, renumber[right], -1)
        self.open = joined.take(np.flatnonzero(growing))
        return self._finish(joined.take(np.flatnonzero(~growing)))

    def finish(self) -> list[Landslide]:
        """The landslides still open after the last block."""
        if self.next_column or self.band[1] != self.grid.height:
            raise ValueError(
                f"the map has {self.grid.height} rows of {self.grid.width} columns; the "
                f"blocks stopped at row {self.band[1]}, column {self.next_column or 'end'}"
            )
        finished, self.open = self.open, _Components()
        return self._finish(finished)

    def _components(
        self, y0: int, x0: int, labels: np.ndarray, count: int, probability: np.ndarray
    ) -> _Components:
        """This block's components, their outlines in pixel coordinates (x: column, y: row)."""
        from affine import Affine
        from rasterio.features import shapes

        flat, values = labels.ravel(), probability.ravel()
        pieces: list[list[Any]] = [[] for _ in range(count)]
        if count:
            outlines = shapes(
                labels.astype(np.int32, copy=False),  # ndimage's own: no copy
                mask=labels > 0,
                connectivity=CONNECTIVITY,
                transform=Affine.translation(x0, y0),
            )
            for outline, label in outlines:
                shell, *holes = (np.asarray(ring) for ring in outline["coordinates"])
                pieces[int(label) - 1].append(self.shapely.Polygon(shell, holes))
        p_max = np.full(count + 1, -np.inf)
        inside = flat > 0
        np.maximum.at(p_max, flat[inside], values[inside])
        return _Components(
            np.bincount(flat, minlength=count + 1)[1:],
            np.bincount(flat, values, minlength=count + 1)[1:],
            p_max[1:],
            pieces,
        )

    def _finish(self, done: _Components) -> list[Landslide]:
        shapely = self.shapely
        found = []
        for i in range(len(done)):
            pieces = done.pieces[i]
            outline = pieces[0]
            if len(pieces) > 1:  # the seams' vertices, now in straight edges, go
                outline = shapely.simplify(shapely.union_all(pieces), 0)
            # one vertex order, whatever the bands: the same landslide, the same polygon
            outline = shapely.normalize(shapely.affinity.affine_transform(outline, self.to_map))
            pixels = int(done.pixels[i])
            if self.geod is None:
                area = pixels * self.pixel_area
            else:
                area = abs(self.geod.geometry_area_perimeter(outline)[0])
            if area < self.min_area_m2:
                continue
            if self.simplify:
                outline = shapely.simplify(outline, self.simplify, preserve_topology=True)
            p_mean = float(done.p_sum[i] / pixels)
            found.append(Landslide(outline, pixels, area, p_mean, float(done.p_max[i])))
        return found


def _pixel_area(grid: Grid) -> tuple[float, Any]:
    """The area of one pixel in m² for a projected CRS, or the ellipsoid of a geographic one."""
    if grid.crs is None:
        raise ConfigError(
            "the map has no CRS, so its landslides have no areas or place: polygons need a "
            "map whose cube carries its CRS (a grid-mapping variable or a crs attribute)"
        )
    pyproj = require("pyproj", _PURPOSE)
    crs = pyproj.CRS.from_user_input(grid.crs)
    if crs.is_geographic:
        return float("nan"), crs.get_geod()
    if not crs.is_projected:
        raise ConfigError(
            f"the map's CRS ({crs.name}) is neither projected nor geographic: landslide "
            "areas need one of the two"
        )
    unit = crs.axis_info[0].unit_conversion_factor  # metres per CRS unit
    t = grid.transform
    return abs(t.a * t.e - t.b * t.d) * unit**2, None


class LandslideLayer:
    """The GeoPackage layer ``landslides`` (and its GeoJSON copy), written in batches.

    Every feature carries ``area_m2``, ``pixels``, ``p_mean``, ``p_max`` and the run's
    ``attributes`` (the same for all: threshold, checkpoint, dates...). Without any
    landslide the layer is still written, empty, with its schema.
    """

    BATCH = 4096
    """Landslides held before they are appended to the GeoPackage."""

    def __init__(
        self,
        path: Path,
        crs: str,
        attributes: dict[str, str | int | float],
        geojson: Path | None = None,
    ) -> None:
        self.pyogrio = require("pyogrio", _PURPOSE)
        self.geopandas = require("geopandas", _PURPOSE)
        self.path, self.crs, self.attributes, self.geojson = Path(path), crs, attributes, geojson
        self.partial = partial_path(self.path)
        self.partial_json = partial_path(geojson) if geojson is not None else None
        self.held: list[Landslide] = []
        self.written = 0

    def add(self, landslides: Iterable[Landslide]) -> None:
        self.held.extend(landslides)
        if len(self.held) >= self.BATCH:
            self._flush()

    def _flush(self) -> None:
        frame = self._frame(self.held)
        self.pyogrio.write_dataframe(
            frame, self.partial, layer=LAYER, geometry_type="Polygon", append=self.written > 0
        )
        self.written += len(self.held)
        self.held = []

    def _frame(self, landslides: list[Landslide]):
        n = len(landslides)
        columns: dict[str, Any] = {
            "area_m2": np.array([s.area_m2 for s in landslides], np.float64),
            "pixels": np.array([s.pixels for s in landslides], np.int64),
            "p_mean": np.array([s.p_mean for s in landslides], np.float64),
            "p_max": np.array([s.p_max for s in landslides], np.float64),
        }
        for name, value in self.attributes.items():
            columns[name] = np.full(n, value, dtype=object if isinstance(value, str) else None)
        geometry = self.geopandas.GeoSeries([s.geometry for s in landslides], crs=self.crs)
        return self.geopandas.GeoDataFrame(columns, geometry=geometry)

    def close(self) -> list[Path]:
        """:meth:`finish` and :meth:`publish`; the files."""
        self.finish()
        return self.publish()

    def finish(self) -> None:
        """Write what is held (an empty layer if nothing ever came) and the GeoJSON copy,
        still under their hidden names."""
        if self.held or not self.written:
            self._flush()
        if self.geojson is not None:
            frame = self.pyogrio.read_dataframe(self.partial, layer=LAYER).to_crs("EPSG:4326")
            self.pyogrio.write_dataframe(
                frame,
                self.partial_json,
                driver="GeoJSON",
                geometry_type="Polygon",
                layer_options={"RFC7946": "YES"},
            )

    def publish(self) -> list[Path]:
        """Rename the finished files into place; the files (GeoPackage, then GeoJSON)."""
        files = [publish(self.partial, self.path)]
        if self.geojson is not None:
            files.append(publish(self.partial_json, self.geojson))
        return files

    def abandon(self) -> None:
        for path in (self.partial, self.partial_json):
            if path is not None:
                path.unlink(missing_ok=True)
