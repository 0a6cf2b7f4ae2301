"""Shared helpers of the benchmarks: machine description, medians, tables, memory, data.

Every benchmark prints one markdown block: a title, what was measured, and a table whose
rows give the measured ratio, its target and PASS or MISS. Ratios are taken side by side
in one run, with the two sides interleaved (A, B, A, B, ...) and reduced by medians, so
that other load on the machine slows both sides alike. A benchmark that measures a
target of issue 15 also prints one :func:`target_line` per measurement of it, which
``run_all.py`` collects into its summary table (the convention is described there).
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import resource
import statistics
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
WORK = Path(os.environ.get("LANDSLIDE_LIT_BENCH_DIR", REPO / "build" / "bench"))
"""Where benchmarks keep their cubes, chip caches and runs (ignored by git)."""


def machine() -> str:
    """CPU model, cores, memory, torch threads and GPU (if any), in one line."""
    import torch

    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        model = platform.processor() or model
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (
        f"{model}, {os.cpu_count()} cores, {memory:.0f} GiB, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), {gpu}"
    )


def header(title: str, what: str) -> str:
    """The first lines of a benchmark's markdown block."""
    today = dt.date.today().isoformat()
    command = " ".join(["python", *[os.path.relpath(sys.argv[0], REPO), *sys.argv[1:]]])
    return (
        f"### {title}\n\n{what}\n\n"
        f"`{command}` on {today}; {machine()}; load average before: {load()}.\n"
    )


def load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def spread(values: Sequence[float]) -> str:
    """``median (min-max, n)`` of a series, for the tables."""
    if len(values) == 1:
        return f"{values[0]:.3g} (n=1)"
    return f"{median(values):.3g} ({min(values):.3g}-{max(values):.3g}, n={len(values)})"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


GOALS = {">=": float.__ge__, "<=": float.__le__}


def target_line(target: int | str, description: str, ratio: float, goal: str) -> str:
    """``TARGET <id> <description> ratio=<x> goal=<op><y> PASS|MISS`` (see run_all.py).

    ``goal`` is ``>=0.95`` or ``<=2``: the ratio is compared with it.
    """
    op, bound = goal[:2], float(goal[2:])
    if op not in GOALS or "\n" in description:
        raise ValueError(f"bad target line: {goal!r}, {description!r}")
    return (
        f"TARGET {target} {description} ratio={ratio:.3f} goal={goal} "
        f"{verdict(GOALS[op](float(ratio), bound))}"
    )


def table(header_row: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A markdown table."""
    lines = ["| " + " | ".join(header_row) + " |", "|" + "---|" * len(header_row)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def rss_bytes() -> int:
    """Resident memory of this process now."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def reset_peak() -> int:
    """Reset this process's peak resident memory to the current one; return it (bytes).

    Linux: writing 5 to ``/proc/self/clear_refs`` resets ``VmHWM``. ``ru_maxrss`` cannot
    be reset, and a child started by ``fork`` + ``exec`` inherits its parent's.
    """
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return rss_bytes()


def peak_rss_bytes() -> int:
    """Peak resident memory of this process since the last :func:`reset_peak` (``VmHWM``)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def run_json(args: Sequence[str]) -> dict:
    """Run ``python THIS_SCRIPT args`` in a fresh process; return the JSON it prints last."""
    import json

    done = subprocess.run(
        [sys.executable, sys.argv[0], *args], check=True, capture_output=True, text=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def synthetic_root(regions: Sequence[str] = ("hokkaido", "talakmau")) -> Path:
    """A data root with the default synthetic cubes (their preset sizes), made once."""
    from landslide_lit.data.cube import existing_cube
    from landslide_lit.data.synthetic import write_synthetic_cube
    from landslide_lit.regions import get_region

    root = WORK / "data"
    for name in regions:
        if existing_cube(get_region(name), root, synthetic=True) is None:
            write_synthetic_cube(name, root=root)
    return root
