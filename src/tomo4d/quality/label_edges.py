"""Label-guided edges: profile lines perpendicular to the true boundaries of a phase in a label image."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..errors import InputError
from ._common import check_range, mask_array, pick_slices
from ._edge_detect import spread, z_kernels

log = logging.getLogger(__name__)

_SMOOTH_PX = 1.5  # Gaussian scale of the foreground indicator whose gradient gives the normals


@dataclass(frozen=True, eq=False)
class LabelEdges:
    """Profile lines perpendicular to the boundaries of a labelled phase (:func:`edges_from_labels`).

    Attributes
    ----------
    lines : numpy.ndarray, shape (N, 2, 2) or (N, 2, 3)
        Start and end of each line, (y, x) or (z, y, x) pixels: from the background side to the
        foreground side, centred on the boundary, symmetric, as long as the labels stay clear.
    half_length_px : numpy.ndarray, shape (N,)
        Clear half length of each line, pixels (no other boundary of the phase within it).
    tilt_deg : numpy.ndarray, shape (N,)
        Angle between the boundary normal and the xy plane, degrees (0 for 2D labels).
    n_boundary : int
        Boundary points considered before the spacing, tilt and clearance selection.
    """

    lines: np.ndarray
    half_length_px: np.ndarray
    tilt_deg: np.ndarray
    n_boundary: int

    def __len__(self) -> int:
        return len(self.lines)


def _label_values(spec, name: str) -> np.ndarray:
    v = np.atleast_1d(np.asarray(spec))
    if v.ndim != 1 or v.size == 0 or v.dtype == bool or not np.issubdtype(v.dtype, np.integer):
        raise InputError(f"{name}={spec!r}: give the label value(s) as an int or a list of ints "
                         "(e.g. foreground=Phase.SILICON)")
    return v


def _phases(labels, foreground, background):
    """Foreground and background indicators of the label image, checked."""
    lab = np.asarray(labels.data if hasattr(labels, "voxel_size_nm") else labels)
    if lab.ndim not in (2, 3) or lab.size == 0:
        raise InputError(f"labels has shape {lab.shape}; give a 2D (y, x) or 3D (z, y, x) label image")
    if not np.issubdtype(lab.dtype, np.integer):
        raise InputError(f"labels has dtype {lab.dtype}; give an integer label image")
    fg_v = _label_values(foreground, "foreground")
    fg = np.isin(lab, fg_v)
    if not fg.any():
        raise InputError(f"foreground: no pixel of labels has the value(s) {fg_v.tolist()}; "
                         f"labels present: {np.unique(lab)[:20].tolist()}")
    bg = ~fg if background is None else np.isin(lab, _label_values(background, "background"))
    if (fg & bg).any():
        raise InputError("foreground and background share label values; give disjoint label values")
    if not bg.any():
        raise InputError("background: no pixel of labels is background; give other background label value(s)")
    return fg, bg


def _clear_half_length(cen, nrm, cls, sign: float, t_steps: np.ndarray) -> np.ndarray:
    """How far (px, multiple of 0.5) the line from each ``cen`` along ``sign * nrm`` stays inside class ``cls``."""
    ny, nx = cls.shape
    yy = cen[:, 0, None] + sign * t_steps[None, :] * nrm[:, 0, None]
    xx = cen[:, 1, None] + sign * t_steps[None, :] * nrm[:, 1, None]
    iy, ix = np.rint(yy).astype(int), np.rint(xx).astype(int)
    inside = (iy >= 0) & (iy < ny) & (ix >= 0) & (ix < nx)
    good = inside & cls[np.clip(iy, 0, ny - 1), np.clip(ix, 0, nx - 1)]
    first_bad = np.where(good.all(axis=1), len(t_steps), np.argmin(good, axis=1))
    return np.where(first_bad > 0, t_steps[np.maximum(first_bad - 1, 0)], 0.0)


def _slice_lines(fg3, fg3f, bg3, m3, z: int, *, spacing: int, per_slice: int, h_min: float, h_max: float,
                 tilt_max: float):
    """Lines of slice ``z``: ``(centres (K, 2), normals (K, 2), half lengths (K,), tilts (K,), n_boundary)``."""
    f2, b2 = fg3[z], bg3[z]
    boundary = f2 & ndimage.binary_dilation(b2, ndimage.generate_binary_structure(2, 1))
    if m3 is not None:
        boundary &= m3[z]
    ys, xs = np.nonzero(boundary)
    n_boundary = len(ys)
    none = (np.empty((0, 2)), np.empty((0, 2)), np.empty(0), np.empty(0), n_boundary)
    pts = spread(ys, xs, f2.shape, spacing, len(ys) + 1, 1)
    if len(pts) == 0:
        return none
    ys, xs = pts[:, 0], pts[:, 1]
    zsm, zdz = z_kernels(fg3f, z, _SMOOTH_PX) if fg3.shape[0] > 1 else (f2.astype(np.float32), None)
    g = [np.zeros(len(ys)) if zdz is None else ndimage.gaussian_filter(zdz, _SMOOTH_PX)[ys, xs],
         ndimage.gaussian_filter(zsm, _SMOOTH_PX, order=(1, 0))[ys, xs],
         ndimage.gaussian_filter(zsm, _SMOOTH_PX, order=(0, 1))[ys, xs]]
    g_in = np.hypot(g[1], g[2])
    ok = g_in > 0
    tilt = np.degrees(np.arctan2(np.abs(g[0]), g_in))
    ok &= tilt <= tilt_max
    pts, tilt, g1, g2, g_in = pts[ok], tilt[ok], g[1][ok], g[2][ok], g_in[ok]
    if len(pts) == 0:
        return none
    nrm = np.stack([g1 / g_in, g2 / g_in], 1)  # in-plane normal, background -> foreground
    # the boundary lies half a pixel outside the foreground pixel
    cen = pts + 0.5 * (-nrm)
    t_steps = np.arange(0.5, h_max + 0.25, 0.5)
    half = np.minimum(_clear_half_length(cen, nrm, f2, +1.0, t_steps), _clear_half_length(cen, nrm, b2, -1.0, t_steps))
    idx = np.nonzero(half >= h_min)[0]
    if len(idx) > per_slice:
        idx = idx[np.unique(np.linspace(0, len(idx) - 1, per_slice).round().astype(int))]
    return cen[idx], nrm[idx], half[idx], tilt[idx], n_boundary


def edges_from_labels(labels, *, foreground, background=None, slices=None, max_edges: int = 400,
                      spacing_px: int = 6, max_half_length_px: float = 40.0, min_half_length_px: float = 4.0,
                      max_tilt_deg: float = 15.0, mask=None) -> LabelEdges:
    """Profile lines perpendicular to the true boundaries of a phase in a label image.

    Boundary pixels of ``foreground`` (in-plane 4-connected neighbours of ``background``)
    are spread at least ``spacing_px`` apart; the normal is the gradient of the
    Gaussian-smoothed (1.5 px) foreground indicator, in 3D for a volume, and points
    whose normal leaves the xy plane by more than ``max_tilt_deg`` are dropped.  Each
    line is centred on the boundary and extends symmetrically as far as the labels stay
    clear on both sides: foreground only on one side, ``background`` only on the other
    (at most ``max_half_length_px``); lines shorter than ``min_half_length_px`` are dropped.

    Parameters
    ----------
    labels : array_like of int or Volume, shape (y, x) or (z, y, x)
        Label image on the grid of the image to measure (e.g. ``exp.truth.labels(0, grid="hq")``).
    foreground : int or sequence of int
        Label value(s) of the phase whose boundaries are measured (e.g. ``Phase.SILICON``).
    background : int or sequence of int, optional
        Label value(s) allowed on the other side; default every other value.
    slices : sequence of int, optional
        z indices (volumes); default 12 evenly spaced over the slices that hold both classes.
    max_edges : int
        Maximum number of lines (over all slices).
    spacing_px : int
        Minimum distance between line centres in a slice, pixels.
    max_half_length_px, min_half_length_px : float
        Longest and shortest accepted clear half length, pixels.
    max_tilt_deg : float
        Largest angle between the boundary normal and the xy plane (90 keeps all).
    mask : array_like of bool, optional
        Region where line centres may lie.

    Returns
    -------
    LabelEdges
        The lines (``edges=`` input of :func:`edge_resolution`), their clear half lengths and tilts.
    """
    fg, bg = _phases(labels, foreground, background)
    m = mask_array(mask, fg.shape)
    max_edges = check_range("max_edges", max_edges, 1, integer=True)
    spacing = check_range("spacing_px", spacing_px, 1, integer=True)
    h_max = check_range("max_half_length_px", max_half_length_px, 2)
    h_min = check_range("min_half_length_px", min_half_length_px, 1, h_max)
    tilt_max = check_range("max_tilt_deg", max_tilt_deg, 0, 90)
    fg3 = fg if fg.ndim == 3 else fg[None]
    fg3f = fg3.astype(np.float32)
    bg3 = bg if bg.ndim == 3 else bg[None]
    m3 = None if m is None else (m if m.ndim == 3 else m[None])
    if fg.ndim == 3 and slices is None:  # 12 slices spread over those where the phase is
        present = np.nonzero(fg3.any(axis=(1, 2)) & bg3.any(axis=(1, 2)))[0]
        zs = tuple(int(present[i]) for i in np.unique(np.linspace(0, len(present) - 1, 12).round().astype(int)))
    else:
        zs = pick_slices(fg3.shape[0], slices, 8) if fg.ndim == 3 else (0,)
    per_slice = max(int(math.ceil(max_edges / len(zs))), 1)
    out_lines, out_h, out_tilt, n_boundary = [], [], [], 0
    for z in zs:
        cen, nrm, half, tilt, n_b = _slice_lines(fg3, fg3f, bg3, m3, z, spacing=spacing, per_slice=per_slice,
                                                 h_min=h_min, h_max=h_max, tilt_max=tilt_max)
        n_boundary += n_b
        for k in range(len(cen)):
            p0 = cen[k] - half[k] * nrm[k]
            p1 = cen[k] + half[k] * nrm[k]
            out_lines.append([[z, *p0], [z, *p1]] if fg.ndim == 3 else [p0, p1])
            out_h.append(half[k])
            out_tilt.append(tilt[k])
    lines = np.asarray(out_lines, dtype=np.float64).reshape(-1, 2, fg.ndim)
    log.debug("edges_from_labels: %d boundary pixels, %d lines", n_boundary, len(lines))
    return LabelEdges(lines, np.asarray(out_h, np.float64), np.asarray(out_tilt, np.float64), int(n_boundary))
