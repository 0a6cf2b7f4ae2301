"""Peak memory of one training rank: ResNet-50 U-Net, 7 x 128 x 128 chips, Adam, on the CPU.

Each batch size runs in its own process, because ru_maxrss is the peak of the whole
process. Prints the peak resident memory after building the model and optimiser and
after a few forward + backward + Adam steps on random chips.

    python bench/rank_memory.py            # batch 16 and 64
    python bench/rank_memory.py 8 32       # other batch sizes
"""

from __future__ import annotations

import resource
import subprocess
import sys


def peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def one_rank(batch: int, steps: int = 3) -> None:
    import segmentation_models_pytorch as smp
    import torch

    model = smp.Unet("resnet50", encoder_weights=None, in_channels=7, classes=1)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    built = peak_gb()
    image = torch.randn(batch, 7, 128, 128)
    target = (torch.rand(batch, 1, 128, 128) < 0.1).float()
    for _ in range(steps):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(image), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    print(f"batch {batch:3d}: {built:.2f} GB after building, {peak_gb():.2f} GB peak training")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--one":
        one_rank(int(sys.argv[2]))
    else:
        for batch in map(int, sys.argv[1:] or ["16", "64"]):
            subprocess.run([sys.executable, __file__, "--one", str(batch)], check=True)
