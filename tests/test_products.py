"""Responder products: COGs, QGIS styles, landslide polygons built band by band."""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET

import numpy as np
import pytest

pytest.importorskip("rasterio")
pytest.importorskip("pyogrio")
pytest.importorskip("geopandas")

import pyogrio
import pyproj
import rasterio
import shapely
from affine import Affine

from landslide_lit.errors import ConfigError
from landslide_lit.map_files import GeoTiffFile
from landslide_lit.polygons import Polygonizer
from landslide_lit.products import (
    ChosenThreshold,
    ProductOptions,
    ProductPaths,
    ResponderProducts,
)
from landslide_lit.rasters import Grid, overview_factors
from tests.cogs import cog_problems
from tests.probability_maps import (
    CRS,
    PIXEL,
    blocks_of,
    fake_windows,
    grid,
    probability_field,
    write_map,
)

FIXED = ChosenThreshold(0.5, "fixed", "a test")


def polygons(
    mask: np.ndarray,
    rows: int,
    g: Grid | None = None,
    columns: int | None = None,
    probability: np.ndarray | None = None,
    **options,
) -> list:
    """The landslides of ``mask`` fed in bands of ``rows`` rows, in blocks of ``columns``
    columns (default: the whole width)."""
    g = g or grid(*mask.shape)
    polygonizer = Polygonizer(g, **options)
    if probability is None:
        probability = np.where(mask, 0.8, 0.1).astype(np.float32)
    columns = columns or mask.shape[1]
    found = []
    for y0 in range(0, len(mask), rows):
        for x0 in range(0, mask.shape[1], columns):
            block = np.s_[y0 : y0 + rows, x0 : x0 + columns]
            found += polygonizer.add(y0, mask[block], probability[block], x0)
    return found + polygonizer.finish()


def shapes_mask() -> np.ndarray:
    """A rectangle, a U whose arms join only at its bottom, a diagonal pair, a ring."""
    mask = np.zeros((16, 14), bool)
    mask[1:3, 1:4] = True  # 6 pixels
    mask[4:10, 2] = mask[4:10, 6] = True  # the U's arms
    mask[9, 2:7] = True  # ...joined at row 9: 15 pixels
    mask[5, 9] = mask[6, 10] = True  # corner to corner: two landslides
    mask[11:16, 8:13] = True
    mask[13, 10] = False  # a ring of 24 pixels with a hole
    return mask


@pytest.mark.parametrize("rows", [16, 1, 2, 3, 5, 7])
def test_landslides_do_not_depend_on_the_bands(rows):
    """A landslide across band seams (the U joins below them) is one polygon, the same one
    whatever the bands; its area is its pixel count times the pixel area."""
    found = polygons(shapes_mask(), rows)
    assert sorted(s.pixels for s in found) == [1, 1, 6, 15, 24]
    for landslide in found:
        assert landslide.geometry.geom_type == "Polygon" and landslide.geometry.is_valid
        assert landslide.area_m2 == landslide.pixels * PIXEL**2
        assert landslide.geometry.area == pytest.approx(landslide.area_m2)
        assert landslide.p_mean == pytest.approx(0.8) and landslide.p_max == pytest.approx(0.8)
    ring = max(found, key=lambda s: s.pixels)
    assert len(ring.geometry.interiors) == 1
    whole = sorted(s.geometry.wkt for s in polygons(shapes_mask(), 16))
    assert sorted(s.geometry.wkt for s in found) == whole


def sideways_mask() -> np.ndarray:
    """A C whose arms join only at its left, a spiral, a comb whose teeth hang from its top."""
    mask = np.zeros((20, 24), bool)
    mask[1, 1:9] = mask[5, 1:9] = mask[1:6, 1] = True  # the C: 8 + 8 + 3 pixels
    mask[8, 2:12] = mask[8:17, 11] = mask[16, 3:12] = mask[10:17, 3] = True  # the spiral's
    mask[10, 3:9] = mask[10:14, 8] = True  # ...turns inwards: 10 + 8 + 8 + 6 + 5 + 3 = 40
    mask[1, 13:23] = True  # the comb's back, its teeth every other column
    mask[1:18, 13:23:2] = True  # 10 + 5 x 16 = 90 pixels
    return mask


