"""Benchmark: particle analysis and tracking for 2.5e3, 5e3 and 1e4 particles over 7 steps.

Synthetic label volumes: balls (radius 3-5 voxels) at random non-overlapping positions in a slab
whose lateral size grows with the particle count (constant density), moved at every step by an
axial expansion (up to 40 %, growing with depth) plus a small random jitter, and relabelled with a
random permutation.  The tracker gets the expansion as a DVC-like field.  Reports wall time of
``particle_properties`` (all steps) and ``track_particles`` and the share of correctly linked
particles; linear scaling shows as constant time per particle.

    .venv/bin/python benchmarks/bench_quantify.py [--counts 2500,5000,10000] [--steps 7]
"""

from __future__ import annotations

import argparse
import time

import numpy as np


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
    a = ap.parse_args()
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
