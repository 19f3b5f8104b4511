"""Benchmark: start-up cost of the ``tomo4d`` command (``--help``, ``--version``, a small ``info``) per process.

Each command runs in a fresh Python process (``python -c "from tomo4d.cli import main; ..."``, what the console
script runs), CPU = the child's user + system time (``RUSAGE_CHILDREN``), wall = around the child; A/B alternated
with ``--baseline-src`` (another checkout's ``src``, e.g. the commit before a change) and against a floor (a bare
``python -c "import click"``); medians of ``--repeats``.

    PYTHONPATH=src python benchmarks/bench_cli_start.py [--repeats 5] [--baseline-src /tmp/old/src]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MAIN = "import sys; from tomo4d.cli import main; sys.exit(main(sys.argv[1:]))"


def run(cmd: list[str], env: dict) -> tuple[float, float]:
    r0, w = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall, r1 = time.perf_counter() - w, resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--baseline-src", default=None, help="a checkout's src folder to compare with")
    a = ap.parse_args(argv)
    here = str(Path(__file__).resolve().parents[1] / "src")
    tmp = Path(tempfile.mkdtemp())
    import numpy as np
    import tifffile

    tifffile.imwrite(tmp / "small.tif", np.arange(16 * 32 * 32, dtype=np.uint16).reshape(16, 32, 32))
    commands = {"--help": ["--help"], "--version": ["--version"], "info small.tif": ["info", str(tmp / "small.tif")]}
    srcs = {"this": here, **({"baseline": a.baseline_src} if a.baseline_src else {})}
    res: dict = {}
    for _ in range(a.repeats):
        floor_env = {**os.environ, "PYTHONPATH": here}
        res.setdefault(("floor: python -c 'import click'", ""), []).append(
            run([sys.executable, "-c", "import click"], floor_env))
        for cname, args in commands.items():
            for sname, src in srcs.items():
                env = {**os.environ, "PYTHONPATH": src}
                res.setdefault((cname, sname), []).append(run([sys.executable, "-c", MAIN, *args], env))
    print(f"{'command':<34} {'src':<9} {'wall s':>8} {'CPU s':>8}   (median of {a.repeats}, fresh process each)")
    med = {k: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v)) for k, v in res.items()}
    for (cname, sname), (w, c) in med.items():
        print(f"{cname:<34} {sname:<9} {w:8.3f} {c:8.3f}")
    if a.baseline_src:
        for cname in commands:
            (wt, ct), (wb, cb) = med[(cname, "this")], med[(cname, "baseline")]
            print(f"{cname}: baseline / this  wall {wb / wt:.2f}x, CPU {cb / ct:.2f}x")


if __name__ == "__main__":
    main()
