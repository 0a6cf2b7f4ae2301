"""New-event cube builder (issue 15, target 5): ``landslide-lit cube`` against reading the files.

Writes per-acquisition GeoTIFFs (float32 linear power, tiled 512 x 512, DEFLATE, ASF HyP3
RTC names, one file per polarisation) in two layouts, then times in turn, interleaved:

- the **floor**: rasterio opens every file and reads (decodes) its band once, fully;
- the **read+resample floor** (other grid only, information): rasterio opens every file
  and resamples its band onto the cube's grid (bilinear, NaN no data), the work the
  read-only floor leaves out when the files lie on another grid;
- the **build**: ``landslide-lit cube OUT.zarr --sar 'DIR/*.tif' ...`` through the
  command's own code (:func:`landslide_lit.event.command.main`): scene grouping, the
  checks, resampling onto the grid, conversion, the Zarr chunks and their compression.

Layouts: ``same grid``: the files lie on the cube's grid (UTM, 10 m, the common extent
the command chooses), as HyP3 RTC products of one frame do; ``other grid``: the same
scenes in geographic coordinates (EPSG:4326, about 10 m pixels), so every block is
reprojected.

Memory: peak RSS above the start of a fresh process building a cube of ``S`` and of
``2 S`` scenes (same grid), the median of MEMORY_RUNS processes each: a cube is written
chunk by chunk, so it must not grow with the stack.

    python bench/cube_build.py            # 2048 x 2048 px, 20 scenes x VV/VH, 3 repeats
    python bench/cube_build.py --quick    # 1024 x 1024 px, 8 scenes, 1 repeat
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import glob
import io
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from common import (
    WORK,
    header,
    median,
    peak_rss_bytes,
    reset_peak,
    run_json,
    spread,
    table,
    target_line,
    verdict,
)

FIRST = dt.datetime(2024, 1, 2, 17, 30, 5)
REPEAT = dt.timedelta(days=12)
UTM = "EPSG:32654"
ORIGIN = (500_000.0, 4_800_000.0)  # top-left corner, metres
RESOLUTION = 10.0
MEMORY_RUNS = 3
"""Fresh processes per scene count, reduced by the median: the peak of one run varies by
up to ~20 MiB with the timing of the writer thread (a block more or less in flight)."""


def scene_files(folder: Path, size: int, scenes: int, layout: str) -> Path:
    """``scenes`` acquisitions x VV/VH of ``size`` x ``size`` px in ``folder`` (made once)."""
    import rasterio
    from rasterio.transform import from_origin

    done = folder / "done"
    if done.exists():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    if layout == "same":
        crs, transform = UTM, from_origin(*ORIGIN, RESOLUTION, RESOLUTION)
    else:  # about 10 m pixels in degrees, over the same place
        from pyproj import Transformer

        lon, lat = Transformer.from_crs(UTM, "EPSG:4326", always_xy=True).transform(*ORIGIN)
        crs, transform = "EPSG:4326", from_origin(lon, lat, 1.2e-4, 0.9e-4)
    rng = np.random.default_rng(0)
    profile = {
        "driver": "GTiff",
        "width": size,
        "height": size,
        "count": 1,
        "dtype": "float32",
        "crs": crs,
        "transform": transform,
        "tiled": True,
        "blockxsize": 512,
        "blockysize": 512,
        "compress": "deflate",
        "nodata": np.nan,
    }
    for index in range(scenes):
        stamp = (FIRST + index * REPEAT).strftime("%Y%m%dT%H%M%S")
        for pol, level in (("VV", 0.1), ("VH", 0.02)):
            # speckle-like gamma-distributed power around the level; a corner without data
            values = rng.gamma(4.0, level / 4.0, (size, size)).astype(np.float32)
            values[: size // 16, : size // 16] = np.nan
            name = f"S1A_IW_{stamp}_DVP_RTC10_G_gpuned_{index:04X}_{pol}.tif"
            with rasterio.open(folder / name, "w", **profile) as dst:
                dst.write(values, 1)
    done.touch()
    return folder


def floor_seconds(folder: Path) -> float:
    """Open every file and read its band once (decoded), as the build must at least."""
    import rasterio

    start = time.perf_counter()
    for path in sorted(folder.glob("*.tif")):
        with rasterio.open(path) as src:
            src.read(1)
    return time.perf_counter() - start


def cube_grid(cube: Path) -> tuple[str, object, tuple[int, int]]:
    """The CRS (WKT), transform and shape of a built cube's grid."""
    import zarr
    from rasterio.transform import Affine

    group = zarr.open_group(cube, mode="r")
    attrs = group["spatial_ref"].attrs
    transform = Affine.from_gdal(*map(float, attrs["GeoTransform"].split()))
    return attrs["crs_wkt"], transform, (group["y"].shape[0], group["x"].shape[0])


def warp_floor_seconds(folder: Path, cube: Path) -> float:
    """Open every file and resample its band onto the cube's grid with rasterio alone
    (bilinear, NaN no data, as the build, on GDAL's default one thread): the read floor plus
    the resampling work that
    the build must do when the files lie on another grid."""
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.warp import reproject

    crs, transform, shape = cube_grid(cube)
    start = time.perf_counter()
    for path in sorted(folder.glob("*.tif")):
        with rasterio.open(path) as src:
            reproject(
                rasterio.band(src, 1),
                np.full(shape, np.nan, np.float32),
                src_nodata=np.nan,
                dst_transform=transform,
                dst_crs=crs,
                dst_nodata=np.nan,
                resampling=Resampling.bilinear,
            )
    return time.perf_counter() - start


