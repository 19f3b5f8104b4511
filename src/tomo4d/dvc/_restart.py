"""Restarting the nodes outside the data from the measured field (:attr:`GlobalOptions.restarts`).

Why: both solvers hold the nodes whose elements hold no masked voxel, and those with less than ``mask_fraction`` of
their support in the mask, at their start values (Gauss-Newton always, L-BFGS with ``hold_without_data``), and across
the mask's lateral edge the Laplacian ties the measured field to that held ring.  The ring's in-plane displacement is
then the start's, and so is much of the measured in-plane stretch (and its u_z the axial start's).  The axial-profile
start's in-plane scale ``s(z)`` is poorly determined: on the HQ phantom of seed 1 it reads det F - 1 0.022-0.070 low
at T2-T5, and the converged route, the sides' ln U_zz within 0.004, 0.014-0.041 low from T2.  Restarting the ring from
each node row's in-plane affine fit of the measured field and solving again lets the ring follow the measured stretch:
0.005-0.025 low with five restarts (benchmarks/RESULTS.md, session 34).
"""

from __future__ import annotations

import numpy as np


def restarted_ring(u_nodes: np.ndarray, usable: np.ndarray, outside: np.ndarray, origin, spacing: float, *,
                   min_nodes: int = 6) -> tuple[np.ndarray, float]:
    """``u_nodes`` (gz, gy, gx, 3) px with the ``outside`` nodes (gz, gy, gx bool: those with less than
    ``mask_fraction`` of their support in the mask, which the solvers hold) replaced, row by row (each z), by
    least-squares fits over the row's ``usable`` nodes: in-plane ``u_y = a + b (y - c_y)``, ``u_x = a' + b' (x - c_x)``,
    each coefficient the median of its own row's and the adjacent rows' fits (a row at a face of the volume is weakly
    determined), and axially the row's own plane ``u_z = a'' + b'' (y - c_y) + c'' (x - c_x)`` (adjacent rows differ
    by the axial stretch); rows with fewer than ``min_nodes`` usable nodes fit nothing.  Returns it and the largest
    change, px.  The axial fit (session 36): held at the axial start's u_z, the ring pulled the demo's collector side
    up to 0.049 high once the nodes with little support were held too; refitted, 0.014-0.017."""
    u = np.array(u_nodes, dtype=np.float64, copy=True)
    gz, gy, gx = usable.shape
    y = origin[1] + spacing * np.arange(gy)
    x = origin[2] + spacing * np.arange(gx)
    coords = np.meshgrid(y - y.mean(), x - x.mean(), indexing="ij")
    coef = np.full((gz, 2, 2), np.nan)  # row, component (y, x), (a, b)
    plane = np.full((gz, 3), np.nan)    # row, (a'', b'', c'') of u_z
    for k in range(gz):
        ok = usable[k]
        n = int(ok.sum())
        if n >= min_nodes:
            for c, coord in enumerate(coords):
                coef[k, c] = np.linalg.lstsq(np.stack([np.ones(n), coord[ok]], 1), u[k, ..., c + 1][ok], rcond=None)[0]
            design = np.stack([np.ones(n), coords[0][ok], coords[1][ok]], 1)
            plane[k] = np.linalg.lstsq(design, u[k, ..., 0][ok], rcond=None)[0]
    for k in range(gz):
        near = coef[max(k - 1, 0):k + 2]
        out = outside[k]
        if np.isnan(coef[k, 0, 0]) or not out.any():
            continue
        a_b = np.nanmedian(near, axis=0)
        for c, coord in enumerate(coords):
            u[k, ..., c + 1][out] = a_b[c, 0] + a_b[c, 1] * coord[out]
        u[k, ..., 0][out] = plane[k, 0] + plane[k, 1] * coords[0][out] + plane[k, 2] * coords[1][out]
    return u, float(np.max(np.abs(u - u_nodes))) if u.size else 0.0


def restart_solves(sol, solve, usable_outside, origin, spacing: float, restarts: int) -> tuple:
    """Up to ``restarts`` solves more (``solve(u_nodes) -> solution``), each with the nodes without data restarted
    by :func:`restarted_ring` (``usable_outside(solution)``: the usable and the held nodes, (gz, gy, gx) bool each),
    until a restart moves no node by 0.01 px; returns the last solution and the restarts' changes, px."""
    changes = []
    for _ in range(restarts):
        u, change = restarted_ring(sol.u_nodes, *usable_outside(sol), origin, spacing)
        changes.append(round(change, 4))
        if change < 0.01:
            break
        sol = solve(np.ascontiguousarray(u))
    return sol, changes
