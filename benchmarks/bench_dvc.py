"""Benchmark of DVC: tomo4d (local and global) vs SPAM on the real snow volume, same volumes, same grid.

The 100^3 snow XCT volume is deformed by the smooth known field u_z = 2 sin(pi z / 100) px.
Both codes correlate the same node grid (spacing 10, half-window 10, 512 nodes) starting from the
identity, with the same number of worker threads/processes, and the script prints nodes/s, the
median displacement error and the fraction of converged nodes of each, and the speed ratio.  The global
lines (``correlate_global``, control-grid spacing 10, one level, from zero) count their own 1000 nodes and
read their error at the same 512 points through the field's own trilinear interpolant; their 'conv.' column
is whether the solver settled before ``max_iterations``.

SPAM is *not* a dependency of tomo4d: install it into a separate environment and point
``--spam-python`` at that interpreter (``python -m venv /tmp/spamenv && /tmp/spamenv/bin/pip
install spam``).  Without it only tomo4d runs and SPAM's published figures (DESIGN.md section 3:
~210 nodes/s with 2 processes, median error ~0.03 px) are used for the ratio.

    .venv/bin/python benchmarks/bench_dvc.py [--spam-python /tmp/spamenv/bin/python] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SNOW = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "real" / "snow_xct_100.tif"
SPAM_PUBLISHED_NODES_PER_S = 210.0
SPAM_PUBLISHED_MEDIAN_ERR = 0.03

_SPAM_SCRIPT = r"""
import json, resource, sys, time
import numpy
import spam.DIC
ref = numpy.load(sys.argv[1]); dfm = numpy.load(sys.argv[2]); pos = numpy.load(sys.argv[3])
workers = int(sys.argv[4]); order = int(sys.argv[5]); hw = int(sys.argv[6])
def cpu():
    a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime
c = cpu()
t = time.perf_counter()
out = spam.DIC.ldic(ref, dfm, pos, [hw, hw, hw], processes=workers, interpolationOrder=order,
                    maxIterations=50, deltaPhiMin=0.001)
dt = time.perf_counter() - t
c = cpu() - c
phi = out[0] if isinstance(out, (tuple, list)) else out["PhiField"]
status = out[1] if isinstance(out, (tuple, list)) else out["returnStatus"]
numpy.save(sys.argv[7], numpy.asarray(phi))
print(json.dumps({"seconds": dt, "cpu_s": c, "status": numpy.asarray(status).tolist()}))
"""


def sine(points):
    return np.stack([2.0 * np.sin(np.pi * points[0] / 100.0), 0 * points[1], 0 * points[2]])


def deformed_volume(ref: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    grid = np.stack(np.meshgrid(*[np.arange(n, dtype=float) for n in ref.shape], indexing="ij"))
    x = grid.copy()
    for _ in range(60):
        x = grid - sine(x)
    return ndimage.map_coordinates(ref, x, order=3, mode="mirror").astype(np.float32)


def errors(pos: np.ndarray, disp: np.ndarray) -> np.ndarray:
    true = sine(pos.T.astype(float)).T
    return np.linalg.norm(disp - true, axis=1)


def run_tomo4d(ref, dfm, *, workers, order, repeats, curv=True, backend="numba", device=None, grey_model="ssd"):
    from tomo4d.dvc import correlate

    best = None
    for _ in range(repeats):
        c = time.process_time()
        t = time.perf_counter()
        f = correlate(ref, dfm, node_spacing=10, half_window=10, order=order, threads=workers, replace=False,
                      curvature_correction=curv, backend=backend, device=device, grey_model=grey_model)
        dt = time.perf_counter() - t
        c = time.process_time() - c
        best = (dt, f, c) if best is None or dt < best[0] else best
    dt, f, c = best
    e = errors(f.positions_zyx_px, f.displacement_zyx_px)
    return {"seconds": dt, "cpu_s": c, "nodes": f.n_nodes, "nodes_per_s": f.n_nodes / dt,
            "nodes_per_cpu_s": f.n_nodes / c, "median_err_px": float(np.median(e)),
            "p95_err_px": float(np.percentile(e, 95)), "converged": float(f.converged.mean())}, f.positions_zyx_px


def run_global(ref, dfm, pos, *, workers, repeats, solver, interpolation, regularisation=0.05):
    """Global DVC (spacing 10, one level, from zero): its own nodes counted, its error read by its own trilinear
    interpolant at the local grid's nodes ``pos`` (the points SPAM and local DVC measure)."""
    import warnings

    from tomo4d.dvc import correlate_global

    best = None
    for _ in range(repeats):
        c = time.process_time()
        t = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # L-BFGS's max_iterations warning: reported as 'conv.'
            f = correlate_global(ref, dfm, node_spacing=10, levels=1, solver=solver, interpolation=interpolation,
                                 threads=workers, regularisation=regularisation)
        dt = time.perf_counter() - t
        c = time.process_time() - c
        best = (dt, f, c) if best is None or dt < best[0] else best
    dt, f, c = best
    u, _ = f.interpolate(pos.astype(float), order=1)
    e = errors(pos, u)
    return {"seconds": dt, "cpu_s": c, "nodes": f.n_nodes, "nodes_per_s": f.n_nodes / dt,
            "nodes_per_cpu_s": f.n_nodes / c, "median_err_px": float(np.median(e)),
            "p95_err_px": float(np.percentile(e, 95)), "converged": float(bool(f.notes["converged"]))}


