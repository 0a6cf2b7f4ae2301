"""Sentinel-1 RTC scenes from STAC: an API search, a static catalog, an ItemCollection or an item.

``--stac URL`` searches a STAC API with pystac-client (``--collection``, the area's lon/lat
box and the days from ``--before-days`` before the event to ``--after-days`` after it); a
local ``catalog.json`` (or collection), ``items.json`` (an ItemCollection) or single item
is read with pystac and filtered the same way here. Each item gives:

- time: ``datetime`` (else ``start_datetime``); platform: ``platform`` (else
  ``constellation``); ``sat:orbit_state`` ('ascending'/'descending' -> 'a'/'d') and
  ``sat:relative_orbit``;
- bands: the assets named ``vv`` and ``vh`` (any case);
- scale: linear power (Planetary Computer's ``sentinel-1-rtc`` holds gamma0 in linear
  power), unless the assets' ``raster:bands`` ``unit`` says decibels (``dB``) or the caller
  declares a scale for all items. An asset whose ``raster:bands`` declare a ``scale`` or
  ``offset`` other than 1 and 0 is an error: its stored values are not what they mean.

Items of one pass (same platform, pass direction and relative orbit, starting within
:data:`SLICE_GAP` of each other: consecutive slices of one datatake) are one acquisition,
mosaicked, so that an area on a slice boundary is not counted as two acquisitions.

Bands are read as the GeoTIFF route reads files (:class:`StacSource`): odc-stac fetches the
pixels around the target grid on the items' own pixel grid (from the file's own
georeferencing: an item's ``proj:`` fields, stale in some Planetary Computer items, are
never used), the values become linear power, and GDAL resamples them onto the grid
(bilinear; averaging when the grid is coarser by more than 1.5x). NaN where there is no
data: outside the footprint, and at the files' own nodata value; a ``raster:bands`` nodata a
file lacks is set to NaN too. Asset URLs on Planetary Computer are signed with
``planetary_computer.sign`` when the ``planetary-computer`` package is installed (never
required; without it they are read as they are, which Planetary Computer refuses).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np

from landslide_lit.event.grid import Grid
from landslide_lit.event.scenes import POLARISATIONS, EventInputError, Scale, Scene, to_power

__all__ = ["SLICE_GAP", "StacSource", "stac_dem", "stac_scenes"]

log = logging.getLogger(__name__)

SLICE_GAP = dt.timedelta(seconds=60)
"""Items of one platform, pass direction and relative orbit starting within this of each
other are slices of one datatake (Sentinel-1 IW slices start ~25 s apart; passes of one
relative orbit are days apart): one acquisition."""
_ORBIT_STATES = {"ascending": "a", "descending": "d"}
_DB_UNITS = {"db", "decibel", "decibels"}
_LISTED = 20  # items listed in an error message, at most
_EXTRA = "pip install 'landslide-lit[event]'"


def stac_scenes(
    stac: str,
    grid: Grid,
    *,
    first: dt.date,
    last: dt.date,
    collection: str | None = None,
    scale: Scale | None = None,
) -> list[Scene]:
    """The acquisitions of ``stac`` over ``grid`` from day ``first`` to day ``last``.

    ``stac``: an http(s) URL of a STAC API (searched; ``collection`` required) or of a
    static catalog, or a local catalog, collection, ItemCollection or item JSON file.
    ``scale``: declared for every item instead of what the items say (default power).
    One :class:`EventInputError` when nothing matches (listing what exists), for items
    without a VV or VH asset, and for a source that cannot be reached or read.
    """
    items = _find_items(stac, collection, grid.lonlat_bounds(), (first, last), "--collection")
    _check_bands(items)
    _warn_unsigned([a.href for i in items for a in i.assets.values()])
    passes = _group_passes([_Parsed.of(item, scale) for item in items])
    return [_scene(group) for group in passes]


def stac_dem(stac: str, collection: str, grid: Grid) -> StacSource:
    """Elevation over ``grid`` from the items of ``collection`` in ``stac`` (e.g.
    Planetary Computer's ``cop-dem-glo-30``), mosaicked; their asset ``data`` (else their
    one asset with role ``data``) holds metres."""
    items = _find_items(stac, collection, grid.lonlat_bounds(), None, "--dem-stac")
    keys = set()
    for item in items:
        data = [k for k, a in item.assets.items() if k == "data" or "data" in (a.roles or [])]
        if len(data) != 1:
            raise EventInputError(
                f"--dem-stac {collection}: item {item.id} has no single elevation asset (an "
                f"asset 'data', or one with role data); its assets: {', '.join(item.assets)}"
            )
        keys.add(data[0].lower())
    if len(keys) > 1:
        raise EventInputError(
            f"--dem-stac {collection}: the items name their elevation asset differently "
            f"({', '.join(sorted(keys))}); use a collection whose tiles are alike"
        )
    _warn_unsigned([a.href for i in items for a in i.assets.values()])
    return StacSource(tuple(items), keys.pop())


def _check_bands(items: Sequence[Any]) -> None:
    """One error listing the items without a VV or a VH asset (any case)."""
    lacking = [
        f"{item.id} ({_time(item):%Y-%m-%d}; assets: {', '.join(item.assets) or 'none'})"
        for item in items
        if not set(POLARISATIONS) <= {key.lower() for key in item.assets}
    ]
    if lacking:
        more = f" and {len(lacking) - _LISTED} more" if len(lacking) > _LISTED else ""
        raise EventInputError(
            f"{len(lacking)} STAC item(s) lack a VV or VH asset: "
            f"{', '.join(lacking[:_LISTED])}{more}. Every acquisition needs both: choose a "
            "collection of dual-polarisation VV+VH items (Planetary Computer: "
            "sentinel-1-rtc), or leave those items out of the catalog"
        )


# -- finding items ----------------------------------------------------------------------

Days = tuple[dt.date, dt.date] | None
"""(first, last) whole UTC days an item's time must lie in; None: any time (a DEM)."""