@pytest.mark.parametrize("rows, columns", [(20, 24), (1, 1), (3, 2), (4, 5), (7, 3), (2, 11)])
def test_landslides_do_not_depend_on_the_blocks(rows, columns):
    """Landslides across the seams of blocks of rows and columns (joined to the left,
    below and around) are the same as those of the whole map at once; so are those of a
    field of probability blobs."""
    mask = sideways_mask()
    found = polygons(mask, rows, columns=columns)
    assert sorted(s.pixels for s in found) == [19, 40, 90]
    whole = sorted(s.geometry.wkt for s in polygons(mask, 20))
    assert sorted(s.geometry.wkt for s in found) == whole
    assert all(s.geometry.is_valid and s.area_m2 == s.pixels * PIXEL**2 for s in found)
    field = probability_field(40, 36, seed=3)
    blobs = np.isfinite(field) & (field >= 0.5)

    def described(rows: int, columns: int) -> list[tuple]:
        slides = polygons(blobs, rows, columns=columns, probability=field)
        return sorted((s.geometry.wkt, s.pixels, s.p_max, round(s.p_mean, 6)) for s in slides)

    assert described(rows, columns) == described(40, 36)


def test_polygons_lie_on_the_map_grid():
    found = polygons(shapes_mask(), 4)
    six = next(s for s in found if s.pixels == 6)
    x0, y0 = 300000.0, 5000.0
    assert six.geometry.bounds == (x0 + 10, y0 - 30, x0 + 40, y0 - 10)


def test_the_minimum_area_drops_small_landslides():
    found = polygons(shapes_mask(), 3, min_area_m2=6 * PIXEL**2)
    assert sorted(s.pixels for s in found) == [6, 15, 24]


def test_simplification_keeps_valid_polygons_and_pixel_areas():
    found = polygons(shapes_mask(), 3, simplify=PIXEL)
    assert all(s.geometry.is_valid and s.geometry.geom_type == "Polygon" for s in found)
    u = next(s for s in found if s.pixels == 15)
    assert u.area_m2 == 15 * PIXEL**2


def test_a_geographic_map_gets_geodesic_areas():
    step = 0.0001  # degrees: about 11 m at the equator
    g = Grid(4, 4, Affine(step, 0, 10.0, 0, -step, 0.0), "EPSG:4326")
    mask = np.zeros((4, 4), bool)
    mask[1:3, 1:3] = True
    (square,) = polygons(mask, 1, g)
    geod = pyproj.Geod(ellps="WGS84")
    width = geod.inv(10.0, 0.0, 10.0 + 2 * step, 0.0)[2]
    assert square.area_m2 == pytest.approx(width * width, rel=1e-2)


def test_polygons_need_a_crs():
    with pytest.raises(ConfigError, match="no CRS"):
        Polygonizer(grid(4, 4, crs=None))


def test_blocks_out_of_order_are_a_bug():
    def block(rows: int, columns: int) -> tuple[np.ndarray, np.ndarray]:
        return np.zeros((rows, columns), bool), np.zeros((rows, columns), np.float32)

    polygonizer = Polygonizer(grid(8, 4))
    with pytest.raises(ValueError, match="in order.*expected row 0, column 0; got row 4"):
        polygonizer.add(4, *block(4, 4))
    polygonizer.add(0, *block(4, 2))
    with pytest.raises(
        ValueError, match="expected row 0, column 2, 4 rows; got row 0, column 2, 3"
    ):
        polygonizer.add(0, *block(3, 2), x0=2)
    with pytest.raises(ValueError, match="within the map's 4 columns"):
        polygonizer.add(0, *block(4, 3), x0=2)
    with pytest.raises(ValueError, match="blocks stopped at row 4, column 2"):
        polygonizer.finish()


# -- the products ----------------------------------------------------------------------


def make_products(tmp_path, probability, threshold=FIXED, **options):
    paths = ProductPaths.for_region(tmp_path, "testland")
    products = ResponderProducts(
        paths,
        grid(*probability.shape),
        threshold,
        {"checkpoint": "best.ckpt", "after_acquisitions": "2018-09-09"},
        ProductOptions(**options),
    )
    for block in blocks_of(probability):
        products.add(block)
    return paths, products.close(), products


