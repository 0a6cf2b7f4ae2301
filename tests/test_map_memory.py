"""The map writer's work per band stays bounded however wide the region (issue 15, target 4)."""

from __future__ import annotations

import numpy as np
import pytest

from landslide_lit import map_files
from landslide_lit.map_files import Band, RegionScore
from tests.probability_maps import probability_field


def band(height: int = 40, width: int = 30) -> Band:
    probability = probability_field(height, width, seed=3)
    valid = np.isfinite(probability)
    target = np.zeros_like(valid)
    target[::3, ::2] = True
    return Band(0, probability, valid, target & valid)


def test_the_region_score_counts_a_band_in_bounded_parts(monkeypatch):
    """A band is counted SCORE_PIXELS at a time, to the same histogram and metrics."""
    whole = RegionScore()
    whole.add(band())
    monkeypatch.setattr(map_files, "SCORE_PIXELS", 97)
    parts = RegionScore()
    sizes = []
    update = parts.auprc.update
    monkeypatch.setattr(parts.auprc, "update", lambda p, t: sizes.append(len(p)) or update(p, t))
    parts.add(band())
    assert len(sizes) > 1 and max(sizes) <= 97
    assert parts.metrics() == whole.metrics()
    assert bool((parts.auprc.counts == whole.auprc.counts).all())


def test_polygons_are_labelled_in_bounded_parts_of_a_wide_band(monkeypatch):
    """A band wider than BAND_PIXELS allows is labelled a few rows at a time; the
    landslides are those of the whole band at once (in another order)."""
    pytest.importorskip("rasterio")
    from landslide_lit import polygons
    from tests.probability_maps import grid

    probability = probability_field(64, 48, seed=5)
    landslide = np.isfinite(probability) & (probability >= 0.55)

    def found(pixels: int) -> list[tuple]:
        monkeypatch.setattr(polygons, "BAND_PIXELS", pixels)
        polygonizer = polygons.Polygonizer(grid(*landslide.shape))
        slides = polygonizer.add(0, landslide, probability) + polygonizer.finish()
        return sorted((s.geometry.wkt, s.pixels, s.area_m2, s.p_max) for s in slides)

    whole = found(1 << 30)
    labelled = []
    label = polygons.ndimage.label
    monkeypatch.setattr(
        polygons.ndimage, "label", lambda a, s: labelled.append(a.size) or label(a, s)
    )
    assert found(48 * 5) == whole
    assert len(whole) > 5 and max(labelled) <= 48 * 5
    assert len(labelled) == -(-64 // 5)


def test_a_cog_is_closed_with_a_bounded_gdal_block_cache(tmp_path, monkeypatch):
    """GDAL's default block cache (5 % of the memory) kept the whole raster while the
    overviews were built and the COG copied: the close runs under CLOSE_CACHE_MB."""
    pytest.importorskip("rasterio")
    import rasterio
    import rasterio.shutil
    from affine import Affine

    from landslide_lit.rasters import CLOSE_CACHE_MB, CogWriter, Grid

    caches = []
    copy = rasterio.shutil.copy

    def copy_and_note(*args, **kwargs):
        caches.append(rasterio.env.getenv()["GDAL_CACHEMAX"])
        return copy(*args, **kwargs)

    monkeypatch.setattr(rasterio.shutil, "copy", copy_and_note)
    grid = Grid(300, 520, Affine(10, 0, 500_000, 0, -10, 4_800_000), "EPSG:32654")
    writer = CogWriter(tmp_path / "map.tif", grid, "float32", float("nan"))
    values = probability_field(300, 520).astype(np.float32)
    writer.write(0, values)
    writer.close()
    assert caches == [CLOSE_CACHE_MB]
    with rasterio.open(tmp_path / "map.tif") as src:
        np.testing.assert_array_equal(src.read(1), values)
