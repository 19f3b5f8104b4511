"""Segmentation scores of volumes larger than memory, slab by slab: the same numbers as
:func:`tomo4d.segment.evaluate_segmentation`.

Dice, IoU and accuracy are integer counts summed over slabs.  Boundary F1 needs, for every boundary voxel of a
slab, whether a boundary voxel of the other image lies within the tolerance: each slab is read with a halo of
``ceil(tolerance / voxel_z) + 1`` planes, the class boundaries are found in slab + halo (only the outermost halo
plane can miss boundary voxels: the erosion treats the cut as inside, so a wrong plane only lacks voxels and lies
farther than the tolerance from the slab), and the Euclidean distance transform of slab + halo decides
``distance <= tolerance`` exactly as the whole volume's does.  Memory: one slab with its halo
(:data:`BYTES_PER_VOXEL`), set by ``chunk_budget_mb``.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage as ndi

from .._array import read_box
from .._chunks import plan_slabs, volume_data
from .._validate import check_int, check_labels, check_number, show_values
from ..errors import InputError
from .evaluate import ClassScores, ParticleScores, SegmentationScores, _boundary, _f1, _ratio, _spacing, match_overlaps

#: working bytes per voxel of a slab: two label slabs, masks, two distance transforms (float64) and their feature
#: transforms (3 x int32)
BYTES_PER_VOXEL = 48

_FIELDS = ("inter", "n_p", "n_t", "bp", "bt", "bp_hit", "bt_hit")


def _read(data, z0: int, z1: int, name: str) -> np.ndarray:
    return check_labels(name, read_box(data, (slice(z0, z1), slice(None), slice(None))), ndim=3,
                        role="labels are expected")


def _hits(b: np.ndarray, other: np.ndarray, core, sel: np.ndarray, spacing, tol: float) -> int:
    """Boundary voxels ``b[core] & sel`` within ``tol`` of a boundary voxel of ``other`` (slab + halo)."""
    mine = b[core] & sel
    if not mine.any() or not other.any():
        return 0
    d = ndi.distance_transform_edt(~other, sampling=spacing)[core]
    return int(np.count_nonzero(d[mine] <= tol))


def _slab_counts(pw, tw, core, valid, classes, spacing, tol, acc: dict) -> None:
    """Add one slab's integer counts per class (``pw``/``tw``: slab + halo; ``core``: the slab's planes)."""
    for c in classes:
        pm, tm = pw == c, tw == c
        pv, tv = pm[core] & valid, tm[core] & valid
        bp, bt = _boundary(pm), _boundary(tm)
        row = acc.setdefault(int(c), dict.fromkeys(_FIELDS, 0))
        row["inter"] += int(np.count_nonzero(pv & tv))
        row["n_p"] += int(np.count_nonzero(pv))
        row["n_t"] += int(np.count_nonzero(tv))
        row["bp"] += int(np.count_nonzero(bp[core] & valid))
        row["bt"] += int(np.count_nonzero(bt[core] & valid))
        row["bp_hit"] += _hits(bp, bt, core, valid, spacing, tol)
        row["bt_hit"] += _hits(bt, bp, core, valid, spacing, tol)


def _scores(c: int, r: dict) -> ClassScores:
    """One class's scores from its summed counts, as :func:`~tomo4d.segment.evaluate.boundary_scores` forms them."""
    if r["bp"] == 0 and r["bt"] == 0:
        bp = br = bf = float("nan")
    elif r["bp"] == 0 or r["bt"] == 0:
        bp = float("nan") if r["bp"] == 0 else 0.0
        br, bf = (float("nan") if r["bt"] == 0 else 0.0), 0.0
    else:
        bp, br = r["bp_hit"] / r["bp"], r["bt_hit"] / r["bt"]
        bf = _f1(bp, br)
    return ClassScores(label=c, dice=_ratio(2 * r["inter"], r["n_p"] + r["n_t"]),
                       iou=_ratio(r["inter"], r["n_p"] + r["n_t"] - r["inter"]), boundary_precision=bp,
                       boundary_recall=br, boundary_f1=bf, n_true_voxels=r["n_t"], n_predicted_voxels=r["n_p"])


