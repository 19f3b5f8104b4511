"""The automatic centre of rotation on a real-size NXtomo scan: tomo4d's coarse-to-fine search against algotom's own.

    # a scan with a known axis (benchmarks/bench_reconstruct_1024.py make ... writes `true_axis_column`)
    OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONPATH=src nice -n 10 \
        python benchmarks/bench_reconstruct_centre.py /tmp/rec1024/scan.nxs [--old]

Runs the centre search as a reconstruction does (``tomo4d.reconstruct.core.plan``: ``center_rows`` rows read,
flat/dark-corrected, -log, Vo's metric per row, the median), single-threaded, and prints one JSON line per
method: process CPU seconds (all of it; and the search alone, without reading the rows), wall seconds, the
centre per row and the median, and the error against the scan's true axis.  ``--old`` adds the peer, measured
in the same run on the same rows: algotom's ``find_center_vo`` over the whole window (integer steps at full
size, then 0.25 px steps), i.e. ``engine.find_center`` with the coarse stage switched off.

    python benchmarks/bench_reconstruct_centre.py --synthetic 1024 [--old]

instead searches single sinograms (one row of bench_reconstruct_1024's analytic phantom, 1e4 photons, as many
angles as columns) with the axis at the middle + 3.3, -20, 17.6, -11.35, 0, 8.8 px: one JSON line per offset.
"""

from __future__ import annotations

import argparse
import json
import time

from tomo4d.reconstruct import ReconstructOptions, engine, open_projections
from tomo4d.reconstruct.core import plan


def measure(path: str, label: str, coarse_size: int | None, rows: int) -> dict:
    import h5py

    with h5py.File(path, "r") as h5:
        truth = float(h5["entry"].attrs["true_axis_column"]) if "true_axis_column" in h5["entry"].attrs else None
    found, search_cpu = [], [0.0]
    original = engine.find_center

    def timed(sino, search):
        t = time.process_time()
        c = original(sino, search, coarse_size=coarse_size)
        search_cpu[0] += time.process_time() - t
        found.append(c)
        return c

    engine.find_center = timed
    try:
        proj = open_projections(path)
        w0, c0 = time.perf_counter(), time.process_time()
        pl = plan(proj, ReconstructOptions(center_rows=rows))
        cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    finally:
        engine.find_center = original
    n, height, width = proj.shape
    return {"method": label, "scan": path, "projections": n, "rows": height, "columns": width,
            "center_rows": rows, "centre_per_row": found, "centre": pl.center, "true_axis": truth,
            "error_px": None if truth is None else round(pl.center - truth, 3),
            "cpu_s": round(cpu, 2), "search_cpu_s": round(search_cpu[0], 2), "wall_s": round(wall, 2)}


def synthetic(width: int, old: bool) -> None:
    import sys
    from pathlib import Path

    import numpy as np

    sys.path.insert(0, str(Path(__file__).parent))
    from bench_reconstruct_1024 import line_integrals, phantom

    big_r, spheres = phantom(width, 0)
    row = width // 2
    near = spheres[np.abs(spheres[:, 2] - row - 0.5) < spheres[:, 3] + 2].copy()
    near[:, 2] -= row
    theta = np.linspace(0, np.pi, width, endpoint=False)
    for offset in (3.3, -20.0, 17.6, -11.35, 0.0, 8.8):
        axis = (width - 1) / 2 + offset
        line = np.stack([line_integrals(t, (1, width), axis, big_r, near)[0] for t in theta])
        counts = np.random.default_rng(int(abs(offset) * 10)).poisson(1e4 * np.exp(-line))
        sino = (-np.log(np.maximum(counts, 1) / 1e4)).astype(np.float32)
        out = {"columns": width, "angles": width, "offset": offset}
        for label, size in (("coarse_to_fine", None), ("find_center_vo", 10**9))[:2 if old else 1]:
            t = time.process_time()
            c = engine.find_center(sino, width / 4, coarse_size=size)
            out[label] = {"error_px": round(c - axis, 3), "cpu_s": round(time.process_time() - t, 2)}
        print(json.dumps(out), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("scan", nargs="?")
    ap.add_argument("--synthetic", type=int, metavar="WIDTH", help="single analytic sinograms of WIDTH columns")
    ap.add_argument("--old", action="store_true", help="also run algotom's full-size search (the peer; slow)")
    ap.add_argument("--rows", type=int, default=3, help="center_rows (default 3, the package's default)")
    args = ap.parse_args()
    if args.synthetic:
        return synthetic(args.synthetic, args.old)
    if not args.scan:
        ap.error("give a scan or --synthetic WIDTH")
    new = measure(args.scan, "coarse-to-fine (tomo4d)", None, args.rows)
    print(json.dumps(new), flush=True)
    if args.old:
        old = measure(args.scan, "find_center_vo full size (algotom)", 10**9, args.rows)
        print(json.dumps(old), flush=True)
        print(json.dumps({"search_cpu_ratio_old_over_new": round(old["search_cpu_s"] / new["search_cpu_s"], 1),
                          "same_centre": old["centre"] == new["centre"]}))


if __name__ == "__main__":
    main()
