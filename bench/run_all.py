"""Run every benchmark and write their markdown blocks to one results file.

    python bench/run_all.py             # full: ~11 min on 2 CPU cores (make bench)
    python bench/run_all.py --quick     # smaller encoder, cube and repeats: ~4 min
    python bench/run_all.py --only cold_start val_metrics

Each benchmark runs in its own process; the blocks are printed and written to
``build/bench/results.md`` (``--out``), ready to paste into docs/performance.md.
bench/gpu.py skips without CUDA.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from common import REPO, WORK

BENCHES = ("train_throughput", "cold_start", "val_metrics", "predict", "gpu")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", nargs="+", choices=BENCHES, default=list(BENCHES))
    parser.add_argument("--out", type=Path, default=WORK / "results.md")
    args = parser.parse_args()
    blocks = []
    for name in args.only:
        start = time.perf_counter()
        command = [sys.executable, str(REPO / "bench" / f"{name}.py")]
        command += ["--quick"] if args.quick and name != "gpu" else []
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
        if done.returncode:
            block = f"### {name}\n\nFAILED (exit {done.returncode}):\n\n```\n"
            block += done.stderr[-3000:] + "\n```\n"
        else:
            block = done.stdout.strip() + "\n"
        block += f"\n({name}: {time.perf_counter() - start:.0f} s)\n"
        print(block, flush=True)
        blocks.append(block)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(blocks))
    print(f"written to {args.out}")
    if any("FAILED" in b for b in blocks):
        sys.exit(1)


if __name__ == "__main__":
    main()
