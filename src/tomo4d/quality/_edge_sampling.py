"""Profile sampling: grey values of one slice along lines, and edge normals at matching scales.

Used by :mod:`._edge_measure`; coordinates are (y, x) pixels of the slice.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

STEP_PX = 0.25  # profile sampling step along the normal, in pixels


@dataclass(frozen=True, eq=False)
class SampledProfile:
    """Grey values along one profile.

    Attributes
    ----------
    t : numpy.ndarray, shape (n,)
        Position along the normal, pixels, 0 at the profile centre.
    values : numpy.ndarray, shape (n,)
        The profile: mean of the parallel lines.
    lines : numpy.ndarray, shape (line_width, n)
        Values of each parallel line.
    """

    t: np.ndarray
    values: np.ndarray
    lines: np.ndarray

    def flipped(self) -> SampledProfile:
        """The same profile read in the opposite direction (``t`` unchanged)."""
        return SampledProfile(self.t, self.values[::-1], self.lines[:, ::-1])


class ProfileSampler:
    """Cubic-spline sampling of one slice along profile lines averaged over a line width."""

    def __init__(self, a: np.ndarray, mask2d, line_width_px: int):
        self.coef = ndimage.spline_filter(a.astype(np.float64), order=3, mode="mirror")
        self.shape = a.shape
        self.mask = mask2d
        self.offsets = np.arange(line_width_px, dtype=np.float64) - (line_width_px - 1) / 2

    def sample(self, c: np.ndarray, n: np.ndarray, h: float) -> SampledProfile | None:
        """Profile through ``c`` (y, x) along unit ``n`` over [-h, h] px; None if it leaves the image/mask."""
        t = np.arange(-h, h + STEP_PX / 2, STEP_PX)
        tang = np.array([-n[1], n[0]])
        ys = c[0] + t[None, :] * n[0] + self.offsets[:, None] * tang[0]
        xs = c[1] + t[None, :] * n[1] + self.offsets[:, None] * tang[1]
        ny, nx = self.shape
        if ys.min() < 0 or xs.min() < 0 or ys.max() > ny - 1 or xs.max() > nx - 1:
            return None
        if self.mask is not None and not self.mask[np.rint(ys).astype(int), np.rint(xs).astype(int)].all():
            return None
        vals = ndimage.map_coordinates(self.coef, [ys.ravel(), xs.ravel()], order=3, prefilter=False,
                                       mode="mirror").reshape(ys.shape)
        return SampledProfile(t, vals.mean(axis=0), vals)

    def max_half_length(self, c: np.ndarray, n: np.ndarray, h: float) -> float:
        """Longest half length <= ``h`` (px, multiple of 0.5) whose profile through ``c`` stays in the image/mask."""
        tang = np.array([-n[1], n[0]])
        ends = self.offsets[:, None] * tang[None, :]
        ny, nx = self.shape
        hh = math.floor(2 * h) / 2
        while hh >= 1.0:
            ok = True
            for sgn in (-1.0, 1.0):
                e = c[None, :] + sgn * hh * n[None, :] + ends
                if e[:, 0].min() < 0 or e[:, 1].min() < 0 or e[:, 0].max() > ny - 1 or e[:, 1].max() > nx - 1:
                    ok = False
                    break
            if ok and self.mask is not None:
                t = np.arange(-hh, hh + 0.25, 0.5)
                ys = c[0] + t[None, :] * n[0] + self.offsets[:, None] * tang[0]
                xs = c[1] + t[None, :] * n[1] + self.offsets[:, None] * tang[1]
                ok = bool(self.mask[np.rint(ys).astype(int), np.rint(xs).astype(int)].all())
            if ok:
                return hh
            hh -= 0.5
        return 0.0


class NormalField:
    """Gradient directions of one slice at scales ``s0 * 2**k``, computed on demand."""

    def __init__(self, a: np.ndarray, s0: float, first):
        self.a, self.s0 = a, s0
        self.grads = {0: first}

    def __call__(self, c, s_px: float):
        """Unit gradient (y, x) at pixel ``c`` at the scale nearest ``s_px``; None outside or where flat."""
        k = int(np.clip(np.floor(np.log2(max(s_px, self.s0) / self.s0) + 0.5), 0, 3))
        if k not in self.grads:
            sk = self.s0 * 2 ** k
            self.grads[k] = (ndimage.gaussian_filter(self.a, sk, order=(1, 0)),
                             ndimage.gaussian_filter(self.a, sk, order=(0, 1)))
        gy, gx = self.grads[k]
        iy, ix = int(round(c[0])), int(round(c[1]))
        if not (0 <= iy < gy.shape[0] and 0 <= ix < gy.shape[1]):
            return None
        g = np.array([gy[iy, ix], gx[iy, ix]], dtype=np.float64)
        norm = float(np.hypot(*g))
        return g / norm if norm > 0 else None
