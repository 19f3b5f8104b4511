"""Thickness and phase volumes of label volumes larger than memory: z-slabs with per-slab partial sums.

Each function reads the labels slab by slab (:func:`tomo4d._chunks.plan_slabs`; a lazy Volume from
:func:`tomo4d.io.open_volume` reads only the slab's slices) and equals its in-memory version:

* :func:`phase_volumes_chunked` (:func:`~tomo4d.quantify.phase_volumes`): voxel counts per label are
  integers summed over the slabs: exact;
* :func:`electrode_thickness_chunked` (:func:`~tomo4d.quantify.electrode_thickness`): the interface step fit
  (:mod:`tomo4d.quantify._stepfit`) runs slice by slice in both versions, its prefix sum carried from slab
  to slab (the lateral smoothing acts within each z slice: no halo), so the interfaces are bit-identical;
  it costs 7 reads of the labels (maximum, then plateau, of each of the three step fits, and one pass for
  the bulk solid fractions) instead of one.

Peak memory is one slab's working set (about :data:`BYTES_PER_VOXEL` bytes per voxel), set by
``chunk_budget_mb``, plus a few ``(ny, nx)`` maps.
"""

from __future__ import annotations

import logging

import numpy as np

from .._chunks import plan_slabs, read_slab, volume_data
from .._validate import check_number
from ..errors import InputError
from ._common import PhaseCodes, as_labels, voxel_size
from ._stepfit import step_fit
from .phases import PhaseVolumes
from .thickness import Thickness, _isin, _lateral_mean, thickness_from_interfaces

log = logging.getLogger(__name__)

__all__ = ["BYTES_PER_VOXEL", "electrode_thickness_chunked", "phase_volumes_chunked"]

#: working memory per voxel of a slab (labels up to 8 bytes, float32 score, float64 prefix sums, masks)
BYTES_PER_VOXEL = 32


def _slabs(labels, phases, chunk_budget_mb, role):
    """Generator factory: each call yields ``(z0, z1, labels slab)``, checked as :func:`as_labels` checks."""
    data = volume_data(labels)
    if getattr(data, "ndim", 0) != 3:
        raise InputError(f"labels has shape {tuple(getattr(data, 'shape', ()))}; give a 3D (z, y, x) label volume")
    plan = plan_slabs(data.shape, bytes_per_voxel=BYTES_PER_VOXEL, chunk_budget_mb=chunk_budget_mb)

    checked = [False]  # the values are checked on the first walk; later walks only convert the slabs

    def walk():
        for z0, z1 in plan:
            block, _ = read_slab(data, z0, z1)
            yield z0, z1, as_labels(block, name="labels", phases=None if checked[0] else phases, role=role)
        checked[0] = True

    return tuple(int(s) for s in data.shape), walk


