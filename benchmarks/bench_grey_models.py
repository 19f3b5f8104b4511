"""The grey-level models of the local correlation against each other (tomo4d.dvc.GreyModel).

The 100^3 snow XCT volume is stretched 8 % along z about its centre and its grey levels are changed
between the states in five ways, smoothly through z (as lithiating silicon loses X-ray attenuation
through the electrode thickness):

* ``none``: unchanged;
* ``brightness``: + 0.3 standard deviations at the far face;
* ``scale@0``: grey levels times 1 -> 0.55 (attenuation that scales, grey zero = no attenuation);
* ``scale@air``: the same about the air's grey level (a reconstruction whose zero is not the air's);
* ``both``: contrast 1 -> 0.55 about the mean and + 0.3 standard deviations.

Independent noise of ``--noise`` standard deviations is added to each state.  Every model (ssd, zssd, nssd,
znssd) correlates the same grid (spacing 10, half-window 8, numba, ``--threads`` threads) from the identity;
the script prints the median displacement error, the median |F_zz - 1.08|, the converged fraction and
nodes per CPU second of each.

    .venv/bin/python benchmarks/bench_grey_models.py [--noise 0.02] [--threads 1]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

SNOW = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "real" / "snow_xct_100.tif"
STRETCH = 0.08
AIR_PERCENTILE = 5.0


def stretched(ref):
    """``D(X + u(X)) = ref(X)`` for ``u_z = STRETCH (z - centre)`` (exact inverse of the affine stretch)."""
    c = (ref.shape[0] - 1) / 2
    grid = list(np.meshgrid(*[np.arange(n, dtype=float) for n in ref.shape], indexing="ij"))
    grid[0] = (grid[0] - c) / (1 + STRETCH) + c
    return ndimage.map_coordinates(ref, grid, order=3, mode="mirror").astype(np.float32), c


def changes(vol, air):
    """The five grey-level changes of the module notes, applied to the deformed volume ``vol``."""
    z = np.linspace(0.0, 1.0, vol.shape[0], dtype=np.float32)[:, None, None]
    k = 1.0 - 0.45 * z
    mean, std = float(vol.mean()), float(vol.std())
    return {"none": vol, "brightness": vol + 0.3 * std * z, "scale@0": vol * k,
            "scale@air": (vol - air) * k + air, "both": (vol - mean) * k + mean + 0.3 * std * z}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--noise", type=float, default=0.02, help="noise per state, standard deviations of the volume")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    import tifffile

    from tomo4d.dvc import GREY_MODELS, correlate
    from tomo4d.dvc.field import NodeStatus

    ref = tifffile.imread(SNOW).astype(np.float32)
    air = float(np.percentile(ref, AIR_PERCENTILE))
    dfm, c = stretched(ref)
    rng = np.random.default_rng(3)
    sd = a.noise * float(ref.std())
    ref_n = (ref + rng.normal(0, sd, ref.shape)).astype(np.float32)
    for model in ("ssd", "znssd"):      # compile (or load) the kernels outside the timings
        correlate(ref[:40, :40, :40], dfm[:40, :40, :40], node_spacing=10, half_window=8, grey_model=model,
                  backend="numba", threads=a.threads)
    print(f"snow 100^3, stretch {STRETCH}, noise {a.noise} std per state, air grey {air:.0f}, "
          f"{a.threads} numba thread(s)")
    print(f"{'change':>11} {'model':>6} {'median err px':>14} {'|F_zz - F|':>11} {'converged':>10} {'nodes/CPU s':>12}")
    for name, vol in changes(dfm, air).items():
        d = (vol + rng.normal(0, sd, vol.shape)).astype(np.float32)
        for model in GREY_MODELS:
            t = time.process_time()
            f = correlate(ref_n, d, node_spacing=10, half_window=8, search_radius_px=0, replace=False,
                          grey_model=model, backend="numba", threads=a.threads, curvature_correction=False)
            cpu = time.process_time() - t
            ok = f.status == NodeStatus.CONVERGED
            truth = STRETCH * (f.positions_zyx_px[:, 0] - c)
            err = np.linalg.norm(f.displacement_zyx_px - np.stack([truth, 0 * truth, 0 * truth], 1), axis=1)[ok]
            fz = np.abs(f.F[ok, 0, 0] - 1 - STRETCH)
            print(f"{name:>11} {model:>6} {np.median(err):14.4f} {np.median(fz):11.5f} {ok.mean():10.3f} "
                  f"{len(ok) / cpu:12.0f}")


if __name__ == "__main__":
    main()
