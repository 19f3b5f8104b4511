"""Node supports: the voxels within one node spacing of each control-grid node, and per node the mean of a volume
over its support from a summed-volume table (numpy only; used by :mod:`tomo4d.dvc.global_dvc` and the solvers)."""

from __future__ import annotations

import numpy as np


def support_bounds(shape, origin, spacing: int, grid_shape) -> tuple[list, list]:
    """Per axis the voxel bounds ``[lo, hi)`` of each node's support: the voxels within one spacing of its rounded
    position, clipped to the volume of ``shape``."""
    lo, hi = [], []
    for a in range(3):
        c = np.clip(np.rint(origin[a] + spacing * np.arange(grid_shape[a])), 0, shape[a] - 1).astype(np.int64)
        lo.append(np.maximum(c - spacing, 0))
        hi.append(np.minimum(c + spacing + 1, shape[a]))
    return lo, hi


def support_boxes(shape, origin, spacing: int, grid_shape) -> tuple:
    """:func:`support_bounds`, and the supports' voxel counts (gz, gy, gx)."""
    lo, hi = support_bounds(shape, origin, spacing, grid_shape)
    count = np.ix_(*[(h - q).astype(float) for q, h in zip(lo, hi)])
    return lo, hi, count[0] * count[1] * count[2]


def support_fraction(a: np.ndarray, boxes) -> np.ndarray:
    """Per node the mean of ``a`` over its support (:func:`support_boxes`)."""
    lo, hi, volume = boxes
    return box_sums(a, lo, hi) / volume


def box_sums(a: np.ndarray, lo, hi) -> np.ndarray:
    """Sums of ``a`` over the boxes ``[lo_z, hi_z) x [lo_y, hi_y) x [lo_x, hi_x)`` of every combination of the
    per-axis bounds (a summed-volume table)."""
    t = np.zeros(tuple(n + 1 for n in a.shape), np.float64)
    t[1:, 1:, 1:] = a.astype(np.float64).cumsum(0).cumsum(1).cumsum(2)
    out = 0.0
    for bz, sz in ((hi[0], 1), (lo[0], -1)):
        for by, sy in ((hi[1], 1), (lo[1], -1)):
            for bx, sx in ((hi[2], 1), (lo[2], -1)):
                out = out + (sz * sy * sx) * t[np.ix_(bz, by, bx)]
    return out
