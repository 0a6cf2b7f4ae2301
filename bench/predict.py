"""Whole-region predict: throughput against the bare model forward, and peak memory.

    python bench/predict.py                      # resnet18 U-Net, 1024x1024 and 4096x1024
    python bench/predict.py --encoder resnet50   # the published encoder
    python bench/predict.py --quick              # 512x512 and 2048x512

Throughput: ``trainer.predict`` with the ProbabilityMapWriter (statistics pass compositing
the region and keeping it on disk, window reads, standardisation, forward, blending, spill,
merge, netCDF + PNG) against the bare ``model(x)`` over as many windows of the same shape and
batch size, interleaved in one process after an untimed warm-up of each (medians). Beside
it, the floor of any map: the bare forward plus the work the forward cannot overlap, one
composite of the region (the published per-region statistics need all of it before the
first window) and compressing the map into its netCDF, each timed alone.

Memory: peak RSS of a fresh process running predict alone, above its RSS before, for two
regions of the same width, one 4x taller: it must not grow with the height (a band of rows
is held, so it grows with the width).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import lightning as L
from common import WORK, header, median, peak_rss_bytes, reset_peak, run_json, spread, table
from common import verdict as judged

TARGET = 0.9


def cube_root(size: tuple[int, int]) -> Path:
    """A data root with a synthetic Talakmau cube of ``size``, made once."""
    from landslide_lit.data.cube import existing_cube
    from landslide_lit.data.synthetic import write_synthetic_cube
    from landslide_lit.regions import get_region

    root = WORK / "predict" / f"{size[0]}x{size[1]}"
    if existing_cube(get_region("talakmau"), root, synthetic=True) is None:
        write_synthetic_cube("talakmau", root=root, size=size, seed=0)
    return root


def parts(root: Path, encoder: str, batch: int, overlap: int, workers: int = 0):
    from landslide_lit.data.datamodule import LandslideDataModule
    from landslide_lit.maps import ProbabilityMapWriter
    from landslide_lit.module import LandslideSegmenter

    dm = LandslideDataModule(
        root=str(root),
        synthetic=True,
        train_region="talakmau",
        test_region="talakmau",
        channels="sar_dem",
        cache=False,
        batch_size=batch,
        predict_overlap=overlap,
        num_workers=workers,
    )
    model = LandslideSegmenter(channel_names=list(dm.channel_names), encoder_name=encoder).eval()
    out = Path(tempfile.mkdtemp(dir=WORK))
    trainer = L.Trainer(
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        # the clock last: a batch's end includes the writer's work on it
        callbacks=[ProbabilityMapWriter(output_dir=str(out), formats=["netcdf"]), PhaseClock()],
    )
    return dm, model, trainer, out / "talakmau_landslide_probability.nc"


def predict_seconds(dm, model, trainer) -> float:
    clock = clock_of(trainer)
    clock.begin = start = time.perf_counter()
    dm.stats.clear()  # the statistics pass is part of the pipeline
    trainer.predict(model, datamodule=dm)
    clock.end = time.perf_counter()
    return clock.end - start


class PhaseClock(L.Callback):
    """Wall time of predict before its first batch (set-up, statistics pass), between
    batches (loading, standardising) and after its last (finishing the map)."""

    begin = end = 0.0

    def on_predict_start(self, trainer, pl_module) -> None:
        self.first, self.last, self.between = None, None, 0.0

    def on_predict_batch_start(self, *args) -> None:
        now = time.perf_counter()
        if self.first is None:
            self.first = now
        else:
            self.between += now - self.last

    def on_predict_batch_end(self, *args) -> None:
        self.last = time.perf_counter()

    def phases(self) -> dict[str, float]:
        after = self.end - self.last
        return {"before": self.first - self.begin, "between": self.between, "after": after}


def clock_of(trainer: L.Trainer) -> PhaseClock:
    return next(c for c in trainer.callbacks if isinstance(c, PhaseClock))


def forward_seconds(model, windows: int, batch: int, size: int, channels: int) -> float:
    import torch

    x = torch.randn(batch, channels, size, size)
    start = time.perf_counter()
    with torch.inference_mode():
        for first in range(0, windows, batch):
            model(x[: min(batch, windows - first)]).sigmoid()
    return time.perf_counter() - start


def composite_seconds(dm) -> float:
    """One composite of the whole region, band by band as the statistics pass reads it."""
    from landslide_lit.data.windows import BAND_ROWS

    windows = dm.windows(dm.test_region)
    start = time.perf_counter()
    for y0 in range(0, windows.plan.height, BAND_ROWS):
        windows.read_rows(y0, min(y0 + BAND_ROWS, windows.plan.height))
    return time.perf_counter() - start


def encode_seconds(map_path: Path) -> float:
    """The last map written again as compressed netCDF, with the writer's encoding."""
    import xarray as xr

    from landslide_lit.map_files import CHUNK, VARIABLE

    with xr.open_dataset(map_path) as written:
        probability = written[VARIABLE].load()
    encoding = {"zlib": True, "complevel": 4, "shuffle": True, "chunksizes": (CHUNK, CHUNK)}
    target = map_path.with_name("encode_floor.nc")
    start = time.perf_counter()
    probability.to_dataset().to_netcdf(target, encoding={VARIABLE: encoding})
    seconds = time.perf_counter() - start
    target.unlink()
    return seconds