@pytest.fixture(scope="module")
def field():
    return probability_field(300, 520)


def test_the_mask_is_a_cog_with_the_maps_grid(tmp_path, field):
    paths, summary, _ = make_products(tmp_path, field)
    assert cog_problems(paths.mask, predictor=2) == []
    with rasterio.open(paths.mask) as src:
        assert src.dtypes == ("uint8",) and src.nodata == 255
        assert src.crs.to_string() == CRS and src.transform == grid(300, 520).transform
        assert src.overviews(1) == overview_factors(300, 520) == [2, 4]
        assert src.tags()["threshold"] == "0.5"
        mask = src.read(1)
    expected = np.where(np.isfinite(field), field >= 0.5, 255)
    np.testing.assert_array_equal(mask, expected)
    style = ET.parse(paths.mask.with_suffix(".qml")).getroot()
    entries = {e.get("value"): e.get("alpha") for e in style.iter("paletteEntry")}
    assert entries == {"1": "255", "0": "0"}
    assert summary["files"][:2] == ["testland_landslide_mask.tif", "testland_landslide_mask.qml"]
    assert not list(tmp_path.glob(".*")), "partial files left"


def test_the_polygons_match_the_mask_and_carry_the_run(tmp_path, field):
    paths, summary, products = make_products(tmp_path, field, geojson=True)
    info = pyogrio.read_info(paths.polygons, layer="landslides")
    assert info["geometry_type"] == "Polygon" and info["crs"] == CRS
    frame = pyogrio.read_dataframe(paths.polygons, layer="landslides")
    landslide_pixels = int((field >= 0.5).sum())
    assert frame.pixels.sum() == landslide_pixels
    np.testing.assert_allclose(frame.area_m2, frame.pixels * PIXEL**2)
    np.testing.assert_allclose(frame.geometry.area, frame.area_m2)
    assert (frame.p_mean >= 0.5).all() and (frame.p_max >= frame.p_mean).all()
    assert set(frame.threshold) == {0.5} and set(frame.threshold_rule) == {"fixed"}
    assert set(frame.checkpoint) == {"best.ckpt"}
    assert summary["landslides"] == len(frame)
    assert summary["area_m2"] == pytest.approx(frame.area_m2.sum())
    classes = summary["by_p_mean"]
    assert [c["p_mean"] for c in classes] == ["[0.5, 0.7)", "[0.7, 0.9)", "[0.9, 1]"]
    assert sum(c["landslides"] for c in classes) == len(frame)
    high = frame.p_mean >= 0.7
    assert classes[0]["area_m2"] == pytest.approx(frame.area_m2[~high].sum())
    web = pyogrio.read_dataframe(paths.geojson)
    assert web.crs.to_epsg() == 4326 and len(web) == len(frame)
    # the same polygons (RFC 7946 winds them anticlockwise, rounds to 7 decimals)
    apart = shapely.hausdorff_distance(web.geometry.values, frame.to_crs(4326).geometry.values)
    assert apart.max() < 1e-6
    # what the quicklook outlines: every kept landslide, on the quicklook's grid
    assert products.preview_step == 1 and products.preview.sum() == landslide_pixels


def test_the_minimum_area_filters_the_layer_and_the_summary(tmp_path, field):
    paths, summary, _ = make_products(tmp_path, field, min_area_m2=50 * PIXEL**2)
    frame = pyogrio.read_dataframe(paths.polygons)
    assert len(frame) == summary["landslides"] > 0 and (frame.pixels >= 50).all()


def test_no_landslide_is_an_empty_layer_with_its_schema(tmp_path, field):
    paths, summary, _ = make_products(tmp_path, field, ChosenThreshold(1.0, "fixed", "t"))
    info = pyogrio.read_info(paths.polygons, layer="landslides")
    assert info["features"] == 0 and info["geometry_type"] == "Polygon"
    assert {"area_m2", "pixels", "p_mean", "p_max", "threshold"} <= set(info["fields"])
    assert summary["landslides"] == 0 and summary["by_p_mean"] == [
        {"p_mean": "[1, 1]", "landslides": 0, "area_m2": 0.0}
    ]


