"""`landslide-lit cube`: a new event's datacube from Sentinel-1 RTC GeoTIFFs or STAC."""

from __future__ import annotations

import argparse
import datetime as dt
import shlex
from pathlib import Path

from landslide_lit.errors import ConfigError

__all__ = ["main"]

_INSTALL = "pip install 'landslide-lit[event]'"


class _ArgumentParser(argparse.ArgumentParser):
    """argparse whose usage errors are ConfigErrors: one ``error:`` line from main()."""

    def error(self, message: str):
        raise ConfigError(f"{self.prog}: {message} (`{self.prog} --help` lists the options)")


def _parser() -> argparse.ArgumentParser:
    parser = _ArgumentParser(
        prog="landslide-lit cube",
        description="Build a datacube in the published schema (OUT.zarr) and its region "
        "file (OUT.yaml) for a new event, from Sentinel-1 RTC GeoTIFFs or a STAC catalog.",
    )
    parser.add_argument("out", metavar="OUT.zarr", help="the cube to write")
    parser.add_argument(
        "--event-start",
        required=True,
        metavar="YYYY-MM-DD",
        help="last day whose acquisitions count as before the event",
    )
    parser.add_argument(
        "--event-end",
        required=True,
        metavar="YYYY-MM-DD",
        help="first day whose acquisitions count as after the event",
    )
    sar = parser.add_argument_group("SAR from GeoTIFFs (ASF HyP3 RTC, OPERA RTC-S1)")
    sar.add_argument(
        "--sar",
        nargs="+",
        default=[],
        metavar="GLOB",
        help="GeoTIFFs, one per polarisation or multi-band ('rtc/*.tif', quoted)",
    )
    sar.add_argument(
        "--manifest",
        metavar="FILE.csv",
        help="per-file path, time, polarisation, orbit_state, relative_orbit, scale (and platform)",
    )
    sar.add_argument(
        "--orbit-state", choices=("ascending", "descending"), help="orbit direction of every file"
    )
    sar.add_argument(
        "--scale",
        choices=("power", "amplitude", "db"),
        help="value scale of every file (or STAC item)",
    )
    stac = parser.add_argument_group("SAR from STAC")
    stac.add_argument(
        "--stac",
        metavar="URL|catalog.json|items.json",
        help="a STAC API, a static catalog or an ItemCollection",
    )
    stac.add_argument("--collection", help="the STAC collection (e.g. sentinel-1-rtc)")
    stac.add_argument(
        "--dem-stac",
        metavar="COLLECTION",
        help="elevation from this collection of --stac instead of --dem (e.g. cop-dem-glo-30)",
    )
    area = parser.add_argument_group("grid")
    area.add_argument(
        "--bbox",
        nargs=4,
        type=float,
        metavar=("W", "S", "E", "N"),
        help="area in degrees (default: where all GeoTIFFs overlap)",
    )
    area.add_argument("--aoi", metavar="FILE.geojson", help="area: the bounds of a vector file")
    area.add_argument("--crs", help="projected CRS of the cube (default: the area's UTM zone)")
    area.add_argument("--resolution", type=float, default=10.0, help="pixel size, metres")
    parser.add_argument(
        "--before-days",
        type=int,
        default=None,
        help="days before --event-start to look for acquisitions (90)",
    )
    parser.add_argument(
        "--after-days",
        type=int,
        default=None,
        help="days after --event-end to look for acquisitions (30)",
    )
    parser.add_argument("--dem", metavar="DEM.tif", help="elevation (m) covering the area")
    parser.add_argument(
        "--inventory",
        metavar="FILE",
        help="landslide polygons (GeoPackage, GeoJSON, Shapefile; any CRS)",
    )
    parser.add_argument("--name", help="the region's name (default: OUT's name)")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT and OUT.yaml")
    return parser


