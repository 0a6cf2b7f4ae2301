"""Whole-region predict: against the one-pass floor, CPU inference options, accuracy, memory.

    python bench/predict.py                      # resnet18 U-Net, 1024x1024 and 4096x1024
    python bench/predict.py --encoder resnet50   # the published encoder
    python bench/predict.py --quick              # 512x512 and 2048x512
    python bench/predict.py --checkpoint runs/landslide/version_0/checkpoints/best-epoch05.ckpt
                                                 # + accuracy of a trained model (1024 cube)

One-pass floor (issue 15, target 2): the bare ``model(x)`` in float32 over the
non-overlapping chip-size (128) windows that tile the region exactly once, batch 16. Against
it, interleaved in one process after an untimed warm-up: ``trainer.predict`` with the
ProbabilityMapWriter (statistics pass compositing the region and keeping it on disk, window
reads, standardisation, forward, blending, netCDF) with the default window and inference
options, with 128-pixel windows, and with 128-pixel windows in float32 without
channels-last (the pipeline before issue 15). Ratios are floor time / predict time.

CPU inference options (target 3): whole predicts at the default window in float32 or
bf16 autocast, contiguous or channels-last, one torch thread or all cores; square
kilometres mapped per minute (10 m pixels) and the map's largest difference from
float32 contiguous. ``--compile`` adds ``torch.compile`` of the bare forward: compile
time and steady state.

Accuracy (``--checkpoint``): the trained model's maps of the synthetic Talakmau cube
(1024 x 1024) with 128-pixel windows in float32 (as before) and with the defaults: region
AUPRC (exact, valid pixels) and the map difference.

Memory (target 4): peak RSS of a fresh process running predict alone (every default
output: netCDF, GeoTIFF, quicklook, mask and polygons at threshold 0.5), above its RSS
before, for regions 1x, 2x and 4x as wide and as tall (1344 px sides, --quick
too: the same 512-pixel windows in all); and of one window's forward (ResNet-50, float32 and
bf16) at 512 and 1024 pixels.

Each target prints a line ``TARGET <id> <description> ratio=<x> goal=<op><y> PASS|MISS``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import weakref
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import lightning as L
from common import WORK, header, median, peak_rss_bytes, reset_peak, run_json, spread, table
from common import verdict as judged

CHIP = 128
KM2_PER_PIXEL = 1e-4  # 10 m pixels
OPTIONS = {  # name: (predict_precision, predict_channels_last)
    "float32": ("32-true", False),
    "float32 channels-last": ("32-true", True),
    "bf16": ("bf16-mixed", False),
    "bf16 channels-last": ("bf16-mixed", True),
}

MEMORY_SEED = 0
"""Seed of the memory runs' untrained weights (their map: about 0.6 % landslide pixels in
some 5 000 landslides per 1344 x 1344 px)."""
ALL_OUTPUTS = {"formats": ["netcdf", "geotiff"], "quicklook": True, "threshold": 0.5}
"""The memory runs' map outputs: a default predict's (a threshold: its mask and polygons)."""


def target(ident: str, description: str, ratio: float, op: str, goal: float) -> str:
    """The line bench/run_all.py collects."""
    ok = ratio >= goal if op == ">=" else ratio <= goal
    return f"TARGET {ident} {description} ratio={ratio:.3f} goal={op}{goal} {judged(ok)}"


def cube_root(size: tuple[int, int]) -> Path:
    """A data root with a synthetic Talakmau cube of ``size``, made once."""
    from landslide_lit.data.cube import existing_cube
    from landslide_lit.data.synthetic import write_synthetic_cube
    from landslide_lit.regions import get_region

    root = WORK / "predict" / f"{size[0]}x{size[1]}"
    if existing_cube(get_region("talakmau"), root, synthetic=True) is None:
        write_synthetic_cube("talakmau", root=root, size=size, seed=0)
    return root


def datamodule(root: Path, batch: int, workers: int = 0, **data):
    from landslide_lit.data.datamodule import LandslideDataModule

    settings = {"channels": "sar_dem", "batch_size": batch, "num_workers": workers, **data}
    return LandslideDataModule(
        root=str(root),
        synthetic=True,
        train_region="talakmau",
        test_region="talakmau",
        cache=False,
        **settings,
    )


def untrained(args, size: tuple[int, int]):
    """The cube of ``size``, its data module and an untrained model in eval mode."""
    from landslide_lit.module import LandslideSegmenter

    root = cube_root(size)
    dm = datamodule(root, args.batch)
    model = LandslideSegmenter(channel_names=list(dm.channel_names), encoder_name=args.encoder)
    return root, dm, model.eval()


def trainer(out: Path, **maps) -> L.Trainer:
    """A predict trainer; ``maps``: the writer's options (default: the netCDF map alone)."""
    from landslide_lit.maps import ProbabilityMapWriter

    options = {"formats": ["netcdf"], "quicklook": False, "threshold": "none", **maps}
    writer = ProbabilityMapWriter(output_dir=str(out), **options)
    return L.Trainer(
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[writer],
    )