def run_spam(python, ref, dfm, pos, *, workers, order):
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        paths = [tmp / n for n in ("ref.npy", "def.npy", "pos.npy", "phi.npy")]
        np.save(paths[0], ref)
        np.save(paths[1], dfm)
        np.save(paths[2], pos.astype(np.int64))
        (tmp / "run.py").write_text(_SPAM_SCRIPT)
        proc = subprocess.run([python, str(tmp / "run.py"), str(paths[0]), str(paths[1]), str(paths[2]),
                               str(workers), str(order), "10", str(paths[3])], capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"SPAM failed: {proc.stderr[-2000:]}")
        d = json.loads(proc.stdout.strip().splitlines()[-1])
        phi = np.load(paths[3])
    e = errors(pos, phi[:, :3, 3])
    st = np.asarray(d["status"])
    return {"seconds": d["seconds"], "cpu_s": d["cpu_s"], "nodes": len(pos), "nodes_per_s": len(pos) / d["seconds"],
            "nodes_per_cpu_s": len(pos) / d["cpu_s"],
            "median_err_px": float(np.median(e)), "p95_err_px": float(np.percentile(e, 95)),
            "converged": float((st == 2).mean())}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spam-python", default=None, help="Python interpreter of an environment with SPAM.")
    ap.add_argument("--workers", type=int, default=2, help="Threads (tomo4d) and processes (SPAM).")
    ap.add_argument("--repeats", type=int, default=3, help="tomo4d repetitions (best time; the first compiles).")
    ap.add_argument("--no-lbfgs", action="store_true", help="Skip the global L-BFGS line (~7 CPU s; ~60 before session 25).")
    ap.add_argument("--torch-device", default=None,
                    help="Device of the extra torch-backend line (default cuda when available, else cpu); "
                         "'none' skips it.")
    a = ap.parse_args(argv)
    if not SNOW.is_file():
        sys.exit(f"real data not found: {SNOW}")
    import tifffile

    ref = tifffile.imread(SNOW).astype(np.float32)
    dfm = deformed_volume(ref)
    rows = []
    pos = None
    from tomo4d.dvc import node_grid

    pos = node_grid(ref.shape, node_spacing=10, half_window=10)[0]
    spam = None
    if a.spam_python:  # first, so that SPAM and tomo4d see similar machine load
        spam = run_spam(a.spam_python, ref, dfm, pos, workers=a.workers, order=1)
    for order in (3, 1):
        for curv in (True, False):
            res, _ = run_tomo4d(ref, dfm, workers=a.workers, order=order, repeats=a.repeats, curv=curv)
            rows.append((f"tomo4d {'cubic' if order == 3 else 'linear'}{' +curv.corr.' if curv else ''}", res))
    for order in (3, 1):  # the grey-level-tolerant model, for its cost (no grey change here)
        res, _ = run_tomo4d(ref, dfm, workers=a.workers, order=order, repeats=a.repeats, grey_model="znssd")
        rows.append((f"tomo4d {'cubic' if order == 3 else 'linear'} znssd +curv.", res))
    # the last: the runner's global route on scans as reconstructed (Gauss-Newton cubic 0.05, as snow here) and on
    # deconvolved scans, the demo's (the Laplacian 0.2): pipeline.sections.ROUTE_REGULARISATION (sessions 26-29)
    for solver, interp, reg in (("gauss-newton", "cubic", 0.05), ("gauss-newton", "linear", 0.05),
                                ("lbfgs", "linear", 0.05), ("gauss-newton", "cubic", 0.2)):
        if solver == "lbfgs" and a.no_lbfgs:
            continue
        res = run_global(ref, dfm, pos, workers=a.workers, repeats=a.repeats, solver=solver, interpolation=interp,
                         regularisation=reg)
        rows.append((f"tomo4d global {solver} {interp}" + (f" reg {reg:g}" if reg != 0.05 else ""), res))
    if a.torch_device != "none":
        import importlib.util

        if importlib.util.find_spec("torch") is None:
            print("(torch not installed: no torch-backend line)")
        else:
            import torch

            dev = a.torch_device or ("cuda" if torch.cuda.is_available() else "cpu")
            res, _ = run_tomo4d(ref, dfm, workers=a.workers, order=3, repeats=1 if dev == "cpu" else a.repeats,
                                backend="torch", device=dev)
            rows.append((f"tomo4d cubic torch:{dev}", res))
    if spam:
        rows.append(("SPAM 0.9 ldic (linear)", spam))
    ref_speed = spam["nodes_per_s"] if spam else SPAM_PUBLISHED_NODES_PER_S
    ref_err = spam["median_err_px"] if spam else SPAM_PUBLISHED_MEDIAN_ERR
    print(f"snow 100^3, u_z = 2 sin(pi z/100), spacing 10 / half-window 10, {a.workers} workers")
    ref_cpu = spam["nodes_per_cpu_s"] if spam else None
    print(f"{'code':<40} {'nodes':>5} {'wall s':>7} {'nodes/s':>8} {'CPU s':>6} {'nodes/CPU-s':>11} "
          f"{'median err px':>13} {'p95 err':>8} {'conv.':>6} {'x SPAM (wall)':>13} {'x SPAM (CPU)':>12}")
    for name, r in rows:
        cpu_ratio = f"{r['nodes_per_cpu_s'] / ref_cpu:>11.2f}x" if ref_cpu else f"{'-':>12}"
        print(f"{name:<40} {r['nodes']:>5} {r['seconds']:>7.2f} {r['nodes_per_s']:>8.1f} {r['cpu_s']:>6.2f} "
              f"{r['nodes_per_cpu_s']:>11.1f} {r['median_err_px']:>13.4f} {r['p95_err_px']:>8.4f} "
              f"{100 * r['converged']:>5.0f}% {r['nodes_per_s'] / ref_speed:>12.2f}x {cpu_ratio}")
    if not spam:
        print(f"(SPAM not run: ratio against its published {SPAM_PUBLISHED_NODES_PER_S:g} nodes/s, "
              f"median error {SPAM_PUBLISHED_MEDIAN_ERR:g} px)")
    print(json.dumps({name: r for name, r in rows} | {"spam_reference_nodes_per_s": ref_speed,
                                                      "spam_reference_median_err_px": ref_err}))


if __name__ == "__main__":
    main()
