"""`landslide-lit demo`: the whole study in miniature, on synthetic cubes, on a CPU.

It runs the same commands a user types: ``fit --config demo.yaml`` (SAR & DEM
with augmentations, trained on Hokkaido), then ``validate`` on Hokkaido's
validation chips and ``test`` on Hokkaido's held-out chips and on Talakmau.
It prints a table of AUPRC against the no-skill baseline, writes it to
``OUTPUT/metrics.md`` and draws predicted vs true landslides to
``OUTPUT/predictions.png``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from landslide_lit.figures import most_affected, plot_prediction_panels, predict_chips

EVALUATIONS = (
    # (command, region, stage key, split shown in the table)
    ("validate", "hokkaido", "val", "validation (train region)"),
    ("test", "hokkaido", "test", "held-out test (train region)"),
    ("test", "talakmau", "test", "test (other region)"),
)


def demo_main(args: list[str]) -> None:
    from landslide_lit.cli import run

    parser = argparse.ArgumentParser(prog="landslide-lit demo", description=__doc__)
    parser.add_argument("--root", default="data", help="data root for the synthetic cubes")
    parser.add_argument("--output", default="demo_output", help="folder for the table and figure")
    parser.add_argument("--max_epochs", type=int, default=None, help="override demo.yaml's epochs")
    options, extra = parser.parse_known_args(args)

    started = time.perf_counter()
    common = ["--data.root", options.root, "--data.synthetic", "true"]
    fit_args = ["fit", "--config", "demo.yaml", *common, *extra]
    if options.max_epochs is not None:
        fit_args += ["--trainer.max_epochs", str(options.max_epochs)]
    fit = run(fit_args)
    checkpoint = fit.trainer.checkpoint_callback.best_model_path

    rows, panels = [], {}
    for command, region, stage, split in EVALUATIONS:
        evaluation = [command, "--ckpt_path", checkpoint, "--region", region, *common]
        cli = run([*evaluation, "--trainer.logger", "false"])
        metrics = cli.trainer.callback_metrics
        datamodule = cli.datamodule
        dataset = datamodule._datasets["val" if stage == "val" else "test"][0]
        rows.append(
            (
                region,
                split,
                len(dataset),
                float(metrics[f"{stage}/{region}/auprc"]),
                float(metrics[f"{stage}/{region}/no_skill"]),
            )
        )
        if stage == "test":
            indices = most_affected(dataset, 4)
            panels[f"{region} {split.split(' (')[0]}"] = predict_chips(
                cli.model, datamodule, datamodule.test_region, dataset, indices
            )

    elapsed = time.perf_counter() - started
    output = Path(options.output)
    figure = plot_prediction_panels(panels, output / "predictions.png")
    table = _table(rows, elapsed, checkpoint)
    (output / "metrics.md").write_text(table)
    print(table)
    print(f"figure: {figure}")


def _table(rows: list[tuple[str, str, int, float, float]], elapsed: float, checkpoint: str) -> str:
    lines = [
        "| region | chips | split | AUPRC | no skill | AUPRC / no skill |",
        "|---|---:|---|---:|---:|---:|",
    ]
    for region, split, chips, auprc, no_skill in rows:
        lines.append(
            f"| {region} | {chips} | {split} | {auprc:.3f} | {no_skill:.3f} | "
            f"{auprc / no_skill:.1f}x |"
        )
    lines += [
        "",
        "Synthetic cubes (not real Sentinel-1 data); model: SAR & DEM (AUG), demo.yaml.",
        f"Checkpoint: {checkpoint}. Wall time: {elapsed / 60:.1f} min.",
        "",
    ]
    return "\n".join(lines)