def _find_items(
    stac: str, collection: str | None, box: Sequence[float], days: Days, option: str
) -> list[Any]:
    """The items of ``collection`` over ``box`` (lon/lat) in ``days``: searched at an API
    URL, else read from a local (or http) static catalog and filtered here. ``option``
    names the collection's option in messages."""
    if urlparse(stac).scheme not in ("http", "https"):
        return _filter(_read_local(stac), stac, collection, box, days)
    pystac_client = _require("pystac_client")
    if not collection:
        raise EventInputError(
            f"--stac {stac}: name the collection to search with {option} (e.g. "
            "sentinel-1-rtc on Planetary Computer)"
        )
    when = None if days is None else f"{days[0].isoformat()}/{days[1].isoformat()}"
    try:
        client = pystac_client.Client.open(stac)
        if not client.conforms_to("ITEM_SEARCH"):  # a static catalog over http
            return _filter(list(client.get_items(recursive=True)), stac, collection, box, days)
        search = client.search(collections=[collection], bbox=list(box), datetime=when)
        items = list(search.items())
    except (pystac_client.exceptions.APIError, OSError, ValueError) as error:
        raise EventInputError(
            f"--stac {stac}: cannot search it ({type(error).__name__}: {error}). Check the "
            "URL and the network; offline, give a static catalog (catalog.json) or an "
            "ItemCollection (items.json) saved earlier"
        ) from error
    if not items:
        raise EventInputError(
            f"--stac {stac}: no items of collection {collection!r} intersect the area "
            f"({_box(box)}){_during(days)}. Check {option}, --bbox/--aoi"
            f"{'' if days is None else ', the event dates and --before-days/--after-days'}"
        )
    log.info("%s: %d items of %s found", stac, len(items), collection)
    return items


def _during(days: Days) -> str:
    return "" if days is None else f" from {days[0]} to {days[1]}"


def _read_local(path: str) -> list[Any]:
    """The items of a local catalog or collection (recursively), ItemCollection or item."""
    pystac = _require("pystac")
    file = Path(path).expanduser()
    try:
        kind = json.loads(file.read_text()).get("type")
    except (OSError, ValueError, AttributeError) as error:
        raise EventInputError(
            f"--stac {path}: cannot read it as STAC JSON ({error}); give a catalog.json, an "
            "items.json (ItemCollection), an item, or the URL of a STAC API"
        ) from error
    try:
        if kind == "FeatureCollection":
            items = list(pystac.ItemCollection.from_file(str(file)))
        elif kind == "Feature":
            items = [pystac.Item.from_file(str(file))]
        elif kind in ("Catalog", "Collection"):
            items = list(pystac.read_file(str(file)).get_items(recursive=True))
        else:
            raise EventInputError(
                f"--stac {path}: a JSON of type {kind!r}, not a STAC catalog, collection, "
                "ItemCollection (FeatureCollection) or item (Feature)"
            )
    except pystac.STACError as error:
        raise EventInputError(f"--stac {path}: not valid STAC ({error})") from error
    for item in items:
        if item.get_self_href() is not None:  # relative asset hrefs: from the item's folder
            item.make_asset_hrefs_absolute()
    return items


