"""Coverage of the chip-bootstrap intervals of the AUPRC: BCa vs percentile, simulated.

A population of synthetic chips stands for a region's landslide chips: landslide
fractions drawn from a skewed Beta distribution, and a noisy score model whose
separation and false-alarm level vary from chip to chip (some chips are easy, some are
full of look-alikes). Its AUPRC over all pixels of all chips is the value an evaluation
estimates. Each simulated study draws a few chips (10, 30, 60: a validation or test
set), computes the pooled AUPRC and both 95 % intervals from the same chip draws
(``landslide_lit.bootstrap.chip_bootstrap``), and checks whether they cover the
population value. Two populations: a middling model (AUPRC about 0.5, as in the train
region) and a weak one (about 0.3, as in transfer). Printed per population and study
size: coverage (and the misses below / above), mean width. Then the time of one
bootstrap at the size of an evaluation (61 chips of 128 x 128 px, 1000 replicates).
Target: coverage within 2.5 points of 95 % from 30 chips (Monte Carlo error at 500
studies: about 1 point).

    python bench/bootstrap_coverage.py            # 500 studies per size, ~2 min on 2 cores
    python bench/bootstrap_coverage.py --quick    # 100 studies per size, ~30 s
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from common import header, median, table, verdict

from landslide_lit.bootstrap import chip_bootstrap
from landslide_lit.precision import average_precision

POPULATION = 4000  # chips
SIDE = 16  # px: small chips keep 1000 replicates x hundreds of studies in minutes
SIZES = (10, 30, 60)
LEVEL = 0.95
METHODS = ("percentile", "bca")
# population: (mean false-alarm logit, Gamma shape of the per-chip separation)
POPULATIONS = {"middling model": (-2.5, 2.0), "weak model": (-2.0, 1.0)}


def population(
    rng: np.random.Generator, false_alarm_mean: float, separation_shape: float
) -> tuple[np.ndarray, np.ndarray]:
    """Scores and labels (chips, SIDE, SIDE) of a population of chips."""
    fraction = rng.beta(0.4, 2.5, (POPULATION, 1, 1))  # skewed: most chips have few
    labels = rng.random((POPULATION, SIDE, SIDE)) < fraction
    labels[:, 0, 0] = True  # landslide chips: each has a landslide pixel
    separation = rng.gamma(separation_shape, 1.0, (POPULATION, 1, 1))
    false_alarm = rng.normal(false_alarm_mean, 1.2, (POPULATION, 1, 1))
    logit = false_alarm + separation * labels + rng.normal(0, 1, labels.shape)
    # three decimals, like rounded probabilities: ties exercised, and a short curve
    scores = np.round(1 / (1 + np.exp(-logit)), 3)
    return scores, labels


def study(scores, labels, truth, n, replicates, rng) -> dict[str, tuple[int, float]]:
    """Draw n chips; per method, (-1 below, 0 covered, 1 above the truth; width)."""
    chosen = rng.choice(POPULATION, n, replace=False)
    seed = int(rng.integers(2**31))
    out = {}
    for method in METHODS:
        interval = chip_bootstrap(
            scores[chosen], labels[chosen], replicates=replicates, seed=seed, method=method
        )
        side = -1 if truth < interval.low else 1 if truth > interval.high else 0
        out[method] = (side, interval.high - interval.low)
    return out


def coverage_rows(studies: int, replicates: int, seed: int) -> tuple[list[list], dict]:
    """Table rows per population and size, and whether each method met the target."""
    rng = np.random.default_rng(seed)
    rows, met = [], dict.fromkeys(METHODS, True)
    for name, parameters in POPULATIONS.items():
        scores, labels = population(rng, *parameters)
        truth = average_precision(scores, labels)
        for n in SIZES:
            results = [study(scores, labels, truth, n, replicates, rng) for _ in range(studies)]
            row = [name, n, f"{truth:.3f}"]
            for method in METHODS:
                sides = np.array([r[method][0] for r in results])
                widths = [r[method][1] for r in results]
                covered = float(np.mean(sides == 0))
                miss = f"{np.mean(sides == -1):.1%} / {np.mean(sides == 1):.1%}"
                row += [f"{covered:.1%}", miss, f"{np.mean(widths):.3f}"]
                if n >= 30:
                    met[method] &= abs(covered - LEVEL) <= 0.025
            rows.append(row)
    return rows, met


def timing(repeats: int) -> list[list]:
    """Seconds of one chip bootstrap at evaluation size, per method (median of repeats)."""
    rng = np.random.default_rng(1)
    labels = rng.random((61, 128, 128)) < rng.beta(0.5, 4, (61, 1, 1))
    logit = rng.normal(0, 1.5, labels.shape) + 2.0 * labels - 2
    scores = (1 / (1 + np.exp(-logit))).astype(np.float32)  # ~1M distinct scores
    seconds = {"percentile": [], "bca": []}
    for _ in range(repeats):
        for method in seconds:
            start = time.perf_counter()
            chip_bootstrap(scores, labels, method=method)
            seconds[method].append(time.perf_counter() - start)
    return [[m, f"{median(s):.2f}", f"{min(s):.2f}-{max(s):.2f}"] for m, s in seconds.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100 studies per size")
    parser.add_argument("--studies", type=int, help="studies per size (default 500)")
    parser.add_argument("--replicates", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    options = parser.parse_args()
    studies = options.studies or (100 if options.quick else 500)
    print(
        header(
            "Chip bootstrap: coverage of the 95 % intervals",
            f"{studies} simulated studies per population and size, each "
            f"{options.replicates} replicates, "
            f"chips of {SIDE} x {SIDE} px drawn from a population of {POPULATION}; "
            "coverage of the population AUPRC (misses: interval below / above it).",
        )
    )
    start = time.perf_counter()
    rows, met = coverage_rows(studies, options.replicates, options.seed)
    print(
        table(
            [
                "population",
                "chips",
                "population AUPRC",
                "percentile coverage",
                "misses",
                "mean width",
                "BCa coverage",
                "misses",
                "mean width",
            ],
            rows,
        )
    )
    for method in METHODS:
        print(f"{method} coverage within 2.5 points of 95 % from 30 chips: {verdict(met[method])}")
    print(f"({time.perf_counter() - start:.0f} s)\n")
    print("One bootstrap, 61 chips of 128 x 128 px, 1000 replicates (seconds):\n")
    print(table(["method", "median", "range"], timing(1 if options.quick else 3)))


if __name__ == "__main__":
    main()
