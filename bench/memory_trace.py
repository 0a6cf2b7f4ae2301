"""Where a whole predict's memory goes: RSS above start, sampled every 10 ms, by phase.

    python bench/memory_trace.py 1344 5376     # height width of the synthetic region

The predict of ``bench/predict.py``'s memory part (seeded ResNet-18, every default
output, threshold 0.5) in this process, with a sampling thread; each sample is labelled
with the writer step running when it was taken (the latest one entered: the map writer's
thread and the main thread share the label). Prints the peak of each phase, highest
first; ``end`` is the RSS left after predict returned (the files closed): what grows with
the region there is held, not transient.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from collections.abc import Callable

os.environ.setdefault("OMP_NUM_THREADS", "1")

from predict import ALL_OUTPUTS, MEMORY_SEED, Predict, untrained

from landslide_lit import map_files, polygons, products, rasters

PHASES = {
    "writing a block": (map_files.MapFiles, "add"),
    "polygonizing a block": (polygons.Polygonizer, "add"),
    "keeping landslides": (products.ResponderProducts, "_keep"),
    "closing a COG": (rasters.CogWriter, "close"),
    "finishing the products": (products.ResponderProducts, "finish"),
    "drawing the quicklook": (map_files.Quicklook, "save"),
}


def rss_mib() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class Trace:
    """RSS samples, each labelled with the phase running when it was taken."""

    def __init__(self) -> None:
        self.phase, self.samples, self.running = "predict", [], True
        self.thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while self.running:
            self.samples.append((self.phase, rss_mib()))
            time.sleep(0.01)

    def labelled(self, phase: str, method: Callable) -> Callable:
        def run(*args, **kwargs):
            outer, self.phase = self.phase, phase
            try:
                return method(*args, **kwargs)
            finally:
                self.phase = outer

        return run

    def peaks(self, start: float) -> dict[str, float]:
        peaks: dict[str, float] = {}
        for phase, rss in self.samples:
            peaks[phase] = max(peaks.get(phase, -1e9), rss - start)
        return dict(sorted(peaks.items(), key=lambda item: -item[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("height", type=int)
    parser.add_argument("width", type=int)
    size = tuple(vars(parser.parse_args()).values())
    args = argparse.Namespace(encoder="resnet18", batch=16, workers=0, overlap=None)
    import torch

    torch.manual_seed(MEMORY_SEED)
    root, dm, model = untrained(args, size)
    run = Predict(model, root, args, dm.predict_window, "auto", True, maps=ALL_OUTPUTS)
    trace = Trace()
    for phase, (owner, name) in PHASES.items():
        setattr(owner, name, trace.labelled(phase, getattr(owner, name)))
    start = rss_mib()
    trace.thread.start()
    run()
    trace.running = False
    trace.thread.join()
    peaks = {phase: round(mib) for phase, mib in trace.peaks(start).items()}
    print(
        json.dumps({"size": size, "peak_mib_above_start": peaks, "end": round(rss_mib() - start)})
    )


if __name__ == "__main__":
    main()
