"""Lithiation modes of volumes larger than memory (:func:`tomo4d.quantify.lithiation_modes` read slab by slab).

Every number of a particle comes from its own voxels only (depth to its surface, depth ranks, change sums), so
particles are processed in windows of whole planes that hold them entirely:

1. one pass over the labels: each particle's first and last plane, the particles on the volume's faces;
2. with float change maps and no ``threshold``: Otsu's threshold of the changes inside the particles, pooled over
   the steps, from their range (one pass) and a 256-bin histogram (another) built exactly as scikit-image builds it
   from the pooled values (float32 edges over [min, max], bin centres), so the same threshold;
3. particles grouped in z order into windows of at most the budget's planes, each window read with one plane more
   on each side: the nearest non-interior voxel of a particle voxel lies within the particle's bounding box grown by
   one plane (the first voxel outside the particle along the column is background, or a touching particle whose
   shared face is marked in the window), so the window's distance transform gives the whole volume's depths, and
   the voxels keep their raster order (the same ranks and the same sums, bit for bit).

A particle taller than the budget's planes gets a window of its own.
"""

from __future__ import annotations

import numpy as np

from .._chunks import budget_bytes, plan_slabs, volume_data
from .._validate import check_finite_chunk
from ..errors import InputError
from ._common import voxel_size
from ._windows import label_extents, label_slab, particle_windows, read_planes
from .modes import (
    LithiationModes,
    _check_options,
    _profile_options,
    classify_modes,
    depth_ranks,
    particle_step_scores,
    surface_depth,
)

__all__ = ["lithiation_modes_chunked", "modes_bytes_per_voxel"]


def modes_bytes_per_voxel(n_steps: int) -> int:
    """Working bytes per voxel of a window: labels (int64), interior mask, depth (float64 distance, float32
    depth), the distance transform's feature indices (3 x int32), and each step's change (float32) and its
    per-voxel copies for the particle sums (float64)."""
    return 48 + 12 * int(n_steps)


def _changes(maps_d, z0: int, z1: int) -> list[np.ndarray]:
    out = []
    for s, m in enumerate(maps_d):
        a = np.asarray(read_planes(m, z0, z1))
        check_finite_chunk(f"changes[{s}]", a, z0)
        out.append(a)
    return out


def _otsu(lab_d, maps_d, plan) -> float:
    """Otsu's threshold of the changes inside the particles, pooled over the steps (module docstring, 2)."""
    from skimage.filters import threshold_otsu

    lo, hi, n = np.float32(np.inf), np.float32(-np.inf), 0
    for z0, z1 in plan:
        inside = label_slab(lab_d, z0, z1) > 0
        for a in _changes(maps_d, z0, z1):
            v = a[inside].astype(np.float32)
            if v.size:
                lo, hi, n = min(lo, v.min()), max(hi, v.max()), n + v.size
    if n == 0 or not hi > lo:
        return float("inf")
    edges = np.histogram_bin_edges(np.asarray([lo, hi], np.float32), bins=256, range=(lo, hi))
    counts = np.zeros(256, np.int64)
    for z0, z1 in plan:
        inside = label_slab(lab_d, z0, z1) > 0
        for a in _changes(maps_d, z0, z1):
            counts += np.histogram(a[inside].astype(np.float32), bins=edges)[0]
    return float(threshold_otsu(hist=(counts, (edges[:-1] + edges[1:]) / 2)))


def lithiation_modes_chunked(labels, changes, *, voxel_size_nm=None, threshold: float | None = None,
                             min_changed_fraction: float = 0.05, max_changed_fraction: float = 0.9,
                             shell_threshold: float | None = None, exclude_border: bool = True, method: str = "auto",
                             min_residual: float | None = None, names=None, chunk_budget_mb=None) -> LithiationModes:
    """:func:`~tomo4d.quantify.lithiation_modes` of (lazy) volumes read slab by slab: the same result (module
    docstring).  ``labels`` and ``changes``: numpy, dask, Zarr or Volumes of one shape."""
    items, lo, hi, names = _check_options(changes, min_changed_fraction, max_changed_fraction, method, names)
    lab_d, maps_d = volume_data(labels), [volume_data(c) for c in items]
    shape = tuple(int(s) for s in lab_d.shape)
    for i, m in enumerate(maps_d):
        if tuple(int(s) for s in m.shape) != shape:
            raise InputError(f"changes[{i}] has shape {tuple(m.shape)}; it must match the labels {shape} (T0 frame)")
    vs = voxel_size(voxel_size_nm, labels)
    per_voxel = modes_bytes_per_voxel(len(items))
    plan = plan_slabs(shape, bytes_per_voxel=per_voxel, chunk_budget_mb=chunk_budget_mb)
    first, last, faces = label_extents(lab_d, shape, plan)
    boolean = all(np.dtype(m.dtype) == bool for m in maps_d)
    thr = float("nan") if boolean else (_otsu(lab_d, maps_d, plan) if threshold is None else float(threshold))
    if not boolean and not np.isfinite(thr) and threshold is not None:
        raise InputError(f"threshold={threshold!r} must be a finite residual level")
    profile, thr, min_res = _profile_options(method, boolean, thr, min_residual)
    present = np.flatnonzero(first >= 0)
    per = (np.zeros((len(items), present.size)), np.full((len(items), present.size), np.nan),
           np.full((len(items), present.size), np.nan), np.zeros((len(items), present.size), bool))
    max_planes = max(3, budget_bytes(chunk_budget_mb) // max(1, per_voxel * shape[1] * shape[2]))
    for a, b, group in particle_windows(first, last, present, int(max_planes), margin=1):
        a, b = max(0, a), min(shape[0], b)
        lab = label_slab(lab_d, a, b)
        depth = surface_depth(lab, vs)
        idx = np.flatnonzero(np.isin(lab.ravel(), group))
        pc, q, dnorm, mine, size = depth_ranks(lab.ravel()[idx], depth.ravel()[idx])
        got = particle_step_scores([c.ravel()[idx] for c in _changes(maps_d, a, b)], pc, q, dnorm, size, thr=thr,
                                   boolean=boolean, profile=profile, min_res=min_res)
        cols = np.searchsorted(present, mine)
        for whole, part in zip(per, got):
            whole[:, cols] = part
    cut = np.isin(present, faces) if exclude_border else np.zeros(present.size, bool)
    return classify_modes(present, names, per, cut, lo=lo, hi=hi, profile=profile, shell_threshold=shell_threshold,
                          thr=thr)
