"""Closed-form eigenvalues of fields of symmetric 3x3 matrices (numba, imported lazily).

``numpy.linalg.eigvalsh`` on an ``(N, 3, 3)`` stack runs a general LAPACK
solver per matrix and dominated the cost of 3D Hessian and structure-tensor
features (about 3 s per million voxels).  The trigonometric solution of the
characteristic cubic (O. K. Smith, "Eigenvalues of a symmetric 3x3 matrix",
Comm. ACM 4(4), 1961) is exact in exact arithmetic; evaluated in float64 on
matrices shifted by their mean eigenvalue and scaled by their deviation, its
float32 results agree with LAPACK to a few float32 ulps of the largest
eigenvalue magnitude (see ``tests/segment/test_features.py``).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from .._threads import numba_threads


@njit(cache=True, parallel=True, nogil=True)
def _eig3(a00, a11, a22, a01, a02, a12, e0, e1, e2):  # pragma: no cover - compiled
    n = a00.shape[0]
    for i in prange(n):
        m00 = np.float64(a00[i])
        m11 = np.float64(a11[i])
        m22 = np.float64(a22[i])
        m01 = np.float64(a01[i])
        m02 = np.float64(a02[i])
        m12 = np.float64(a12[i])
        p1 = m01 * m01 + m02 * m02 + m12 * m12
        q = (m00 + m11 + m22) / 3.0
        b00 = m00 - q
        b11 = m11 - q
        b22 = m22 - q
        p2 = b00 * b00 + b11 * b11 + b22 * b22 + 2.0 * p1
        if p2 <= 0.0:
            e0[i] = q
            e1[i] = q
            e2[i] = q
            continue
        p = math.sqrt(p2 / 6.0)
        inv = 1.0 / p
        c00 = b00 * inv
        c11 = b11 * inv
        c22 = b22 * inv
        c01 = m01 * inv
        c02 = m02 * inv
        c12 = m12 * inv
        det = (c00 * (c11 * c22 - c12 * c12) - c01 * (c01 * c22 - c12 * c02)
               + c02 * (c01 * c12 - c11 * c02))
        r = 0.5 * det
        if r <= -1.0:
            phi = math.pi / 3.0
        elif r >= 1.0:
            phi = 0.0
        else:
            phi = math.acos(r) / 3.0
        hi = q + 2.0 * p * math.cos(phi)
        lo = q + 2.0 * p * math.cos(phi + 2.0 * math.pi / 3.0)
        e2[i] = hi
        e0[i] = lo
        e1[i] = 3.0 * q - hi - lo


def eigvalsh3(a00, a11, a22, a01, a02, a12) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ascending eigenvalues ``(e0 <= e1 <= e2)`` of the symmetric matrices with the given components.

    Parameters
    ----------
    a00, a11, a22, a01, a02, a12 : numpy.ndarray, same shape
        Upper-triangle components of each matrix (any float dtype).

    Returns
    -------
    tuple of three numpy.ndarray, float32, the input shape
    """
    shape = np.shape(a00)
    comps = [np.ascontiguousarray(c, dtype=np.float32).reshape(-1) for c in (a00, a11, a22, a01, a02, a12)]
    out = [np.empty(comps[0].shape, np.float32) for _ in range(3)]
    with numba_threads(None):    # tomo4d.threads / the CPUs this process may use; restored after
        _eig3(*comps, *out)
    return tuple(o.reshape(shape) for o in out)  # type: ignore[return-value]


@njit(cache=True, nogil=True)
def _eig2(xx, yy, xy, lo, hi):  # pragma: no cover - compiled
    half = np.float32(0.5)
    quarter = np.float32(0.25)
    for i in range(xx.shape[0]):
        a, b, c = np.float32(xx[i]), np.float32(yy[i]), np.float32(xy[i])
        h = half * (a + b)
        d = a - b
        disc = np.sqrt(quarter * (d * d) + c * c)
        lo[i] = h - disc
        hi[i] = h + disc


def eigvalsh2_into(xx, yy, xy, lo, hi) -> None:
    """Ascending eigenvalues of symmetric 2x2 fields written into ``lo``/``hi`` (float32, contiguous, the
    fields' shape): ``tr/2 -+ sqrt((xx - yy)^2/4 + xy^2)`` in float32, the numpy expression's exact result,
    in one pass (30 -> 3 ns/voxel against the numpy temporaries, one thread)."""
    comps = [np.ascontiguousarray(c, dtype=np.float32).reshape(-1) for c in (xx, yy, xy)]
    _eig2(*comps, lo.reshape(-1), hi.reshape(-1))


__all__ = ["eigvalsh2_into", "eigvalsh3"]
