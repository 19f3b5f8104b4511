"""The issue-22 acceptance measurement: `tomo4d reconstruct` on a 1024^2 x 1024-projection scan, on this CPU.

    # 1. the scan, streamed to disk projection by projection (never whole in memory): NXtomo HDF5, uint16
    PYTHONPATH=src python benchmarks/bench_reconstruct_1024.py make /tmp/rec1024/scan.nxs
    # 2. the reconstruction as a user runs it, under /usr/bin/time -v (wall, CPU, peak RSS of the process tree)
    OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1 PYTHONPATH=src nice -n 10 python benchmarks/bench_reconstruct_1024.py \
        run /tmp/rec1024/scan.nxs /tmp/rec1024/rec.ome.zarr --workers 2 [--rows 0:256]

The phantom is analytic (no forward projector, no inverse crime): an electrode-like cylinder about the rotation
axis with spherical particles and pores, whose line integrals are exact (``2 sqrt(r^2 - d^2)``); the axis sits
``--offset`` px right of the detector's middle, so the centre search has work.  Flats and darks are Poisson
(1e4 photons, dark level 100), 8 detector columns get a +-3 % gain error (stripes).  ``run`` prints one JSON
line: the command, wall and CPU seconds (``/usr/bin/time``: user + system of the process and its worker
processes), peak RSS (the largest single process: ``/usr/bin/time`` reports the maximum over the process tree's
members), the input and output sizes, and the centre found against the true one.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

MU_MATRIX, MU_PARTICLE = 0.002, 0.006  # attenuation per pixel


def phantom(width: int, seed: int = 0, n_spheres: int = 400):
    """``(cylinder radius, spheres (n, 5): x, y, z, r, delta-mu))`` in pixels about the axis; z in rows."""
    rng = np.random.default_rng(seed)
    big_r = 0.35 * width
    r = rng.uniform(0.005, 0.04, n_spheres) * width
    a, d = rng.uniform(0, 2 * np.pi, n_spheres), rng.uniform(0, 1, n_spheres)
    d = np.sqrt(d) * (big_r - r)
    z = rng.uniform(0, width, n_spheres)
    dmu = np.where(rng.random(n_spheres) < 0.8, MU_PARTICLE - MU_MATRIX, -MU_MATRIX)  # particles or pores
    return big_r, np.stack([d * np.cos(a), d * np.sin(a), z, r, dmu], axis=1)


def line_integrals(theta: float, shape, axis_col: float, big_r: float, spheres: np.ndarray) -> np.ndarray:
    """Exact parallel-beam line integrals ``(rows, cols)`` at angle ``theta`` (radians)."""
    rows, cols = shape
    u = np.arange(cols) - axis_col
    out = np.broadcast_to(MU_MATRIX * 2 * np.sqrt(np.maximum(big_r**2 - u**2, 0.0)), (rows, cols)).copy()
    c, s = np.cos(theta), np.sin(theta)
    for x, y, z, r, dmu in spheres:
        u0 = x * c + y * s + axis_col
        c0, c1 = max(int(u0 - r) - 1, 0), min(int(u0 + r) + 2, cols)
        z0, z1 = max(int(z - r) - 1, 0), min(int(z + r) + 2, rows)
        if c0 >= c1 or z0 >= z1:
            continue
        dz = (np.arange(z0, z1) + 0.5 - z)[:, None]
        du = (np.arange(c0, c1) - u0)[None, :]
        out[z0:z1, c0:c1] += dmu * 2 * np.sqrt(np.maximum(r**2 - dz**2 - du**2, 0.0))
    return out


def make(path: Path, *, width: int, n_angles: int, offset: float, n_flats: int, n_darks: int, photons: float,
         seed: int) -> dict:
    import h5py

    rng = np.random.default_rng(seed + 1)
    big_r, spheres = phantom(width, seed)
    axis_col = (width - 1) / 2 + offset
    gain = np.ones(width, np.float32)
    cols = rng.choice(np.arange(width // 8, width - width // 8), 8, replace=False)
    gain[cols] += rng.choice([-0.03, 0.03], len(cols))
    theta = np.linspace(0.0, 180.0, n_angles, endpoint=False)
    n_all = n_darks + n_flats + n_angles
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    t0 = time.perf_counter()
    with h5py.File(tmp, "w") as h5:
        entry = h5.create_group("entry")
        entry.attrs["NX_class"] = "NXentry"
        entry["definition"] = "NXtomo"
        det = h5.create_group("entry/instrument/detector")
        ds = det.create_dataset("data", shape=(n_all, width, width), dtype=np.uint16)  # contiguous
        for i in range(n_darks):
            ds[i] = rng.poisson(100.0, (width, width)).astype(np.uint16)
        for i in range(n_flats):
            ds[n_darks + i] = (rng.poisson(photons, (width, width)) + 100).clip(0, 65535).astype(np.uint16)
        for k, th in enumerate(theta):
            p = line_integrals(np.deg2rad(th), (width, width), axis_col, big_r, spheres)
            counts = rng.poisson(photons * gain * np.exp(-p)) + rng.poisson(100.0, p.shape)
            ds[n_darks + n_flats + k] = counts.clip(0, 65535).astype(np.uint16)
        det["image_key"] = np.r_[np.full(n_darks, 2), np.full(n_flats, 1), np.zeros(n_angles)].astype(np.int32)
        det["x_pixel_size"] = 1e-6
        det["x_pixel_size"].attrs["units"] = "m"
        h5["entry/sample/rotation_angle"] = np.r_[np.zeros(n_darks + n_flats), theta]
        h5["entry/sample/rotation_angle"].attrs["units"] = "degree"
        h5["entry"].attrs["true_axis_column"] = axis_col
    os.replace(tmp, path)
    return {"made": str(path), "shape": [n_all, width, width], "true_axis_column": axis_col,
            "bytes": path.stat().st_size, "wall_s": round(time.perf_counter() - t0, 1)}


def _time_v(text: str) -> dict:
    def grab(label, cast=float):
        m = re.search(rf"{re.escape(label)}: (.+)", text)
        return cast(m.group(1).strip()) if m else None

    wall = grab("Elapsed (wall clock) time (h:mm:ss or m:ss)", str)
    parts = [float(p) for p in wall.split(":")] if wall else []
    wall_s = sum(p * 60**i for i, p in enumerate(reversed(parts))) if parts else None
    return {"wall_s": wall_s, "user_s": grab("User time (seconds)"), "system_s": grab("System time (seconds)"),
            "peak_rss_mib": (grab("Maximum resident set size (kbytes)") or 0) / 1024,
            "percent_cpu": grab("Percent of CPU this job got", str)}


def _tree(pid: int) -> tuple[float, int, int]:
    """Summed RSS (MiB), process count and thread count of ``pid`` and its descendants, now."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0.0, 0, 0
    rss = nproc = nthreads = 0
    for p in procs:
        try:
            rss += p.memory_info().rss
            nthreads += p.num_threads()
            nproc += 1
        except psutil.Error:
            pass
    return rss / 2**20, nproc, nthreads


