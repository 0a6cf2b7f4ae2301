"""Validation metrics: their cost as a share of an epoch, measured directly.

The metrics are the module's own (``LandslideSegmenter.configure_metrics("val", ...)``):
binned AUPRC and AUROC sharing one 65,536-bin histogram, F1, IoU, the no-skill fraction,
and the loss mean, updated batch by batch as ``validation_step`` does and computed and
reset at epoch end. One epoch = the training batches of synthetic Hokkaido (bare
forward + backward + Adam steps of the same network) + the validation batches (forward)
+ the metrics; the three parts are timed in turn, repeat after repeat, and the epoch
time is built from their medians. Also shown: the exact (every-pixel) AUPRC, which
validation uses with ``--model.val_auprc exact``, and the metric state each keeps.

Target: metrics <= 2 % of the epoch time.

    python bench/val_metrics.py            # ResNet-50 U-Net, 3 repeats
    python bench/val_metrics.py --quick    # ResNet-18, 1 repeat
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from common import WORK, header, median, synthetic_root, table, verdict


def _state_bytes(collection) -> int:
    total = 0
    for metric in collection.values():
        for name in metric._defaults:
            value = getattr(metric, name)
            items = value if isinstance(value, list) else [value]
            total += sum(t.numel() * t.element_size() for t in items)
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--encoder", default=None)
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args()
    encoder = args.encoder or ("resnet18" if args.quick else "resnet50")
    repeats = args.repeats or (1 if args.quick else 3)

    from landslide_lit.data.datamodule import LandslideDataModule
    from landslide_lit.metrics import BatchMean
    from landslide_lit.module import LandslideSegmenter

    root = synthetic_root(("hokkaido",))
    dm = LandslideDataModule(root=str(root), synthetic=True, channels="sar_dem", batch_size=16)
    region = dm.train_region
    chips, splits = dm.chips(region), dm.splits()

    def batches(split: str) -> list[dict]:
        index = splits[split]
        out = []
        for first in range(0, len(index), dm.batch_size):
            rows = index[first : first + dm.batch_size]
            raw = {"image": chips.images[rows], "origin": chips.origins[rows]}
            raw["target"] = chips.targets[rows]
            out.append(dm.standardise(raw, region))
        return out

    train, val = batches("train"), batches("val")
    module = LandslideSegmenter(list(dm.channel_names), encoder_name=encoder)
    model = module.model
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-4)
    collections = {
        "binned": module.configure_metrics("val", [region.name])[region.name],
        "exact": LandslideSegmenter(
            list(dm.channel_names), encoder_name=encoder, val_auprc="exact"
        ).configure_metrics("val", [region.name])[region.name],
    }
    loss_mean = BatchMean()
    step, forward, metric = [], [], {k: [] for k in collections}
    states = {}
    for repeat in range(repeats + 1):  # repeat 0: warm-up
        model.train()
        start = time.perf_counter()
        for batch in train:
            loss = F.binary_cross_entropy_with_logits(model(batch["image"]), batch["mask"])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        train_s = time.perf_counter() - start
        model.eval()
        start = time.perf_counter()
        with torch.no_grad():
            outputs = [model(b["image"]) for b in val]
        forward_s = time.perf_counter() - start
        timed = {}
        for name, collection in collections.items():
            start = time.perf_counter()
            for logits, batch in zip(outputs, val, strict=True):
                loss = F.binary_cross_entropy_with_logits(logits, batch["mask"])
                loss_mean.update(loss, logits.shape[0])
                probability = logits.float().sigmoid()
                collection.update(probability.flatten(), batch["mask"].long().flatten())
            states[name] = _state_bytes(collection)
            collection.compute()
            loss_mean.compute()
            collection.reset()
            loss_mean.reset()
            timed[name] = time.perf_counter() - start
        if repeat:
            step.append(train_s)
            forward.append(forward_s)
            for name in collections:
                metric[name].append(timed[name])
    epoch = median(step) + median(forward)
    pixels = sum(b["mask"].numel() for b in val)
    rows = []
    for name in collections:
        share = median(metric[name]) / (epoch + median(metric[name]))
        rows.append(
            [
                f"validation metrics ({name} AUPRC/AUROC) / epoch",
                f"{100 * share:.2f} % ({1000 * median(metric[name]):.0f} ms of "
                f"{epoch + median(metric[name]):.1f} s; state {states[name] / 2**20:.1f} MiB "
                f"for {pixels / 1e6:.2f} M pixels)",
                "<= 2 %",
                verdict(share <= 0.02) if name == "binned" else "(not the default)",
            ]
        )
    print(
        header(
            "Validation metrics: share of epoch time",
            f"`{encoder}` U-Net, synthetic Hokkaido ({len(splits['train'])} training and "
            f"{len(splits['val'])} validation chips, batch 16), {repeats} repeats after a "
            "warm-up; training steps, validation forward and metrics timed in turn.",
        )
    )
    print(table(["measure", "measured", "target", ""], rows))


if __name__ == "__main__":
    _ = WORK
    main()