def _filter(
    items: list[Any], stac: str, collection: str | None, box: Sequence[float], days: Days
) -> list[Any]:
    """The items of ``collection`` (any, when None) over ``box`` in ``days``: what an API
    search returns, done here for a static catalog."""
    from shapely.geometry import box as make_box
    from shapely.geometry import shape

    area = make_box(*box)
    kept = [
        item
        for item in items
        if (collection is None or item.collection_id == collection)
        and (item.geometry is None or shape(item.geometry).intersects(area))
        and (days is None or days[0] <= _time(item).date() <= days[1])
    ]
    if not kept:
        listed = ", ".join(
            f"{item.id} ({_time(item):%Y-%m-%d}, collection {item.collection_id}, "
            f"bbox {_box(item.bbox) if item.bbox else '?'})"
            for item in items[:_LISTED]
        )
        more = f" and {len(items) - _LISTED} more" if len(items) > _LISTED else ""
        raise EventInputError(
            f"--stac {stac}: none of its {len(items)} items is "
            f"{'' if collection is None else f'of collection {collection!r}, '}over the "
            f"area ({_box(box)}){' and' if days else ''}{_during(days)}. Its items: "
            f"{listed or 'none'}{more}. Check the collection, --bbox/--aoi"
            f"{'' if days is None else ', the event dates and --before-days/--after-days'}"
        )
    return kept


def _box(box: Sequence[float]) -> str:
    return "lon {:.4f} to {:.4f}, lat {:.4f} to {:.4f}".format(*(box[i] for i in (0, 2, 1, 3)))


# -- items -> scenes --------------------------------------------------------------------


@dataclass(frozen=True)
class _Parsed:
    """What an item says about its acquisition, and its VV/VH assets (keyed lower case)."""

    item: Any
    time: dt.datetime
    platform: str
    orbit_state: str | None
    relative_orbit: int | None
    assets: dict[str, Any]
    scale: Scale

    @classmethod
    def of(cls, item: Any, scale: Scale | None) -> _Parsed:
        assets = {k.lower(): a for k, a in item.assets.items() if k.lower() in POLARISATIONS}
        props = item.properties
        return cls(
            item=item,
            time=_time(item),
            platform=str(props.get("platform") or props.get("constellation") or "unknown"),
            orbit_state=_orbit_state(item),
            relative_orbit=_relative_orbit(item),
            assets=assets,
            scale=scale or _declared_scale(item, assets),
        )


def _time(item: Any) -> dt.datetime:
    """The item's acquisition (start) time in UTC."""
    when = item.datetime or item.common_metadata.start_datetime
    if when is None:
        raise EventInputError(f"STAC item {item.id} has neither datetime nor start_datetime")
    return when.replace(tzinfo=dt.timezone.utc) if when.tzinfo is None else when


def _orbit_state(item: Any) -> str | None:
    value = item.properties.get("sat:orbit_state")
    if value is None:
        return None
    state = _ORBIT_STATES.get(str(value).strip().lower())
    if state is None:
        raise EventInputError(
            f"STAC item {item.id}: sat:orbit_state {value!r} is neither ascending nor descending"
        )
    return state


def _relative_orbit(item: Any) -> int | None:
    value = item.properties.get("sat:relative_orbit")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        raise EventInputError(
            f"STAC item {item.id}: sat:relative_orbit {value!r} is not a whole number"
        )
    return int(value)


def _declared_scale(item: Any, assets: dict[str, Any]) -> Scale:
    """``db`` when both bands' ``raster:bands`` unit is decibels, else ``power``; one error
    for a scale/offset (values not stored as they are meant) or bands that disagree."""
    scales = set()
    for pol, asset in assets.items():
        bands = asset.extra_fields.get("raster:bands") or [{}]
        band = bands[0] if isinstance(bands, list) and bands else {}
        if band.get("scale", 1) != 1 or band.get("offset", 0) != 0:
            raise EventInputError(
                f"STAC item {item.id}: asset {pol} declares raster:bands scale "
                f"{band.get('scale', 1)} and offset {band.get('offset', 0)}; the STAC route "
                "reads backscatter stored as it is (linear power, amplitude or dB), not "
                "packed values"
            )
        unit = str(band.get("unit", "")).strip().lower()
        scales.add("db" if unit in _DB_UNITS else "power")
    if len(scales) > 1:
        raise EventInputError(
            f"STAC item {item.id}: its VV and VH assets declare different units "
            "(raster:bands unit); declare the scale for all items"
        )
    return scales.pop()