def throughput(args) -> dict:
    """Interleaved predict / bare forward on the larger region."""
    size = args.sizes[-1]
    dm, model, trainer, map_path = parts(
        cube_root(size), args.encoder, args.batch, args.overlap, args.workers
    )
    dm.setup("predict")
    windows = len(dm.datasets["predict"][0])
    shape = (windows, args.batch, dm.chip_size, len(dm.channel_names))
    # Untimed warm-up of both: imports (matplotlib, netCDF), the allocator, the worker.
    predict_seconds(dm, model, trainer)
    forward_seconds(model, *shape)
    pipeline, bare, composite, encode, phases = [], [], [], [], []
    for _ in range(args.repeats):
        pipeline.append(predict_seconds(dm, model, trainer))
        phases.append(clock_of(trainer).phases())
        bare.append(forward_seconds(model, *shape))
        composite.append(composite_seconds(dm))
        encode.append(encode_seconds(map_path))
    return {
        "windows": windows,
        "pipeline": pipeline,
        "bare": bare,
        "composite": composite,
        "encode": encode,
        "phases": phases,
    }


def memory(args, size: tuple[int, int]) -> dict:
    """In a fresh process: peak RSS of one predict above the RSS before it."""
    dm, model, trainer, _ = parts(cube_root(size), args.encoder, args.batch, args.overlap)
    before = reset_peak()
    seconds = predict_seconds(dm, model, trainer)
    return {"peak_mib": (peak_rss_bytes() - before) / 2**20, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", default="resnet18", help="smp encoder (resnet50: published)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--overlap", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="loader workers of the throughput run (reads "
        "bands beside the forward); the memory runs use none, one process holds everything",
    )
    parser.add_argument("--quick", action="store_true", help="512x512 and 2048x512 regions")
    parser.add_argument("--child", choices=("memory",), help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    # Same width, 4x the height: the map is read and written in bands of rows, so memory
    # depends on the width (one band) and must not grow with the height.
    args.sizes = [(512, 512), (2048, 512)] if args.quick else [(1024, 1024), (4096, 1024)]
    WORK.mkdir(parents=True, exist_ok=True)
    if args.child == "memory":
        print(json.dumps(memory(args, tuple(args.size))))
        return
    for size in args.sizes:
        cube_root(size)
    common = ["--encoder", args.encoder, "--batch", str(args.batch)]
    common += ["--overlap", str(args.overlap)]
    peaks = {
        s: run_json([*common, "--child", "memory", "--size", *map(str, s)]) for s in args.sizes
    }
    result = throughput(args)
    ratio = median(result["bare"]) / median(result["pipeline"])
    floor = median(result["bare"]) + median(result["composite"]) + median(result["encode"])
    floor_ratio = floor / median(result["pipeline"])
    small, large = (peaks[s]["peak_mib"] for s in args.sizes)
    area = (args.sizes[1][0] * args.sizes[1][1]) / (args.sizes[0][0] * args.sizes[0][1])
    rows = [
        [
            f"throughput, {result['windows']} windows of {args.sizes[-1][0]}x{args.sizes[-1][1]}",
            f"predict {spread(result['pipeline'])} s vs forward {spread(result['bare'])} s",
            f"{ratio:.3f}",
            f">= {TARGET}",
            judged(ratio >= TARGET),
        ],
        [
            "throughput against the floor: forward + one composite + netCDF encoding",
            f"forward {median(result['bare']):.1f} + composite {spread(result['composite'])} + "
            f"encoding {spread(result['encode'])} = {floor:.1f} s",
            f"{floor_ratio:.3f}",
            f">= {TARGET}",
            judged(floor_ratio >= TARGET),
        ],
        [
            "predict's phases: before the first batch (set-up, statistics pass); between "
            "batches (loading, standardising); after the last (finishing the map)",
            "; ".join(
                f"{name} {spread([p[name] for p in result['phases']])} s"
                for name in ("before", "between", "after")
            ),
            "-",
            "(information)",
            "",
        ],
        *[
            [
                f"peak RSS above start, {s[0]}x{s[1]}",
                f"{peaks[s]['seconds']:.1f} s",
                f"{peaks[s]['peak_mib']:.0f} MiB",
                "-",
                "-",
            ]
            for s in args.sizes
        ],
        [
            f"peak growth for {area:.0f}x the height, same width",
            "",
            f"{large / max(small, 1):.2f}x",
            "< 1.5x",
            judged(large < 1.5 * max(small, 1)),
        ],
    ]
    print(
        header(
            "Whole-region predict",
            f"U-Net {args.encoder}, batch {args.batch}, overlap {args.overlap}, 7 channels, "
            f"{args.workers} loader worker(s) for throughput, none for memory, "
            "CPU fp32; throughput = bare forward time / predict time over the same windows.",
        )
    )
    print(table(["measure", "times", "value", "target", "verdict"], rows))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