class Predict:
    """One predict setting: its data module, trainer and output folder, run again and again."""

    def __init__(
        self, model, root, args, window, precision, channels_last, threads=None, maps=None, **data
    ):
        self.model, self.threads = model, threads
        self.options = (precision, channels_last)
        self.dm = datamodule(
            root,
            args.batch,
            args.workers,
            predict_window=window,
            **({} if args.overlap is None else {"predict_overlap": args.overlap}),
            **data,
        )
        self.out = Path(tempfile.mkdtemp(dir=WORK))
        weakref.finalize(self, shutil.rmtree, self.out, True)  # maps are timed, not kept
        self.trainer = trainer(self.out, **(maps or {}))

    def __call__(self) -> float:
        import torch

        threads = torch.get_num_threads()
        torch.set_num_threads(self.threads or threads)
        self.model.hparams.predict_precision, self.model.hparams.predict_channels_last = (
            self.options
        )
        self.dm.stats.clear()  # the statistics pass is part of the pipeline
        start = time.perf_counter()
        self.trainer.predict(self.model, datamodule=self.dm)
        seconds = time.perf_counter() - start
        torch.set_num_threads(threads)
        return seconds

    def map(self):
        import xarray as xr

        with xr.open_dataset(self.out / "talakmau_landslide_probability.nc") as written:
            return written["landslide_probability"].values

    @property
    def windows(self):
        return self.dm.datasets["predict"][0]


