"""Time and peak memory of `tomo4d.reconstruct` (algotom CPU engine) against the data size (issue 22).

    OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1 PYTHONPATH=src python benchmarks/bench_reconstruct_scale.py \
        --width 256 512 1024 --rows 4 [--rings sorting]

Each size runs in its own process (peak RSS is per process): N projections of ``rows`` x N pixels
(N = width, as for a 1024^2 x 1024 scan), flats and darks, ``--rings`` removal, FBP with the centre
given; then the automatic centre search alone (once per scan).  The full-volume CPU time is the
per-row time times N plus one centre search (each slab is independent); peak memory is that of a
``rows``-row run (input slab plus output); a full volume adds its output (4 N^3 bytes) in memory.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def one(width: int, rows: int, slab: int, rings: str) -> dict:
    import numpy as np

    from tomo4d.reconstruct import Projections, ReconstructOptions, reconstruct

    rng = np.random.default_rng(0)
    n = width
    y, x = np.mgrid[:rows, :width]
    base = 1e4 * np.exp(-0.5 * (np.abs(x - width / 2) < width / 3))
    counts = rng.poisson(np.broadcast_to(base, (n, rows, width))).astype(np.float32)
    flat = np.full((rows, width), 1e4, np.float32)
    dark = np.zeros((rows, width), np.float32)
    proj = Projections(counts, None, flat, dark, np.linspace(0, 180, n, endpoint=False), 1000.0, "bench")
    # the rows with the centre given: flat/dark, -log, rings, FBP (scales with the rows)
    w, c = time.perf_counter(), time.process_time()
    reconstruct(proj, options=ReconstructOptions(center=width / 2, rings=rings, slab_rows=slab))
    wall, cpu = time.perf_counter() - w, time.process_time() - c
    # the automatic centre (once per scan: Vo's search on 3 rows), from one row with the centre found
    w1, c1 = time.perf_counter(), time.process_time()
    reconstruct(proj, options=ReconstructOptions(rings=rings, rows=(0, 1)))
    wall1, cpu1 = time.perf_counter() - w1 - wall / rows, time.process_time() - c1 - cpu / rows
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"width": width, "angles": n, "rows": rows, "rings": rings, "wall_s": round(wall, 2),
            "cpu_s": round(cpu, 2), "cpu_s_per_row": round(cpu / rows, 3), "centre_search_wall_s": round(wall1, 2),
            "centre_search_cpu_s": round(cpu1, 2), "peak_rss_mib": round(peak, 1),
            "input_mib": round(counts.nbytes / 2**20, 1),
            "full_volume_cpu_s": round(cpu / rows * width + cpu1, 1),
            "full_volume_output_mib": round(4 * width**3 / 2**20, 1)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--width", type=int, nargs="+", default=[256, 512, 1024])
    ap.add_argument("--rows", type=int, default=8)
    ap.add_argument("--slab", type=int, default=8)
    ap.add_argument("--rings", default="none")
    ap.add_argument("--one", action="store_true")
    a = ap.parse_args()
    if a.one:
        print(json.dumps(one(a.width[0], a.rows, a.slab, a.rings)))
        return
    for w in a.width:
        out = subprocess.run([sys.executable, __file__, "--one", "--width", str(w), "--rows", str(a.rows),
                              "--slab", str(a.slab), "--rings", a.rings], capture_output=True, text=True)
        print(out.stdout.strip() or out.stderr[-2000:], flush=True)


if __name__ == "__main__":
    main()
