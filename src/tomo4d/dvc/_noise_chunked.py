"""The noise floor of two scans larger than memory, slab by slab (:func:`tomo4d.dvc.noise_floor` with
``chunk_budget_mb``).

Each slab is read with the Gaussian's halo (``int(4 sigma + 0.5)`` planes, scipy's default truncation), so the
blurred absolute difference of its planes is the whole-volume one value for value.  The mean is summed in float64.
The 95th percentile is NumPy's (linear between the order statistics ``floor(q)`` and ``ceil(q)``,
``q = 0.95 (n - 1)``), selected exactly in three passes: the value range, a 4096-bin histogram locating the two
ranks, then the values of their bins only, partitioned.
"""

from __future__ import annotations

import numpy as np

from .._array import read_box
from .._chunks import plan_slabs, volume_data
from .._validate import check_finite_chunk, check_number
from ..errors import InputError

_BINS = 4096


def _blurred(a_data, b_data, m_data, sigma: float, shape, chunk_budget_mb, halo: int):
    """Yield ``|G_sigma * (b - a)|`` of every slab's own planes (masked voxels only, float32, flat)."""
    from scipy import ndimage

    from .residual import NOISE_BYTES_PER_VOXEL

    for z0, z1 in plan_slabs(shape, bytes_per_voxel=NOISE_BYTES_PER_VOXEL, chunk_budget_mb=chunk_budget_mb,
                             halo=halo):
        lo, hi = max(0, z0 - halo), min(shape[0], z1 + halo)
        key = (slice(lo, hi), slice(None), slice(None))
        a = np.asarray(read_box(a_data, key), np.float32)
        b = np.asarray(read_box(b_data, key), np.float32)
        check_finite_chunk("scan_a", a, lo)
        check_finite_chunk("scan_b", b, lo)
        d = b - a
        d = np.abs(ndimage.gaussian_filter(d, sigma) if sigma > 0 else d)[z0 - lo: z1 - lo]
        if m_data is not None:
            d = d[np.asarray(read_box(m_data, (slice(z0, z1), slice(None), slice(None))), bool)]
        yield d.ravel()


def noise_floor_chunked(scan_a, scan_b, *, sigma_px: float = 2.0, mask=None, statistic: str = "mean",
                        chunk_budget_mb=None) -> float:
    """:func:`~tomo4d.dvc.noise_floor` slab by slab (module docstring)."""
    a_data, b_data = volume_data(scan_a), volume_data(scan_b)
    shape = tuple(int(s) for s in a_data.shape)
    if len(shape) != 3 or tuple(int(s) for s in b_data.shape) != shape:
        raise InputError(f"scan_a has shape {shape} but scan_b has shape {tuple(b_data.shape)}; give two 3D scans "
                         "of the same shape")
    m_data = None if mask is None else volume_data(mask)
    if m_data is not None and tuple(int(s) for s in m_data.shape) != shape:
        raise InputError(f"mask has shape {tuple(m_data.shape)}, the scans {shape}; give a mask of their shape")
    sigma = check_number("sigma_px", sigma_px, minimum=0.0)
    halo = int(4.0 * sigma + 0.5) if sigma > 0 else 0
    args = (a_data, b_data, m_data, sigma, shape, chunk_budget_mb, halo)
    n, total, lo, hi = 0, 0.0, np.inf, -np.inf
    for v in _blurred(*args):
        n += v.size
        total += float(v.sum(dtype=np.float64))
        if v.size:
            lo, hi = min(lo, float(v.min())), max(hi, float(v.max()))
    if n == 0:
        raise InputError("mask selects no voxel; give a mask with some non-zero voxels")
    if statistic == "mean":
        return total / n
    return _percentile95(args, n, lo, hi)


def _percentile95(args, n: int, lo: float, hi: float) -> float:
    q = 0.95 * (n - 1)
    ranks = (int(np.floor(q)), int(np.ceil(q)))
    if hi <= lo:
        return lo
    edges = np.linspace(lo, hi, _BINS + 1)
    counts = np.zeros(_BINS, np.int64)
    for v in _blurred(*args):
        counts += np.histogram(v, bins=edges)[0]
    cum = np.concatenate([[0], np.cumsum(counts)])
    bins = sorted({int(np.searchsorted(cum, r, side="right")) - 1 for r in ranks})
    kept = [np.concatenate([v[(v >= edges[k]) & ((v < edges[k + 1]) if k < _BINS - 1 else (v <= edges[k + 1]))]
                            for k in bins]) for v in _blurred(*args)]
    vals = np.sort(np.concatenate(kept))
    first = int(cum[bins[0]])
    x0, x1 = (float(vals[r - first]) for r in ranks)
    return x0 + (q - ranks[0]) * (x1 - x0)