def run(scan: Path, out: Path, extra: list[str]) -> dict:
    tomo4d = Path(sys.executable).with_name("tomo4d")
    cmd = ["/usr/bin/time", "-v", str(tomo4d), "reconstruct", str(scan), str(out), "--overwrite", "--json", *extra]
    env = dict(os.environ)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    peak = {"tree_rss_mib": 0.0, "processes": 0, "threads": 0}
    import threading

    def sample():  # the whole tree's RSS every 2 s (/usr/bin/time's maximum is that of the largest process)
        while proc.poll() is None:
            rss, nproc, nthreads = _tree(proc.pid)
            peak["tree_rss_mib"] = max(peak["tree_rss_mib"], rss)
            peak["processes"] = max(peak["processes"], nproc - 1)  # less /usr/bin/time itself
            peak["threads"] = max(peak["threads"], nthreads - 1)
            time.sleep(2.0)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, stderr = proc.communicate()
    sampler.join(timeout=5)
    proc.stdout, proc.stderr = stdout, stderr
    result = {"command": " ".join(cmd[2:]), "rc": proc.returncode,
              "threads_env": {k: env.get(k) for k in ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS", "MKL_NUM_THREADS")},
              **_time_v(stderr), "peak_tree_rss_mib_sampled": round(peak["tree_rss_mib"], 1),
              "max_processes": peak["processes"], "max_threads": peak["threads"]}
    try:
        import h5py

        with h5py.File(scan, "r") as h5:
            result["true_axis_column"] = float(h5["entry"].attrs["true_axis_column"])
        result["input_bytes"] = scan.stat().st_size
        info = json.loads(stdout[stdout.index("{"):])
        result.update({k: info.get(k) for k in ("shape", "center", "center_found", "n_clipped", "workers", "slab_processes",
                                                 "engine", "warnings")})
        result["output_bytes"] = out.stat().st_size if out.is_file() else \
            sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    except Exception as exc:  # noqa: BLE001 - report what failed with the figures
        result["error"] = f"{type(exc).__name__}: {exc}"
        result["stderr_tail"] = stderr[-3000:]
    return result


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="what", required=True)
    m = sub.add_parser("make")
    m.add_argument("path", type=Path)
    m.add_argument("--width", type=int, default=1024)
    m.add_argument("--angles", type=int, default=1024)
    m.add_argument("--offset", type=float, default=3.3)
    m.add_argument("--flats", type=int, default=20)
    m.add_argument("--darks", type=int, default=10)
    m.add_argument("--photons", type=float, default=1e4)
    m.add_argument("--seed", type=int, default=0)
    r = sub.add_parser("run")
    r.add_argument("scan", type=Path)
    r.add_argument("out", type=Path)
    a, extra = ap.parse_known_args()
    if a.what == "make":
        res = make(a.path, width=a.width, n_angles=a.angles, offset=a.offset, n_flats=a.flats, n_darks=a.darks,
                   photons=a.photons, seed=a.seed)
    else:
        res = run(a.scan, a.out, extra)
    print(json.dumps(res))


if __name__ == "__main__":
    main()
