"""Richardson-Lucy deconvolution of a whole volume (:func:`tomo4d.dvc.deconvolve`, scikit-image's FFT RL) against the
box-by-box version (:func:`tomo4d.dvc.deconvolve_chunked`) at a memory budget (issue "Real sizes", the DVC's
deconvolution out of core).

A blurred noisy texture of ``--size``^3 float32 is written to Zarr chunk by chunk; each case runs in a fresh process
and reports wall and CPU seconds and its peak RSS (``ru_maxrss``); the largest difference of the two outputs (in
units of the output's grey range) is read back from the stores.

    .venv/bin/python benchmarks/bench_deconvolve.py [--size 256] [--sigma 1.2] [--iterations 20]
        [--budgets 64,512] [--no-whole]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np


def _block(block_info=None, *, sigma=1.2):
    from scipy import ndimage

    loc = block_info[None]["array-location"]
    z, y, x = np.meshgrid(*[np.arange(a - 8, b + 8, dtype=np.float64) for a, b in loc], indexing="ij")
    v = (np.sin(0.9 * z + 0.5 * y) + np.sin(0.7 * y - 0.8 * x) + np.sin(1.1 * x + 0.6 * z)
         + (np.sin(0.21 * z + 0.13 * y) > 0.3))
    v = ndimage.gaussian_filter(1000 * v + 5000, sigma)[8:-8, 8:-8, 8:-8]
    rng = np.random.default_rng([int(a) for a, _ in loc])
    return (v + rng.normal(0, 20, v.shape)).astype(np.float32)


def write_input(folder: str, size: int, sigma: float) -> str:
    import dask.array as da

    chunks = da.core.normalize_chunks(64, (size,) * 3)
    path = os.path.join(folder, "scan.zarr")
    da.map_blocks(_block, chunks=chunks, dtype=np.float32, sigma=sigma).to_zarr(path, overwrite=True)
    return path


def run_case(path: str, out: str, *, sigma: float, iterations: int, budget: float | None) -> dict:
    import resource

    import zarr

    from tomo4d.dvc import deconvolve, deconvolve_chunked

    src = zarr.open_array(path, mode="r")
    t0, c0 = time.perf_counter(), time.process_time()
    if budget is None:
        res = deconvolve(np.asarray(src[:]), psf_sigma_px=sigma, iterations=iterations)
        zarr.open_array(out, mode="w", shape=res.shape, chunks=(64, 64, 64), dtype="f4")[:] = res
    else:
        deconvolve_chunked(src, out, psf_sigma_px=sigma, iterations=iterations, chunk_budget_mb=budget)
    return {"case": "whole" if budget is None else f"boxes {budget:g} MB", "wall_s": time.perf_counter() - t0,
            "cpu_s": time.process_time() - c0, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _max_diff(a: str, b: str) -> float:
    import zarr

    x, y = zarr.open_array(a, mode="r"), zarr.open_array(b, mode="r")
    worst, lo, hi = 0.0, np.inf, -np.inf
    for z0 in range(0, x.shape[0], 32):
        p, q = np.asarray(x[z0:z0 + 32], np.float64), np.asarray(y[z0:z0 + 32], np.float64)
        worst = max(worst, float(np.abs(p - q).max()))
        lo, hi = min(lo, float(p.min())), max(hi, float(p.max()))
    return worst / (hi - lo)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--sigma", type=float, default=1.2)
    ap.add_argument("--iterations", type=int, default=20)
    ap.add_argument("--budgets", default="64,512")
    ap.add_argument("--no-whole", action="store_true", help="skip the whole-volume (in-memory) case")
    ap.add_argument("--case", nargs=4, help=argparse.SUPPRESS)  # internal: path out budget|whole sigma,iterations
    a = ap.parse_args(argv)
    if a.case:
        path, out, budget, rest = a.case
        sigma, it = rest.split(",")
        print(json.dumps(run_case(path, out, sigma=float(sigma), iterations=int(it),
                                  budget=None if budget == "whole" else float(budget))), flush=True)
        return
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as d:
        path = write_input(d, a.size, a.sigma)
        cases = ([] if a.no_whole else ["whole"]) + a.budgets.split(",")
        outs = {}
        for c in cases:
            out = os.path.join(d, f"out_{c}.zarr")
            res = subprocess.run([sys.executable, __file__, "--case", path, out, c, f"{a.sigma},{a.iterations}"],
                                 capture_output=True, text=True, check=True)
            row = json.loads(res.stdout.strip().splitlines()[-1])
            outs[c] = out
            if "whole" in outs and c != "whole":
                row["max_diff_of_range"] = _max_diff(outs["whole"], out)
            row.update(size=a.size, sigma=a.sigma, iterations=a.iterations)
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
