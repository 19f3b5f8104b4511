"""Benchmark: particle analysis and tracking for 2.5e3, 5e3 and 1e4 particles over 7 steps.

Synthetic label volumes: balls (radius 3-5 voxels) at random non-overlapping positions in a slab
whose lateral size grows with the particle count (constant density), moved at every step by an
axial expansion (up to 40 %, growing with depth) plus a small random jitter, and relabelled with a
random permutation.  The tracker gets the expansion as a DVC-like field.  Reports wall time of
``particle_properties`` (all steps) and ``track_particles`` and the share of correctly linked
particles; linear scaling shows as constant time per particle.

``--snow``: tracking with a *measured* DVC field on real granular data.  The snow grains of
``../shared/data/real/snow_xct_100.tif`` are segmented (Otsu + ``label_particles``), the grey volume
and the labels are stretched by a known smooth field (axial strain 8 -> 16 -> 24 %, growing away from
z = 0, with a 20 % lateral variation and a 1.5 px lateral sine; labels pulled through the exact inverse
map, then relabelled at random; no re-segmentation), a DVC field T0 -> Tn is measured on the grey
volumes (``correlate_pyramid`` for T1, then ``correlate`` started from the previous step's field) and
the tracker links the labels with it.  Correct = the track of a T0 particle has its true label at
every step, over the particles present (any voxel) at every step, and over those with at least half
their T0 volume in view at every step.

    .venv/bin/python benchmarks/bench_quantify.py [--counts 2500,5000,10000] [--steps 7]
    .venv/bin/python benchmarks/bench_quantify.py --snow
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

SNOW = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "real" / "snow_xct_100.tif"


def _stretch(eps, pts, shape):
    """Known smooth field u(X) (3, ...) px at T0 points X (3, ...): axial strain eps growing away from z = 0."""
    z, y, x = pts
    uz = eps * z * (1 + 0.2 * np.cos(np.pi * x / shape[2]))
    ux = 1.5 * (eps / 0.24) * np.sin(np.pi * z / shape[0])
    return np.stack([uz, 0 * y, ux])


def snow_case(img, strains=(0.08, 0.16, 0.24), *, seed=0, threads=None):
    """(labels T0..Tn with random ids, perms (label of each T0 id per step), measured fields T0 -> Tn, seconds)."""
    from scipy import ndimage
    from skimage.filters import threshold_otsu

    from tomo4d.dvc import correlate, correlate_pyramid
    from tomo4d.segment import label_particles

    img = np.asarray(img, np.float32)
    lab0 = label_particles(img > threshold_otsu(img), min_volume_nm3=27).labels
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(n, dtype=float) for n in img.shape], indexing="ij"))
    labs, perms, fields = [lab0], [np.arange(int(lab0.max()) + 1)], []
    seconds = 0.0
    for eps in strains:
        X = grid.copy()
        for _ in range(60):  # exact inverse map by fixed point: x = X + u(X)
            X = grid - _stretch(eps, X, img.shape)
        grey = ndimage.map_coordinates(img, X, order=3, mode="mirror").astype(np.float32)
        perm = np.concatenate([[0], rng.permutation(int(lab0.max())) + 1])
        labs.append(perm[ndimage.map_coordinates(lab0, X, order=0, mode="constant")])
        perms.append(perm)
        t = time.perf_counter()
        if not fields:
            f = correlate_pyramid(img, grey, pyramid=(20, 10), half_windows=(20, 10), search_radius_px=10,
                                  threads=threads)
        else:
            f = correlate(img, grey, node_spacing=10, half_window=10, initial=fields[-1], threads=threads)
        seconds += time.perf_counter() - t
        fields.append(f)
    return labs, np.stack(perms), fields, seconds


def snow_score(labs, perms, tracks):
    """(share correct over particles present at every step, same over those >= half in view, n present, n half)."""
    n0 = int(labs[0].max())
    c0 = np.bincount(labs[0].ravel(), minlength=n0 + 1)
    present, half = np.ones(n0 + 1, bool), np.ones(n0 + 1, bool)
    present[0] = half[0] = False
    for s in range(1, len(labs)):
        c = np.bincount(labs[s].ravel(), minlength=n0 + 1)[perms[s]]
        present &= c > 0
        half &= c >= 0.5 * c0
    lab = tracks.label[tracks.first_step == 0]
    ok = np.zeros(n0 + 1, bool)
    ok[lab[:, 0]] = np.all(lab == perms[:, lab[:, 0]].T, axis=1)
    return ok[present].mean(), ok[half].mean(), int(present.sum()), int(half.sum())


def run_snow():
    from tomo4d.io import open_volume
    from tomo4d.quantify import track_particles

    img = open_volume(SNOW).numpy()
    labs, perms, fields, dvc_s = snow_case(img)
    print(f"snow 100^3, {int(labs[0].max())} particles, strain 8/16/24 %, DVC {dvc_s:.1f} s, {os.cpu_count()} CPUs")
    print("| tracker | correct, present at every step | correct, >= half in view | track_particles (s) |")
    print("| --- | ---: | ---: | ---: |")
    for name, kw in [("field (default)", {}), ("field alone (`fallback_penalty=None`)", {"fallback_penalty": None}),
                     ("no field", {"displacement": None})]:
        t = time.perf_counter()
        tr = track_particles(labs, **{"displacement": fields, "voxel_size_nm": 100.0, **kw})
        dt = time.perf_counter() - t
        a, b, n, m = snow_score(labs, perms, tr)
        print(f"| {name} | {100 * a:.1f} % of {n} | {100 * b:.1f} % of {m} | {dt:.1f} |", flush=True)


def make_series(n_particles, n_steps, seed=0):
    from scipy.spatial import cKDTree

    from tomo4d.dvc import DisplacementField

    rng = np.random.default_rng(seed)
    nz = 96
    side = int(np.ceil(np.sqrt(n_particles * 270 / (0.10 * 60))))  # ~10 % fill of z in [8, 68)
    shape = (nz, side, side)
    cen, rad = [], []
    for _ in range(int(2.6 * n_particles)):
        r = rng.uniform(3, 5)
        cen.append([rng.uniform(8 + r, 68 - r), rng.uniform(r, side - r), rng.uniform(r, side - r)])
        rad.append(r)
    cen = np.array(cen)
    rad = np.array(rad)
    # drop overlaps greedily (kd-tree, linear)
    tree = cKDTree(cen)
    keep = np.ones(len(cen), bool)
    for i, j in sorted(tree.query_pairs(10.5)):
        if keep[i] and keep[j] and np.linalg.norm(cen[i] - cen[j]) < rad[i] + rad[j] + 1:
            keep[j] = False
    cen, rad = cen[keep][:n_particles], rad[keep][:n_particles]
    expansion = np.linspace(0, 0.4, n_steps)

    def disp(step, pts):
        s = np.clip((pts[:, 0] - 8) / 60, 0, 1)
        u = np.zeros_like(pts)
        u[:, 0] = expansion[step] * 60 * s * (0.8 + 0.2 * s)
        return u

    series = []
    perms = []
    offs = {}
    for step in range(n_steps):
        lab = np.zeros(shape, np.int32)
        c = cen + disp(step, cen) + rng.normal(0, 0.3, cen.shape) * (step > 0)
        perm = rng.permutation(len(cen)) + 1
        for i in range(len(cen)):
            r = rad[i]
            key = round(r, 1)
            if key not in offs:
                k = int(np.ceil(key))
                g = np.mgrid[-k:k + 1, -k:k + 1, -k:k + 1].reshape(3, -1).T
                offs[key] = g[(g ** 2).sum(1) <= key * key]
            p = np.round(c[i]).astype(int) + offs[key]
            ok = np.all((p >= 0) & (p < shape), axis=1)
            p = p[ok]
            lab[p[:, 0], p[:, 1], p[:, 2]] = perm[i]
        series.append(lab)
        perms.append(perm)
    # DVC-like fields on a node grid
    sp = 8
    axes = [np.arange(0, n, sp) for n in shape]
    pos = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3).astype(float)
    fields = []
    for step in range(1, n_steps):
        phi = np.tile(np.eye(4), (len(pos), 1, 1))
        phi[:, :3, 3] = disp(step, pos)
        fields.append(DisplacementField(pos, phi, np.zeros(len(pos), np.int8), grid_shape=tuple(len(a) for a in axes),
                                        node_spacing_px=(sp,) * 3, voxel_size_nm=(50.0,) * 3))
    return series, perms, fields, len(cen)


def run(n_particles, n_steps):
    from tomo4d.quantify import particle_properties, track_particles

    t0 = time.perf_counter()
    series, perms, fields, n = make_series(n_particles, n_steps)
    t_make = time.perf_counter() - t0
    t0 = time.perf_counter()
    for lab in series:
        particle_properties(lab, voxel_size_nm=50.0)
    t_props = time.perf_counter() - t0
    t0 = time.perf_counter()
    tr = track_particles(series, displacement=fields, voxel_size_nm=50.0)
    t_track = time.perf_counter() - t0
    # truth id of a label at a step: position in the permutation
    inv = [np.argsort(p) for p in perms]
    t0m = tr.first_step == 0
    ids = np.stack([inv[s][np.maximum(tr.label[t0m, s] - 1, 0)] for s in range(n_steps)], 1)
    ok = np.all(ids == ids[:, :1], axis=1) & np.all(tr.label[t0m] > 0, axis=1)
    return dict(n=n, shape=series[0].shape, make_s=t_make, props_s=t_props, track_s=t_track,
                linked=float(ok.sum()) / n)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--counts", default="2500,5000,10000")
    ap.add_argument("--steps", type=int, default=7)
    ap.add_argument("--snow", action="store_true", help="tracking with a measured DVC field on the real snow volume")
    a = ap.parse_args()
    if a.snow:
        run_snow()
        return
    print("| particles | volume (z, y, x) | particle_properties, all steps (s) | track_particles (s) "
          "| tracking us/particle/step | linked correctly |")
    print("| ---: | --- | ---: | ---: | ---: | ---: |")
    for c in (int(v) for v in a.counts.split(",")):
        r = run(c, a.steps)
        per = 1e6 * r["track_s"] / (r["n"] * (a.steps - 1))
        print(f"| {r['n']} | {r['shape']} | {r['props_s']:.1f} | {r['track_s']:.1f} | {per:.0f} "
              f"| {100 * r['linked']:.2f} % |", flush=True)


if __name__ == "__main__":
    main()
