"""GPU checks (issue 6, item 5): bf16 mixed precision, channels-last, and loader stalls.

Skips cleanly (exit status 0, one line) without CUDA; nothing in CI depends on it.

1. Training-step throughput of the ResNet-50 U-Net at 128 x 128, 7 channels, Adam, on
   random chips already on the GPU, in four settings interleaved step by step: fp32,
   bf16 autocast, fp32 channels-last, bf16 + channels-last.
2. Whether the data pipeline keeps the GPU busy: ``landslide-lit fit`` (gpu.yaml:
   bf16-mixed, 4 loader workers) on synthetic Hokkaido with the interleaved bare loop of
   ``fitprobe`` (same batches, data already on the GPU); the idle fraction is
   1 - fit chips/s / bare chips/s over the training loop.

    python bench/gpu.py [--batch 64] [--steps 20]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from common import REPO, WORK, header, median, synthetic_root, table


def step_throughput(batch: int, steps: int) -> list[list[object]]:
    import segmentation_models_pytorch as smp
    import torch
    import torch.nn.functional as F

    settings = [("fp32", False, False), ("bf16-mixed", True, False)]
    settings += [("fp32 channels-last", False, True), ("bf16-mixed channels-last", True, True)]
    runs = {}
    for name, _, last in settings:
        torch.manual_seed(0)
        model = smp.Unet("resnet50", encoder_weights=None, in_channels=7, classes=1).cuda()
        fmt = torch.channels_last if last else torch.contiguous_format
        model = model.to(memory_format=fmt)
        runs[name] = (model, torch.optim.Adam(model.parameters(), lr=1e-3))
    image = torch.randn(batch, 7, 128, 128, device="cuda")
    mask = (torch.rand(batch, 1, 128, 128, device="cuda") < 0.1).float()
    times = {name: [] for name, *_ in settings}
    for i in range(steps + 3):  # 3 warm-up rounds
        for name, bf16, last in settings:
            model, optimizer = runs[name]
            x = image.contiguous(memory_format=torch.channels_last) if last else image
            torch.cuda.synchronize()
            start = time.perf_counter()
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
                loss = F.binary_cross_entropy_with_logits(model(x).float(), mask)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            torch.cuda.synchronize()
            if i >= 3:
                times[name].append(time.perf_counter() - start)
    base = median(times["fp32"])
    return [
        [name, f"{batch / median(t):.0f}", f"{base / median(t):.2f}x"] for name, t in times.items()
    ]


def loader_idle(epochs: int) -> str:
    out = WORK / "gpu-fit.json"
    code = (
        "import sys, json; sys.path.insert(0, 'bench'); import train_throughput as t; "
        f"t.one_fit_gpu({epochs}, {str(out)!r})"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, capture_output=True)
    result = json.loads(Path(out).read_text())
    timed = result["epochs"][1:] or result["epochs"]
    ratio = median([e["bare_s"] / e["fit_train_s"] for e in timed])
    return (
        f"fit training loop / bare loop on the GPU (bf16-mixed, 4 workers): {ratio:.3f}; "
        f"GPU idle fraction about {100 * max(0.0, 1 - ratio):.0f} %"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("### GPU checks\n\nskipped: no CUDA device.\n")
        return
    synthetic_root()
    print(
        header(
            "GPU checks: precision, memory format, loader",
            f"ResNet-50 U-Net, 7 x 128 x 128, batch {args.batch}, Adam, {args.steps} steps "
            "per setting interleaved after 3 warm-up rounds.",
        )
    )
    print(table(["setting", "chips/s", "vs fp32"], step_throughput(args.batch, args.steps)))
    print(loader_idle(args.epochs) + "\n")


if __name__ == "__main__":
    main()
