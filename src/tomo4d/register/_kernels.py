"""Compiled (numba) kernels of the global Gauss-Newton registration, imported lazily by ``_global``.

Neither kernel stores a Jacobian: the affine Jacobian of a voxel is ``g_i u_j`` (the fixed gradient
``g`` times the centred coordinates ``u = (z, y, x, 1)``), so along one row of x only ``x`` changes and
the sums over the row reduce to sums of ``g_i v`` and ``g_i v x`` (``v``: the warped moving grey, the
fixed grey or 1), expanded with the row's ``z`` and ``y`` afterwards.  Partial sums are kept per z slice
and added in numpy, so results do not depend on how the slices are shared among threads: the kernels
release the GIL and the caller runs slabs of slices on its own thread pool.  Arrays must be
C-contiguous float32 (the caller makes them so: one compiled signature for every call).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .._kernels import mirror_index as _mirror

# per-slice outputs of ``warp_sums``: N, Sw, Sww, Swt, St, Stt, then (v, i, j) v in (w, t, 1), g_i, u_j
N_PHOTO = 6
N_SUMS = N_PHOTO + 3 * 3 * 4


@njit(cache=True, fastmath=True, inline="always")
def _gradient(a, k, j, i):
    """Central-difference gradient (float32, as ``numpy.gradient``) of ``a`` at an interior voxel."""
    h = np.float32(0.5)
    return ((a[k + 1, j, i] - a[k - 1, j, i]) * h, (a[k, j + 1, i] - a[k, j - 1, i]) * h,
            (a[k, j, i + 1] - a[k, j, i - 1]) * h)


@njit(cache=True, fastmath=True, inline="always")
def _weights(order, t):
    """The four interpolation weights of fractional position ``t``: cubic B-spline or linear (middle two)."""
    if order == 3:
        g = 1.0 - t
        w0 = g * g * g / 6.0
        w3 = t * t * t / 6.0
        w1 = 2.0 / 3.0 - 0.5 * t * t * (2.0 - t)
        return (w0, w1, 1.0 - w0 - w1 - w3, w3)
    return (0.0, 1.0 - t, t, 0.0)


@njit(cache=True, fastmath=True, inline="always")
def _row4(flat, o, wx):
    return wx[0] * flat[o] + wx[1] * flat[o + 1] + wx[2] * flat[o + 2] + wx[3] * flat[o + 3]


@njit(cache=True, fastmath=True, inline="always")
def _plane(flat, o, sy, wy, wx):
    return (wy[0] * _row4(flat, o, wx) + wy[1] * _row4(flat, o + sy, wx) + wy[2] * _row4(flat, o + 2 * sy, wx)
            + wy[3] * _row4(flat, o + 3 * sy, wx))


@njit(cache=True, fastmath=True)
def _interpolate_mirror(flat, shape, order, bz, by, bx, wz, wy, wx):
    """Interpolation near the border: every tap index mirrored into the volume."""
    nz, ny, nx = shape
    lo = 0 if order == 3 else 1
    hi = 4 if order == 3 else 3
    s = 0.0
    for a in range(lo, hi):
        oz = _mirror(bz + a, nz) * ny * nx
        sa = 0.0
        for b in range(lo, hi):
            o = oz + _mirror(by + b, ny) * nx
            sb = 0.0
            for c in range(lo, hi):
                sb += wx[c] * flat[o + _mirror(bx + c, nx)]
            sa += wy[b] * sb
        s += wz[a] * sa
    return s


@njit(cache=True, fastmath=True, inline="always")
def _interpolate(flat, shape, order, pz, py, px):
    """Interpolate the C-ordered volume ``flat`` (1-D view) of ``shape`` at (pz, py, px), mirror boundary."""
    nz, ny, nx = shape
    fz, fy, fx = np.floor(pz), np.floor(py), np.floor(px)
    wz, wy, wx = _weights(order, pz - fz), _weights(order, py - fy), _weights(order, px - fx)
    bz, by, bx = int(fz) - 1, int(fy) - 1, int(fx) - 1
    if bz >= 0 and by >= 0 and bx >= 0 and bz + 3 < nz and by + 3 < ny and bx + 3 < nx:
        sy = nx
        sz = ny * nx
        o = bz * sz + by * sy + bx
        if order == 3:
            return (wz[0] * _plane(flat, o, sy, wy, wx) + wz[1] * _plane(flat, o + sz, sy, wy, wx)
                    + wz[2] * _plane(flat, o + 2 * sz, sy, wy, wx) + wz[3] * _plane(flat, o + 3 * sz, sy, wy, wx))
        o += sz + sy + 1
        tz, ty, tx = wz[2], wy[2], wx[2]
        c00 = flat[o] + tx * (flat[o + 1] - flat[o])
        c01 = flat[o + sy] + tx * (flat[o + sy + 1] - flat[o + sy])
        c10 = flat[o + sz] + tx * (flat[o + sz + 1] - flat[o + sz])
        c11 = flat[o + sz + sy] + tx * (flat[o + sz + sy + 1] - flat[o + sz + sy])
        c0 = c00 + ty * (c01 - c00)
        return c0 + tz * (c10 + ty * (c11 - c10) - c0)
    return _interpolate_mirror(flat, shape, order, bz, by, bx, wz, wy, wx)


@njit(cache=True, fastmath=True, nogil=True)
def _row_sums(flat, shape, fixed, sel, k, j, mat, off, lo, hi, order, shift, cx, acc):
    """One row of ``warp_sums``: photometric sums into ``acc[:6]``; returns the 18 row sums of ``g_i v`` and
    ``g_i v x`` for v = w, t, 1 (scalars, so that they stay in registers)."""
    bz = mat[0, 0] * k + mat[0, 1] * j + off[0]
    by = mat[1, 0] * k + mat[1, 1] * j + off[1]
    bx = mat[2, 0] * k + mat[2, 1] * j + off[2]
    n = sw = sww = swt = st = stt = 0.0
    a0 = a1 = a2 = b0 = b1 = b2 = c0 = c1 = c2 = 0.0          # sum g_i w, sum g_i t, sum g_i
    d0 = d1 = d2 = e0 = e1 = e2 = f0 = f1 = f2 = 0.0          # the same times x
    for i in range(fixed.shape[2]):
        if not sel[k, j, i]:
            continue
        pz = bz + mat[0, 2] * i
        py = by + mat[1, 2] * i
        px = bx + mat[2, 2] * i
        if pz < lo[0] or pz > hi[0] or py < lo[1] or py > hi[1] or px < lo[2] or px > hi[2]:
            continue
        w = _interpolate(flat, shape, order, pz, py, px) - shift
        t = fixed[k, j, i] - shift
        n += 1.0
        sw += w
        sww += w * w
        swt += w * t
        st += t
        stt += t * t
        ux = i - cx
        h = np.float32(0.5)
        g0 = (fixed[k + 1, j, i] - fixed[k - 1, j, i]) * h
        g1 = (fixed[k, j + 1, i] - fixed[k, j - 1, i]) * h
        g2 = (fixed[k, j, i + 1] - fixed[k, j, i - 1]) * h
        a0 += g0 * w
        a1 += g1 * w
        a2 += g2 * w
        b0 += g0 * t
        b1 += g1 * t
        b2 += g2 * t
        c0 += g0
        c1 += g1
        c2 += g2
        d0 += g0 * w * ux
        d1 += g1 * w * ux
        d2 += g2 * w * ux
        e0 += g0 * t * ux
        e1 += g1 * t * ux
        e2 += g2 * t * ux
        f0 += g0 * ux
        f1 += g1 * ux
        f2 += g2 * ux
    acc[0] += n
    acc[1] += sw
    acc[2] += sww
    acc[3] += swt
    acc[4] += st
    acc[5] += stt
    return (a0, a1, a2, b0, b1, b2, c0, c1, c2), (d0, d1, d2, e0, e1, e2, f0, f1, f2)


@njit(cache=True, fastmath=True, nogil=True)
def warp_sums(coef, fixed, sel, mat, off, lo, hi, order, shift, k0, k1, out):
    """Sums of one Gauss-Newton iteration, per z slice ``k0 <= k < k1`` into ``out`` (nz, N_SUMS) float64.

    The moving voxel of fixed voxel ``x`` is ``mat @ x + off``; a voxel counts when ``sel`` and its moving
    position lies in ``[lo, hi]`` along every axis.  ``w`` (moving, interpolated from ``coef``) and ``t``
    (fixed) are taken minus ``shift`` (numerical conditioning of the grey-level sums).  ``sel`` must be
    False on the border of the volume (the fixed gradient is a central difference).
    """
    nz, ny, nx = fixed.shape
    cz, cy, cx = (nz - 1) / 2.0, (ny - 1) / 2.0, (nx - 1) / 2.0
    flat = coef.ravel()
    shape = coef.shape
    for k in range(k0, k1):
        acc = np.zeros(N_SUMS)
        uz = k - cz
        for j in range(ny):
            uy = j - cy
            s, sx = _row_sums(flat, shape, fixed, sel, k, j, mat, off, lo, hi, order, shift, cx, acc)
            for q in range(9):                        # q = v * 3 + i: v in (w, t, 1), gradient component i
                base = N_PHOTO + q * 4
                acc[base] += s[q] * uz
                acc[base + 1] += s[q] * uy
                acc[base + 2] += sx[q]
                acc[base + 3] += s[q]
        out[k, :] = acc


@njit(cache=True, fastmath=True, nogil=True)
def hessian_moments(fixed, sel, k0, k1, out):
    """Per z slice ``k0 <= k < k1`` into ``out`` (nz, 3, 3, 4, 4) float64: ``sum g_i g_k u_j u_l`` over ``sel`` (False on
    the border), ``g`` the central-difference gradient of ``fixed``."""
    nz, ny, nx = fixed.shape
    cz, cy, cx = (nz - 1) / 2.0, (ny - 1) / 2.0, (nx - 1) / 2.0
    for k in range(k0, k1):
        acc = np.zeros((3, 3, 4, 4))
        row = np.zeros((3, 3, 3))                    # (i, k, [sum p, sum p x, sum p x^2]), p = g_i g_k
        g = np.empty(3)
        u = np.empty(4)
        u[0] = k - cz
        u[3] = 1.0
        for j in range(ny):
            u[1] = j - cy
            row[:] = 0.0
            for i in range(nx):
                if not sel[k, j, i]:
                    continue
                x = i - cx
                g[0], g[1], g[2] = _gradient(fixed, k, j, i)
                for a in range(3):
                    for b in range(a, 3):
                        p = g[a] * g[b]
                        row[a, b, 0] += p
                        row[a, b, 1] += p * x
                        row[a, b, 2] += p * x * x
            for a in range(3):
                for b in range(a, 3):
                    s0, s1, s2 = row[a, b, 0], row[a, b, 1], row[a, b, 2]
                    for jj in range(4):
                        for ll in range(4):
                            # moments of u_jj u_ll: x enters through s1 (once) or s2 (twice)
                            nxp = (jj == 2) + (ll == 2)
                            c = 1.0
                            if jj != 2:
                                c *= u[jj]
                            if ll != 2:
                                c *= u[ll]
                            acc[a, b, jj, ll] += c * (s0 if nxp == 0 else (s1 if nxp == 1 else s2))
        out[k] = acc
