"""Pre-cracked particles of a label volume larger than memory (:func:`tomo4d.quantify.detect_cracks` slab by slab).

Each particle's crack test reads only its bounding box grown by the closing's pad, so particles are processed in
windows of whole planes that hold them with that pad (:mod:`._windows`): inside a window a particle's grown box is
cut exactly as in the whole volume (clipped only at the volume's own faces), so the gap fractions and planarities
are the same numbers.
"""

from __future__ import annotations

import numpy as np

from .._chunks import budget_bytes, plan_slabs, volume_data
from .._validate import check_number
from ._common import check_fraction, voxel_size
from ._windows import label_extents, label_slab, particle_windows
from .particles import CrackReport, crack_closing, crack_of

__all__ = ["CRACK_BYTES_PER_VOXEL", "detect_cracks_chunked"]

#: working bytes per voxel of a window (labels as int64, a particle's crop masks are small beside it)
CRACK_BYTES_PER_VOXEL = 16


def detect_cracks_chunked(labels, *, voxel_size_nm=None, closing_nm: float = 120.0, min_fraction: float = 0.01,
                          min_planarity: float = 0.5, chunk_budget_mb=None) -> CrackReport:
    """:func:`~tomo4d.quantify.detect_cracks` of a (lazy) particle label volume read in windows of whole particles:
    the same report (module docstring)."""
    from scipy import ndimage

    data = volume_data(labels)
    shape = tuple(int(s) for s in data.shape)
    vs = voxel_size(voxel_size_nm, labels)
    closing_nm = check_number("closing_nm", closing_nm, minimum=0.0, exclusive_minimum=True)
    min_fraction = check_fraction("min_fraction", min_fraction)
    min_planarity = check_fraction("min_planarity", min_planarity)
    ball, pad = crack_closing(closing_nm, vs)
    first, last, _ = label_extents(data, shape, plan_slabs(shape, bytes_per_voxel=CRACK_BYTES_PER_VOXEL,
                                                           chunk_budget_mb=chunk_budget_mb))
    present = np.flatnonzero(first >= 0)
    frac, plan = np.zeros(present.size), np.zeros(present.size)
    max_planes = max(1, budget_bytes(chunk_budget_mb) // (CRACK_BYTES_PER_VOXEL * shape[1] * shape[2]))
    for a, b, group in particle_windows(first, last, present, int(max_planes), margin=int(pad[0])):
        a, b = max(0, a), min(shape[0], b)
        lab = label_slab(data, a, b)
        objs = ndimage.find_objects(np.where(np.isin(lab, group), lab, 0).astype(np.int32))
        for v in group:
            k = int(np.searchsorted(present, v))
            frac[k], plan[k] = crack_of(lab, int(v), objs[v - 1], ball, pad, vs, closing_nm)
    return CrackReport(label=present.astype(np.int64), crack_volume_fraction=frac, planarity=plan,
                       cracked=(frac >= min_fraction) & (plan >= min_planarity) & (frac > 0))