def floor_seconds(model, height: int, width: int, batch: int, channels: int) -> float:
    """The bare float32 forward over the chip-size windows tiling the region once."""
    import torch

    tiles = (height // CHIP) * (width // CHIP)
    x = torch.randn(batch, channels, CHIP, CHIP)
    start = time.perf_counter()
    with torch.inference_mode():
        for first in range(0, tiles, batch):
            model(x[: min(batch, tiles - first)]).sigmoid()
    return time.perf_counter() - start


def interleaved(runs: dict, repeats: int) -> dict[str, list[float]]:
    """Every run once untimed (imports, allocator, worker), then in turn ``repeats`` times."""
    for run in runs.values():
        run()
    times = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            times[name].append(run())
    return times


def throughput(args) -> tuple[list[list[str]], list[str]]:
    """Target 2: predict against the one-pass floor, on the larger region."""
    size = args.sizes[-1]
    root, dm, model = untrained(args, size)
    channels = len(dm.channel_names)
    default = Predict(model, root, args, dm.predict_window, "auto", True)
    runs = {
        "floor": lambda: floor_seconds(model.model, *size, args.batch, channels),
        "default": default,
        "float32": Predict(model, root, args, dm.predict_window, "32-true", True),
        "128": Predict(model, root, args, CHIP, "auto", True),
        "128 float32": Predict(model, root, args, CHIP, "32-true", False),
    }
    t = interleaved(runs, args.repeats)
    floor = median(t["floor"])
    plan = default.windows.plan
    region = f"{size[0]}x{size[1]}"
    rows = [
        [
            f"one-pass floor: float32 forward over the {(size[0] // CHIP) * (size[1] // CHIP)} "
            f"tiles of {CHIP} px of {region}",
            f"{spread(t['floor'])} s",
            "1",
            "",
            "",
        ],
        [
            f"predict, default ({len(plan)} windows of {plan.shape[0]}x{plan.shape[1]}, overlap "
            f"{plan.overlap}, "
            f"{precision_used(model)}, channels-last) / floor",
            f"{spread(t['default'])} s",
            f"{floor / median(t['default']):.3f}",
            ">= 1.0",
            judged(floor / median(t["default"]) >= 1.0),
        ],
        [
            "predict, default window, float32 channels-last (a CPU without native bf16) / floor",
            f"{spread(t['float32'])} s",
            f"{floor / median(t['float32']):.3f}",
            "(information)",
            "",
        ],
        [
            f"predict, {len(runs['128'].windows)} windows of 128 (default inference options) "
            "/ floor",
            f"{spread(t['128'])} s",
            f"{floor / median(t['128']):.3f}",
            "(information)",
            "",
        ],
        [
            "predict, windows of 128, float32, contiguous (before issue 15) / floor",
            f"{spread(t['128 float32'])} s",
            f"{floor / median(t['128 float32']):.3f}",
            "(information)",
            "",
        ],
    ]
    targets = [
        target(
            "2",
            "whole-region predict (default window) / one-pass floor",
            floor / median(t["default"]),
            ">=",
            1.0,
        ),
    ]
    return rows, targets


def precision_used(model) -> str:
    """What ``predict_precision: auto`` runs here."""
    from landslide_lit.module import native_cpu_bf16

    return "bf16 (native on this CPU)" if native_cpu_bf16() else "float32 (no native bf16)"


def cpu_options(args) -> tuple[list[list[str]], list[str]]:
    """Target 3: the inference options at the default window, whole predicts, interleaved."""
    import numpy as np
    import torch

    size = args.sizes[-1]
    root, dm, model = untrained(args, size)
    window = dm.predict_window
    runs = {name: Predict(model, root, args, window, *o) for name, o in OPTIONS.items()}
    cores = os.cpu_count() or 1
    runs["default (auto, channels-last)"] = Predict(model, root, args, window, "auto", True)
    if cores > 1:
        runs[f"default, {cores} threads"] = Predict(model, root, args, window, "auto", True, cores)
    t = interleaved(runs, args.repeats)
    km2 = size[0] * size[1] * KM2_PER_PIXEL
    reference = runs["float32"].map()
    rows = []
    for name, run in runs.items():
        difference = np.nanmax(np.abs(run.map() - reference))
        rows.append(
            [
                name,
                f"{spread(t[name])} s",
                f"{km2 / median(t[name]) * 60:.1f} km²/min",
                f"{median(t['float32']) / median(t[name]):.2f}x",
                f"{difference:.2g}",
            ]
        )
    if args.compile:
        rows.append(compiled(model, dm, runs["default (auto, channels-last)"]))
    speedup = median(t["float32"]) / median(t["default (auto, channels-last)"])
    targets = [
        target(
            "3",
            f"CPU predict, default options / float32 contiguous "
            f"({km2 / median(t['default (auto, channels-last)']) * 60:.1f} km²/min, "
            f"{torch.get_num_threads()} thread)",
            speedup,
            ">=",
            1.0,
        )
    ]
    return rows, targets


def compiled(model, dm, default) -> list[str]:
    """torch.compile of the bare forward at the default window: compile time, steady state."""
    import torch

    h, w = default.windows.plan.shape
    x = torch.randn(1, len(dm.channel_names), h, w).contiguous(memory_format=torch.channels_last)
    network = model.model.to(memory_format=torch.channels_last)

    def forward(net) -> float:
        start = time.perf_counter()
        with torch.inference_mode(), model.predict_autocast():
            net(x)
        return time.perf_counter() - start

    fast = torch.compile(network)
    first = forward(fast)
    steady = median([forward(fast) for _ in range(3)])
    eager = median([forward(network) for _ in range(3)])
    return [
        f"torch.compile, one {h}x{w} window (bare forward)",
        f"compile + first {first:.1f} s; then {steady:.3f} s vs eager {eager:.3f} s",
        f"{eager / steady:.2f}x steady",
        f"pays off after {first / (eager - steady):.0f} windows" if steady < eager else "never",
        "",
    ]


def accuracy(args) -> tuple[list[list[str]], list[str]]:
    """The trained model's map with 128-pixel float32 windows (as before) and the defaults."""
    import numpy as np
    import torch

    from landslide_lit.module import LandslideSegmenter
    from landslide_lit.precision import average_precision

    checkpoint = torch.load(args.checkpoint, map_location="cpu", weights_only=False)
    data = checkpoint["datamodule_hyper_parameters"]
    model = LandslideSegmenter.load_from_checkpoint(args.checkpoint, map_location="cpu").eval()
    root = cube_root((1024, 1024))
    from landslide_lit.data.composite import CompositeSettings

    settings = {"channels": data["channels"], "composite": CompositeSettings(**data["composite"])}
    maps, labels = {}, None
    default_window = datamodule(root, args.batch).predict_window
    for name, window, precision, channels_last in (
        ("128 float32", CHIP, "32-true", False),
        ("default", default_window, "auto", True),
    ):
        run = Predict(model, root, args, window, precision, channels_last, **settings)
        run()
        maps[name] = run.map()
        if labels is None:
            labels = run.windows.read_rows(0, run.windows.plan.height)[1].astype(bool)
    valid = np.isfinite(maps["128 float32"])
    auprc = {k: average_precision(m[valid], labels[valid]) for k, m in maps.items()}
    diff = np.abs(maps["default"] - maps["128 float32"])[valid]
    gain = auprc["default"] - auprc["128 float32"]
    rows = [[f"region AUPRC, {name}", f"{auprc[name]:.4f}"] for name in maps] + [
        [
            "map difference, default - 128 float32: max / mean / 99th percentile",
            f"{diff.max():.3f} / {diff.mean():.4f} / {np.quantile(diff, 0.99):.4f}",
        ]
    ]
    targets = [
        target(
            "2-accuracy",
            "region AUPRC (default window) - AUPRC (128-pixel windows), trained model",
            gain,
            ">=",
            -0.01,
        )
    ]
    return rows, targets


def memory(args, size: tuple[int, int]) -> dict:
    """In a fresh process: peak RSS of one predict above the RSS before it."""
    import torch

    # The same weights in every process: the mask and polygons (whose memory follows the
    # map: from 11 to 107 000 landslides between unseeded models) are then one workload.
    torch.manual_seed(MEMORY_SEED)
    root, dm, model = untrained(args, size)
    run = Predict(model, root, args, dm.predict_window, "auto", True, maps=ALL_OUTPUTS)
    before = reset_peak()
    seconds = run()
    summary = json.loads((run.out / "talakmau_landslide_probability.json").read_text())
    return {
        "peak_mib": (peak_rss_bytes() - before) / 2**20,
        "seconds": seconds,
        "landslides": summary.get("landslides", 0),
    }


def window_memory(encoder: str, side: int, bf16: bool) -> dict:
    """In a fresh process: peak RSS of one window's forward above the RSS before it."""
    import segmentation_models_pytorch as smp
    import torch

    network = smp.create_model(
        "Unet", encoder_name=encoder, encoder_weights=None, in_channels=7, classes=1
    ).eval()
    network = network.to(memory_format=torch.channels_last)
    x = torch.randn(1, 7, side, side).contiguous(memory_format=torch.channels_last)
    before = reset_peak()
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        network(x)
    return {"peak_mib": (peak_rss_bytes() - before) / 2**20}


def memory_sizes(args) -> dict[str, list[tuple[int, int]]]:
    """Regions 1x, 2x and 4x as wide and as tall. Their sides (1344 = 3 x 448 px) give every
    region the same 512 x 512 windows (the plan picks the smallest side that covers an axis,
    and a smaller window would need less memory for its forward)."""
    side = 1344  # --quick too: no smaller side keeps 512-pixel windows at 1x, 2x and 4x
    return {
        "wide": [(side, side * k) for k in (1, 2, 4)],
        "tall": [(side * k, side) for k in (1, 2, 4)],
    }


def memory_rows(args, common: list[str]) -> tuple[list[list[str]], list[str]]:
    """Peak RSS of whole predicts (every default output) for regions growing either way."""
    sizes = memory_sizes(args)
    peaks = {
        s: run_json([*common, "--child", "memory", "--size", *map(str, s)])
        for s in dict.fromkeys(s for way in sizes.values() for s in way)
    }
    rows = [
        [
            f"predict peak RSS above start, {s[0]}x{s[1]} ({peaks[s]['landslides']} landslides)",
            f"{peaks[s]['seconds']:.1f} s",
            f"{peaks[s]['peak_mib']:.0f} MiB",
            "-",
            "-",
        ]
        for s in peaks
    ]
    targets = []
    for way, (one, _, four) in sizes.items():
        ratio = peaks[four]["peak_mib"] / max(peaks[one]["peak_mib"], 1)
        rows.append(
            [f"peak for 4x as {way} / 1x", "", f"{ratio:.2f}x", "<= 1.10", judged(ratio <= 1.10)]
        )
        targets.append(target("4", f"predict peak memory, 4x as {way} / 1x", ratio, "<=", 1.10))
    for side in (512, 1024):
        for bf16 in (False, True):
            extra = ["--child", "window", "--size", str(side), str(int(bf16))]
            peak = run_json(["--encoder", "resnet50", *extra])["peak_mib"]
            rows.append(
                [
                    f"one {side}x{side} window, ResNet-50 U-Net, {'bf16' if bf16 else 'float32'}, "
                    "channels-last: peak RSS above start",
                    "",
                    f"{peak:.0f} MiB",
                    "-",
                    "-",
                ]
            )
    return rows, targets


def others(args) -> list[str]:
    """Targets 2 and 3 (and the accuracy with --checkpoint): their tables; their lines."""
    what = (
        f"U-Net {args.encoder}, batch {args.batch} chips of {CHIP} px (a predict batch holds "
        f"as many pixels), overlap {args.overlap or 'default'}, 7 channels, {args.workers} loader "
        f"worker(s); ratios are floor (or float32) time / predict time."
    )
    print(header("Whole-region predict", what))
    rows, targets = throughput(args)
    print(table(["measure", "times", "ratio", "target", "verdict"], rows))
    option_rows, option_targets = cpu_options(args)
    print("CPU inference options, whole predicts at the default window:\n")
    print(table(["options", "times", "mapped", "speed-up", "max map difference"], option_rows))
    targets += option_targets
    if args.checkpoint:
        accuracy_rows, accuracy_targets = accuracy(args)
        print("Accuracy of a trained model, synthetic Talakmau 1024 x 1024:\n")
        print(table(["measure", "value"], accuracy_rows))
        targets += accuracy_targets
    return targets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", default="resnet18", help="smp encoder (resnet50: published)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--overlap", type=int, help="default: the data module's")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--workers", type=int, default=1, help="loader workers of the timed predicts"
    )
    parser.add_argument("--quick", action="store_true", help="512x512 and 2048x512 regions")
    parser.add_argument("--checkpoint", help="a trained model: adds the accuracy table")
    parser.add_argument("--compile", action="store_true", help="time torch.compile too")
    parser.add_argument("--only", choices=("memory",), help="run only this part (memory: target 4)")
    parser.add_argument("--child", choices=("memory", "window"), help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.sizes = [(512, 512), (2048, 512)] if args.quick else [(1024, 1024), (4096, 1024)]
    WORK.mkdir(parents=True, exist_ok=True)
    if args.child == "memory":
        args.workers = 0  # one process holds everything
        print(json.dumps(memory(args, tuple(args.size))))
        return
    if args.child == "window":
        print(json.dumps(window_memory(args.encoder, args.size[0], bool(args.size[1]))))
        return
    sizes = {*(s for way in memory_sizes(args).values() for s in way)}
    for size in sizes if args.only == "memory" else {*args.sizes, *sizes}:
        cube_root(size)
    common = ["--encoder", args.encoder, "--batch", str(args.batch)]
    if args.overlap is not None:
        common += ["--overlap", str(args.overlap)]
    targets = []
    if args.only != "memory":
        targets += others(args)
    memory_table, memory_targets = memory_rows(args, common)
    print(table(["measure", "times", "value", "target", "verdict"], memory_table))
    targets += memory_targets
    print("\n".join(targets))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
