"""Bragg-edge maps: one edge fitted in every pixel (or voxel) spectrum at once, vectorised.

:func:`fit_bragg_edge` fits each spectrum with its own seven-parameter least squares (14 spectra/s); a
wavelength-resolved image has 10^5-10^6 spectra.  The instrument broadening (Gaussian ``sigma`` and
tail ``tau``) is a property of the beamline, the same in every pixel, so :func:`fit_bragg_edge_map`
fits it once on the summed spectrum and then fits the five per-pixel parameters (the two straight
lines in ``ln T`` and the edge position) of all spectra together: a batched Levenberg-Marquardt with
the analytic Jacobian (``dB/dx = tail / (2 tau)`` for the tailed edge, the Gaussian density without
tail), chunk by chunk.  Uncertainties come from each spectrum's ``(J^T W J)^-1`` scaled by
``max(1, chi2_reduced)`` (with given sigmas), as in :func:`fit_bragg_edge`; the midpoint lies a fixed
distance above the onset (``sigma`` and ``tau`` are shared), so both have the same uncertainty.
"""

from __future__ import annotations

import logging
import math

import numpy as np

from .._validate import show
from ..errors import InputError
from ._checks import as_sigma, as_spectra, as_wavelength, positive_float
from .bragg import BraggEdgeFit, fit_bragg_edge

log = logging.getLogger(__name__)

__all__ = ["fit_bragg_edge_map"]

_SQRT2 = math.sqrt(2.0)


def _profile_and_slope(x: np.ndarray, s: float, t: float):
    """Edge profile ``B(x)`` and its derivative ``dB/dx`` (x = lambda - edge), float64 arrays."""
    from scipy.special import erfc, erfcx

    u = -x / (_SQRT2 * s)
    if t <= 0:
        return 0.5 * erfc(u), np.exp(-0.5 * (x / s) ** 2) / (s * math.sqrt(2 * math.pi))
    z = u + s / (_SQRT2 * t)
    tail = np.empty_like(x)
    pos = z >= 0
    tail[pos] = np.exp(-0.5 * (x[pos] / s) ** 2) * erfcx(z[pos])
    neg = ~pos
    tail[neg] = np.exp(-x[neg] / t + 0.5 * (s / t) ** 2) * erfc(z[neg])
    return 0.5 * (erfc(u) - tail), tail / (2.0 * t)


def _resid_jac(w, p, s, t, T, S):
    """Weighted residuals ``(model - T) / S`` (m, n) and Jacobian ``d model / d p / S`` (m, n, 5) for
    parameters p = (a0, b0, ah, bh, edge) of m spectra."""
    a0, b0, ah, bh, e = (p[:, i:i + 1] for i in range(5))
    outer = np.exp(-(a0 + b0 * w))
    inner = np.exp(-(ah + bh * w))
    b, db = _profile_and_slope(w - e, s, t)
    model = outer * (inner + (1.0 - inner) * b)
    inv_s = 1.0 / S
    jac = np.empty(model.shape + (5,))
    jac[..., 0] = -model * inv_s
    jac[..., 1] = jac[..., 0] * w
    jac[..., 2] = -outer * inner * (1.0 - b) * inv_s
    jac[..., 3] = jac[..., 2] * w
    jac[..., 4] = -outer * (1.0 - inner) * db * inv_s
    return (model - T) * inv_s, jac


def _normal(J, r):
    """``J^T J`` (m, 5, 5) and ``J^T r`` (m, 5), batched (BLAS matmul)."""
    Jt = J.transpose(0, 2, 1)
    return Jt @ J, (Jt @ r[..., None])[..., 0]


def _lm_chunk(w, T, S, p0, s, t, lo, hi, iters):
    """Batched Levenberg-Marquardt of the five per-spectrum parameters; returns p, cov (unscaled), cost."""
    m = T.shape[0]
    p = p0.copy()
    r, J = _resid_jac(w, p, s, t, T, S)
    cost = np.einsum("ij,ij->i", r, r)
    A, g = _normal(J, r)
    lam = np.full(m, 1e-3)
    act = np.arange(m)  # spectra still iterating
    eye = np.eye(5)
    for _ in range(iters):
        if act.size == 0:
            break
        Aa, ga = A[act], g[act]
        diag = np.maximum(np.einsum("mkk->mk", Aa), 1e-30)
        try:
            step = -np.linalg.solve(Aa + (lam[act, None] * diag)[:, :, None] * eye, ga[..., None])[..., 0]
        except np.linalg.LinAlgError:
            step = -np.stack([np.linalg.lstsq(a + l_ * np.diag(d) , b, rcond=None)[0]
                              for a, l_, d, b in zip(Aa, lam[act], diag, ga)])
        trial = p[act] + step
        trial[:, 4] = np.clip(trial[:, 4], lo, hi)
        rt, jt = _resid_jac(w, trial, s, t, T[act], S[act])
        ct = np.einsum("ij,ij->i", rt, rt)
        better = np.isfinite(ct) & (ct < cost[act])
        bi = act[better]
        rel = (cost[bi] - ct[better]) / np.maximum(ct[better], 1e-300)
        p[bi], cost[bi] = trial[better], ct[better]
        A[bi], g[bi] = _normal(jt[better], rt[better])
        lam[bi] = np.maximum(lam[bi] / 3.0, 1e-7)
        lam[act[~better]] *= 4.0
        small = np.all(np.abs(step) <= 1e-8 * (np.abs(p[act]) + 1e-3), axis=1)
        done = small | (lam[act] > 1e8)
        done[better] |= rel < 1e-10
        act = act[~done]
    with np.errstate(invalid="ignore", divide="ignore"):
        try:
            cov = np.linalg.inv(A)
        except np.linalg.LinAlgError:
            cov = np.stack([np.linalg.pinv(a) for a in A])
    return p, cov, cost