def main(args: list[str]) -> None:
    """Run `landslide-lit cube` with ``args`` (the options after the command)."""
    options = _parser().parse_args(args)
    try:
        from landslide_lit.event import build
    except ImportError as error:
        raise ConfigError(
            f"landslide-lit cube needs the event extra ({error.name} is missing): {_INSTALL}"
        ) from None
    start, end = _day(options.event_start, "--event-start"), _day(options.event_end, "--event-end")
    if end < start:
        raise ConfigError(
            f"--event-end {end} is before --event-start {start}: --event-start is the last "
            "day before the event, --event-end the first day after it"
        )
    for option in ("before_days", "after_days"):
        value = getattr(options, option)
        if value is not None and value < 0:
            raise ConfigError(f"--{option.replace('_', '-')} {value}: give 0 or more days")
    if options.bbox and options.aoi:
        raise ConfigError("--bbox and --aoi both given: give one area")
    if not options.stac and (options.collection or options.dem_stac):
        raise ConfigError("--collection and --dem-stac name collections of --stac: give --stac")
    before_days = build.DEFAULT_BEFORE_DAYS if options.before_days is None else options.before_days
    after_days = build.DEFAULT_AFTER_DAYS if options.after_days is None else options.after_days
    if options.stac:
        first = start - dt.timedelta(days=before_days)
        last = end + dt.timedelta(days=after_days)
        scenes, grid = _stac_route(options, first, last)
    elif options.sar or options.manifest:
        scenes = build.select_scenes(_geotiff_scenes(options), start, end, before_days, after_days)
        grid = _grid(options, scenes)
    else:
        raise ConfigError(
            "landslide-lit cube: no SAR given; use --sar 'rtc/*.tif' (and/or --manifest "
            "FILE.csv), or --stac URL --collection C --bbox W S E N"
        )
    dem = inventory = None
    if options.dem:
        from landslide_lit.event.geotiff import RasterBand, RasterSource

        dem = RasterSource([RasterBand(_existing(options.dem, "--dem"), 1, None)])
    elif options.dem_stac:
        from landslide_lit.event.stac import stac_dem

        dem = stac_dem(options.stac, options.dem_stac, grid)
    if options.inventory:
        from landslide_lit.event.inventory import read_inventory

        inventory = read_inventory(_existing(options.inventory, "--inventory"), grid)
    path = build.build_cube(
        scenes,
        grid,
        options.out,
        event_start=start,
        event_end=end,
        before_days=before_days,
        after_days=after_days,
        dem=dem,
        inventory=inventory,
        name=options.name,
        overwrite=options.overwrite,
        attrs={"command": shlex.join(["landslide-lit", "cube", *args])},
    )
    print(path)
    print(path.with_suffix(".yaml"))


def _day(text: str, option: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"{option} {text!r}: give a day as YYYY-MM-DD") from None


def _existing(text: str, option: str) -> Path:
    path = Path(text).expanduser()
    if not path.is_file():
        raise ConfigError(f"{option} {text}: no such file")
    return path


def _stac_route(options: argparse.Namespace, first: dt.date, last: dt.date):
    """Scenes (from day ``first`` to ``last``) and grid from STAC over --bbox/--aoi."""
    try:
        from landslide_lit.event import stac
    except ModuleNotFoundError:
        raise ConfigError(f"--stac needs the event extra: {_INSTALL}") from None
    geotiff = [o for o in ("sar", "manifest", "orbit_state") if getattr(options, o)]
    if geotiff:
        raise ConfigError(
            f"--stac with --{geotiff[0].replace('_', '-')}: give the SAR either as GeoTIFFs "
            "or from STAC (the items say their orbits)"
        )
    if options.dem and options.dem_stac:
        raise ConfigError("--dem and --dem-stac both given: give one DEM")
    if not (options.bbox or options.aoi):
        raise ConfigError("--stac needs the area: --bbox W S E N or --aoi FILE.geojson")
    grid = _grid(options, [])
    scenes = stac.stac_scenes(
        options.stac,
        grid,
        first=first,
        last=last,
        collection=options.collection,
        scale=options.scale,
    )
    return scenes, grid


