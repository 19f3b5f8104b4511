"""Run the benchmarks of RESULTS.md one after the other with their documented default commands.

    .venv/bin/python benchmarks/run_all.py [--only dvc,phantom] [--list]     (``make benchmark``)

Each benchmark is its own process (its own peak memory and thread settings) and prints its figures;
this script adds a header and the wall time of each, and a summary at the end.  The slow,
acceptance-level runs (``bench_enhance.py speed|synthetic|real``, ``bench_dvc_large.py`` over the whole
series, ``bench_segment.py --mode inputs``) are not in the default set: run them by name as RESULTS.md
says.  SPAM comparisons need ``--spam-python`` in the DVC benchmark (a throwaway environment, never a
dependency); without it the DVC benchmark measures tomo4d alone.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

#: name -> arguments of ``python benchmarks/<script>`` (quick defaults, minutes each on 2 cores)
BENCHMARKS = {
    "convert": ["bench_convert.py", "--size", "256"],
    "phantom": ["bench_phantom.py", "--shape", "96", "--steps", "4"],
    "dvc": ["bench_dvc.py"],
    "dvc_large": ["bench_dvc_large.py", "--shape", "64", "--steps", "1,3"],
    "quantify": ["bench_quantify.py", "--counts", "2500", "--steps", "4"],
    "segment": ["bench_segment.py", "--size", "128", "--what", "rf2d,unet"],
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default=None, help=f"comma-separated subset of: {', '.join(BENCHMARKS)}")
    ap.add_argument("--list", action="store_true", help="print the commands and exit")
    a = ap.parse_args(argv)
    names = list(BENCHMARKS) if a.only is None else [n.strip() for n in a.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        ap.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    summary = []
    for name in names:
        cmd = [sys.executable, str(HERE / BENCHMARKS[name][0]), *BENCHMARKS[name][1:]]
        if a.list:
            print(" ".join(cmd))
            continue
        print(f"\n=== {name}: {' '.join(cmd[1:])}", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.call(cmd)
        summary.append((name, rc, time.perf_counter() - t0))
    for name, rc, dt in summary:
        print(f"{name:10s} {'ok' if rc == 0 else f'FAILED (exit {rc})':16s} {dt:8.1f} s wall")
    return 1 if any(rc for _, rc, _ in summary) else 0


if __name__ == "__main__":
    sys.exit(main())
