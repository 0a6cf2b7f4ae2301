"""Cold start: a cube on disk -> chips ready to train, against the I/O floor.

For each cube, three measurements, each in a fresh process (so that peak memory is that
of the measurement alone), interleaved floor, cold, warm, floor, cold, warm, ...:

- **floor**: read and decompress, with zarr directly, only the arrays the chips need (the
  before/after timesteps of vv and vh picked by the package's own window selection, the
  terrain channels and the labels), and keep them in memory;
- **cold**: empty chip cache, then ``LandslideDataModule.chips(train region)`` and
  ``setup("fit")``: open, composites, statistics, chips, saving the cache entry, splits;
- **warm**: the same with the cache entry in place.

Peak memory is the growth of the process's peak resident memory over its resident
memory just before the measured part (imports and the data module's construction are
outside it). Targets: cold <= 2x the floor's time, cold peak <= 2x the bytes of the
arrays read, warm >= 10x faster than cold. The cube is in the OS page cache for all three
(it was just written or read): the floor is decompression, not disk.

    python bench/cold_start.py                 # 4096 x 4096 cube and the default synthetic cubes
    python bench/cold_start.py --quick         # 2048 x 2048 and synthetic Hokkaido, 1 repeat
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from common import (
    WORK,
    header,
    median,
    peak_rss_bytes,
    reset_peak,
    run_json,
    spread,
    synthetic_root,
    table,
    verdict,
)

CHANNELS = "sar_dem"


def _region(cube: str):
    from landslide_lit.regions import Region, get_region

    if cube in ("hokkaido", "talakmau"):
        return get_region(cube)
    base = get_region("hokkaido")
    return Region(
        name=Path(cube).stem,
        cube=str(Path(cube).resolve()),
        event_start=base.event_start,
        event_end=base.event_end,
        orbit=base.orbit,
    )


def _setting(cube: str) -> tuple[object, str, bool]:
    """(region, data root, synthetic) of a cube argument."""
    if cube in ("hokkaido", "talakmau"):
        return _region(cube), str(WORK / "data"), True
    return _region(cube), str(Path(cube).resolve().parent), False


def floor(cube: str) -> dict:
    """Read and decompress only what the chips need, with zarr."""
    import zarr

    from landslide_lit.data.acquisitions import select_acquisitions
    from landslide_lit.data.composite import CompositeSettings, resolve_channels
    from landslide_lit.data.cube import open_cube, region_cube_path

    region, root, synthetic = _setting(cube)
    path = region_cube_path(region, root, synthetic)
    acquisitions = select_acquisitions(open_cube(path, region.names), region, CompositeSettings())
    names = region.names
    plan = []
    terrain = {"dem_aspect": names.aspect, "dem_slope_radians": names.slope}
    terrain["dem_curvature"] = names.curvature
    for channel in resolve_channels(CHANNELS):
        if channel in terrain:
            plan.append((terrain[channel], None))
        else:
            var, period = channel.rsplit("_", 1)
            plan += [(getattr(names, var), t) for t in getattr(acquisitions, period)]
    plan.append((names.landslides, None))
    group = zarr.open_group(str(path), mode="r")
    base = reset_peak()
    start, cpu = time.perf_counter(), time.process_time()
    kept = [group[var][...] if t is None else group[var][t] for var, t in plan]
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    return {
        "seconds": seconds,
        "cpu": cpu,
        "peak": peak_rss_bytes() - base,
        "bytes": sum(a.nbytes for a in kept),
        "arrays": len(kept),
    }


def chips(cube: str, warm: bool) -> dict:
    """Chips of the train region ready for ``fit``: from the cache (warm) or built (cold)."""
    from landslide_lit.data.cache import ChipCache
    from landslide_lit.data.datamodule import LandslideDataModule

    region, root, synthetic = _setting(cube)
    if not warm:
        ChipCache.under(root).clear()
    dm = LandslideDataModule(
        train_region=region, test_region=region, root=root, synthetic=synthetic, channels=CHANNELS
    )
    _import_lazily_loaded_modules(region, root, synthetic)
    base = reset_peak()
    start, cpu = time.perf_counter(), time.process_time()
    n = len(dm.chips(dm.train_region))
    dm.setup("fit")
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    return {"seconds": seconds, "cpu": cpu, "peak": peak_rss_bytes() - base, "chips": n}


def _import_lazily_loaded_modules(region, root: str, synthetic: bool) -> None:
    """Import what xarray imports on first use (its zarr backend, dask for duck arrays).

    A process pays these imports once whatever it does, and the floor's imports are
    outside its measurement too; opening a cube reads only its consolidated metadata.
    """
    import numpy as np
    import xarray as xr

    from landslide_lit.data.cube import open_cube, region_cube_path

    open_cube(region_cube_path(region, root, synthetic), region.names).close()
    xr.Dataset.from_dict(xr.Dataset({"a": ("x", np.zeros(1))}).to_dict(data="array"))


def measure(cube: str, repeats: int) -> dict[str, list[dict]]:
    results: dict[str, list[dict]] = {"floor": [], "cold": [], "warm": []}
    run_json(["--one", "cold", cube])  # warms the page cache, makes sure it works
    for _ in range(repeats):
        for kind in results:
            results[kind].append(run_json(["--one", kind, cube]))
    return results


def report(cubes: list[tuple[str, str]], repeats: int) -> str:
    rows = []
    for label, cube in cubes:
        r = measure(cube, repeats)
        f = [x["seconds"] for x in r["floor"]]
        c = [x["seconds"] for x in r["cold"]]
        w = [x["seconds"] for x in r["warm"]]
        needed = r["floor"][0]["bytes"]
        cold_peak = median([x["peak"] for x in r["cold"]])
        warm_peak = median([x["peak"] for x in r["warm"]])
        time_ratio = median([b / a for a, b in zip(f, c, strict=True)])
        speedup = median([a / b for a, b in zip(c, w, strict=True)])
        mem_ratio = cold_peak / needed
        name = f"{label} ({r['cold'][0]['chips']} chips)"
        rows += [
            [name, "cold / floor time", f"{time_ratio:.2f}x", "<= 2x", verdict(time_ratio <= 2)],
            [
                name,
                "cold peak memory / bytes read",
                f"{mem_ratio:.2f}x ({cold_peak / 2**20:.0f} / {needed / 2**20:.0f} MiB)",
                "<= 2x",
                verdict(mem_ratio <= 2),
            ],
            [name, "cold / warm time", f"{speedup:.1f}x", ">= 10x", verdict(speedup >= 10)],
        ]
        rows.append(
            [
                name,
                "seconds: floor, cold, warm (median (min-max, n))",
                f"{spread(f)}; {spread(c)}; {spread(w)}",
                "",
                f"warm peak {warm_peak / 2**20:.0f} MiB",
            ]
        )
        cpu = [
            median([x.get("cpu", float("nan")) for x in r[k]]) for k in ("floor", "cold", "warm")
        ]
        rows.append(
            [
                name,
                "CPU seconds, all threads: floor, cold, warm (medians)",
                "; ".join(f"{x:.3g}" for x in cpu),
                "",
                "",
            ]
        )
    return table(["cube", "measure", "measured", "target", ""], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2048 cube, Hokkaido, 1 repeat")
    parser.add_argument("--size", type=int, default=None, help="side of the large cube")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--one", nargs=2, metavar=("KIND", "CUBE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        kind, cube = args.one
        result = floor(cube) if kind == "floor" else chips(cube, warm=kind == "warm")
        print(json.dumps(result))
        return
    from bigcube import write_big_cube

    size = args.size or (2048 if args.quick else 4096)
    repeats = args.repeats or (1 if args.quick else 3)
    big = write_big_cube(WORK / f"big/cube{size}.zarr", size)
    regions = ("hokkaido",) if args.quick else ("hokkaido", "talakmau")
    synthetic_root(regions)
    cubes = [(f"{size} x {size} x 26 timesteps", str(big))]
    cubes += [(f"synthetic {r}", r) for r in regions]
    print(
        header(
            "Cold start: cube on disk -> chips ready to train",
            f"Channels `{CHANNELS}` (7), default composite (4 before, 1 after, descending), "
            "positive chips of 128 px. Floor = zarr read + decompress of the arrays needed. "
            f"{repeats} interleaved repeats, each measurement in its own process.",
        )
    )
    print(report(cubes, repeats))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
