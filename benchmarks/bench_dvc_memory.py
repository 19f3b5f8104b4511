"""Peak memory of local DVC against volume size and ``chunk_budget_mb`` (issue "Performance", DVC memory;
issue "Real sizes", DVC node batches).

A textured pair (a sum of sines, the deformed one stretched 2 % along z and shifted) of ``--size``^3 float32
is written chunk by chunk to Zarr (never whole in memory), then each case runs in a fresh process and
reports its peak RSS (``ru_maxrss``), wall time, nodes/s and the median error against the exact field:

- ``zarr``: the volumes read lazily from Zarr, batch by batch, at the given budget;
- ``numpy``: both volumes loaded as float32 arrays first (their bytes count in the peak).

    .venv/bin/python benchmarks/bench_dvc_memory.py [--size 512] [--spacing 32] [--budgets 256,1024]
        [--threads 2] [--numpy]
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

STRETCH, SHIFT = 0.02, 0.7


def _texture(block_info=None, *, stretch=0.0, shift=0.0):
    loc = block_info[None]["array-location"]
    z, y, x = np.meshgrid(*[np.arange(a, b, dtype=np.float64) for a, b in loc], indexing="ij")
    z = (z - shift) / (1.0 + stretch)    # D(z') = R(z), z' = z (1 + stretch) + shift
    v = (np.sin(0.9 * z + 0.5 * y) + np.sin(0.7 * y - 0.8 * x) + np.sin(1.1 * x + 0.6 * z)
         + np.sin(0.585 * z + 0.3 * x) + 0.5 * np.sin(0.31 * z - 0.23 * y + 0.41 * x))
    return (1000 * v + 5000).astype(np.float32)


def write_pair(folder: str, size: int) -> tuple[str, str]:
    import dask.array as da

    chunks = da.core.normalize_chunks(64, (size,) * 3)
    paths = []
    for name, kw in (("reference", {}), ("deformed", {"stretch": STRETCH, "shift": SHIFT})):
        path = os.path.join(folder, f"{name}.zarr")
        da.map_blocks(_texture, chunks=chunks, dtype=np.float32, **kw).to_zarr(path, overwrite=True)
        paths.append(path)
    return paths[0], paths[1]


def run_case(ref_path, dfm_path, *, spacing, budget, threads, load) -> dict:
    import dask.array as da

    from tomo4d.dvc import NodeStatus, correlate

    ref, dfm = da.from_zarr(ref_path), da.from_zarr(dfm_path)
    if load:
        ref, dfm = np.asarray(ref), np.asarray(dfm)
    t0 = time.perf_counter()
    c0 = time.process_time()
    c = (np.asarray(ref.shape, float) - 1) / 2          # the exact affine as the initial guess (phi0, about
    phi0 = np.eye(4)                                    # the centre): the memory of the solve is measured,
    phi0[0, 0] = 1 + STRETCH                            # not the capture range of a periodic texture
    phi0[0, 3] = STRETCH * c[0] + SHIFT
    field = correlate(ref, dfm, node_spacing=spacing, half_window=spacing // 2, chunk_budget_mb=budget,
                      threads=threads, replace=False, phi0=phi0)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    import resource

    ok = field.status == NodeStatus.CONVERGED
    pos = field.positions_zyx_px[ok]
    true = np.stack([STRETCH * pos[:, 0] + SHIFT, 0 * pos[:, 0], 0 * pos[:, 0]], axis=1)
    err = np.linalg.norm(field.displacement_zyx_px[ok] - true, axis=1)
    return {"inputs": "numpy" if load else "zarr", "budget_mib": budget, "nodes": field.n_nodes,
            "batches": field.notes["batches"], "largest_batch_mib": round(field.notes["batch_box_mib"], 1),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "nodes_per_wall_s": round(field.n_nodes / wall, 1),
            "converged": round(float(ok.mean()), 4), "median_error_px": round(float(np.median(err)), 4)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--spacing", type=int, default=32)
    ap.add_argument("--budgets", default="256,1024")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--numpy", action="store_true", help="also the in-memory numpy case at the last budget")
    ap.add_argument("--case", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.case:                                    # child process: one case, JSON on stdout
        ref, dfm, budget, load = json.loads(a.case)
        print(json.dumps(run_case(ref, dfm, spacing=a.spacing, budget=budget, threads=a.threads, load=load)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        ref, dfm = write_pair(tmp, a.size)
        print(f"# {a.size}^3 float32 pair written to Zarr in {time.perf_counter() - t0:.1f} s wall "
              f"({2 * a.size ** 3 * 4 / 2**20:.0f} MiB); node spacing {a.spacing}, half-window {a.spacing // 2}, "
              f"{a.threads} numba threads")
        budgets = [float(b) for b in a.budgets.split(",")]
        cases = [(ref, dfm, b, False) for b in budgets] + ([(ref, dfm, budgets[-1], True)] if a.numpy else [])
        rows = []
        for case in cases:
            out = subprocess.run([sys.executable, __file__, "--case", json.dumps(case), "--spacing", str(a.spacing),
                                  "--threads", str(a.threads)], capture_output=True, text=True, check=True)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), flush=True)
    keys = list(rows[0])
    print("| " + " | ".join(keys) + " |\n|" + "---|" * len(keys))
    for r in rows:
        print("| " + " | ".join(str(r[k]) for k in keys) + " |")


if __name__ == "__main__":
    main()
