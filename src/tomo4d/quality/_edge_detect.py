"""Edge candidates: ridge points of the gradient magnitude, spread over a slice, and the tilt test.

Used by :mod:`.edges` (automatic profiles) and :mod:`.label_edges` (spreading, z smoothing).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

AUTO_DETECT_PX = (2.0, 4.0, 8.0)  # detection scales tried by detect_sigma_px=None


@dataclass(frozen=True, eq=False)
class Candidates:
    """Edge points of one slice and the gradients they were found on.

    Attributes
    ----------
    points : numpy.ndarray of int, shape (N, 2)
        (y, x) pixels.
    scale_index : numpy.ndarray of int, shape (N,)
        Index into ``grads`` of the scale each point was found at.
    grads : tuple of (float, numpy.ndarray, numpy.ndarray)
        ``(scale_px, gy, gx)`` for each detection scale.
    n_tilted : int
        Ridge pixels dropped because their boundary is tilted out of the slice.
    """

    points: np.ndarray
    scale_index: np.ndarray
    grads: tuple
    n_tilted: int


def _ridge(mag: np.ndarray, gy: np.ndarray, gx: np.ndarray) -> np.ndarray:
    """Non-maximum suppression: pixels whose gradient magnitude is maximal along the gradient."""
    p = np.pad(mag, 1, mode="edge")
    ny, nx = mag.shape
    ang = np.mod(np.rint(np.arctan2(gy, gx) / (np.pi / 4)), 4).astype(np.int8)  # 0: x, 1: diag, 2: y, 3: anti
    out = np.zeros(mag.shape, bool)
    for k, (dy, dx) in enumerate(((0, 1), (1, 1), (1, 0), (1, -1))):
        fwd = p[1 + dy:1 + dy + ny, 1 + dx:1 + dx + nx]
        bwd = p[1 - dy:1 - dy + ny, 1 - dx:1 - dx + nx]
        out |= (ang == k) & (mag > bwd) & (mag >= fwd)
    return out


def _gradients(a: np.ndarray, s: float):
    gy = ndimage.gaussian_filter(a, s, order=(1, 0))
    gx = ndimage.gaussian_filter(a, s, order=(0, 1))
    return gy, gx, np.hypot(gy, gx)


def find_candidates(a: np.ndarray, mask2d, *, detect_sigma_px, spacing_px: int, max_points: int, border: int,
                    flat=None) -> Candidates:
    """Strong, well-separated edge points (ridge of the gradient magnitude) and their detection scales.

    With ``detect_sigma_px=None`` ridge points are collected at the scales 2, 4 and 8 px
    (as far as the image allows): a blurred, noisy edge (e.g. an upsampled low-quality scan)
    stands out of the noise only at the larger scales, a sharp one in a dense structure only at
    the smaller ones; the profile fits decide which candidates are isolated edges.  At each
    scale only ridge points with at least 30 % of the strongest gradient (99.5th percentile)
    are kept: weak ridges are mostly texture and noise.

    ``flat(s)``, if given, returns a boolean image of the pixels whose boundary is close
    enough to perpendicular to the slice (see :func:`flat_mask`); others are not candidates.
    """
    if detect_sigma_px is not None:
        scales = [float(detect_sigma_px)]
    else:
        scales = [s for s in AUTO_DETECT_PX if 8 * s <= min(a.shape)] or [AUTO_DETECT_PX[0]]
    grads, pts_all, which = [], [], []
    n_tilted = 0
    for k, s in enumerate(scales):
        gy, gx, mag = _gradients(a, s)
        grads.append((s, gy, gx))
        sel = mag[mask2d] if mask2d is not None else mag
        strong = float(np.percentile(sel, 99.5))
        if strong <= 0:
            continue
        edges = _ridge(mag, gy, gx) & (mag >= 0.3 * strong)
        if mask2d is not None:
            edges &= mask2d
        if flat is not None:
            n_ridge = int(edges.sum())
            edges &= flat(s)
            n_tilted += n_ridge - int(edges.sum())
        # Spread the points over the edges without ranking them by gradient magnitude: choosing the
        # locally steepest points would also choose the noise that makes the edge look sharper
        # (a bias of -10 % at SNR 10).
        ys, xs = np.nonzero(edges)
        pts = spread(ys, xs, a.shape, spacing_px, max_points, border)
        pts_all.append(pts)
        which.append(np.full(len(pts), k))
    if not pts_all:
        return Candidates(np.empty((0, 2), int), np.empty(0, int), tuple(grads), n_tilted)
    pts = np.concatenate(pts_all)
    which = np.concatenate(which)
    if len(scales) > 1 and len(pts):  # one candidate per spacing cell over all scales
        keep = _spread_index(pts[:, 0], pts[:, 1], a.shape, spacing_px)
        pts, which = pts[keep], which[keep]
    return Candidates(pts, which, tuple(grads), n_tilted)


def _first_per_cell(ys, xs, nx: int, spacing_px: int) -> np.ndarray:
    """Indices of the point nearest the centre of each ``spacing_px`` cell, in cell order."""
    cy, cx = ys // spacing_px, xs // spacing_px
    d2 = (ys - (cy + 0.5) * spacing_px) ** 2 + (xs - (cx + 0.5) * spacing_px) ** 2
    cell = cy * (nx // spacing_px + 1) + cx
    order = np.lexsort((d2, cell))
    first = np.ones(len(order), bool)
    first[1:] = cell[order][1:] != cell[order][:-1]
    return order[first]


def _spread_index(ys, xs, shape, spacing_px: int) -> np.ndarray:
    return np.sort(_first_per_cell(ys, xs, shape[1], spacing_px))


def spread(ys, xs, shape, spacing_px: int, max_points: int, border: int) -> np.ndarray:
    """At most one point per ``spacing_px`` cell (the one nearest the cell centre), evenly subsampled."""
    ny, nx = shape
    keep = (ys >= border) & (ys < ny - border) & (xs >= border) & (xs < nx - border)
    ys, xs = ys[keep], xs[keep]
    if len(ys) == 0:
        return np.empty((0, 2), int)
    pick = _first_per_cell(ys, xs, nx, spacing_px)
    if len(pick) > max_points:
        pick = pick[np.unique(np.linspace(0, len(pick) - 1, max_points).round().astype(int))]
    return np.stack([ys[pick], xs[pick]], axis=1)


def z_kernels(vol: np.ndarray, z: int, s: float):
    """Slice ``z`` of ``vol`` smoothed, and differentiated, along z by a Gaussian of ``s`` px (edges: nearest)."""
    r = int(math.ceil(4 * s))
    k = np.arange(-r, r + 1, dtype=np.float64)
    w0 = np.exp(-0.5 * (k / s) ** 2)
    w0 /= w0.sum()
    w1 = -k / (s * s) * w0
    idx = np.clip(z + np.arange(-r, r + 1), 0, vol.shape[0] - 1)
    sl = vol[idx].astype(np.float64)
    return (np.tensordot(w0, sl, axes=1).astype(np.float32), np.tensordot(w1, sl, axes=1).astype(np.float32))


def flat_mask(vol: np.ndarray, z: int, s: float, max_tilt_deg: float) -> np.ndarray:
    """Pixels of slice ``z`` whose 3D gradient lies within ``max_tilt_deg`` of the xy plane.

    A boundary tilted by theta out of the slice plane shows an in-plane profile
    ``1 / cos(theta)`` times wider than the blur (on a sphere 3/4 of the surface is
    tilted by more than 15 degrees); the tilt comes from Gaussian derivatives at scale
    ``s`` on a slab of slices around ``z``.
    """
    zsm, zdz = z_kernels(vol, z, s)
    g = [ndimage.gaussian_filter(zdz, s), ndimage.gaussian_filter(zsm, s, order=(1, 0)),
         ndimage.gaussian_filter(zsm, s, order=(0, 1))]
    return np.abs(g[0]) <= math.tan(math.radians(max_tilt_deg)) * np.hypot(g[1], g[2])
