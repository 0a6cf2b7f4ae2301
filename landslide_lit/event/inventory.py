"""A landslide inventory (polygons in any CRS) brought onto a cube's grid."""

from __future__ import annotations

import logging
from pathlib import Path

from landslide_lit.event.build import Inventory
from landslide_lit.event.grid import Grid
from landslide_lit.event.scenes import EventInputError

__all__ = ["read_inventory"]

log = logging.getLogger(__name__)


def read_inventory(path: Path, grid: Grid) -> Inventory:
    """The polygons of ``path`` (GeoPackage, GeoJSON, Shapefile...) in ``grid``'s CRS.

    One error for a file that cannot be read, has no CRS, holds no polygons or none of
    whose polygons reaches the grid; polygons outside the grid are counted in the log.
    """
    import geopandas as gpd
    from shapely.geometry import box

    where = f"--inventory {path}"
    try:
        frame = gpd.read_file(path)
    except Exception as error:  # pyogrio raises several types for unreadable files
        raise EventInputError(
            f"{where} cannot be read as a vector file: {error}. Give a GeoPackage, GeoJSON "
            "or Shapefile of landslide polygons"
        ) from None
    frame = frame[frame.geometry.notna() & ~frame.geometry.is_empty]
    if frame.empty:
        raise EventInputError(f"{where} holds no geometries")
    if frame.crs is None:
        raise EventInputError(
            f"{where} has no CRS, so it cannot be placed on the grid; set one (e.g. "
            "`ogr2ogr -a_srs EPSG:4326 fixed.gpkg FILE`)"
        )
    kinds = set(frame.geometry.geom_type)
    if not kinds <= {"Polygon", "MultiPolygon"}:
        raise EventInputError(
            f"{where} holds {', '.join(sorted(kinds))}; the inventory must be landslide "
            "polygons (points or lines have no area to rasterise)"
        )
    geometries = frame.geometry.make_valid().to_crs(grid.crs)
    inside = geometries.intersects(box(*grid.bounds))
    if not inside.any():
        raise EventInputError(
            f"{where}: none of its {len(frame)} polygons lies on the cube's grid "
            f"({grid.crs.to_string()}, bounds {tuple(round(v) for v in grid.bounds)}); check "
            "the file's CRS and the area (--bbox/--aoi)"
        )
    if not inside.all():
        log.warning(
            "%s: %d of %d polygons lie outside the grid", where, (~inside).sum(), len(frame)
        )
    return Inventory(tuple(geometries[inside]), f"{path} ({int(inside.sum())} polygons)")
