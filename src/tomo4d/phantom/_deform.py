"""Lithiation and deformation of the phantom: per-step states and the maps phi_t between frames.

phi_t = G_t o Q_1 o ... o Q_n: Q_p is particle p's local swelling map (:data:`RHO_CUT` radii of
influence), G_t the electrode-scale expansion (axial with a gradient, in-plane growing towards the
separator).  All positions are in the sample frame of :mod:`tomo4d.phantom._model` (nm, (z, y, x)).
"""

from __future__ import annotations

import numpy as np

from ._model import RHO_CUT, SI_FULL_VOLUME_EXPANSION, LithiationMode, StepState

# ----------------------------------------------------------------------------------------------
# lithiation and the schedule
# ----------------------------------------------------------------------------------------------

def make_steps(particles, soc, *, expansion, in_plane_ratio, residual_fraction,
               particle_swelling) -> tuple[StepState, ...]:
    soc = np.asarray(soc, float)
    states = []
    f_max = np.zeros(len(particles))
    soc_max = 0.0
    for s in soc:
        f = 1.0 - (1.0 - s) ** particles.rate
        f_max = np.maximum(f_max, f)
        soc_max = max(soc_max, s)
        f_eff = f + residual_fraction * (f_max - f)
        soc_eff = s + residual_fraction * (soc_max - s)
        axial = expansion * soc_eff
        swelling = particle_swelling * (np.cbrt(1.0 + SI_FULL_VOLUME_EXPANSION * f_eff) - 1.0)
        states.append(StepState(float(s), float(axial), float(in_plane_ratio * axial), f, swelling))
    return tuple(states)


def front_threshold(particles, p, fraction):
    """Front position (units of the radius) for lithiated fraction ``fraction`` of particle ``p``."""
    if fraction <= 0:
        return -np.inf
    if fraction >= 1:
        return np.inf
    if particles.mode[p] == LithiationMode.CORE_SHELL:
        # shell depth 1 - rho_s: volume of {rho_s > 1 - t} is 1 - (1 - t)^3 of a star-shaped body
        return 1.0 - np.cbrt(1.0 - fraction)
    return float(np.interp(fraction * 100, np.arange(101), particles.network_quantiles[p]))


# ----------------------------------------------------------------------------------------------
# deformation: phi_t = G_t o Q_1 o ... o Q_n (Q_p local particle swelling, G_t electrode scale)
# ----------------------------------------------------------------------------------------------

class _Bounds:
    """Conservative per-index coordinate bounds of a grid of points (nz, ny, nx, 3)."""

    def __init__(self, pts):
        self.pts = pts
        self.grid = pts.ndim == 4
        if self.grid:
            self.lo, self.hi = [], []
            for a in range(3):
                other = tuple(b for b in range(3) if b != a)
                self.lo.append(pts[..., a].min(axis=other))
                self.hi.append(pts[..., a].max(axis=other))

    def select(self, lo3, hi3):
        if not self.grid:
            ok = np.all((self.pts >= lo3) & (self.pts <= hi3), axis=-1)
            idx = np.flatnonzero(ok)
            return idx if idx.size else None
        sl = []
        for a in range(3):
            idx = np.flatnonzero((self.hi[a] >= lo3[a]) & (self.lo[a] <= hi3[a]))
            if idx.size == 0:
                return None
            sl.append(slice(int(idx[0]), int(idx[-1]) + 1))
        return tuple(sl)

    def update(self, sel, sub):
        if not self.grid:
            return
        for a in range(3):
            other = tuple(b for b in range(3) if b != a)
            s = sel[a]
            self.lo[a][s] = np.minimum(self.lo[a][s], sub[..., a].min(axis=other))
            self.hi[a][s] = np.maximum(self.hi[a][s], sub[..., a].max(axis=other))


def _psi(rho):
    """Smooth swelling profile: ~1 inside the particle, ~rho^-3 outside, 0 beyond RHO_CUT."""
    out = (1.0 + rho ** 8) ** (-0.375)
    u = np.clip(rho - (RHO_CUT - 1.0), 0.0, 1.0)
    return out * (1.0 - u * u * (3.0 - 2.0 * u))


def _window(z, z_cc, r):
    u = np.clip((z - z_cc) / r, 0.0, 1.0)
    return u * u * (3.0 - 2.0 * u)


def _particle_disp(x, c, r, amp, z_cc):
    d = x - c
    rho = np.sqrt(np.einsum("ij,ij->i", d, d)) / r
    return (amp * _psi(rho) * _window(x[:, 0], z_cc, r))[:, None] * d