def _group_passes(parsed: Iterable[_Parsed]) -> list[list[_Parsed]]:
    """Items grouped into acquisitions: slices of one pass (see :data:`SLICE_GAP`)."""
    groups: list[list[_Parsed]] = []
    for p in sorted(parsed, key=lambda p: (p.platform, p.orbit_state or "", p.time)):
        last = groups[-1][-1] if groups else None
        if (
            last is not None
            and (last.platform, last.orbit_state, last.relative_orbit)
            == (p.platform, p.orbit_state, p.relative_orbit)
            and p.time - last.time <= SLICE_GAP
        ):
            groups[-1].append(p)
        else:
            groups.append([p])
    return sorted(groups, key=lambda g: g[0].time)


def _scene(group: list[_Parsed]) -> Scene:
    """One acquisition from the items of one pass."""
    head = group[0]
    scales = {p.scale for p in group}
    if len(scales) > 1:
        raise EventInputError(
            f"STAC items {', '.join(p.item.id for p in group)} are slices of one pass but "
            f"declare different scales {sorted(scales)}"
        )
    items = tuple(p.item for p in group)
    bands = {pol: StacSource(items, pol, head.scale) for pol in POLARISATIONS}
    return Scene(
        time=head.time,
        platform=head.platform,
        orbit_state=head.orbit_state,  # type: ignore[arg-type]  # checked by _orbit_state
        relative_orbit=head.relative_orbit,
        name="+".join(p.item.id for p in group),
        bands=bands,
        scale="power",  # StacSource converts to power before resampling
        sources=tuple(
            f"{p.assets[pol].href} ({head.scale})" for p in group for pol in POLARISATIONS
        ),
    )


# -- reading ------------------------------------------------------------------------------


