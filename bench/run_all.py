"""Run every benchmark, write their markdown blocks to one results file, and sum up the targets.

    python bench/run_all.py             # full (make bench)
    python bench/run_all.py --quick     # smaller encoder, cubes and repeats (make bench-quick)
    python bench/run_all.py --only cold_start val_metrics

Each benchmark runs in its own process; the blocks are printed and written to
``build/bench/results.md`` (``--out``), ready to paste into docs/performance.md.
bench/gpu.py skips without CUDA.

The targets of issue 15 come out at the end as one table. A benchmark reports a
measurement of one with a line of its standard output (``common.target_line`` writes it)::

    TARGET <id> <description> ratio=<x> goal=<op><y> PASS|MISS

``<id>`` is the target's number in the issue (1-6), ``<description>`` says what was
divided by what (free text, one line), ``<x>`` is the measured ratio, ``<op>`` is ``>=``
or ``<=`` and ``<y>`` the bound; ``SKIP`` instead of ``PASS|MISS`` (with ``ratio=-``)
says the measurement could not be made here (no GPU). A target may have several lines
(with and without augmentation, each layout, memory); it passes when every line does.
These lines are taken out of the benchmark's markdown block and listed in the summary;
a target no benchmark reported is listed as not measured.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

from common import REPO, WORK, table

BENCHES = ("train_throughput", "cold_start", "val_metrics", "predict", "cube_build", "gpu")
TARGETS = {
    "1": "whole fit epoch >= 0.95 of a bare loop doing the same work",
    "2": "whole-region predict >= 1.0 of the one-pass floor",
    "3": "CPU inference an analyst can use",
    "4": "predict memory flat in width and height (within 10 %)",
    "5": "new-event cube build <= 2x reading the GeoTIFFs, memory bounded by chunks",
    "6": "GPU checks (record only)",
}
"""Issue 15's targets by id."""
LINE = re.compile(
    r"^TARGET (?P<id>\S+) (?P<what>.+) ratio=(?P<ratio>\S+) goal=(?P<goal>\S+) "
    r"(?P<verdict>PASS|MISS|SKIP)$"
)


def collect(output: str) -> tuple[str, list[dict[str, str]]]:
    """The benchmark's block without its target lines, and those lines parsed."""
    kept, found = [], []
    for line in output.splitlines():
        match = LINE.match(line.strip())
        if match:
            found.append(match.groupdict())
        else:
            kept.append(line)
    return "\n".join(kept).strip() + "\n", found


def summary(found: list[dict[str, str]]) -> str:
    """One table: every target of issue 15, its measurements and verdicts."""
    rows = []
    for target, name in TARGETS.items():
        lines = [f for f in found if f["id"] == target]
        if not lines:
            rows.append([target, name, "not measured", "", ""])
        for line in lines:
            rows.append([target, line["what"], line["ratio"], line["goal"], line["verdict"]])
    return "### Issue 15 targets\n\n" + table(
        ["target", "measurement", "ratio", "goal", "verdict"], rows
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", nargs="+", choices=BENCHES, default=list(BENCHES))
    parser.add_argument("--out", type=Path, default=WORK / "results.md")
    args = parser.parse_args()
    blocks, found = [], []
    for name in args.only:
        start = time.perf_counter()
        command = [sys.executable, str(REPO / "bench" / f"{name}.py")]
        command += ["--quick"] if args.quick and name != "gpu" else []
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
        if done.returncode:
            block = f"### {name}\n\nFAILED (exit {done.returncode}):\n\n```\n"
            block += done.stderr[-3000:] + "\n```\n"
        else:
            block, lines = collect(done.stdout)
            found += lines
        block += f"\n({name}: {time.perf_counter() - start:.0f} s)\n"
        print(block, flush=True)
        blocks.append(block)
    blocks.append(summary(found))
    print(blocks[-1])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(blocks))
    print(f"written to {args.out}")
    if any("FAILED" in b for b in blocks):
        sys.exit(1)


if __name__ == "__main__":
    main()
