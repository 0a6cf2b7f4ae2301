"""The map writer's work per block stays bounded however large the region (issue 15, target 4)."""

from __future__ import annotations

import numpy as np
import pytest

from landslide_lit import map_files
from landslide_lit.map_files import Block, RegionScore
from tests.probability_maps import probability_field


def band(height: int = 40, width: int = 30) -> Block:
    probability = probability_field(height, width, seed=3)
    valid = np.isfinite(probability)
    target = np.zeros_like(valid)
    target[::3, ::2] = True
    return Block(0, 0, probability, valid, target & valid)


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
    """A band larger than PART_PIXELS allows is labelled a few columns at a time; the
    landslides are those of the whole band at once (in another order)."""
    pytest.importorskip("rasterio")
    from landslide_lit import polygons
    from tests.probability_maps import grid

    probability = probability_field(64, 48, seed=5)
    landslide = np.isfinite(probability) & (probability >= 0.55)

    def found(pixels: int) -> list[tuple]:
        monkeypatch.setattr(polygons, "PART_PIXELS", pixels)
        polygonizer = polygons.Polygonizer(grid(*landslide.shape))
        slides = polygonizer.add(0, landslide, probability) + polygonizer.finish()
        return sorted((s.geometry.wkt, s.pixels, s.area_m2, s.p_max) for s in slides)

    whole = found(1 << 30)
    labelled = []
    label = polygons.ndimage.label
    monkeypatch.setattr(
        polygons.ndimage, "label", lambda a, s: labelled.append(a.size) or label(a, s)
    )
    assert found(64 * 5) == whole
    assert len(whole) > 5 and max(labelled) <= 64 * 5
    assert len(labelled) == -(-48 // 5)


def test_a_cog_is_written_and_closed_with_a_bounded_gdal_block_cache(tmp_path, monkeypatch):
    """GDAL's default block cache (5 % of the memory) kept the whole raster as its blocks
    were written, and again while the overviews were built and the COG copied: both run
    under CACHE_MB."""
    pytest.importorskip("rasterio")
    import rasterio
    import rasterio.shutil
    from affine import Affine

    from landslide_lit.rasters import CACHE_MB, CogWriter, Grid

    caches = []

    def noting_the_cache(function):
        def noted(*args, **kwargs):
            caches.append(rasterio.env.getenv()["GDAL_CACHEMAX"])
            return function(*args, **kwargs)

        return noted

    monkeypatch.setattr(rasterio.shutil, "copy", noting_the_cache(rasterio.shutil.copy))
    grid = Grid(300, 520, Affine(10, 0, 500_000, 0, -10, 4_800_000), "EPSG:32654")
    writer = CogWriter(tmp_path / "map.tif", grid, "float32", float("nan"))
    writer.dst.write = noting_the_cache(writer.dst.write)
    values = probability_field(300, 520).astype(np.float32)
    writer.write(0, values[:, :256])
    writer.write(0, values[:, 256:], 256)
    writer.close()
    assert caches == [CACHE_MB] * 3
    with rasterio.open(tmp_path / "map.tif") as src:
        np.testing.assert_array_equal(src.read(1), values)


def test_the_netcdf_map_keeps_a_bounded_chunk_cache(tmp_path):
    """netCDF's default chunk cache (64 MiB a variable) kept the written chunks."""
    from tests.probability_maps import fake_windows

    files = map_files.NetCDFFile(tmp_path / "map", fake_windows(300, 520), {}, std=True)
    try:
        for variable in (files.var, files.std):
            size, _, preemption = variable.get_var_chunk_cache()
            assert (size, preemption) == (map_files.CHUNK_CACHE_BYTES, 1.0)
    finally:
        files.abandon()


@pytest.mark.parametrize("std", [False, True])
def test_the_map_files_are_the_same_whatever_the_blocks(tmp_path, monkeypatch, std):
    """Blocks of 100 columns (none a whole chunk wide at the right) give the netCDF, zarr
    and GeoTIFF maps and the quicklook of whole bands; an ensemble's standard deviation
    too."""
    pytest.importorskip("rasterio")
    import rasterio
    import xarray as xr

    from tests.probability_maps import blocks_of, fake_windows

    monkeypatch.setattr(map_files, "QUICKLOOK_PIXELS", 64)  # every 9th row and column
    probability = probability_field(300, 520, seed=4)
    windows = fake_windows(*probability.shape)
    attrs = {"crs": "EPSG:32654"}
    written = {}
    for columns in (None, 100):
        folder = tmp_path / str(columns)
        folder.mkdir()
        files = map_files.MapFiles(
            folder, windows, attrs, ["netcdf", "zarr", "geotiff"], True, 2 if std else 1
        )
        for block in blocks_of(probability, columns=columns, std=std):
            files.add(block)
        look = (files.look.probability.copy(), files.look.step)
        files.close(None)
        stem = folder / "testland_landslide_probability"
        with rasterio.open(stem.with_suffix(".tif")) as src:
            tif = src.read()
        maps = [tif]
        for suffix, engine in ((".nc", "netcdf4"), (".zarr", "zarr")):
            with xr.open_dataset(stem.with_suffix(suffix), engine=engine) as ds:
                maps += [ds[name].values for name in ds.data_vars if name.startswith("landslide")]
        written[columns] = (look, maps)
    (look, maps), (look_blocks, maps_blocks) = written[None], written[100]
    assert look[1] == 9 and np.array_equal(look[0], look_blocks[0], equal_nan=True)
    assert len(maps) == (5 if std else 3)  # the GeoTIFF: one array of its bands
    for whole, blocks in zip(maps, maps_blocks, strict=True):
        np.testing.assert_array_equal(blocks, whole)
    np.testing.assert_array_equal(maps[0][0], probability)