def _geotiff_scenes(options: argparse.Namespace):
    """Scenes from the GeoTIFFs (and the manifest)."""
    from landslide_lit.event import geotiff

    manifest = {}
    if options.manifest:
        manifest = geotiff.read_manifest(_existing(options.manifest, "--manifest"))
    paths = geotiff.find_files(options.sar, manifest)
    files = geotiff.describe_files(paths, manifest, options.orbit_state, options.scale)
    return geotiff.scenes_from_files(files)


def _grid(options: argparse.Namespace, scenes):
    """The target grid: over --bbox/--aoi, else over the area every scene covers."""
    from pyproj import CRS

    from landslide_lit.event.grid import Grid, utm_crs

    crs = _crs(options.crs) if options.crs else None
    if options.bbox or options.aoi:
        bbox = tuple(options.bbox) if options.bbox else _aoi_bounds(options.aoi)
        return Grid.from_lonlat(bbox, options.resolution, crs)
    footprints = _footprints(scenes)  # each file opened once for both extents
    crs = crs or utm_crs(_common_extent(footprints, CRS.from_epsg(4326)))
    return Grid.from_bounds(_common_extent(footprints, crs), crs, options.resolution)


def _crs(text: str):
    from pyproj import CRS
    from pyproj.exceptions import CRSError

    try:
        crs = CRS.from_user_input(text)
    except CRSError:
        raise ConfigError(f"--crs {text!r}: not a CRS; give e.g. EPSG:32654") from None
    if not crs.is_projected or crs.axis_info[0].unit_name not in ("metre", "meter"):
        raise ConfigError(
            f"--crs {text}: a projected CRS in metres is needed (terrain slopes and "
            "--resolution are in metres); the default is the area's UTM zone"
        )
    return crs


def _aoi_bounds(path: str) -> tuple[float, float, float, float]:
    import geopandas as gpd

    try:
        frame = gpd.read_file(_existing(path, "--aoi"))
    except ConfigError:
        raise
    except Exception as error:
        raise ConfigError(f"--aoi {path} cannot be read as a vector file: {error}") from None
    if frame.crs is None or frame.empty:
        raise ConfigError(f"--aoi {path}: it needs geometries and a CRS")
    return tuple(frame.to_crs(4326).total_bounds)


def _footprints(scenes) -> list[tuple[object, list]]:
    """Each scene with the CRS and bounds of each of its files."""
    from landslide_lit.event.geotiff import file_footprint

    return [
        (scene, [file_footprint(b.path) for source in scene.bands.values() for b in source.bands])
        for scene in scenes
    ]


def _common_extent(footprints, crs) -> tuple[float, float, float, float]:
    """Where every scene has data (as boxes in ``crs``); one error if that is empty."""
    from rasterio.warp import transform_bounds

    from landslide_lit.event.scenes import EventInputError

    boxes = []
    for scene, files in footprints:
        extents = [transform_bounds(c, crs, *b, densify_pts=21) for c, b in files]
        boxes.append((scene, _union(extents)))
    west = max(b[0] for _, b in boxes)
    south = max(b[1] for _, b in boxes)
    east = min(b[2] for _, b in boxes)
    north = min(b[3] for _, b in boxes)
    if west >= east or south >= north:
        listed = "; ".join(
            f"{s.name}: lon {b[0]:.3f}..{b[2]:.3f}, lat {b[1]:.3f}..{b[3]:.3f}" for s, b in boxes
        )
        raise EventInputError(
            f"the acquisitions do not overlap each other ({listed}); give the area with "
            "--bbox W S E N or --aoi, and leave out files that do not cover it"
        )
    return west, south, east, north


def _union(extents):
    return (
        min(e[0] for e in extents),
        min(e[1] for e in extents),
        max(e[2] for e in extents),
        max(e[3] for e in extents),
    )