def _aligned_reference(w, T, S, q, *, profile, position, min_significance, iters, n_sub: int = 2048):
    """Fit of the mean of up to ``n_sub`` spectra shifted onto a common edge (their edges from a first pass)."""
    m = T.shape[0]
    idx = np.unique(np.linspace(0, m - 1, min(m, n_sub)).astype(np.int64))
    Ss = S[idx] if S is not None else np.ones((idx.size, w.size))
    p, _, _ = _lm_chunk(w, T[idx], Ss, np.repeat(q[None, :5], idx.size, axis=0), float(q[5]), float(q[6]),
                        float(w[0]), float(w[-1]), iters)
    shift = p[:, 4] - q[4]
    good = np.isfinite(shift) & (np.abs(shift) < 0.25 * (w[-1] - w[0]))
    if good.sum() < 2:
        return None
    aligned = np.stack([np.interp(w + d, w, t) for d, t in zip(shift[good], T[idx][good])])
    inside = (w + shift[good].max() <= w[-1]) & (w + shift[good].min() >= w[0])  # no extrapolated bins
    sig = None if S is None else np.sqrt((Ss[good] ** 2).sum(0))[inside] / good.sum()
    fit = fit_bragg_edge(w[inside], aligned.mean(0)[inside], sig, edge_guess_angstrom=float(q[4]), profile=profile,
                         position=position, min_significance=min_significance)
    return fit if bool(fit.ok) else None


