"""Compiled kernels of the Gauss-Newton solver of global DVC (:mod:`tomo4d.dvc._global_gn`; numba, imported lazily).

One pass over the elements of the trilinear control grid (cells between nodes; parallel over elements, whose voxels
are disjoint, so nothing is shared between threads): per voxel of the level the residual
``r = J(x + u(x) / f) - b(x) I(x) - a(x)`` of the grey-modelled SSD, its gradient with respect to the element's 8
nodes' unknowns (u_z, u_y, u_x[, a, b]) and, when asked, the Gauss-Newton Hessian ``sum J_x J_x^T`` of the element
(its upper triangle).  ``J`` is sampled trilinearly (torch's ``grid_sample`` with border padding) or as a cubic
B-spline from coefficients padded by 2 mirrored voxels (:func:`tomo4d.dvc._global_solver._spline_coefficients`),
optionally blended over a stack of z-blurred copies with per-voxel weights (the PSF compensation).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from ._global_solver import SPLINE_PAD as PAD  # the cubic coefficients' padding, one definition


@njit(cache=True, fastmath=True)
def _axis_linear(q, n):
    """Left index, fraction and 1/0 (inside/clamped) of a border-clamped linear lookup along one axis of n."""
    if n < 2:
        return 0, 0.0, 0.0
    live = 1.0
    if q <= 0.0:
        q = 0.0
        live = 0.0
    elif q >= n - 1:
        q = n - 1.0
        live = 0.0
    j = min(int(math.floor(q)), n - 2)
    return j, q - j, live


@njit(cache=True, fastmath=True)
def _linear(vol, k, pz, py, px):
    """Trilinear value and gradient (z, y, x) of ``vol[k]`` at a point, border-clamped (zero gradient outside)."""
    n0, n1, n2 = vol.shape[1], vol.shape[2], vol.shape[3]
    z0, tz, lz = _axis_linear(pz, n0)
    y0, ty, ly = _axis_linear(py, n1)
    x0, tx, lx = _axis_linear(px, n2)
    z1, y1, x1 = min(z0 + 1, n0 - 1), min(y0 + 1, n1 - 1), min(x0 + 1, n2 - 1)
    c000, c001 = vol[k, z0, y0, x0], vol[k, z0, y0, x1]
    c010, c011 = vol[k, z0, y1, x0], vol[k, z0, y1, x1]
    c100, c101 = vol[k, z1, y0, x0], vol[k, z1, y0, x1]
    c110, c111 = vol[k, z1, y1, x0], vol[k, z1, y1, x1]
    c00 = c000 + (c001 - c000) * tx
    c01 = c010 + (c011 - c010) * tx
    c10 = c100 + (c101 - c100) * tx
    c11 = c110 + (c111 - c110) * tx
    c0 = c00 + (c01 - c00) * ty
    c1 = c10 + (c11 - c10) * ty
    v = c0 + (c1 - c0) * tz
    gz = (c1 - c0) * lz
    gy = ((1 - tz) * (c01 - c00) + tz * (c11 - c10)) * ly
    gx = ((1 - tz) * ((1 - ty) * (c001 - c000) + ty * (c011 - c010))
          + tz * ((1 - ty) * (c101 - c100) + ty * (c111 - c110))) * lx
    return v, gz, gy, gx


@njit(cache=True, fastmath=True)
def _axis_cubic(q, n):
    """First padded tap and fraction of a cubic lookup along one axis of n (valid from -1 to n)."""
    q = min(max(q, -1.0), n * 1.0)
    j = min(max(int(math.floor(q)), -1), n - 1)
    return j + PAD - 1, min(max(q - j, 0.0), 1.0)


@njit(cache=True, fastmath=True)
def _bspline(t, c, d):
    """Cubic B-spline weights of fraction ``t`` into ``c`` (4,) and their derivatives into ``d`` (4,)."""
    g = 1.0 - t
    c[0] = g * g * g / 6.0
    c[3] = t * t * t / 6.0
    c[1] = (3.0 * t * t * t - 6.0 * t * t + 4.0) / 6.0
    c[2] = 1.0 - c[0] - c[1] - c[3]
    d[0] = -0.5 * g * g
    d[1] = 1.5 * t * t - 2.0 * t
    d[3] = 0.5 * t * t
    d[2] = -d[0] - d[1] - d[3]


@njit(cache=True, fastmath=True)
def _cubic(coef, k, pz, py, px, w):
    """Cubic B-spline value and gradient of ``coef[k]`` (padded by PAD) at a point of the unpadded volume; ``w``
    (6, 4) scratch for the weights."""
    iz, tz = _axis_cubic(pz, coef.shape[1] - 2 * PAD)
    iy, ty = _axis_cubic(py, coef.shape[2] - 2 * PAD)
    ix, tx = _axis_cubic(px, coef.shape[3] - 2 * PAD)
    _bspline(tz, w[0], w[1])
    _bspline(ty, w[2], w[3])
    _bspline(tx, w[4], w[5])
    v = 0.0
    gz = 0.0
    gy = 0.0
    gx = 0.0
    for a in range(4):
        sv = 0.0
        sdy = 0.0
        sdx = 0.0
        for b in range(4):
            rv = 0.0
            rdx = 0.0
            for c in range(4):
                x = coef[k, iz + a, iy + b, ix + c]
                rv += w[4, c] * x
                rdx += w[5, c] * x
            sv += w[2, b] * rv
            sdy += w[3, b] * rv
            sdx += w[2, b] * rdx
        v += w[0, a] * sv
        gz += w[1, a] * sv
        gy += w[0, a] * sdy
        gx += w[0, a] * sdx
    return v, gz, gy, gx


@njit(cache=True, fastmath=True)
def _sample(dfm, weights, has_w, cubic, z, y, x, pz, py, px, w6):
    v = 0.0
    gz = 0.0
    gy = 0.0
    gx = 0.0
    for k in range(dfm.shape[0]):
        wk = weights[k, z, y, x] if has_w else 1.0
        if wk == 0.0:
            continue
        if cubic:
            a, b, c, d = _cubic(dfm, k, pz, py, px, w6)
        else:
            a, b, c, d = _linear(dfm, k, pz, py, px)
        v += wk * a
        gz += wk * b
        gy += wk * c
        gx += wk * d
    return v, gz, gy, gx


@njit(cache=True, fastmath=True, inline="always")
def _mapped_point(z, y, x, tx, line, binning, D, H, W):
    """Voxel (z, y, x) moved by the displacement interpolated along its row (``line``'s x ends, fraction ``tx``),
    in level px, and whether it lies within the deformed volume's edge voxels (+- 0.5 px)."""
    pz = z + (line[0, 0] + tx * (line[0, 1] - line[0, 0])) / binning
    py = y + (line[1, 0] + tx * (line[1, 1] - line[1, 0])) / binning
    px = x + (line[2, 0] + tx * (line[2, 1] - line[2, 0])) / binning
    return pz, py, px, -0.5 <= pz <= D - 0.5 and -0.5 <= py <= H - 0.5 and -0.5 <= px <= W - 0.5


@njit(cache=True, fastmath=True, inline="always")
def _row(ref, dfm, weights, has_w, cubic, mask, z, y, x_lo, x_hi, line, tfrac, binning, w6, rq, rr, rt):
    """One row of an element: per voxel mapped inside the deformed volume its Jacobian factors ``rq`` (dJ/du_z,
    dJ/du_y, dJ/du_x, -1, -I), residual ``rr`` and x fraction ``rt``; returns how many (the first entries)."""
    D, H, W = ref.shape
    m = 0
    for x in range(x_lo, x_hi):
        if not mask[z, y, x]:
            continue
        tx = tfrac[2, x]
        pz, py, px, inside = _mapped_point(z, y, x, tx, line, binning, D, H, W)
        if not inside:
            continue
        v, dz, dy, dx = _sample(dfm, weights, has_w, cubic, z, y, x, pz, py, px, w6)
        iv = ref[z, y, x]
        rr[m] = (v - (line[4, 0] + tx * (line[4, 1] - line[4, 0])) * iv
                 - (line[3, 0] + tx * (line[3, 1] - line[3, 0])))
        rq[0, m] = dz / binning
        rq[1, m] = dy / binning
        rq[2, m] = dx / binning
        rq[3, m] = -1.0
        rq[4, m] = -iv
        rt[m] = tx
        m += 1
    return m


@njit(cache=True, fastmath=True, inline="always")
def _row_sums(rq, rr, rt, m, nf, want_h, gx_acc, hx):
    """A row's gradient sums per x weight (1 - t, t) into ``gx_acc`` (2, nf) and Hessian sums per x weight product
    ((1 - t)^2, t (1 - t), t^2) into ``hx`` (3, nq); returns the row's sum of squared residuals."""
    r2 = 0.0
    for i in range(m):
        r2 += rr[i] * rr[i]
    for c in range(nf):
        s0 = 0.0
        s1 = 0.0
        for i in range(m):
            g = rq[c, i] * rr[i]
            s0 += g
            s1 += rt[i] * g
        gx_acc[0, c] = s0 - s1
        gx_acc[1, c] = s1
    if want_h:
        k = 0
        for ci in range(nf):
            for cj in range(ci, nf):
                s0 = 0.0
                s1 = 0.0
                s2 = 0.0
                for i in range(m):
                    qq = rq[ci, i] * rq[cj, i]
                    s0 += qq
                    s1 += rt[i] * qq
                    s2 += rt[i] * rt[i] * qq
                hx[0, k] = s0 - 2 * s1 + s2
                hx[1, k] = s1 - s2
                hx[2, k] = s2
                k += 1
    return r2


@njit(cache=True, fastmath=True, inline="always")
def _fold(t, products, src, dst):
    """Fold the sums ``src`` (n, k), kept per weight of the axes below, into ``dst`` (2 n or 3 n, k) with this axis's
    weights at fraction ``t``: (1 - t, t) for the gradient, their products ((1 - t)^2, t (1 - t), t^2) for the
    Hessian (``products``); ``dst[n b + a] += w[b] src[a]``."""
    t0 = 1.0 - t
    n = src.shape[0]
    if products:
        w0, w1, w2 = t0 * t0, t0 * t, t * t
        for a in range(n):
            for k in range(src.shape[1]):
                v = src[a, k]
                dst[a, k] += w0 * v
                dst[n + a, k] += w1 * v
                dst[2 * n + a, k] += w2 * v
    else:
        for a in range(n):
            for k in range(src.shape[1]):
                v = src[a, k]
                dst[a, k] += t0 * v
                dst[n + a, k] += t * v


@njit(cache=True, parallel=True, fastmath=True)
def element_pass(ref, dfm, weights, has_w, cubic, mask, U, A, B, gshape, ranges, tfrac, binning, nf, want_h):
    """Per element: the data sum of r^2 and voxel count, the gradient and (``want_h``) the Gauss-Newton Hessian.

    ``ranges`` (3, max_e, 2): per axis and element the level voxels [start, stop) it holds; ``tfrac`` (3, max_n):
    per axis and voxel the fraction within its element.  ``U`` (3, G), ``A``, ``B`` (G,) nodal values; ``nf`` 3
    (displacement only) or 5 (with brightness and contrast).

    The trilinear shape functions are products of one per axis, so the sums factor: per axis the element's two
    functions (1 - t, t) give 2 gradient and 3 Hessian weights (their pairwise products), accumulated along x, then
    y, then z (10 instead of 40 gradient terms and 45 instead of 820 Hessian terms per voxel; the Hessian pass at
    100^3 voxels: 0.91 -> 0.13 s).  Returns ``(sums (nE, 2), grad (nE, 8, nf), hess (nE, 27, nq))``, ``nq = nf (nf +
    1) / 2`` (upper triangle of the fields' products, row-major), with the 27 axis-weight combinations ``9 cz + 3 cy
    + cx`` (0: (1-t)^2, 1: t (1-t), 2: t^2); ``hess`` is (nE, 1, 1) without ``want_h``."""
    gy_, gx_ = gshape[1], gshape[2]
    ez_n, ey_n, ex_n = gshape[0] - 1, gy_ - 1, gx_ - 1
    ne = ez_n * ey_n * ex_n
    nq = nf * (nf + 1) // 2
    sums = np.zeros((ne, 2))
    grad = np.zeros((ne, 8, nf))
    hess = np.zeros((ne, 27, nq)) if want_h else np.zeros((ne, 1, 1))
    wmax = 0
    for e in range(ex_n):
        wmax = max(wmax, ranges[2, e, 1] - ranges[2, e, 0])
    for e in prange(ne):
        ez, ey, ex = e // (ey_n * ex_n), (e // ex_n) % ey_n, e % ex_n
        corner = np.empty((5, 8))  # u_z, u_y, u_x, a, b at the element's corners (bit 2: z, 1: y, 0: x)
        for a in range(8):
            n = ((ez + (a >> 2)) * gy_ + (ey + ((a >> 1) & 1))) * gx_ + ex + (a & 1)
            for f in range(3):
                corner[f, a] = U[f, n]
            corner[3, a] = A[n]
            corner[4, a] = B[n]
        plane, line = np.empty((5, 4)), np.empty((5, 2))  # interpolated along z (corners y, x), along y (ends x)
        w6 = np.empty((6, 4))
        rq, rr, rt = np.empty((5, wmax)), np.empty(wmax), np.empty(wmax)
        gx_acc, gy_acc, gz_acc = np.empty((2, nf)), np.empty((4, nf)), np.zeros((8, nf))
        hx, hy, hz = np.empty((3, nq)), np.empty((9, nq)), np.zeros((27, nq))
        for z in range(ranges[0, ez, 0], ranges[0, ez, 1]):
            tz = tfrac[0, z]
            for f in range(5):
                for c in range(4):
                    plane[f, c] = corner[f, c] + tz * (corner[f, 4 + c] - corner[f, c])
            gy_acc[:] = 0.0
            hy[:] = 0.0
            for y in range(ranges[1, ey, 0], ranges[1, ey, 1]):
                ty = tfrac[1, y]
                for f in range(5):
                    line[f, 0] = plane[f, 0] + ty * (plane[f, 2] - plane[f, 0])
                    line[f, 1] = plane[f, 1] + ty * (plane[f, 3] - plane[f, 1])
                m = _row(ref, dfm, weights, has_w, cubic, mask, z, y, ranges[2, ex, 0], ranges[2, ex, 1], line,
                         tfrac, binning, w6, rq, rr, rt)
                if m == 0:
                    continue
                sums[e, 0] += _row_sums(rq, rr, rt, m, nf, want_h, gx_acc, hx)
                sums[e, 1] += m
                _fold(ty, False, gx_acc, gy_acc)
                if want_h:
                    _fold(ty, True, hx, hy)
            _fold(tz, False, gy_acc, gz_acc)
            if want_h:
                _fold(tz, True, hy, hz)
        for a in range(8):  # corner a = (bz, by, bx): gradient index 4 bz + 2 by + bx
            for c in range(nf):
                grad[e, a, c] = gz_acc[a, c]
        if want_h:
            hess[e] = hz
    return sums, grad, hess


@njit(cache=True, parallel=True, fastmath=True)
def out_of_view(mask, U, gshape, ranges, tfrac, binning):
    """(D, H, W) bool: the masked voxels that the trilinear field ``U`` (3, G) maps outside the deformed volume, by
    :func:`element_pass`'s own test (``_global_solver._mapped`` is torch's): at 100^3 voxels 0.005 s against 0.06 s
    for torch's dense field."""
    D, H, W = mask.shape
    out = np.zeros((D, H, W), np.bool_)
    gy_, gx_ = gshape[1], gshape[2]
    ey_n, ex_n = gy_ - 1, gx_ - 1
    for e in prange((gshape[0] - 1) * ey_n * ex_n):
        ez, ey, ex = e // (ey_n * ex_n), (e // ex_n) % ey_n, e % ex_n
        corner = np.empty((3, 8))
        for a in range(8):
            n = ((ez + (a >> 2)) * gy_ + (ey + ((a >> 1) & 1))) * gx_ + ex + (a & 1)
            for f in range(3):
                corner[f, a] = U[f, n]
        plane, line = np.empty((3, 4)), np.empty((3, 2))
        for z in range(ranges[0, ez, 0], ranges[0, ez, 1]):
            tz = tfrac[0, z]
            for f in range(3):
                for c in range(4):
                    plane[f, c] = corner[f, c] + tz * (corner[f, 4 + c] - corner[f, c])
            for y in range(ranges[1, ey, 0], ranges[1, ey, 1]):
                ty = tfrac[1, y]
                for f in range(3):
                    line[f, 0] = plane[f, 0] + ty * (plane[f, 2] - plane[f, 0])
                    line[f, 1] = plane[f, 1] + ty * (plane[f, 3] - plane[f, 1])
                for x in range(ranges[2, ex, 0], ranges[2, ex, 1]):
                    if not mask[z, y, x]:
                        continue
                    out[z, y, x] = not _mapped_point(z, y, x, tfrac[2, x], line, binning, D, H, W)[3]
    return out
