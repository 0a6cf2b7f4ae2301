"""Figures: predicted vs true landslides on chips (like Fig. 1 of the seed paper)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

from landslide_lit.data.datamodule import ChipDataset, LandslideDataModule
from landslide_lit.regions import Region


@torch.no_grad()
def predict_chips(
    model: torch.nn.Module,
    datamodule: LandslideDataModule,
    region: Region,
    dataset: ChipDataset,
    indices: Sequence[int],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Landslide probability and target (N, H, W) of some chips of ``dataset``."""
    batch = {
        key: torch.stack([dataset[i][key] for i in indices])
        for key in ("image", "target", "origin")
    }
    batch = datamodule.standardise(batch, region)
    model.eval()
    device = next(model.parameters()).device
    probability = torch.sigmoid(model(batch["image"].to(device))).float().cpu()
    return probability[:, 0], batch["mask"][:, 0]


def most_affected(dataset: ChipDataset, count: int) -> list[int]:
    """Indices of the ``count`` chips with the most landslide pixels, largest first."""
    area = torch.stack([dataset[i]["target"].sum() for i in range(len(dataset))])
    return area.argsort(descending=True)[:count].tolist()


def plot_prediction_panels(
    panels: dict[str, tuple[torch.Tensor, torch.Tensor]], path: str | Path
) -> Path:
    """Predicted probability (top row) over true landslides (bottom row), per region.

    ``panels`` maps a title (e.g. the region) to (probability, target) stacks
    of shape (N, H, W). Colours follow the seed paper: background purple,
    landslides yellow.
    """
    columns = [
        (title, p, t)
        for title, (probability, target) in panels.items()
        for p, t in zip(probability, target, strict=True)
    ]
    fig, axes = plt.subplots(2, len(columns), figsize=(2.2 * len(columns), 4.8), squeeze=False)
    for j, (title, probability, target) in enumerate(columns):
        for i, (image, row) in enumerate(((probability, "predicted"), (target, "true"))):
            ax = axes[i, j]
            ax.imshow(image.numpy(), cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(row)
        axes[0, j].set_title(title, fontsize=9)
    fig.suptitle("Landslide probability (top) vs mapped landslides (bottom)")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
