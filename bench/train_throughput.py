"""Training throughput: ``landslide-lit fit`` against a bare PyTorch loop, side by side.

The fit is the real command path, ``landslide_lit.cli.run(["fit", "--config", "demo.yaml",
...])``: LightningCLI, the data module on prepared chips (the chip cache is filled
before), standardisation and augmentation on the device, the default callbacks
(checkpoints after every validation, SIGTERM handler, map writer) and loggers
(TensorBoard, CSV), validation every epoch. Model, batch and optimiser are those of
demo.yaml: ResNet-50 U-Net from scratch on 7 channels, batch 16, Adam (lr 1e-3, weight
decay 1e-4), synthetic Hokkaido. ``fitprobe.InterleavedBareLoop`` runs the bare loop
step by step beside the fit in the same process (see there). Epoch 0 of both is
warm-up, and the last epoch, whose end also waits for the fit's last checkpoint writes,
is left out; figures are medians over the epochs between.

Targets: the fit's training loop >= 0.95 of the bare loop's chips per second (with and
without augmentation; with it, the bare loop augments its batches too, and the ratio to
a bare loop without augmentation is printed as well); augmentation <= 5 % of a training
step; issue 15, target 1: the whole fit epoch (training, validation, metrics, logging,
checkpoints, progress bar) >= 0.95 of the bare loop doing the same work, its training
steps and the same validation forward, with a breakdown of where the epoch goes
(``fitprobe.PHASES``, ``fitprobe.INSIDE``).

    python bench/train_throughput.py                       # ResNet-50, 5 epochs a side
    python bench/train_throughput.py --quick               # ResNet-18, 3 epochs a side
    python bench/train_throughput.py --encoder resnet18 --epochs 3
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

from common import (
    REPO,
    WORK,
    header,
    median,
    spread,
    synthetic_root,
    table,
    target_line,
    verdict,
)


def one_fit(mode: str, encoder: str, epochs: int, out: Path) -> dict:
    """Run one fit with the probe; return its records."""
    from landslide_lit.cli import run

    root = synthetic_root()
    workdir = WORK / f"fit-{mode}-{encoder}"
    shutil.rmtree(workdir, ignore_errors=True)  # one run's checkpoints, not every run's
    workdir.mkdir(parents=True)
    os.chdir(workdir)
    probe = {"class_path": "fitprobe.InterleavedBareLoop", "init_args": {"out": str(out)}}
    args = [
        "fit",
        "--config",
        "demo.yaml",
        f"--data.root={root}",
        f"--model.encoder_name={encoder}",
        f"--trainer.max_epochs={epochs}",
        f"--trainer.callbacks+={json.dumps(probe)}",
    ]
    if mode == "noaug":
        args.append("--data.augment=null")
    start = time.perf_counter()
    run(args)
    result = json.loads(out.read_text())
    result["total_s"] = time.perf_counter() - start
    out.write_text(json.dumps(result, indent=1))
    return result


def one_fit_gpu(epochs: int, out: str) -> None:
    """The fit of ``bench/gpu.py``: demo.yaml on one GPU with gpu.yaml (bf16, 4 workers)."""
    from landslide_lit.cli import run

    sys.path.insert(0, str(Path(__file__).parent))
    root = synthetic_root()
    workdir = WORK / "fit-gpu"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    os.chdir(workdir)
    probe = {"class_path": "fitprobe.InterleavedBareLoop", "init_args": {"out": out}}
    run(
        [
            "fit",
            "--config",
            "demo.yaml",
            "--config",
            "gpu.yaml",
            f"--data.root={root}",
            f"--trainer.max_epochs={epochs}",
            f"--trainer.callbacks+={json.dumps(probe)}",
        ]
    )


def summarise(mode: str, result: dict) -> tuple[list[list[object]], dict]:
    # epoch 0 warms up; the last one also waits for the fit's last checkpoint writes
    epochs = result["epochs"]
    timed = epochs[1:-1] if len(epochs) > 2 else epochs[1:] or epochs
    ratios = [e["bare_s"] / e["fit_train_s"] for e in timed]  # = fit chips/s over bare chips/s
    chips = timed[0]["chips"]
    fit_rate = [chips / e["fit_train_s"] for e in timed]
    bare_rate = [chips / e["bare_s"] for e in timed]
    whole = [(e["bare_s"] + e["bare_val_s"]) / e["fit_epoch_s"] for e in timed]
    label = "both with augmentation" if mode == "aug" else "without augmentation"
    rows = [
        [
            f"fit training loop / bare loop, {label}",
            f"{median(ratios):.3f} ({spread(fit_rate)} vs {spread(bare_rate)} chips/s)",
            ">= 0.95",
            verdict(median(ratios) >= 0.95),
        ],
    ]
    if mode == "aug" and all("bare_noaug_s" in e for e in timed):
        plain = [e["bare_noaug_s"] / e["fit_train_s"] for e in timed]
        rows.append(
            [
                "fit training loop with augmentation / bare loop without it",
                f"{median(plain):.3f}",
                "(information)",
                "",
            ]
        )
    fit_epoch = [e["fit_epoch_s"] for e in timed]
    bare_epoch = [e["bare_s"] + e["bare_val_s"] for e in timed]
    rows.append(
        [
            f"whole fit epoch / bare loop (training steps + validation forward), {label}",
            f"{median(whole):.3f} ({spread(fit_epoch)} vs {spread(bare_epoch)} s)",
            ">= 0.95",
            verdict(median(whole) >= 0.95),
        ]
    )
    extra = {"augment": [], "steps": [], "whole": median(whole)}
    for e in timed:
        extra["augment"] += e["augment_s"]
        extra["steps"] += e["bare_step_s"]
    extra["setup_s"], extra["total_s"] = result["setup_s"], result["total_s"]
    extra["breakdown"] = breakdown(timed)
    return rows, extra


def breakdown(timed: list[dict]) -> str:
    """Where a fit epoch's time goes (medians over the timed epochs), beside the bare loop."""
    from fitprobe import INSIDE, PHASES

    epoch = median([e["fit_epoch_s"] for e in timed])
    bare = {
        "steps": median([e["bare_s"] for e in timed]),
        "validation": median([e["bare_val_s"] for e in timed]),
    }
    rows = []
    for key, what in PHASES.items():
        seconds = median([e["phases_s"].get(key, 0.0) for e in timed])
        reference = f"{bare[key]:.3f}" if key in bare else ""
        rows.append([what, f"{seconds:.3f}", f"{100 * seconds / epoch:.1f} %", reference])
    rows.append(["**whole epoch**", f"{epoch:.3f}", "100 %", f"{sum(bare.values()):.3f}"])
    for key, what in INSIDE.items():
        seconds = median([e["inside_s"].get(key, 0.0) for e in timed])
        rows.append([f"of which: {what}", f"{seconds:.3f}", f"{100 * seconds / epoch:.1f} %", ""])
    header_row = ["fit epoch phase", "s per epoch", "share", "bare loop s"]
    return table(header_row, rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="ResNet-18, 3 epochs")
    parser.add_argument("--encoder", default=None, help="smp encoder (default resnet50)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs a side (first: warm-up)")
    parser.add_argument("--one", nargs=2, metavar=("MODE", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    encoder = args.encoder or ("resnet18" if args.quick else "resnet50")
    epochs = args.epochs or (3 if args.quick else 5)
    if args.one:
        sys.path.insert(0, str(Path(__file__).parent))  # fitprobe for LightningCLI
        one_fit(args.one[0], encoder, epochs, Path(args.one[1]))
        return
    synthetic_root()
    rows, notes, targets, breakdowns = [], [], [], []
    for mode in ("aug", "noaug"):
        out = WORK / f"fit-{mode}-{encoder}.json"
        command = [sys.executable, __file__, "--one", mode, str(out)]
        command += ["--encoder", encoder, "--epochs", str(epochs)]
        import subprocess

        subprocess.run(command, check=True, capture_output=True, cwd=REPO)
        mode_rows, extra = summarise(mode, json.loads(out.read_text()))
        rows += mode_rows
        label = "with augmentation" if mode == "aug" else "without augmentation"
        description = f"whole fit epoch / bare loop (steps + validation forward), {label}"
        targets.append(target_line(1, description, extra["whole"], ">=0.95"))
        breakdowns.append(f"Where a fit epoch goes, {label} (medians per epoch):\n\n")
        breakdowns.append(extra["breakdown"] + "\n")
        notes.append(
            f"{mode}: fit {extra['total_s']:.0f} s in all, of which {extra['setup_s']:.1f} s "
            "from the trainer's creation to the start of the fit"
        )
        if mode == "aug":
            fraction = median(extra["augment"]) / median(extra["steps"])
            rows.append(
                [
                    "augmentation / training step (median per batch)",
                    f"{100 * fraction:.1f} % ({1000 * median(extra['augment']):.0f} ms / "
                    f"{1000 * median(extra['steps']):.0f} ms)",
                    "<= 5 %",
                    verdict(fraction <= 0.05),
                ]
            )
    print(
        header(
            "Training throughput: landslide-lit fit vs a bare PyTorch loop",
            f"demo.yaml (7 channels, batch 16, Adam) with `{encoder}` U-Net on synthetic "
            f"Hokkaido, {epochs} epochs, fit and bare steps interleaved in one process, "
            "epoch 0 warm-up and the last epoch left out; ratios are medians over the epochs "
            "between.",
        )
    )
    print(table(["measure", "measured", "target", ""], rows))
    print("".join(breakdowns))
    print("\n".join(f"- {n}" for n in notes) + "\n")
    print("\n".join(targets))


if __name__ == "__main__":
    main()