def fit_bragg_edge_map(wavelength_angstrom, transmission, sigma=None, *, window_angstrom,
                       edge_guess_angstrom: float | None = None, profile: str = "tail", position: str = "midpoint",
                       min_significance: float = 3.0, map_significance: float = 5.0, chunk: int = 4096,
                       max_iterations: int = 40, workers: int = 1) -> BraggEdgeFit:
    """Fit one Bragg edge in every spectrum of a map at once; width and tail shared (the instrument's).

    Parameters
    ----------
    wavelength_angstrom : (n,) array
        Strictly increasing wavelengths, Å.
    transmission : (..., n) array
        Spectra, wavelength LAST (``(ny, nx, n)`` radiography, ``(nz, ny, nx, n)`` per-voxel).
    sigma : array broadcastable to ``transmission``, optional
        Standard uncertainties (Poisson from the counts); without them all bins weigh the same and
        the uncertainties are scaled by the residual scatter.
    window_angstrom : (float, float)
        Wavelength range around the edge, Å.
    edge_guess_angstrom, profile, position, min_significance
        As in :func:`fit_bragg_edge` (the summed spectrum's fit sets ``sigma``, ``tau`` and the start).
    map_significance : float
        Edge height, in units of its uncertainty (from the full covariance of ``a_hkl`` and ``b_hkl``),
        below which a pixel is flagged.  Higher than ``min_significance``: each pixel's edge position is
        free, so pure noise makes 3-sigma steps somewhere in the window (look-elsewhere).
    chunk : int
        Spectra per batch (memory ~ 100 x chunk x n bytes).
    max_iterations : int
        Levenberg-Marquardt iterations per batch.
    workers : int
        Threads fitting batches in parallel (numpy and scipy.special release the GIL); results do not
        depend on it.

    Returns
    -------
    BraggEdgeFit
        Arrays of the spectra's shape without the wavelength; ``edge_width_angstrom`` and
        ``edge_tail_angstrom`` are the shared values (their sigmas NaN per pixel).  Spectra
        without a significant edge inside the window are flagged in ``ok`` (NaN values).
    """
    w_all = as_wavelength(wavelength_angstrom)
    t_all = as_spectra(transmission, w_all.size, name="transmission")
    s_all = as_sigma(sigma, t_all.shape)
    try:
        lo, hi = (float(v) for v in window_angstrom)
    except (TypeError, ValueError):
        raise InputError(f"window_angstrom={show(window_angstrom)} must be two wavelengths (lo, hi) in Å") from None
    if not isinstance(chunk, (int, np.integer)) or chunk < 1:
        raise InputError(f"chunk={show(chunk)} must be an integer >= 1")
    if not isinstance(workers, (int, np.integer)) or workers < 1:
        raise InputError(f"workers={show(workers)} must be an integer >= 1")
    positive_float("min_significance", min_significance, allow_zero=True)
    positive_float("map_significance", map_significance, allow_zero=True)
    sel = (w_all >= lo) & (w_all <= hi)
    w = w_all[sel]
    batch = t_all.shape[:-1]
    T = t_all.reshape(-1, w_all.size)[:, sel]
    S = s_all.reshape(-1, w_all.size)[:, sel] if s_all is not None else None
    m, n = T.shape
    mean_sig = None if S is None else np.sqrt((S ** 2).sum(0)) / m
    ref = fit_bragg_edge(w, T.mean(0), mean_sig, edge_guess_angstrom=edge_guess_angstrom, profile=profile,
                         position=position, min_significance=min_significance)
    if not bool(ref.ok):
        raise InputError(f"no significant Bragg edge in the summed spectrum inside window_angstrom=({lo:g}, {hi:g}); "
                         "move the window onto the edge (the map's sigma and tau come from that fit)")
    q = np.asarray(ref.parameters, dtype=np.float64)
    absolute = S is not None
    with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
        if m > 1:  # edges that move from pixel to pixel broaden the summed spectrum: refit it aligned
            ref = _aligned_reference(w, T, S, q, profile=profile, position=position,
                                     min_significance=min_significance, iters=max_iterations) or ref
    q = np.asarray(ref.parameters, dtype=np.float64)
    s_w, t_w = float(q[5]), float(q[6])
    mid_offset = float(ref.edge_midpoint_angstrom) - float(q[4])
    dw = float(np.median(np.diff(w)))
    e_lo, e_hi = float(w[0]) + 2 * dw, float(w[-1]) - 2 * dw
    P = np.full((m, 5), np.nan)
    E = np.full((m, 5), np.nan)
    C = np.full(m, np.nan)
    HV = np.full(m, np.nan)  # variance of a_hkl + b_hkl * edge (full covariance: a and b are correlated)

    def run(a):
        b = min(a + int(chunk), m)
        with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
            Sc = S[a:b] if absolute else np.ones((b - a, n))
            p0 = np.repeat(q[None, :5], b - a, axis=0)
            p, cov, cost = _lm_chunk(w, T[a:b], Sc, p0, s_w, t_w, float(w[0]), float(w[-1]), max_iterations)
            chi2 = cost / max(n - 5, 1)
            scale = np.maximum(chi2, 1.0) if absolute else chi2
            P[a:b], C[a:b] = p, chi2
            E[a:b] = np.sqrt(np.clip(np.einsum("mkk->mk", cov), 0, None) * scale[:, None])
            E[a:b][~np.all(np.isfinite(cov), axis=(1, 2))] = np.nan
            e = p[:, 4]
            HV[a:b] = (cov[:, 2, 2] + 2 * e * cov[:, 2, 3] + e * e * cov[:, 3, 3]) * scale

    starts = range(0, m, int(chunk))
    if workers > 1 and len(starts) > 1:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=int(workers)) as pool:
            list(pool.map(run, starts))
    else:
        for a in starts:
            run(a)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
        a0, b0, ah, bh, e = P.T
        outer = np.exp(-(a0 + b0 * e))
        inner = np.exp(-(ah + bh * e))
        height = outer * (1.0 - inner)
        # the height's uncertainty from the dominant terms (a_hkl + b_hkl * edge, with their covariance)
        h_sig = outer * inner * np.sqrt(np.clip(HV, 0, None))
        ok = (np.all(np.isfinite(P), 1) & np.all(np.isfinite(E), 1) & (E[:, 4] > 0) & (e > e_lo) & (e < e_hi)
              & (height > 0) & (height >= map_significance * h_sig) & (E[:, 4] < (w[-1] - w[0]) / 4))
    n_bad = int((~ok).sum())
    if n_bad:
        log.info("Bragg-edge map: %d of %d spectra not ok (flagged)", n_bad, m)
    nan = np.nan
    full = np.concatenate([P, np.tile([s_w, t_w, 0.0, 0.0], (m, 1))], axis=1)
    full[~ok] = nan
    rs = lambda v: np.where(ok, v, nan).reshape(batch)  # noqa: E731
    return BraggEdgeFit(
        edge_position_angstrom=rs(e), edge_position_sigma_angstrom=rs(E[:, 4]),
        edge_width_angstrom=rs(np.full(m, s_w)), edge_width_sigma_angstrom=np.full(batch, nan),
        edge_tail_angstrom=rs(np.full(m, t_w)), edge_midpoint_angstrom=rs(e + mid_offset),
        edge_midpoint_sigma_angstrom=rs(E[:, 4]), edge_height=rs(height), edge_height_sigma=rs(h_sig),
        parameters=full.reshape(batch + (9,)), chi2_reduced=C.reshape(batch), ok=ok.reshape(batch),
        window_angstrom=(float(w[0]), float(w[-1])), n_points=n, profile=profile, position=position)
