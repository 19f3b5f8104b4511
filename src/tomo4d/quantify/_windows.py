"""Particles of a label volume larger than memory, grouped into windows of whole planes that hold each particle
entirely (with a margin): the per-particle computations of :mod:`.modes_chunked` and :mod:`.cracks_chunked`."""

from __future__ import annotations

import numpy as np

from .._array import read_box
from .._validate import check_labels


def read_planes(data, z0: int, z1: int):
    """Planes ``z0:z1`` of a (lazy) volume as numpy."""
    return read_box(data, (slice(z0, z1), slice(None), slice(None)))


def label_slab(data, z0: int, z1: int) -> np.ndarray:
    return check_labels("labels", read_planes(data, z0, z1), ndim=3, role="particle labels are expected").astype(np.int64)


def label_extents(lab_d, shape, plan) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(first plane, last plane) of every label (index = label; -1 where absent) and the labels on the faces."""
    first, last, faces = np.full(1, -1, np.int64), np.full(1, -1, np.int64), [np.zeros(1, np.int64)]
    for z0, z1 in plan:
        lab = label_slab(lab_d, z0, z1)
        top = int(lab.max(initial=0)) + 1
        if top > first.size:
            first = np.concatenate([first, np.full(top - first.size, -1, np.int64)])
            last = np.concatenate([last, np.full(top - last.size, -1, np.int64)])
        for k in range(lab.shape[0]):
            here = np.flatnonzero(np.bincount(lab[k].ravel()))
            first[here] = np.where(first[here] < 0, z0 + k, first[here])
            last[here] = z0 + k
        faces.append(np.unique(np.concatenate([lab[:, 0].ravel(), lab[:, -1].ravel(), lab[:, :, 0].ravel(),
                                               lab[:, :, -1].ravel()])))
        if z0 == 0:
            faces.append(np.unique(lab[0]))
        if z1 == shape[0]:
            faces.append(np.unique(lab[-1]))
    first[0] = last[0] = -1
    return first, last, np.unique(np.concatenate(faces))


def particle_windows(first, last, present, max_planes: int, *, margin: int) -> list[tuple[int, int, np.ndarray]]:
    """``(a, b, labels)``: particles grouped in z order into windows ``[a, b)`` of whole planes (``margin`` planes
    each side, not clipped to the volume), at most ``max_planes`` unless one particle is taller."""
    order = present[np.argsort(first[present], kind="stable")]
    out, group = [], []
    a = b = 0
    for p in order:
        lo, hi = int(first[p]) - margin, int(last[p]) + 1 + margin
        if group and max(b, hi) - a > max_planes:
            out.append((a, b, np.asarray(group)))
            group = []
        if not group:
            a, b = lo, hi
        group.append(int(p))
        b = max(b, hi)
    if group:
        out.append((a, b, np.asarray(group)))
    return out
