"""Compiled kernels of the batched local correlation (numba, imported lazily).

One call solves every node of a level: nodes are distributed over threads
(``prange``); each node runs its own inverse-compositional Gauss-Newton loop
with a constant 12x12 Hessian built from the reference gradients, and samples
the deformed image with cubic B-splines (mirror boundary, as
``scipy.ndimage.spline_filter(mode="mirror")``).  :func:`solve` is the backend
entry point (see :mod:`tomo4d.dvc._backend`).

Grey-level models (:class:`~tomo4d.dvc.GreyModel`, integer code ``grey``: bit 0 offset,
bit 1 scale): ``ssd`` (0) compares grey levels as they are; the others first map
the warped deformed window onto the reference window, re-estimated at every
iteration, so that a change of brightness and/or contrast between the states does
not bias the warp (Pan et al. 2010, 2013; the Jacobian stays the constant reference
one): ``znssd`` (3) onto its mean and standard deviation,
``r = (g - mean_g) std_f / std_g - (f - mean_f)``; ``zssd`` (1) onto its mean,
``r = (g - mean_g) - (f - mean_f)``; ``nssd`` (2) onto its root mean square about zero,
``r = g rms_f / rms_g - f``.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .._kernels import mirror_index as _mirror
from .._threads import numba_threads
from .field import NodeStatus

# the status codes the kernel writes: NodeStatus values, as plain ints frozen into the compiled code
K_CONVERGED = int(NodeStatus.CONVERGED)
K_NOT_CONVERGED = int(NodeStatus.NOT_CONVERGED)
K_DIVERGED = int(NodeStatus.DIVERGED)
K_SINGULAR = int(NodeStatus.LOW_TEXTURE)          # singular Hessian: too little texture in the window
K_OUT_OF_VIEW = int(NodeStatus.OUT_OF_VIEW)


@njit(cache=True, fastmath=True, inline="always")
def _bspline(t):
    """The four cubic B-spline weights of fractional position ``t`` (float32)."""
    g = 1.0 - t
    w0 = g * g * g / 6.0
    w3 = t * t * t / 6.0
    w1 = 2.0 / 3.0 - 0.5 * t * t * (2.0 - t)
    w2 = 1.0 - w0 - w1 - w3
    return np.float32(w0), np.float32(w1), np.float32(w2), np.float32(w3)


@njit(cache=True, fastmath=True, inline="always")
def _cubic_interior(f, sz, sy, iz, iy, ix, z0, z1, z2, z3, y0, y1, y2, y3, x0, x1, x2, x3):
    """Cubic B-spline sum over the 4x4x4 coefficients of ``f`` (flattened) around an interior point."""
    o = (iz - 1) * sz + (iy - 1) * sy + ix - 1
    o00 = o
    o01 = o + 1 * sy
    o02 = o + 2 * sy
    o03 = o + 3 * sy
    o10 = o + 1 * sz
    o11 = o + 1 * sz + 1 * sy
    o12 = o + 1 * sz + 2 * sy
    o13 = o + 1 * sz + 3 * sy
    o20 = o + 2 * sz
    o21 = o + 2 * sz + 1 * sy
    o22 = o + 2 * sz + 2 * sy
    o23 = o + 2 * sz + 3 * sy
    o30 = o + 3 * sz
    o31 = o + 3 * sz + 1 * sy
    o32 = o + 3 * sz + 2 * sy
    o33 = o + 3 * sz + 3 * sy
    s0 = (y0 * (x0 * f[o00] + x1 * f[o00 + 1] + x2 * f[o00 + 2] + x3 * f[o00 + 3])
          + y1 * (x0 * f[o01] + x1 * f[o01 + 1] + x2 * f[o01 + 2] + x3 * f[o01 + 3])
          + y2 * (x0 * f[o02] + x1 * f[o02 + 1] + x2 * f[o02 + 2] + x3 * f[o02 + 3])
          + y3 * (x0 * f[o03] + x1 * f[o03 + 1] + x2 * f[o03 + 2] + x3 * f[o03 + 3]))
    s1 = (y0 * (x0 * f[o10] + x1 * f[o10 + 1] + x2 * f[o10 + 2] + x3 * f[o10 + 3])
          + y1 * (x0 * f[o11] + x1 * f[o11 + 1] + x2 * f[o11 + 2] + x3 * f[o11 + 3])
          + y2 * (x0 * f[o12] + x1 * f[o12 + 1] + x2 * f[o12 + 2] + x3 * f[o12 + 3])
          + y3 * (x0 * f[o13] + x1 * f[o13 + 1] + x2 * f[o13 + 2] + x3 * f[o13 + 3]))
    s2 = (y0 * (x0 * f[o20] + x1 * f[o20 + 1] + x2 * f[o20 + 2] + x3 * f[o20 + 3])
          + y1 * (x0 * f[o21] + x1 * f[o21 + 1] + x2 * f[o21 + 2] + x3 * f[o21 + 3])
          + y2 * (x0 * f[o22] + x1 * f[o22 + 1] + x2 * f[o22 + 2] + x3 * f[o22 + 3])
          + y3 * (x0 * f[o23] + x1 * f[o23 + 1] + x2 * f[o23 + 2] + x3 * f[o23 + 3]))
    s3 = (y0 * (x0 * f[o30] + x1 * f[o30 + 1] + x2 * f[o30 + 2] + x3 * f[o30 + 3])
          + y1 * (x0 * f[o31] + x1 * f[o31 + 1] + x2 * f[o31 + 2] + x3 * f[o31 + 3])
          + y2 * (x0 * f[o32] + x1 * f[o32 + 1] + x2 * f[o32 + 2] + x3 * f[o32 + 3])
          + y3 * (x0 * f[o33] + x1 * f[o33 + 1] + x2 * f[o33 + 2] + x3 * f[o33 + 3]))
    return z0 * s0 + z1 * s1 + z2 * s2 + z3 * s3


@njit(cache=True, fastmath=True)
def _cubic(coef, flat, z, y, x):
    """Cubic B-spline interpolation of the prefiltered coefficients ``coef`` at (z, y, x)."""
    nz, ny, nx = coef.shape
    fz, fy, fx = np.floor(z), np.floor(y), np.floor(x)
    iz, iy, ix = int(fz), int(fy), int(fx)
    z0, z1, z2, z3 = _bspline(z - fz)
    y0, y1, y2, y3 = _bspline(y - fy)
    x0, x1, x2, x3 = _bspline(x - fx)
    if iz >= 1 and iz + 2 < nz and iy >= 1 and iy + 2 < ny and ix >= 1 and ix + 2 < nx:
        return _cubic_interior(flat, ny * nx, nx, iz, iy, ix, z0, z1, z2, z3, y0, y1, y2, y3, x0, x1, x2, x3)
    wz = (z0, z1, z2, z3)
    wy = (y0, y1, y2, y3)
    wx = (x0, x1, x2, x3)
    acc = 0.0
    for a in range(4):
        zz = _mirror(iz - 1 + a, nz)
        sa = 0.0
        for b in range(4):
            yy = _mirror(iy - 1 + b, ny)
            s = 0.0
            for c in range(4):
                s += wx[c] * coef[zz, yy, _mirror(ix - 1 + c, nx)]
            sa += wy[b] * s
        acc += wz[a] * sa
    return acc


@njit(cache=True, fastmath=True)
def _linear(img, z, y, x):
    nz, ny, nx = img.shape
    fz, fy, fx = np.floor(z), np.floor(y), np.floor(x)
    iz, iy, ix = int(fz), int(fy), int(fx)
    dz, dy, dx = z - fz, y - fy, x - fx
    iz1, iy1, ix1 = min(iz + 1, nz - 1), min(iy + 1, ny - 1), min(ix + 1, nx - 1)
    c00 = img[iz, iy, ix] * (1 - dx) + img[iz, iy, ix1] * dx
    c01 = img[iz, iy1, ix] * (1 - dx) + img[iz, iy1, ix1] * dx
    c10 = img[iz1, iy, ix] * (1 - dx) + img[iz1, iy, ix1] * dx
    c11 = img[iz1, iy1, ix] * (1 - dx) + img[iz1, iy1, ix1] * dx
    return (c00 * (1 - dy) + c01 * dy) * (1 - dz) + (c10 * (1 - dy) + c11 * dy) * dz


@njit(cache=True, fastmath=True, inline="always")
def _window_hessian(ref, grad, mask, pz, py, px, hz, hy, hx, radius):
    """``(hess, scale, count, tmean, tstd)`` of one window: the scaled 12x12 Gauss-Newton Hessian of
    the inverse-compositional affine warp (from the reference gradients), the column scales, the
    number of masked voxels and the mean and standard deviation of the reference grey levels."""
    hess = np.zeros((12, 12))
    j = np.zeros(12)
    tsum = 0.0
    tsq = 0.0
    count = 0
    for dz in range(-hz, hz + 1):
        for dy in range(-hy, hy + 1):
            for dx in range(-hx, hx + 1):
                z, y, x = pz + dz, py + dy, px + dx
                if not mask[z, y, x]:
                    continue
                g0, g1, g2 = grad[0, z, y, x], grad[1, z, y, x], grad[2, z, y, x]
                j[0] = g0 * dz; j[1] = g0 * dy; j[2] = g0 * dx
                j[3] = g1 * dz; j[4] = g1 * dy; j[5] = g1 * dx
                j[6] = g2 * dz; j[7] = g2 * dy; j[8] = g2 * dx
                j[9] = g0; j[10] = g1; j[11] = g2
                for a in range(12):
                    ja = j[a]
                    for b in range(a, 12):
                        hess[a, b] += ja * j[b]
                t = ref[z, y, x]
                tsum += t
                tsq += t * t
                count += 1
    for a in range(12):
        for b in range(a):
            hess[a, b] = hess[b, a]
    tmean = tsum / max(count, 1)
    tstd = np.sqrt(max(tsq / max(count, 1) - tmean ** 2, 1e-30))
    # scale the affine columns so that the Hessian is well conditioned
    scale = np.ones(12)
    for a in range(9):
        scale[a] = 1.0 / radius
    for a in range(12):
        for b in range(12):
            hess[a, b] *= scale[a] * scale[b]
    return hess, scale, count, tmean, tstd


@njit(cache=True, fastmath=True, inline="always")
def _warp(m, pz, py, px, dz, dy, dx):
    """Where Phi ``m`` (about the node ``p``) sends the window voxel at offset ``(dz, dy, dx)``."""
    return (m[0, 0] * dz + m[0, 1] * dy + m[0, 2] * dx + m[0, 3] + pz,
            m[1, 0] * dz + m[1, 1] * dy + m[1, 2] * dx + m[1, 3] + py,
            m[2, 0] * dz + m[2, 1] * dy + m[2, 2] * dx + m[2, 3] + px)


@njit(cache=True, fastmath=True, inline="always")
def _sample_warped(image, coef, flat, cubic, m, pz, py, px, dz, dy, dx):
    """``(value, inside)``: the deformed volume at the warped window voxel (cubic B-spline or linear),
    and whether that point lies inside the volume (value 0 when not; no NaN sentinel: fastmath)."""
    nz, ny, nx = coef.shape
    wz_, wy_, wx_ = _warp(m, pz, py, px, dz, dy, dx)
    if wz_ < 0 or wy_ < 0 or wx_ < 0 or wz_ > nz - 1 or wy_ > ny - 1 or wx_ > nx - 1:
        return 0.0, False
    return (_cubic(coef, flat, wz_, wy_, wx_) if cubic else _linear(image, wz_, wy_, wx_)), True


@njit(cache=True, fastmath=True, inline="always")
def _accumulate(bvec, r, grad, z, y, x, dz, dy, dx):
    """Add residual ``r`` of the window voxel ``(z, y, x)`` (offset ``(dz, dy, dx)``) to J^T r."""
    g0, g1, g2 = grad[0, z, y, x], grad[1, z, y, x], grad[2, z, y, x]
    rz, ry, rx = r * g0, r * g1, r * g2
    bvec[0] += rz * dz; bvec[1] += rz * dy; bvec[2] += rz * dx
    bvec[3] += ry * dz; bvec[4] += ry * dy; bvec[5] += ry * dx
    bvec[6] += rx * dz; bvec[7] += rx * dy; bvec[8] += rx * dx
    bvec[9] += rz; bvec[10] += ry; bvec[11] += rx


@njit(cache=True, fastmath=True, inline="always")
def _window_residual(ref, grad, mask, image, coef, flat, cubic, m, pz, py, px, hz, hy, hx, bvec):
    """Sample the deformed volume over the warped window of Phi ``m``: fills ``bvec`` (the 12-vector
    J^T r) and returns ``(sum of squared residuals, number of voxels inside the deformed volume)``."""
    bvec[:] = 0.0
    ssq = 0.0
    nv = 0
    for dz in range(-hz, hz + 1):
        for dy in range(-hy, hy + 1):
            for dx in range(-hx, hx + 1):
                z, y, x = pz + dz, py + dy, px + dx
                if not mask[z, y, x]:
                    continue
                v, inside = _sample_warped(image, coef, flat, cubic, m, pz, py, px, dz, dy, dx)
                if not inside:
                    continue
                r = v - ref[z, y, x]
                ssq += r * r
                nv += 1
                _accumulate(bvec, r, grad, z, y, x, dz, dy, dx)
    return ssq, nv


@njit(cache=True, fastmath=True, inline="always")
def _window_residual_grey(ref, grad, mask, image, coef, flat, cubic, m, pz, py, px, hz, hy, hx, bvec, buf,
                          seen, tmean, tstd, grey):
    """:func:`_window_residual` under grey model ``grey`` (1 zssd, 2 nssd, 3 znssd; module notes): the
    warped window is sampled once into ``buf`` (``seen``: inside the deformed volume), mapped onto the
    reference window, then compared.  Returns ``(sum of squared residuals, voxels inside the volume)``."""
    k = 0
    nv = 0
    vsum = 0.0
    vsq = 0.0
    for dz in range(-hz, hz + 1):
        for dy in range(-hy, hy + 1):
            for dx in range(-hx, hx + 1):
                z, y, x = pz + dz, py + dy, px + dx
                if not mask[z, y, x]:
                    continue
                v, inside = _sample_warped(image, coef, flat, cubic, m, pz, py, px, dz, dy, dx)
                buf[k] = v
                seen[k] = inside
                if inside:
                    vsum += v
                    vsq += v * v
                    nv += 1
                k += 1
    bvec[:] = 0.0
    if nv == 0:
        return 0.0, 0
    vmean = vsum / nv
    if grey == 1:                             # brightness: means matched
        gain = 1.0
        shift = vmean - tmean
    elif grey == 2:                           # contrast about zero: root mean squares matched
        gain = np.sqrt((tstd * tstd + tmean * tmean) / max(vsq / nv, 1e-30))
        shift = 0.0
    else:                                     # brightness and contrast: means and standard deviations matched
        gain = tstd / np.sqrt(max(vsq / nv - vmean * vmean, 1e-30))
        shift = vmean * gain - tmean
    ssq = 0.0
    k = 0
    for dz in range(-hz, hz + 1):
        for dy in range(-hy, hy + 1):
            for dx in range(-hx, hx + 1):
                z, y, x = pz + dz, py + dy, px + dx
                if not mask[z, y, x]:
                    continue
                v = buf[k]
                inside = seen[k]
                k += 1
                if not inside:
                    continue
                r = v * gain - shift - ref[z, y, x]
                ssq += r * r
                _accumulate(bvec, r, grad, z, y, x, dz, dy, dx)
    return ssq, nv


@njit(cache=True, parallel=True, fastmath=True)
def solve_nodes(ref, grad, mask, image, coef, order, switch_px, positions, half_window, phis, active,
                max_iterations, tolerance_px, max_displacement_px, out_of_view_fraction, grey, status,
                iterations, residual, delta, out_of_view):
    """Gauss-Newton for every active node; ``phis`` (N, 4, 4) updated in place (about each node).

    ``image`` is the deformed volume (linear sampling), ``coef`` its cubic B-spline coefficients.
    With ``order == 3`` iterations sample linearly until an update is smaller than ``switch_px``,
    then cubically until convergence (``switch_px <= 0``: cubic throughout).  Window voxels warped
    outside the deformed volume are skipped; a node that stops (converged or not) with more than
    ``out_of_view_fraction`` of them outside, or that loses half of them, is ``K_OUT_OF_VIEW``.
    ``grey``: the grey-level model's code (0 ssd, 1 zssd, 2 nssd, 3 znssd; module notes).
    """
    n_nodes = positions.shape[0]
    flat = coef.ravel()
    hz, hy, hx = half_window[0], half_window[1], half_window[2]
    radius = max(hz, max(hy, hx))
    for n in prange(n_nodes):
        if not active[n]:
            continue
        pz, py, px = positions[n, 0], positions[n, 1], positions[n, 2]
        hess, scale, count, tmean, tstd = _window_hessian(ref, grad, mask, pz, py, px, hz, hy, hx, radius)
        if count < 16 or np.linalg.cond(hess) > 1e10:
            status[n] = K_SINGULAR
            continue
        hinv = np.linalg.inv(hess)
        m = phis[n].copy()
        t0z, t0y, t0x = m[0, 3], m[1, 3], m[2, 3]
        # linear interpolation while far from the solution, cubic B-splines for the final iterations
        cubic = order == 3 and switch_px <= 0.0
        inc = np.eye(4)
        bvec = np.zeros(12)
        st = K_NOT_CONVERGED
        it = 0
        res = np.nan
        dn = np.nan
        oov = np.nan
        buf = np.empty(count if grey else 0)
        seen = np.zeros(count if grey else 0, np.bool_)
        for it in range(1, max_iterations + 1):  # noqa: B007 (it is read after the loop)
            if grey:
                ssq, nv = _window_residual_grey(ref, grad, mask, image, coef, flat, cubic, m, pz, py, px, hz, hy, hx,
                                                bvec, buf, seen, tmean, tstd, grey)
            else:
                ssq, nv = _window_residual(ref, grad, mask, image, coef, flat, cubic, m, pz, py, px, hz, hy, hx,
                                           bvec)
            oov = (count - nv) / count
            if nv < count // 2:
                st = K_OUT_OF_VIEW
                break
            res = np.sqrt(ssq / nv) / tstd
            for a in range(12):
                bvec[a] *= scale[a]
            dp = hinv @ bvec
            for a in range(12):
                dp[a] *= scale[a]
            inc[:] = 0.0
            for a in range(3):
                for b in range(3):
                    inc[a, b] = dp[3 * a + b]
                inc[a, a] += 1.0
                inc[a, 3] = dp[9 + a]
            inc[3, 3] = 1.0
            m = m @ np.linalg.inv(inc)
            dmax = 0.0
            for a in range(9):
                dmax = max(dmax, abs(dp[a]))
            dn = np.sqrt(dp[9] ** 2 + dp[10] ** 2 + dp[11] ** 2) + radius * dmax
            moved = np.sqrt((m[0, 3] - t0z) ** 2 + (m[1, 3] - t0y) ** 2 + (m[2, 3] - t0x) ** 2)
            det = np.linalg.det(m[:3, :3])
            if not np.isfinite(dn) or moved > max_displacement_px or det < 0.2 or det > 5.0:
                st = K_DIVERGED
                break
            if not cubic and order == 3 and dn < switch_px:
                cubic = True
                continue
            if dn < tolerance_px:
                st = K_CONVERGED
                break
        if (st == K_CONVERGED or st == K_NOT_CONVERGED) and oov > out_of_view_fraction:
            st = K_OUT_OF_VIEW
        phis[n] = m
        status[n] = st
        iterations[n] = it
        residual[n] = res
        delta[n] = dn
        out_of_view[n] = oov


def solve(problem, state, selection) -> None:
    """Backend entry point: solve the ``selection`` (N,) bool of ``problem`` into ``state`` (in place).

    Runs on ``problem.options.threads`` numba threads (default: ``tomo4d.threads`` / the CPUs this
    process may use, see :func:`tomo4d._threads.resolve_threads`) and restores the caller's
    thread count afterwards.
    """
    o = problem.options
    with numba_threads(o.threads):
        solve_nodes(problem.reference, problem.gradient, problem.mask, problem.deformed, problem.coefficients,
                    int(o.order), float(o.switch_px), problem.positions, problem.half_window, state.phis,
                    np.ascontiguousarray(selection, np.bool_), int(o.max_iterations), float(o.tolerance_px),
                    problem.max_displacement_px, float(o.out_of_view_fraction), o.grey_model.code,
                    state.status, state.iterations,
                    state.residual, state.delta, state.out_of_view)

