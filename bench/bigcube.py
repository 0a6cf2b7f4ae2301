"""A large cube in the real schema, written fast, for the cold-start benchmark.

``landslide_lit.data.synthetic`` simulates the physics and takes minutes at 4096 x 4096;
the cold start only needs a cube that is read, decompressed and composited like a real
one. This writer keeps what shapes that work and fakes the content cheaply:

- the real schema: Hokkaido's 26 timesteps with its ``sat:orbit_state`` sequence and
  24 ``timepair`` labels, variables ``vv``, ``vh`` (timestep, y, x), ``dem``,
  ``dem_slope_radians``, ``dem_aspect``, ``dem_curvature``, ``landslides`` (y, x) and the
  interferometric ``topophase.cor_1``, ``phsig.cor``, ``los.rdr_0``, ``los.rdr_1``
  (timepair, y, x), with the coordinates and attributes of a synthetic Hokkaido cube;
- the storage of the synthetic cubes (the real ones are Zarr v2 from zarr 2.x, whose
  default compressor this is): Zarr v2, consolidated metadata, chunks of one timestep by
  512 x 512, Blosc LZ4 level 5 with byte shuffle, float32, NaN fill;
- contents that compress like SAR: linear power from a smooth log-normal field times
  gamma speckle (ENL 4.4) fresh per timestep, so the arrays hardly compress, as real
  backscatter does not; a little NaN (layover); about 1 % landslide pixels in blobs.

The interferometric arrays are declared but no chunk is stored (they read as NaN): no
composite reads them, and writing 6 GB of them would only slow the benchmark down.

    python bench/bigcube.py --size 4096 [--out build/bench/big]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numcodecs
import numpy as np
import xarray as xr
import zarr

from landslide_lit.data.synthetic import make_synthetic_cube

CHUNK = 512
VERSION = 1
COMPRESSOR = numcodecs.Blosc("lz4", 5, numcodecs.Blosc.SHUFFLE)


def _smooth(rng: np.random.Generator, shape: tuple[int, int], cell: int) -> np.ndarray:
    """A blocky-smooth float32 field: coarse noise repeated over ``cell`` pixels."""
    coarse = rng.standard_normal((shape[0] // cell + 1, shape[1] // cell + 1), np.float32)
    return np.repeat(np.repeat(coarse, cell, 0), cell, 1)[: shape[0], : shape[1]]


def _landslides(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    out = np.zeros(shape, np.float32)
    n = max(1, shape[0] * shape[1] // 40_000)
    rows = rng.integers(0, shape[0], n)
    cols = rng.integers(0, shape[1], n)
    sizes = rng.integers(4, 20, n)
    for r, c, s in zip(rows, cols, sizes, strict=True):
        out[r : r + s, c : c + s // 2 + 2] = 1.0
    return out


def write_big_cube(path: Path, size: int = 4096, seed: int = 0) -> Path:
    """Write the cube at ``path`` unless one of this size, seed and version is there."""
    marker = {"bench_cube_version": VERSION, "size": size, "seed": seed}
    stamp = path / "bench_cube.json"
    if stamp.exists() and json.loads(stamp.read_text()) == marker:
        return path
    start = time.perf_counter()
    rng = np.random.default_rng(seed)
    shape = (size, size)
    template = make_synthetic_cube("hokkaido", size=(16, 16), seed=seed)
    y = template.y.values[0] - 10.0 * np.arange(size)
    x = template.x.values[0] + 10.0 * np.arange(size)
    slope = np.abs(_smooth(rng, shape, 32)) * 0.4
    static = {
        "dem": 300 + 200 * _smooth(rng, shape, 64),
        "dem_slope_radians": np.clip(slope, 0, 1.5),
        "dem_aspect": (180 + 100 * _smooth(rng, shape, 16)) % 360,
        "dem_curvature": _smooth(rng, shape, 8),
        "landslides": _landslides(rng, shape),
    }
    skeleton = xr.Dataset(
        {k: (("y", "x"), v.astype(np.float32)) for k, v in static.items()},
        coords={
            "timestep": template.timestep,
            "sat:orbit_state": template["sat:orbit_state"],
            "timepair": template.timepair,
            "y": y,
            "x": x,
            "spatial_ref": template.spatial_ref,
        },
        attrs={**template.attrs, "title": f"landslide-lit benchmark cube {size} x {size}"},
    )
    for name in static:
        skeleton[name].attrs.update(template[name].attrs)
    encoding = {k: {"chunks": (CHUNK, CHUNK), "compressors": (COMPRESSOR,)} for k in static}
    path.parent.mkdir(parents=True, exist_ok=True)
    skeleton.to_zarr(path, mode="w", zarr_format=2, consolidated=False, encoding=encoding)
    del skeleton, static
    group = zarr.open_group(path, mode="r+", zarr_format=2)
    steps, pairs = template.sizes["timestep"], template.sizes["timepair"]
    arrays = {}
    for name, dims, n in [
        ("vv", "timestep", steps),
        ("vh", "timestep", steps),
        ("topophase.cor_1", "timepair", pairs),
        ("phsig.cor", "timepair", pairs),
        ("los.rdr_0", "timepair", pairs),
        ("los.rdr_1", "timepair", pairs),
    ]:
        arrays[name] = group.create_array(
            name,
            shape=(n, size, size),
            chunks=(1, CHUNK, CHUNK),
            dtype="float32",
            fill_value=np.nan,
            compressors=COMPRESSOR,
            attributes={"_ARRAY_DIMENSIONS": [dims, "y", "x"], **template[name].attrs},
        )
    base = {"vv": -0.73 * np.log(10), "vh": -1.32 * np.log(10)}
    texture = 0.3 * _smooth(rng, shape, 4)
    layover = _smooth(rng, shape, 8) > 2.8  # ~0.3 % of pixels without data
    for t in range(steps):
        for pol in ("vv", "vh"):
            plane = rng.standard_gamma(4.4, shape, dtype=np.float32)
            plane *= np.exp(base[pol] + texture) / 4.4
            plane[layover] = np.nan
            arrays[pol][t] = plane
    zarr.consolidate_metadata(path, zarr_format=2)
    stamp.write_text(json.dumps(marker))
    print(f"wrote {path} in {time.perf_counter() - start:.0f} s", flush=True)
    return path


def main() -> None:
    from common import WORK

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    write_big_cube(args.out or WORK / f"big/cube{args.size}.zarr", args.size)


if __name__ == "__main__":
    main()