@dataclass(frozen=True)
class StacSource:
    """One band read from STAC items: the asset ``band`` (any case in the items) of
    ``items`` (slices of one pass, or DEM tiles), converted from ``scale`` to linear power
    (None: values as stored, e.g. elevation)."""

    items: tuple[Any, ...]
    band: str
    scale: Scale | None = None

    @property
    def path(self) -> str:
        """The asset URLs, for the cube's provenance."""
        return " ".join(_with_band(item, self.band).assets[self.band].href for item in self.items)

    def read(self, grid: Grid) -> np.ndarray:
        """The band on ``grid``: float32 (height, width), NaN where there are no data.

        As the GeoTIFF route reads a file: odc-stac fetches the items' pixels around the grid
        on the first item's own pixel grid (pasted side by side, the first valid pixel
        winning where they overlap; decimated for a coarse preview), the values become
        linear power, and GDAL resamples them onto ``grid``, bilinear, or averaging when the
        grid is coarser by more than 1.5x. Resampling each item onto the grid within odc-stac
        would leave NaN or edge-biased pixels along the seams between items.
        """
        from landslide_lit.event.geotiff import resample_onto

        items = [_with_band(item, self.band) for item in self.items]
        native, transform, crs, ratio = self._native(items, grid)
        if self.scale is not None:
            native = to_power(native, self.scale)
        out = np.full(grid.shape, np.nan, np.float32)
        resample_onto(grid, native, transform, crs, ratio, out)
        return out

    def _native(self, items: list[Any], grid: Grid) -> tuple[np.ndarray, Any, Any, float]:
        """The items' values around ``grid`` on the first item's pixel grid (as its file
        says), its transform and CRS, and the source pixels per grid pixel."""
        import rasterio
        from affine import Affine
        from odc.geo.geobox import GeoBox
        from rasterio.warp import transform_bounds

        hrefs = [item.assets[self.band].href for item in items]
        sign = _signer(hrefs)
        try:
            with rasterio.open(sign(hrefs[0]) if sign else hrefs[0]) as file:
                crs, t = file.crs, file.transform
        except (rasterio.errors.RasterioError, OSError) as error:
            raise self._error(items, hrefs, error) from error
        left, bottom, right, top = transform_bounds(
            grid.crs.to_wkt(), crs, *grid.bounds, densify_pts=21
        )
        ratio = max((right - left) / abs(t.a) / grid.width, (top - bottom) / abs(t.e) / grid.height)
        margin = 2 + math.ceil(ratio)  # the interpolation kernel's reach beyond the grid
        step = max(1, int(ratio // 4))  # a coarse preview reads decimated (overviews)
        col0 = math.floor((left - t.c) / t.a) - margin
        col1 = math.ceil((right - t.c) / t.a) + margin
        row0 = math.floor((top - t.f) / t.e) - margin
        row1 = math.ceil((bottom - t.f) / t.e) + margin
        transform = Affine(t.a * step, 0.0, t.c + col0 * t.a, 0.0, t.e * step, t.f + row0 * t.e)
        shape = (max(1, (row1 - row0) // step), max(1, (col1 - col0) // step))
        try:
            loaded = _require("odc.stac").load(
                items,
                bands=[self.band],
                geobox=GeoBox(shape, transform, crs.to_wkt()),
                resampling="nearest",
                dtype="float32",
                groupby=_one_acquisition,
                patch_url=sign,
            )
        except Exception as error:  # any failure to fetch or decode: one clear error
            raise self._error(items, hrefs, error) from error
        values = np.asarray(loaded[self.band].values[0], dtype=np.float32)
        for nodata in {_nodata(item.assets[self.band]) for item in items} - {None}:
            values[values == nodata] = np.nan  # declared in STAC but not in the file
        return values, transform, crs, ratio

    def _error(self, items: list[Any], hrefs: list[str], error: Exception) -> EventInputError:
        return EventInputError(
            f"cannot read {self.band.upper()} of STAC item(s) "
            f"{', '.join(i.id for i in items)} from {', '.join(hrefs)} "
            f"({type(error).__name__}: {error}){_signing_hint(hrefs)}"
        )


def _with_band(item: Any, band: str) -> Any:
    """A copy of ``item`` for odc-stac: its ``band`` asset only, keyed lower case (items of
    one pass may spell it differently, and odc-stac loads a band by one key), and no
    ``proj:`` fields. odc-stac places an item by its ``proj:transform`` when it has one, and
    a stale one (known in Planetary Computer items) moves or drops the data; without them it
    reads where each file's own georeferencing puts it, as the GeoTIFF route does."""
    copy = item.clone()
    key = next(k for k in item.assets if k.lower() == band)  # there is one: _check_bands
    asset = item.assets[key].clone()
    copy.assets = {band: asset}
    asset.set_owner(copy)
    for fields in (copy.properties, asset.extra_fields):
        for name in [n for n in fields if n.startswith("proj:")]:
            del fields[name]
    return copy


def _one_acquisition(item: Any, parsed: Any, index: int) -> int:
    """odc-stac groupby: every item read together is one acquisition (one time slice)."""
    return 0


def _nodata(asset: Any) -> float | None:
    bands = asset.extra_fields.get("raster:bands") or [{}]
    value = bands[0].get("nodata") if isinstance(bands, list) and bands else None
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):  # "inf", "-inf" as strings: never stored in float32 power
        return None


def _on_planetary_computer(href: str) -> bool:
    return (urlparse(href).hostname or "").endswith(".blob.core.windows.net")


def _signer(hrefs: Sequence[str]) -> Callable[[str], str] | None:
    """``planetary_computer.sign`` for hrefs on Planetary Computer when installed, else None."""
    if not any(_on_planetary_computer(h) for h in hrefs):
        return None
    try:
        import planetary_computer
    except ImportError:
        return None
    return planetary_computer.sign


def _warn_unsigned(hrefs: Sequence[str]) -> None:
    if any(map(_on_planetary_computer, hrefs)) and _signer(hrefs) is None:
        log.warning(
            "the assets are on Planetary Computer, which serves them to signed URLs only, "
            "and the planetary-computer package is not installed: pip install "
            "planetary-computer"
        )


def _signing_hint(hrefs: Sequence[str]) -> str:
    if any(_on_planetary_computer(h) for h in hrefs) and _signer(hrefs) is None:
        return (
            ". Planetary Computer serves assets to signed URLs only: pip install "
            "planetary-computer (it is then used)"
        )
    return ""


def _require(module: str) -> Any:
    """Import ``module`` of the event extra, or one error saying what to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise EventInputError(
            f"--stac needs {module.split('.')[0]}, which is not installed: {_EXTRA}"
        ) from error