def _fit_stream(walk, score, shape, start=None):
    """:func:`tomo4d.quantify._stepfit.step_fit` of the slabs' scores: ``(pos, found, any_mask)``.

    ``score(z0, lab) -> (float32 slab score, bool (ny, nx) 'column has the phase' of this slab)``, computed
    on z-parts of each slab side by side (the scores act within z slices: the same values).
    """
    from concurrent.futures import ThreadPoolExecutor

    from .._threads import resolve_threads

    has = np.zeros(shape[1:], bool)
    n = resolve_threads(None)

    with ThreadPoolExecutor(n, thread_name_prefix="tomo4d-score") as ex:
        def slabs():
            for z0, _, lab in walk():
                cuts = [lab.shape[0] * i // n for i in range(n + 1)]
                parts = [ex.submit(score, z0 + a, lab[a:b]) for a, b in zip(cuts[:-1], cuts[1:]) if b > a]
                got = [p.result() for p in parts]
                for _, present in got:
                    has[...] |= present
                yield z0, np.concatenate([g[0] for g in got]) if len(got) > 1 else got[0][0]

        pos, found = step_fit(slabs, shape[1:], start, threads=n)
    return pos, found, has


def electrode_thickness_chunked(labels, *, voxel_size_nm=None, phases: PhaseCodes = PhaseCodes(),
                                smooth_nm: float = 400.0, chunk_budget_mb=None) -> Thickness:
    """:func:`~tomo4d.quantify.electrode_thickness` read slab by slab (bit-identical; see the module notes).

    Parameters
    ----------
    labels : (z, y, x) int array, dask array or Volume (lazy: read slab by slab)
    voxel_size_nm, phases, smooth_nm
        As in :func:`~tomo4d.quantify.electrode_thickness`.
    chunk_budget_mb : float, optional
        Working memory of one slab, MiB (default :data:`tomo4d._chunks.DEFAULT_CHUNK_BUDGET_MB`).
    """
    if not isinstance(phases, PhaseCodes):
        raise InputError("phases must be a PhaseCodes instance (tomo4d.quantify.PhaseCodes)")
    shape, walk = _slabs(labels, phases, chunk_budget_mb, "electrode_thickness expects phase labels")
    vs = voxel_size(voxel_size_nm, labels)
    check_number("smooth_nm", smooth_nm, minimum=0.0)
    px = max(1, int(round(float(smooth_nm) / vs[1])))

    def collector(z0, lab):
        col = _isin(lab, phases.collector)
        return _lateral_mean(np.where(col, 1.0, -1.0).astype(np.float32), px), col.any(axis=0)

    zc, has_c, any_c = _fit_stream(walk, collector, shape)
    has_c &= any_c

    def anode_sep(z0, lab, wa=None, ws=None):
        anode = _isin(lab, phases.anode).astype(np.float32)
        sep = _isin(lab, phases.separator).astype(np.float32)
        if wa is not None:
            anode, sep = anode / wa, sep / ws
        return _lateral_mean(anode - sep, px), anode.any(axis=0)

    start = np.clip(np.round(zc + 0.5), 0, shape[0]).astype(np.intp)
    zs, has_a, any_a = _fit_stream(walk, anode_sep, shape, start)
    margin = 2 + px // 2
    n = np.zeros(4, np.int64)  # anode voxels in the anode bulk, bulk voxels, separator voxels in its bulk, bulk
    for z0, z1, lab in walk():
        z = np.arange(z0, z1)[:, None, None]
        in_a = (z >= start[None] + margin) & (z < zs[None] - margin)
        in_s = z > zs[None] + margin
        n += [np.count_nonzero(_isin(lab, phases.anode) & in_a), np.count_nonzero(in_a),
              np.count_nonzero(_isin(lab, phases.separator) & in_s), np.count_nonzero(in_s)]
    phi_a = float(n[0]) / float(n[1]) if n[1] else 0.0
    phi_s = float(n[2]) / float(n[3]) if n[3] else 0.0
    if phi_a > 0.05 and phi_s > 0.05:
        wa, ws = np.float32(phi_a), np.float32(phi_s)
        zs, _, _ = _fit_stream(walk, lambda z0, lab: anode_sep(z0, lab, wa, ws), shape, start)
    has_a &= any_a
    return thickness_from_interfaces(zc, zs, has_c & has_a, vs)


def phase_volumes_chunked(labels, *, voxel_size_nm=None, phases: PhaseCodes = PhaseCodes(), region=None,
                          smooth_nm: float = 400.0, chunk_budget_mb=None) -> PhaseVolumes:
    """:func:`~tomo4d.quantify.phase_volumes` from per-slab voxel counts (exact).

    ``region``: None, ``"electrode"`` (between the interfaces of :func:`electrode_thickness_chunked`) or a
    (z, y, x) bool array (numpy or lazy, read slab by slab).
    """
    shape, walk = _slabs(labels, phases, chunk_budget_mb, "phase_volumes expects phase labels")
    vs = voxel_size(voxel_size_nm, labels)
    th = mask = None
    if isinstance(region, str):
        if region != "electrode":
            raise InputError(f"region={region!r} is not supported; use None (whole volume), 'electrode' or a mask")
        th = electrode_thickness_chunked(labels, voxel_size_nm=vs, phases=phases, smooth_nm=smooth_nm,
                                         chunk_budget_mb=chunk_budget_mb)
        lo = np.nan_to_num(th.collector_z_nm, nan=np.inf)[None]
        hi = np.nan_to_num(th.separator_z_nm, nan=-np.inf)[None]
    elif region is not None:
        mask = volume_data(region)
        if tuple(mask.shape) != shape:
            raise InputError(f"region mask has shape {tuple(mask.shape)}; it must match the labels {shape}")
    counts = np.zeros(1, np.int64)
    total = 0
    for z0, z1, lab in walk():
        if th is not None:
            z = np.arange(z0, z1)[:, None, None] * th.voxel_size_nm[0]
            vals = lab[(z > lo) & (z < hi)]
        elif mask is not None:
            vals = lab[read_slab(mask, z0, z1)[0].astype(bool)]
        else:
            vals = lab.ravel()
        c = np.bincount(vals.astype(np.int64, copy=False).ravel(), minlength=1)
        if c.size > counts.size:
            counts = np.concatenate([counts, np.zeros(c.size - counts.size, np.int64)])
        counts[:c.size] += c
        total += int(vals.size)
    voxel_um3 = float(np.prod(vs)) / 1e9
    names = phases.names()
    vol = np.array([sum(int(counts[c]) for c in codes if c < counts.size) for codes in names.values()], float) * voxel_um3
    tot = float(total) * voxel_um3
    frac = vol / tot if tot > 0 else np.full(len(names), np.nan)
    return PhaseVolumes(phase_names=tuple(names), volume_um3=vol, fraction=frac, region_volume_um3=tot)