def test_a_threshold_outside_0_1_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"outside \[0, 1\]"):
        ResponderProducts(
            ProductPaths.for_region(tmp_path, "r"), grid(4, 4), ChosenThreshold(1.2, "fixed", "x")
        )


def test_a_failure_leaves_no_products(tmp_path, field):
    paths = ProductPaths.for_region(tmp_path, "testland")
    products = ResponderProducts(paths, grid(*field.shape), FIXED)
    products.add(next(blocks_of(field)))
    products.abandon()
    assert list(tmp_path.iterdir()) == []


def test_without_the_responder_extra_products_are_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "rasterio", None)  # import rasterio fails
    with pytest.raises(ConfigError, match=r"pip install 'landslide-lit\[responder\]'"):
        ResponderProducts(ProductPaths.for_region(tmp_path, "r"), grid(4, 4), FIXED)


# -- the probability map's GeoTIFF -----------------------------------------------------


def test_the_probability_geotiff_is_a_cog(tmp_path, field):
    stem = tmp_path / ".testland_landslide_probability.pid1-host.partial"
    writer = GeoTiffFile(stem, fake_windows(*field.shape), {"title": "a map"})
    for block in blocks_of(field):
        writer.write(block)
    path = writer.close({"region_auprc": 0.5})
    assert cog_problems(path, predictor=3) == []
    with rasterio.open(path) as src:
        assert src.crs.to_string() == CRS and src.transform == grid(*field.shape).transform
        assert np.isnan(src.nodata) and src.descriptions == ("landslide_probability",)
        assert src.tags()["title"] == "a map" and src.tags()["region_auprc"] == "0.5"
        np.testing.assert_array_equal(src.read(1), field)
        overview = src.read(1, out_shape=(75, 130))  # the 1/4 overview: averages
    assert np.nanmax(np.abs(overview - field[1::4, 1::4])) < 0.1
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # the style: with the map


def test_the_published_probability_geotiff_has_its_style_beside_it(tmp_path, field):
    stem = write_map(tmp_path, field, formats=["geotiff"])
    style = ET.parse(stem.with_suffix(".qml")).getroot()
    renderer = style.find("pipe/rasterrenderer")
    assert renderer.get("type") == "singlebandpseudocolor"
    assert [float(i.get("value")) for i in renderer.iter("item")][::6] == [0.0, 1.0]
    summary = json.loads(stem.with_suffix(".json").read_text())
    assert summary["files"] == [f"{stem.name}.tif", f"{stem.name}.qml", f"{stem.name}.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(summary["files"])


def test_the_cog_check_tells_a_plain_geotiff(tmp_path, field):
    """The check above is no formality: a tiled GeoTIFF with overviews is no COG."""
    path = tmp_path / "plain.tif"
    profile = {"driver": "GTiff", "height": 300, "width": 520, "count": 1, "dtype": "float32"}
    profile.update(crs=CRS, transform=grid(300, 520).transform)
    with rasterio.open(path, "w", tiled=True, compress="deflate", predictor=3, **profile) as dst:
        dst.write(field, 1)
        dst.build_overviews([2, 4])
    problems = cog_problems(path, predictor=3)
    assert any("LAYOUT=COG" in p for p in problems)
    assert any("IFDs" in p for p in problems)


def test_the_quicklook_preview_of_a_wide_map_keeps_every_landslide(tmp_path):
    """On a preview coarser than the map, outlines are simplified to its cells; a landslide
    smaller than a cell stays visible, and one riddled with holes is burnt whole."""
    probability = np.zeros((40, 2100))
    probability[5, 7] = 0.9  # one pixel: collapses when simplified to 3-pixel cells
    probability[10:38, 100:2000] = 0.9
    probability[11:37:2, 101:1999:2] = 0.1  # ~12 000 one-pixel holes
    _, summary, products = make_products(tmp_path, probability)
    assert products.preview_step == 3 and summary["landslides"] == 2
    assert products.preview[5 // 3, 7 // 3]
    assert products.preview[4:12, 34:666].all()  # the holey landslide's cells, inside
