"""Grey images of the phantom: volume-averaged (partial-volume) grey values of the material.

The compiled kernel is :func:`tomo4d.phantom._kernels.render_mixed`; :func:`render_grey` falls
back to sub-samples through :func:`~tomo4d.phantom._microstructure.material` without numba.
"""

from __future__ import annotations

import numpy as np

from ._deform import front_threshold
from ._microstructure import material
from ._model import LithiationMode


def render_kernel():
    """The compiled partial-volume kernel (numba, cached on disk), or None when numba is unavailable."""
    try:
        from ._kernels import render_mixed
    except ImportError:  # pragma: no cover - numba is a dependency
        return None
    return render_mixed


def subvoxel_offsets(k):
    """Midpoints of the ``k**3`` sub-cells of a voxel, in voxel units (K, 3), centred on 0."""
    o = (np.arange(k) + 0.5) / k - 0.5
    g = np.stack(np.meshgrid(o, o, o, indexing="ij"), -1)
    return np.ascontiguousarray(g.reshape(-1, 3))


def _mixed_voxels(phase):
    from scipy.ndimage import maximum_filter, minimum_filter

    return maximum_filter(phase, 3, mode="nearest") != minimum_filter(phase, 3, mode="nearest")


def _jacobian(ref, idx):
    """d ref / d voxel index at voxels ``idx`` (m, 3): central differences, one-sided at the edges."""
    jac = np.empty((len(idx), 3, 3))
    for a in range(3):
        hi = idx.copy()
        lo = idx.copy()
        hi[:, a] = np.minimum(idx[:, a] + 1, ref.shape[a] - 1)
        lo[:, a] = np.maximum(idx[:, a] - 1, 0)
        jac[:, :, a] = (ref[tuple(hi.T)] - ref[tuple(lo.T)]) / (hi[:, a] - lo[:, a])[:, None]
    return jac


def render_grey(model, step, ref, phase, pid, table, *, supersampling, use_numba=True):
    """Volume-averaged (partial-volume) grey image of a voxel grid, float32.

    Each voxel's value is the mean grey value of the material over the voxel, estimated by the
    midpoint rule on ``supersampling**3`` sub-cells.  Voxels whose 3x3x3 neighbourhood of
    point-sampled ``phase`` labels is uniform are inside one phase and take ``table[phase]``
    directly; only the others (near interfaces) are supersampled.  With ``supersampling=1`` this
    is ``table[phase]`` (point sampling).

    Parameters
    ----------
    model : Model
    step : int
    ref : ndarray, shape (nz, ny, nx, 3)
        Reference (T0) positions of the grid's voxel centres, nm (from :func:`deform_inverse`).
    phase, pid : ndarrays, shape (nz, ny, nx)
        :func:`material` of ``ref`` (point-sampled labels at the voxel centres).
    table : ndarray of float32, shape (len(Phase),)
        Grey value of each phase.
    supersampling : int
        Sub-samples per axis of a mixed voxel (>= 1).
    use_numba : bool
        Use the compiled kernel (else a slow numpy path with the same result up to rounding).

    Returns
    -------
    ndarray of float32, shape (nz, ny, nx)
    """
    table = np.asarray(table, np.float32)
    img = table[phase]
    offs = subvoxel_offsets(int(supersampling))
    kernel = render_kernel() if use_numba else None
    lay, fields, parts, st = model.layout, model.fields, model.particles, model.steps[step]
    front = np.array([front_threshold(parts, p, float(st.fraction[p])) for p in range(len(parts))], float)
    if kernel is not None:
        kernel(np.ascontiguousarray(ref, dtype=np.float64), np.ascontiguousarray(phase),
               np.ascontiguousarray(pid), offs, table, img,
               float(lay.z_collector_nm), float(lay.z_separator_nm), float(lay.crack_width_nm),
               fields.pore, np.asarray(fields.pore_origin_nm, float), float(fields.pore_spacing_nm),
               float(fields.pore_threshold), fields.fibre_x, fields.fibre_y,
               np.asarray(fields.fibre_origin_nm, float), float(fields.fibre_spacing_nm),
               float(fields.fibre_threshold),
               parts.centre_nm, parts.radius_nm, parts.rotation, parts.axes, parts.bump_dir, parts.bump_amp,
               parts.bump_phase, parts.mode == LithiationMode.CORE_SHELL, parts.cracked, parts.crack_normal,
               parts.crack_side, parts.crack_offset_nm, parts.plane_normal, parts.plane_offset_nm, front)
        return img
    # numpy path: the same sub-samples through :func:`material` (all particles are candidates)
    idx = np.argwhere(_mixed_voxels(phase))
    for start in range(0, len(idx), 4096):
        sub = idx[start:start + 4096]
        jac = _jacobian(ref, sub)
        pts = ref[tuple(sub.T)][:, None, :] + np.einsum("mij,kj->mki", jac, offs)
        ph, _ = material(model, step, pts)
        img[tuple(sub.T)] = (table[ph].astype(np.float64).sum(axis=1) / len(offs)).astype(np.float32)
    return img
