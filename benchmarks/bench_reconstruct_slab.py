"""Where the CPU time of one reconstructed slab goes: `reconstruct_to` against the engine's bare FBP, same run.

    OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONPATH=src nice -n 10 \
        python benchmarks/bench_reconstruct_slab.py /tmp/rec1024/scan.nxs --rows 500:508 --center 514.8

In one process, single-threaded, after a warm-up slab (imports, numba's cached kernel loaded: the fixed cost of
a process, reported apart): ``reconstruct_to`` of ``--rows`` into an OME-Zarr under ``--out`` (the streamed path
a user runs, one slab), timed as a whole and split by cProfile into reading the rows (HDF5), flat/dark and -log,
the engine's FBP (filter + back-projection) and writing; then the peer, algotom's ``fbp_reconstruction`` called
bare on the same sinograms (what RESULTS quotes as the engine's speed).  Prints one JSON line: process CPU
seconds per slice of each part, the overhead (total - bare FBP) per slice, wall seconds, the peak of
Python-allocated memory (tracemalloc: numpy arrays included) while one slab is reconstructed, and the output's
SHA-1 (to compare code versions bit for bit).
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import json
import pstats
import shutil
import time
from pathlib import Path

import numpy as np

from tomo4d.reconstruct import ReconstructOptions, engine, open_projections, reconstruct_to

PARTS = {  # cProfile function name (file suffix, function) -> part of a slab
    "read": [("readers.py", "rows")],
    "normalise": [("core.py", "transmission"), ("core.py", "_slab_attenuation")],
    "fbp": [("engine.py", "fbp")],
    "write": [("_chunks.py", "write")],
}


def _cum(stats: pstats.Stats, file_suffix: str, func: str) -> float:
    return sum(v[3] for (f, _, name), v in stats.stats.items() if f.endswith(file_suffix) and name == func)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("scan")
    ap.add_argument("--rows", default="500:508")
    ap.add_argument("--center", type=float, required=True)
    ap.add_argument("--out", default="/tmp/bench_reconstruct_slab")
    args = ap.parse_args()
    r0, r1 = (int(v) for v in args.rows.split(":"))
    n = r1 - r0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    proj = open_projections(args.scan)

    c0 = time.process_time()
    reconstruct_to(proj, out / "warm.ome.zarr", options=ReconstructOptions(center=args.center, rows=(r0, r0 + 1)),
                   overwrite=True)
    fixed = time.process_time() - c0

    opts = ReconstructOptions(center=args.center, rows=(r0, r1), slab_rows=n)
    prof = cProfile.Profile(time.process_time)
    c0, w0 = time.process_time(), time.perf_counter()
    prof.enable()
    rec = reconstruct_to(proj, out / "rec.ome.zarr", options=opts, overwrite=True)
    prof.disable()
    total, wall = time.process_time() - c0, time.perf_counter() - w0
    st = pstats.Stats(prof)
    parts = {k: sum(_cum(st, f, g) for f, g in v) for k, v in PARTS.items()}
    parts["normalise"] -= parts["read"]  # _slab_attenuation includes the read

    from tomo4d.reconstruct.core import _slab_attenuation

    sino, _ = _slab_attenuation(proj, r0, r1, opts, None)
    _, _, _, reconstruction = engine.engine_modules()
    angles = np.deg2rad(proj.angles_deg).astype(np.float32)
    with engine.one_numba_thread():
        c0 = time.process_time()
        reconstruction.fbp_reconstruction(sino, args.center, angles=angles, ratio=None, filter_name=None,
                                          apply_log=False, gpu=False, ncore=1)
        bare = time.process_time() - c0
    ref = np.asarray(rec.volume.data)
    with engine.one_numba_thread():  # the machine's speed now: the bare back-projector, ns per pixel-angle
        small = np.random.default_rng(0).random((256, 256)).astype(np.float32)
        small_angles = np.linspace(0, np.pi, 256, endpoint=False).astype(np.float32)
        reconstruction.back_projection_cpu(small, small_angles, np.float32(128))
        c0 = time.process_time()
        for _ in range(3):
            reconstruction.back_projection_cpu(small, small_angles, np.float32(128))
        kernel_ns = (time.process_time() - c0) / 3 / 256**3 * 1e9
    import tracemalloc

    from tomo4d.reconstruct.core import reconstruct_slab

    del sino
    tracemalloc.start()
    block, _, _ = reconstruct_slab(proj, r0, r1, args.center, opts, None)
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    same = bool(np.array_equal(block, ref))
    print(json.dumps({
        "scan": args.scan, "shape": list(proj.shape), "rows": [r0, r1], "slices": n,
        "fixed_cpu_s_first_slab_of_a_process": round(fixed, 2),
        "cpu_s_per_slice": {"reconstruct_to": round(total / n, 3), **{k: round(v / n, 3) for k, v in parts.items()},
                            "other": round((total - sum(parts.values())) / n, 3),
                            "bare_algotom_fbp (peer)": round(bare / n, 3)},
        "overhead_cpu_s_per_slice": round((total - bare) / n, 3), "ratio_to_bare_fbp": round(total / bare, 2),
        "backprojection_ns_per_pixel_angle_256": round(kernel_ns, 2),
        "peak_traced_mib_one_slab": round(peak, 1), "slab_equals_streamed": same,
        "wall_s": round(wall, 1), "output_mean": float(ref.mean()), "output_sha1": hashlib.sha1(ref).hexdigest()}))
    shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