def evaluate_segmentation_chunked(prediction, truth, *, classes=None, region=None, ignore_label: int | None = None,
                                  voxel_size_nm=None, boundary_tolerance_nm: float | None = None,
                                  chunk_budget_mb=None) -> SegmentationScores:
    """:func:`~tomo4d.segment.evaluate_segmentation` of 3D label volumes read slab by slab (numpy, dask, Zarr,
    Volume; ``region`` likewise, or anything that gives numpy for ``[z0:z1]``): the same scores (module
    docstring)."""
    pred_d, true_d = volume_data(prediction), volume_data(truth)
    shape = tuple(int(s) for s in true_d.shape)
    if len(shape) != 3 or tuple(int(s) for s in pred_d.shape) != shape:
        raise InputError(f"prediction has shape {tuple(pred_d.shape)} but truth has shape {shape}; compare 3D "
                         "segmentations of the same region")
    spacing = _spacing(voxel_size_nm, 3, prediction, truth)
    tol = (2.0 * max(spacing) if boundary_tolerance_nm is None
           else check_number("boundary_tolerance_nm", boundary_tolerance_nm, minimum=0.0))
    ignore = None if ignore_label is None else check_int("ignore_label", ignore_label, minimum=0)
    halo = int(math.ceil(tol / spacing[0])) + 1
    acc: dict = {}
    n = hits = 0
    seen_p, seen_t = set(), set()
    for z0, z1 in plan_slabs(shape, bytes_per_voxel=BYTES_PER_VOXEL, chunk_budget_mb=chunk_budget_mb, halo=halo):
        a, b = max(0, z0 - halo), min(shape[0], z1 + halo)
        pw, tw = _read(pred_d, a, b, "prediction"), _read(true_d, a, b, "truth")
        core = slice(z0 - a, z1 - a)
        valid = np.ones((z1 - z0,) + shape[1:], bool)
        if region is not None:
            valid &= np.asarray(read_box(region, (slice(z0, z1), slice(None), slice(None))), bool)
        if ignore is not None:
            valid &= tw[core] != ignore
        n += int(np.count_nonzero(valid))
        hits += int(np.count_nonzero((pw[core] == tw[core]) & valid))
        seen_p.update(np.unique(pw[core][valid]).tolist())
        seen_t.update(np.unique(tw[core][valid]).tolist())
        # every value of the window: a class first met in the truth of a later slab still counts here
        want = np.union1d(np.unique(pw), np.unique(tw)).tolist() if classes is None else list(classes)
        _slab_counts(pw, tw, core, valid, want, spacing, tol, acc)
    if n == 0:
        raise InputError("no voxel to evaluate (the region / ignore_label exclude everything)")
    if seen_p and seen_t and not seen_p & seen_t:
        raise InputError(f"prediction holds values {show_values(np.asarray(sorted(seen_p)))} and truth holds "
                         f"{show_values(np.asarray(sorted(seen_t)))}: no value in common, so every score would be "
                         "0; the two use different label codes: relabel one of them (--map SRC:DST on the command "
                         "line, e.g. --map 255:2)")
    out = sorted(seen_t) if classes is None else [int(c) for c in classes]
    rows = tuple(_scores(int(c), acc.get(int(c), dict.fromkeys(_FIELDS, 0))) for c in out)
    return SegmentationScores(classes=rows, accuracy=hits / n, n_voxels=n, boundary_tolerance_nm=tol)


def _grow(a: np.ndarray, n: int) -> np.ndarray:
    return a if a.size >= n else np.concatenate([a, np.zeros(n - a.size, a.dtype)])


def overlap_counts(predicted, true, *, chunk_budget_mb=None):
    """``(pairs (k, 2), shared voxels (k,), sizes of every predicted label, sizes of every true label)``: the voxel
    counts of every (predicted > 0, true) label pair, sorted by pair, and of every label, summed slab by slab over
    two 3D label volumes (numpy, dask, Zarr, Volume, a ``SlabStore``)."""
    pred_d, true_d = volume_data(predicted), volume_data(true)
    shape = tuple(int(s) for s in true_d.shape)
    if tuple(int(s) for s in pred_d.shape) != shape:
        raise InputError(f"predicted has shape {tuple(pred_d.shape)} but true has shape {shape}; compare particles "
                         "of the same region")
    size_p, size_t = np.zeros(1, np.int64), np.zeros(1, np.int64)
    keys, counts = [np.zeros((0, 2), np.int64)], [np.zeros(0, np.int64)]
    for z0, z1 in plan_slabs(shape, bytes_per_voxel=32, chunk_budget_mb=chunk_budget_mb):
        p = check_labels("predicted", read_box(pred_d, (slice(z0, z1),)), role="particle labels are expected")
        t = check_labels("true", read_box(true_d, (slice(z0, z1),)), role="particle labels are expected")
        p, t = p.ravel().astype(np.int64), t.ravel().astype(np.int64)
        bp, bt = np.bincount(p), np.bincount(t)
        size_p, size_t = _grow(size_p, bp.size), _grow(size_t, bt.size)
        size_p[:bp.size] += bp
        size_t[:bt.size] += bt
        sel = p > 0
        if sel.any():
            k, c = np.unique(np.stack([p[sel], t[sel]], 1), axis=0, return_counts=True)
            keys.append(k)
            counts.append(c)
    k, inv = np.unique(np.concatenate(keys), axis=0, return_inverse=True)
    inter = np.bincount(inv.ravel(), weights=np.concatenate(counts), minlength=len(k)).astype(np.int64)
    return k.reshape(-1, 2), inter, size_p, size_t


def match_particles_chunked(predicted, true, *, iou_threshold: float = 0.5, chunk_budget_mb=None) -> ParticleScores:
    """:func:`~tomo4d.segment.match_particles` of 3D particle label volumes read slab by slab
    (:func:`overlap_counts`: particle sizes and pair overlaps are integer counts summed over slabs), matched as in
    memory (the same scores)."""
    thr = check_number("iou_threshold", iou_threshold, minimum=0.0, maximum=1.0, exclusive_minimum=True)
    pairs, inter, size_p, size_t = overlap_counts(predicted, true, chunk_budget_mb=chunk_budget_mb)
    both = pairs[:, 1] > 0
    pi, ti, inter = pairs[both, 0], pairs[both, 1], inter[both]
    return match_overlaps(pi, ti, inter, size_p[pi], size_t[ti], n_pred=int(np.count_nonzero(size_p[1:])),
                          n_true=int(np.count_nonzero(size_t[1:])), iou_threshold=thr)


__all__ = ["BYTES_PER_VOXEL", "evaluate_segmentation_chunked", "match_particles_chunked", "overlap_counts"]
