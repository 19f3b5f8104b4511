"""Numerics of :func:`tomo4d.neutron.fit_bragg_edge`: start values from straight lines in ``ln T``,
the staged least-squares fit of one spectrum, the edge height and midpoint with their uncertainties.

Split from :mod:`tomo4d.neutron.bragg` (the model, results and the public fit), which imports
this module when it fits.
"""

from __future__ import annotations

import math

import numpy as np

from .bragg import _model, edge_profile


def _line_fit_log(w, t, s):
    """Weighted straight line through -ln t: returns (a, b) with -ln t = a + b w."""
    good = t > 0
    if good.sum() < 2:
        return None
    y = -np.log(t[good])
    wt = (t[good] / s[good]) ** 2  # var(ln t) = (s / t)^2
    A = np.stack([np.ones(good.sum()), w[good]], axis=1)
    Aw = A * wt[:, None]
    try:
        coef = np.linalg.solve(A.T @ Aw, Aw.T @ y)
    except np.linalg.LinAlgError:
        return None
    return float(coef[0]), float(coef[1])


def _guess_edge(w, t):
    n = w.size
    k = max(3, n // 25)
    kernel = np.ones(k) / k
    sm = np.convolve(t, kernel, mode="same")
    half = k // 2 + 1
    d = np.zeros(n)
    d[half:-half] = sm[2 * half:] - sm[:-2 * half] if n > 2 * half else 0.0
    if not np.any(d > 0):
        return float(w[n // 2])
    return float(w[int(np.argmax(d))])


def _initial(w, t, s, edge):
    lo, hi = w[0], w[-1]
    dw = float(np.median(np.diff(w)))
    width0 = max(2.0 * dw, 1e-3 * edge)
    margin = max(5.0 * width0, 0.08 * (hi - lo))
    far = w > edge + margin
    near = w < edge - margin
    if far.sum() < 3:
        far = w > edge + 0.5 * (hi - edge)
    if near.sum() < 3:
        near = w < edge - 0.5 * (edge - lo)
    lf = _line_fit_log(w[far], t[far], s[far])
    if lf is None:
        return None
    a0, b0 = lf
    outer = np.exp(-(a0 + b0 * w[near]))
    ln = _line_fit_log(w[near], t[near] / outer, s[near] / outer)
    if ln is None:
        ah, bh = 0.1, 0.0
    else:
        ah, bh = ln
    return np.array([a0, b0, ah, bh, edge, width0, width0, 0.0, 0.0])


def _midpoint(p: np.ndarray) -> float:
    """Wavelength where the broadened edge profile reaches 1/2, Å."""
    from scipy.optimize import brentq

    edge, width, tail = float(p[4]), float(p[5]), float(p[6])
    if tail <= 0:
        return edge
    f = lambda x: float(edge_profile(np.array([edge + x]), edge_angstrom=edge, width_angstrom=width,  # noqa: E731
                                     tail_angstrom=tail)[0]) - 0.5
    return edge + brentq(f, -10 * width, 10 * (width + tail), xtol=1e-10 * (width + tail))


def _fit_one(w, t, s, p0, *, free, absolute_sigma, max_nfev, min_significance):
    from scipy.optimize import least_squares

    lo, hi = float(w[0]), float(w[-1])
    span = hi - lo
    dw = float(np.median(np.diff(w)))
    wmin, wmax = 1e-4 * dw, span / 2.0
    p = p0.copy()
    p[5] = np.clip(p[5], 2 * wmin, 0.9 * wmax)
    p[6] = np.clip(p[6], 2 * wmin, 0.9 * wmax) if free[6] else 0.0
    p[4] = np.clip(p[4], lo + 0.01 * span, hi - 0.01 * span)
    lb_all = np.array([-np.inf, -np.inf, -np.inf, -np.inf, lo, wmin, wmin, -np.inf, -np.inf])
    ub_all = np.array([np.inf, np.inf, np.inf, np.inf, hi, wmax, wmax, np.inf, np.inf])
    p[7:] = np.where(free[7:], p[7:], 0.0)

    def solve(mask):
        idx = np.flatnonzero(mask)

        def resid(q):
            pp = p.copy()
            pp[idx] = q
            return (_model(w, pp) - t) / s

        r = least_squares(resid, p[idx], bounds=(lb_all[idx], ub_all[idx]), x_scale="jac", max_nfev=max_nfev)
        p[idx] = r.x
        return r, idx

    stage = free.copy()
    stage[:4] = False
    stage[7:] = False
    solve(stage)  # edge parameters first, the straight lines fixed
    r, idx = solve(free)
    # sigma and tau trade off on noisy edges: one driven onto its lower bound leaves a singular covariance.
    # It is then fixed (tau = 0: the Gaussian edge; sigma where it is: a sharp tailed edge) and the rest refitted
    # (below a tenth of a bin neither is resolved).
    pinned = [j for j in (5, 6) if free[j] and p[j] < 0.1 * dw]
    if pinned:
        free = free.copy()
        free[pinned] = False
        p[6] = 0.0 if 6 in pinned else p[6]
        r, idx = solve(free)
    k = idx.size
    dof = max(w.size - k, 1)
    chi2 = float(np.sum(r.fun ** 2) / dof)
    cov = np.full((9, 9), np.nan)
    try:
        c = np.linalg.inv(r.jac.T @ r.jac) * (max(chi2, 1.0) if absolute_sigma else chi2)
        cov = np.zeros((9, 9))
        cov[np.ix_(idx, idx)] = c
    except np.linalg.LinAlgError:
        pass
    finite = bool(np.all(np.isfinite(cov)))
    perr = np.sqrt(np.clip(np.diag(cov), 0, None)) if finite else np.full(9, np.nan)
    a0, b0, ah, bh, edge = p[:5]
    c0, ch = p[7], p[8]
    outer = math.exp(-(a0 + (b0 + c0 * edge) * edge))
    inner = math.exp(-(ah + (bh + ch * edge) * edge))
    height = outer * (1.0 - inner)
    grad = np.array([-height, -height * edge, outer * inner, outer * inner * edge,
                     -(b0 + 2 * c0 * edge) * height + outer * inner * (bh + 2 * ch * edge), 0.0, 0.0,
                     -height * edge ** 2, outer * inner * edge ** 2])
    h_sig = float(np.sqrt(max(grad @ cov @ grad, 0.0))) if finite else float("nan")
    mid = _midpoint(p)
    gm = np.zeros(9)
    gm[4] = 1.0
    for j in (5, 6):
        if free[j]:
            step = 1e-4 * max(p[j], dw)
            pp, pm = p.copy(), p.copy()
            pp[j] += step
            pm[j] = max(pm[j] - step, 0.5 * pm[j])
            gm[j] = (_midpoint(pp) - _midpoint(pm)) / (pp[j] - pm[j])
    mid_sig = float(np.sqrt(max(gm @ cov @ gm, 0.0))) if finite else float("nan")
    inside = (edge - lo > 2 * dw) and (hi - edge > 2 * dw)
    ok = bool(r.success and np.all(np.isfinite(p)) and finite and perr[4] > 0 and inside
              and height > 0 and np.isfinite(h_sig) and height >= min_significance * h_sig
              and p[5] < 0.99 * wmax and perr[4] < span / 4)
    return p, perr, height, h_sig, mid, mid_sig, chi2, ok
