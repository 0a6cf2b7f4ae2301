"""What Prapas et al. published: the Table 1 configs, their AUPRC and the claims.

Table 1 of the paper is one run per config, trained on Hokkaido, scored on Hokkaido's
validation chips and on Talakmau's test chips; the comparisons are the paper's claims as
paired differences (A - B) on the same chips.
"""

from __future__ import annotations

__all__ = ["COMPARISONS", "PAPER_NO_SKILL", "PAPER_PAIR", "PAPER_TABLE1", "TABLE1_CONFIGS"]

TABLE1_CONFIGS = ("sar", "sar_dem", "sar_aug", "sar_dem_aug")
# Table 1 of Prapas et al.: AUPRC on Hokkaido's validation chips and Talakmau's test chips.
PAPER_TABLE1 = {
    "sar": {"hokkaido": 0.618, "talakmau": 0.421},
    "sar_dem": {"hokkaido": 0.639, "talakmau": 0.388},
    "sar_aug": {"hokkaido": 0.612, "talakmau": 0.456},
    "sar_dem_aug": {"hokkaido": 0.636, "talakmau": 0.402},
}
PAPER_NO_SKILL = {"hokkaido": 0.092, "talakmau": 0.062}
PAPER_PAIR = ("hokkaido", "talakmau")
# The paper's claims, as paired differences (A - B) on the same chips.
COMPARISONS = (
    ("sar_dem", "sar", "DEM, no augmentation"),
    ("sar_dem_aug", "sar_aug", "DEM, with augmentation"),
    ("sar_aug", "sar", "augmentation, SAR"),
    ("sar_dem_aug", "sar_dem", "augmentation, SAR & DEM"),
)
