"""Where the global DVC criterion's optimum lies on noise-free phantom scans: the blur/warp commutator (issue 15).

The scanner blurs the *deformed* sample (``J = G * W(S)``, ``S`` the sharp sample, ``W`` the warp of the map, ``G`` the
PSF), while the criterion warps the *blurred* reference (``J ~ W(G * S)``).  The two differ wherever the map is not a
translation.  This script correlates one pair of the HQ phantom, started from the exact field, with a weak Laplacian
and no grey fields, against several deformed volumes:

* ``rendered``: the phantom's own scan of the step;
* ``warped T0``: the T0 scan warped by the exact map (a pair without the commutator);
* ``rendered - C``: the scan minus the commutator ``C = G * W(S) - W(G * S)``, with the exact map and ``S`` the true
  sharp T0, a Richardson-Lucy estimate of it, or the map as the route's trilinear control grid.

Usage::

    .venv/bin/python benchmarks/bench_dvc_commutator.py [--step 1] [--reg 0.001] [--param KEY=VALUE ...]

The defaults set ``hq_noise=0`` and ``lithiated_contrast_loss=0`` (``--param`` adds or overrides).  One thread;
about 3 minutes at 96^3 on one core.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_dvc_large as large  # noqa: E402  (the phantom's truth helpers and the deconvolution)


def _warp(img, coords, order):
    """``img`` sampled at the reference positions ``coords`` (3, z, y, x) px of the deformed grid's voxels."""
    c = ndimage.spline_filter(img, order=order) if order > 1 else img
    return ndimage.map_coordinates(c, coords, order=order, prefilter=False, mode="nearest").astype(np.float32)


def _exact_coords(truth, grid, step, shape):
    zz, yy, xx = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    pts = np.asarray(grid.origin_nm) + np.stack([zz, yy, xx], -1).reshape(-1, 3) * grid.voxel_size_nm
    ref = pts + truth.inverse_displacement(step, pts)
    return ((ref - np.asarray(grid.origin_nm)) / grid.voxel_size_nm).T.reshape((3,) + tuple(shape))


def _field_coords(field, shape, iterations=12):
    """Reference positions of the deformed voxels under a DisplacementField (fixed point of X = x - u(X))."""
    u = field.dense_displacement(shape, order=1)
    grid = np.stack(np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij"))
    X = grid - u
    for _ in range(iterations):
        X = grid - np.stack([ndimage.map_coordinates(u[k], X, order=1, mode="nearest") for k in range(3)])
    return X


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--step", type=int, default=1)
    ap.add_argument("--reg", type=float, default=0.001, help="Laplacian weight (GlobalOptions.regularisation)")
    ap.add_argument("--param", action="append", default=[], help="Phantom parameter KEY=VALUE (JSON value)")
    a = ap.parse_args(argv)
    from tomo4d.dvc import correlate_global
    from tomo4d.phantom import make_experiment

    params = {"hq_noise": 0.0, "lithiated_contrast_loss": 0.0}
    params.update({k: json.loads(v) for k, v in (p.split("=", 1) for p in a.param)})
    exp = make_experiment(shape=(96,) * 3, **params)
    t, n = exp.truth, a.step
    grid = t.hq_grid
    sigma = t.hq_blur_sigma_nm / grid.voxel_size_nm
    i0 = exp.series_hq[0].numpy().astype(np.float32)
    i1 = exp.series_hq[n].numpy().astype(np.float32)
    # the partial-volume T0 before the PSF: the same sample scanned without blur
    sharp = make_experiment(shape=(96,) * 3, **{**params, "hq_blur_sigma_nm": 0.0}).series_hq[0].numpy()
    shape = i0.shape
    zc = (t.z_collector_nm - grid.origin_nm[0]) / grid.voxel_size_nm
    mask = np.broadcast_to((np.arange(shape[0]) >= zc)[:, None, None], shape)
    kw = dict(node_spacing=4, threads=1, grey_fields=False, regularisation=a.reg, levels=1, interpolation="cubic",
              solver="gauss-newton", mask=mask)
    start = large._truth_field(exp, grid, n, 4, 4, shape)
    means = large._truth_means(exp)

    def blur(v):
        return ndimage.gaussian_filter(v, sigma, mode="nearest")

    def commutator(s, coords):
        return blur(_warp(s, coords, 3)) - _warp(blur(s), coords, 3)

    exact = _exact_coords(t, grid, n, shape)
    rl = large._deconvolve(i0, sigma, 20)
    cases = [("rendered", i1), ("warped T0 (exact map)", _warp(i0, exact, 3)),
             ("rendered - C (exact map, true sharp T0)", i1 - commutator(sharp, exact)),
             ("rendered - C (exact map, RL 20 of T0)", i1 - commutator(rl, exact)),
             ("rendered - C (exact field on the grid, RL 20)", i1 - commutator(rl, _field_coords(start, shape)))]
    print(f"step T{n}, regularisation {a.reg}, phantom {params}, PSF {sigma:.2f} px; started from the exact field")
    print("| deformed volume | median error px | z | ln U_zz collector / separator (truth at the nodes) |")
    print("|---|---|---|---|")
    for name, d in cases:
        r = large._row(exp, grid, n, correlate_global(i0, d, initial=start, **kw), means, 4, tent=True)
        print(f"| {name} | {r['median_error_px']:.3f} | {r['median_error_z_px']:.3f} | {r['hencky_zz_collector']:.4f} / "
              f"{r['hencky_zz_separator']:.4f} ({r['hencky_zz_collector_truth_nodes']:.4f} / "
              f"{r['hencky_zz_separator_truth_nodes']:.4f}) |", flush=True)


if __name__ == "__main__":
    main()