def build_arguments(folder: Path, scenes: int, out: Path) -> list[str]:
    """The command line (after ``landslide-lit cube``) of a cube over all ``scenes``."""
    event = FIRST + (scenes // 2) * REPEAT - dt.timedelta(days=6)
    return [
        str(out),
        "--sar",
        str(folder / "*.tif"),
        "--orbit-state",
        "descending",
        "--event-start",
        f"{event:%Y-%m-%d}",
        "--event-end",
        f"{event + dt.timedelta(days=1):%Y-%m-%d}",
        "--before-days",
        str(scenes * 12 + 1),
        "--after-days",
        str(scenes * 12 + 1),
        "--overwrite",
    ]


def build_seconds(folder: Path, scenes: int, out: Path) -> float:
    from landslide_lit.event.command import main

    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # the paths it prints
        main(build_arguments(folder, scenes, out))
    return time.perf_counter() - start


def memory(folder: str, scenes: int, out: str) -> dict:
    """In a fresh process: peak RSS above the start of one build (after the imports)."""
    # imported before the start: their memory is not the build's
    import landslide_lit.event.build
    import landslide_lit.event.geotiff  # noqa: F401

    start = reset_peak()
    seconds = build_seconds(Path(folder), scenes, Path(out))
    return {"peak_above_start": peak_rss_bytes() - start, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--size", type=int, default=None, help="pixels a side (2048)")
    parser.add_argument("--scenes", type=int, default=None, help="acquisitions (20)")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--memory", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory:
        print(json.dumps(memory(args.memory[0], int(args.memory[1]), args.memory[2])))
        return
    size = args.size or (1024 if args.quick else 2048)
    scenes = args.scenes or (8 if args.quick else 20)
    repeats = args.repeats or (1 if args.quick else 3)
    work = WORK / "cube_build"
    rows, targets = [], []
    for layout, label in (("same", "same grid"), ("other", "other grid (EPSG:4326)")):
        folder = scene_files(work / f"{layout}-{size}-{scenes}", size, scenes, layout)
        out = work / f"{layout}.zarr"
        build_seconds(folder, scenes, out)  # warm-up: imports, file cache
        floors, builds, warps = [], [], []
        for _ in range(repeats):
            floors.append(floor_seconds(folder))
            if layout == "other":
                warps.append(warp_floor_seconds(folder, out))
            builds.append(build_seconds(folder, scenes, out))
        ratio = median(builds) / median(floors)
        goal = ratio <= 2
        rows.append(
            [
                f"build / floor, {label}",
                f"build {spread(builds)} s vs floor {spread(floors)} s",
                f"{ratio:.2f}x",
                "<= 2x",
                verdict(goal),
            ]
        )
        description = f"cube build / read+decode of the same GeoTIFFs, {label}"
        targets.append(target_line(5, description, ratio, "<=2"))
        if warps:  # information: where the floor is once the resampling is counted
            rows.append(
                [
                    f"build / read+resample floor, {label}",
                    f"build {spread(builds)} s vs floor {spread(warps)} s",
                    f"{median(builds) / median(warps):.2f}x",
                    "-",
                    "info",
                ]
            )
    # memory: a fresh process each, S and 2 S scenes on the same grid
    peaks = {}
    for count in (scenes // 2, scenes):
        folder = scene_files(work / f"same-{size}-{scenes}", size, scenes, "same")
        subset = work / f"same-{size}-{count}-of-{scenes}"
        if not subset.exists():
            subset.mkdir(parents=True)
            for path in sorted(folder.glob("*.tif"))[: 2 * count]:
                (subset / path.name).symlink_to(path)
        results = [
            run_json(["--memory", str(subset), str(count), str(work / "memory.zarr")])
            for _ in range(MEMORY_RUNS)
        ]
        peaks[count] = median([r["peak_above_start"] for r in results])
        mib = [r["peak_above_start"] / 2**20 for r in results]
        rows.append(
            [
                f"peak RSS above start, {count} scenes",
                f"{median([r['seconds'] for r in results]):.1f} s",
                f"{peaks[count] / 2**20:.0f} MiB ({', '.join(f'{m:.0f}' for m in mib)})",
                "-",
                "-",
            ]
        )
    small, large = (peaks[c] for c in (scenes // 2, scenes))
    growth = large / small
    rows.append(
        [
            "peak growth for 2x the scenes",
            "",
            f"{growth:.2f}x",
            "<= 1.1x",
            verdict(growth <= 1.1),
        ]
    )
    targets.append(target_line(5, "cube build peak memory, 2x the scenes / 1x", growth, "<=1.1"))
    for path in glob.glob(str(work / "*.zarr*")):
        shutil.rmtree(path, ignore_errors=True)
    print(
        header(
            "New-event cube builder: landslide-lit cube vs reading the GeoTIFFs",
            f"{scenes} acquisitions x VV/VH of {size} x {size} px float32 (tiled 512, "
            "DEFLATE), one file each; floor = rasterio reading every band once (other grid, "
            "information: and resampling it onto the cube's grid); build = "
            f"`landslide-lit cube` through its own code; {repeats} interleaved repeat(s) "
            "after a warm-up, medians.",
        )
    )
    print(table(["measure", "times", "value", "target", "verdict"], rows))
    print("\n".join(targets))


if __name__ == "__main__":
    sys.exit(main())