def _map_ball_numpy(x, c, r, amp, z_cc, inverse):
    """Apply (or invert) one particle's swelling map to points ``x`` (m, 3), in place."""
    if not inverse:
        x += _particle_disp(x, c, r, amp, z_cc)
        return
    target = x.copy()
    active = np.arange(len(x))
    for _ in range(100):
        y = target[active] - _particle_disp(x[active], c, r, amp, z_cc)
        delta = np.abs(y - x[active]).max(axis=1)
        x[active] = y
        active = active[delta > 1e-4]
        if active.size == 0:
            break



def swelling_kernel():
    """The compiled per-point swelling kernel (numba, cached on disk), or None when numba is unavailable."""
    try:
        from ._kernels import swell_points
    except ImportError:  # pragma: no cover - numba is a dependency
        return None
    return swell_points


def _particle_pass(model, step, pts, *, inverse):
    st = model.steps[step]
    parts = model.particles
    z_cc = model.layout.z_collector_nm
    bounds = _Bounds(pts)
    kernel = swelling_kernel()
    order = range(len(parts) - 1, -1, -1) if inverse else range(len(parts))
    for p in order:
        amp = float(st.swelling[p])
        if amp == 0.0:
            continue
        c = parts.centre_nm[p]
        r = float(parts.radius_nm[p])
        reach = RHO_CUT * r
        sel = bounds.select(c - reach, c + reach)
        if sel is None:
            continue
        sub = pts[sel]
        flat = sub.reshape(-1, 3)
        d = flat - c
        near = np.einsum("ij,ij->i", d, d) < reach * reach
        if not near.any():
            continue
        x = np.ascontiguousarray(flat[near])
        if kernel is not None:
            kernel(x, float(c[0]), float(c[1]), float(c[2]), r, amp, float(z_cc), float(RHO_CUT), bool(inverse))
        else:
            _map_ball_numpy(x, c, r, amp, z_cc, inverse)
        flat[near] = x
        sub = flat.reshape(sub.shape)
        pts[sel] = sub
        bounds.update(sel, sub)
    return pts


def _global_forward(model, step, pts):
    st = model.steps[step]
    lay = model.layout
    t0, g, e = lay.anode_thickness_nm, model.expansion_gradient, st.axial_strain
    s = np.clip((pts[..., 0] - lay.z_collector_nm) / t0, 0.0, 1.0)
    yc, xc = lay.axis_yx_nm
    lat = 1.0 + st.in_plane_strain * s
    out = np.empty_like(pts)
    out[..., 0] = pts[..., 0] + e * t0 * (s + g * (s * s - s))
    out[..., 1] = yc + (pts[..., 1] - yc) * lat
    out[..., 2] = xc + (pts[..., 2] - xc) * lat
    return out


def _global_inverse(model, step, pts):
    st = model.steps[step]
    lay = model.layout
    t0, g, e = lay.anode_thickness_nm, model.expansion_gradient, st.axial_strain
    zc = lay.z_collector_nm
    w = np.clip((pts[..., 0] - zc) / t0, 0.0, 1.0 + e)
    # solve e*g*s^2 + (1 + e - e*g)*s - w = 0 for s in [0, 1]
    a, b = e * g, 1.0 + e - e * g
    if abs(a) > 1e-12:
        s = 2.0 * w / (b + np.sqrt(b * b + 4.0 * a * w))
    else:
        s = w / b
    s = np.clip(s, 0.0, 1.0)
    out = np.empty_like(pts)
    z = pts[..., 0]
    out[..., 0] = np.where(z <= zc, z, np.where(w >= 1.0 + e, z - e * t0, zc + s * t0))
    yc, xc = lay.axis_yx_nm
    lat = 1.0 + st.in_plane_strain * s
    out[..., 1] = yc + (pts[..., 1] - yc) / lat
    out[..., 2] = xc + (pts[..., 2] - xc) / lat
    return out


def deform_forward(model, step, pts):
    """Deformed positions (..., 3) of reference points ``pts`` (..., 3) at ``step`` (nm)."""
    pts = np.array(pts, dtype=np.float64, copy=True)
    if step == 0:
        return pts
    pts = _particle_pass(model, step, pts, inverse=False)
    return _global_forward(model, step, pts)


def deform_inverse(model, step, pts):
    """Reference positions of deformed points ``pts`` (..., 3) at ``step`` (nm)."""
    pts = np.array(pts, dtype=np.float64, copy=True)
    if step == 0:
        return pts
    ref = _global_inverse(model, step, pts)
    return _particle_pass(model, step, ref, inverse=True)
