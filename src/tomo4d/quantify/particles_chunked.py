"""Particles of volumes larger than memory: chunked connected components merged exactly across slab faces,
and per-particle geometry from per-slab partial moments.

:func:`label_particles_chunked` equals ``tomo4d.segment.label_particles(split=False)`` (connected components,
small objects removed, labels 1..n) voxel for voxel, label values included:

1. pass 1, slab by slab along z: :func:`scipy.ndimage.label` of the slab, its components numbered on from the
   previous slab's (provisional ids, in raster order of their first voxel), their sizes, and the pairs of
   ids that touch across the face to the previous slab (the connectivity's neighbours across that face);
2. the face pairs are merged with a graph's connected components (:mod:`scipy.sparse.csgraph`), however many
   slabs a particle spans and however late its branches join (U shapes); a particle's smallest provisional
   id is its first voxel in raster order, which is how :func:`scipy.ndimage.label` numbers the whole volume,
   so ranking the kept particles by it gives the in-memory labels exactly;
3. pass 2: each slab labelled again, mapped to the final labels, written (to a
   :class:`tomo4d._chunks.SlabStore`, resumable) and measured.

:func:`particle_properties_chunked` (and pass 2) accumulate per label the voxel count, coordinate sums and
bounding box (integers: exact) and the voxel faces to other labels along each axis (integer counts, the z
faces across slab boundaries from the previous slab's last plane).  The table equals
:func:`~tomo4d.quantify.particle_properties`'; only the surface area (and sphericity) may differ in the last
bits (relative 1e-15: the per-axis face areas are summed in another order).

Memory: one slab (:data:`BYTES_PER_VOXEL` per voxel, set by ``chunk_budget_mb``) plus a few numbers per
particle.  Touching particles are not split (the distance watershed needs the whole connected structure).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._chunks import SlabStore, plan_slabs, read_slab, volume_data
from .._validate import check_int
from ..errors import InputError
from ._common import as_labels, voxel_size
from .particles import ParticleTable

__all__ = ["BYTES_PER_VOXEL", "ChunkedParticles", "label_particles_chunked", "particle_properties_chunked"]

#: working memory per voxel of a slab (mask, slab labels, final labels, face and coordinate temporaries)
BYTES_PER_VOXEL = 48


@dataclass(frozen=True, eq=False)
class ChunkedParticles:
    """Result of :func:`label_particles_chunked`.

    Attributes
    ----------
    labels : numpy.ndarray or None
        The labels (int32) when no store was given, else None.
    path : Path or None
        The published label volume when a store was given.
    n_particles, n_removed : int
    table : ParticleTable
        Geometry of every particle (:func:`~tomo4d.quantify.particle_properties`).
    n_slabs : int
    """

    labels: np.ndarray | None
    path: Path | None
    n_particles: int
    n_removed: int
    table: ParticleTable
    n_slabs: int


class _Moments:
    """Per-label partial sums over slabs: counts, coordinate sums, face counts per axis, bounding boxes."""

    def __init__(self, shape):
        self.shape = tuple(int(s) for s in shape)
        self.n = 1
        self.count = np.zeros(1, np.int64)
        self.sums = np.zeros((1, 3))
        self.faces = np.zeros((1, 3), np.int64)
        self.bmin = np.full((1, 3), np.iinfo(np.int64).max)
        self.bmax = np.zeros((1, 3), np.int64)
        self.prev = None

    def _grow(self, n: int) -> None:
        if n <= self.n:
            return
        k = n - self.n
        self.count = np.concatenate([self.count, np.zeros(k, np.int64)])
        self.sums = np.concatenate([self.sums, np.zeros((k, 3))])
        self.faces = np.concatenate([self.faces, np.zeros((k, 3), np.int64)])
        self.bmin = np.concatenate([self.bmin, np.full((k, 3), np.iinfo(np.int64).max)])
        self.bmax = np.concatenate([self.bmax, np.zeros((k, 3), np.int64)])
        self.n = n

    def _face(self, axis: int, u: np.ndarray, v: np.ndarray) -> None:
        d = u != v
        if d.any():
            self.faces[:, axis] += np.bincount(u[d], minlength=self.n)[:self.n] + \
                np.bincount(v[d], minlength=self.n)[:self.n]

    def add(self, z0: int, s: np.ndarray) -> None:
        """Slab ``s`` (int labels of z in ``[z0, z0 + len(s))``), in z order."""
        from scipy import ndimage

        s = s.astype(np.intp, copy=False)
        self._grow(int(s.max(initial=0)) + 1)
        flat = s.reshape(-1)
        self.count += np.bincount(flat, minlength=self.n)
        ny, nx = s.shape[1:]
        for axis, w in ((0, np.arange(z0, z0 + s.shape[0], dtype=np.float64)[:, None, None]),
                        (1, np.arange(ny, dtype=np.float64)[None, :, None]),
                        (2, np.arange(nx, dtype=np.float64)[None, None, :])):
            self.sums[:, axis] += np.bincount(flat, weights=np.broadcast_to(w, s.shape).reshape(-1), minlength=self.n)
        for axis in (1, 2):  # faces along y and x (the volume's borders count)
            pad = [(0, 0)] * 3
            pad[axis] = (1, 1)
            p = np.pad(s, pad)
            lo, hi = [slice(None)] * 3, [slice(None)] * 3
            lo[axis], hi[axis] = slice(0, -1), slice(1, None)
            self._face(axis, p[tuple(lo)], p[tuple(hi)])
        prev = self.prev if self.prev is not None else np.zeros((ny, nx), np.intp)
        self._face(0, prev, s[0])
        if s.shape[0] > 1:
            self._face(0, s[:-1], s[1:])
        self.prev = s[-1].copy()
        for i, sl in enumerate(ndimage.find_objects(s), 1):
            if sl is not None:
                lo_ = (z0 + sl[0].start, sl[1].start, sl[2].start)
                hi_ = (z0 + sl[0].stop, sl[1].stop, sl[2].stop)
                self.bmin[i] = np.minimum(self.bmin[i], lo_)
                self.bmax[i] = np.maximum(self.bmax[i], hi_)

    def table(self, vs) -> ParticleTable:
        if self.prev is not None:  # the outer face of the last plane
            self._face(0, self.prev, np.zeros_like(self.prev))
        present = np.flatnonzero(self.count[1:]) + 1
        n = self.count[present]
        vox = np.asarray(vs)
        area = np.array([vs[1] * vs[2], vs[0] * vs[2], vs[0] * vs[1]])
        volume = n * float(np.prod(vs)) / 1e9
        centroid = self.sums[present] / n[:, None] * vox / 1e3
        surface = (2.0 / 3.0) * (self.faces[present] * area).sum(axis=1) / 1e6
        eqd = np.cbrt(6.0 * volume / np.pi)
        sph = np.pi ** (1 / 3) * (6.0 * volume) ** (2 / 3) / np.where(surface > 0, surface, np.nan)
        bmin, bmax = self.bmin[present].reshape(-1, 3), self.bmax[present].reshape(-1, 3)
        border = np.any(bmin == 0, axis=1) | np.any(bmax == np.asarray(self.shape), axis=1)
        return ParticleTable(label=present.astype(np.int64), n_voxels=n.astype(np.int64), volume_um3=volume,
                             equivalent_diameter_um=eqd, surface_area_um2=surface, sphericity=sph,
                             centroid_um=centroid, bbox_min_px=bmin, bbox_max_px=bmax,
                             extent_um=(bmax - bmin) * vox / 1e3, touches_border=border, voxel_size_nm=vs)


def particle_properties_chunked(labels, *, voxel_size_nm=None, chunk_budget_mb=None) -> ParticleTable:
    """:func:`~tomo4d.quantify.particle_properties` of a (lazy) particle label volume, slab by slab.

    Labels must be non-negative integers (values up to a few times the number of voxels of a slab).
    """
    data = volume_data(labels)
    vs = voxel_size(voxel_size_nm, labels)
    mom = _Moments(data.shape)
    for z0, z1 in plan_slabs(data.shape, bytes_per_voxel=BYTES_PER_VOXEL, chunk_budget_mb=chunk_budget_mb):
        mom.add(z0, as_labels(read_slab(data, z0, z1)[0], name="labels"))
    return mom.table(vs)


def _structure(connectivity: int):
    from scipy import ndimage

    return ndimage.generate_binary_structure(3, connectivity)


def _face_pairs(prev: np.ndarray, cur: np.ndarray, st: np.ndarray) -> np.ndarray:
    """Unique ``(a, b)`` id pairs: ``prev`` (last plane of a slab) and ``cur`` (first plane of the next) touch."""
    ny, nx = cur.shape
    out = []
    for dy, dx in zip(*np.nonzero(st[2])):  # neighbours of a voxel in the next plane
        dy, dx = int(dy) - 1, int(dx) - 1
        a = prev[max(0, -dy):ny - max(0, dy), max(0, -dx):nx - max(0, dx)]
        b = cur[max(0, dy):ny - max(0, -dy), max(0, dx):nx - max(0, -dx)]
        m = (a > 0) & (b > 0)
        if m.any():
            out.append(np.stack([a[m], b[m]], axis=1))
    if not out:
        return np.zeros((0, 2), np.int64)
    return np.unique(np.concatenate(out).astype(np.int64), axis=0)


def _mask(data, z0, z1, classes):
    block, _ = read_slab(data, z0, z1)
    lab = as_labels(block, name="segmentation", role="label_particles_chunked expects phase labels")
    return np.isin(lab, classes) if classes is not None else lab > 0


def _provisional(data, plan, classes, st):
    """Pass 1: per provisional id its size, the face pairs, and each slab's id offset."""
    from scipy import ndimage

    sizes, pairs, offsets, prev, total = [np.zeros(1, np.int64)], [], [], None, 0
    for z0, z1 in plan:
        loc, n = ndimage.label(_mask(data, z0, z1, classes), structure=st, output=np.int32)
        sizes.append(np.bincount(loc.ravel(), minlength=n + 1)[1:].astype(np.int64))
        if prev is not None:
            pairs.append(_face_pairs(prev, np.where(loc[0] > 0, loc[0].astype(np.int64) + total, 0), st))
        prev = np.where(loc[-1] > 0, loc[-1].astype(np.int64) + total, 0)
        offsets.append(total)
        total += int(n)
        del loc
    return np.concatenate(sizes), (np.concatenate(pairs) if pairs else np.zeros((0, 2), np.int64)), offsets, total


def _final_lut(sizes, pairs, total, min_voxels) -> tuple[np.ndarray, int, int]:
    """provisional id -> final label (0: background or removed), n kept, n removed."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = total + 1
    graph = coo_matrix((np.ones(len(pairs), np.int8), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    _, comp = connected_components(graph, directed=False)
    ncomp = int(comp.max()) + 1
    first = np.full(ncomp, n, np.int64)
    np.minimum.at(first, comp, np.arange(n))
    size = np.bincount(comp, weights=sizes.astype(np.float64), minlength=ncomp).round().astype(np.int64)
    real = first > 0  # the component of id 0 (background) is not a particle
    keep = real & (size >= min_voxels)
    order = np.argsort(first[keep], kind="stable")
    final = np.zeros(ncomp, np.int32)
    final[np.flatnonzero(keep)[order]] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
    return final[comp], int(keep.sum()), int(np.count_nonzero(real & ~keep))


def label_particles_chunked(segmentation, *, particle_class=None, voxel_size_nm=None, min_voxels: int = 0,
                            connectivity: int = 1, out: SlabStore | None = None, publish: bool = True,
                            chunk_budget_mb=None) -> ChunkedParticles:
    """Connected particles of a (lazy) phase segmentation, slab by slab, and their geometry.

    Parameters
    ----------
    segmentation : (z, y, x) int array, dask array or Volume
        Phase labels (read slab by slab), or a particle mask.
    particle_class : int or sequence of int, optional
        Label value(s) of the particle phase; default every non-zero voxel.
    voxel_size_nm : float or (3,) float, optional
    min_voxels : int
        Particles with fewer voxels are removed (as :func:`tomo4d.segment.remove_small_objects`).
    connectivity : int
        1 faces, 2 + edges, 3 + corners (as :func:`tomo4d.segment.connected_components`).
    out : SlabStore, optional
        Where the labels (int32) go, slab by slab, resumable, published at the end (with ``publish``; else call
        ``out.publish()``); default: returned in memory.
    chunk_budget_mb : float, optional
        Working memory of one slab, MiB.
    """
    data = volume_data(segmentation)
    if getattr(data, "ndim", 0) != 3:
        raise InputError(f"segmentation has shape {tuple(getattr(data, 'shape', ()))}; give a 3D (z, y, x) volume")
    shape = tuple(int(s) for s in data.shape)
    vs = voxel_size(voxel_size_nm, segmentation)
    min_voxels = check_int("min_voxels", min_voxels, minimum=0)
    st = _structure(check_int("connectivity", connectivity, minimum=1, maximum=3))
    classes = None if particle_class is None else np.atleast_1d(np.asarray(particle_class, np.int64))
    plan = out.slabs if out is not None else plan_slabs(shape, bytes_per_voxel=BYTES_PER_VOXEL,
                                                        chunk_budget_mb=chunk_budget_mb)
    sizes, pairs, offsets, total = _provisional(data, plan, classes, st)
    lut, n_kept, n_removed = _final_lut(sizes, pairs, total, min_voxels)
    res = _write_pass(data, plan, classes, st, lut, offsets, out, shape, vs, n_kept, n_removed)
    return res if out is None or not publish else ChunkedParticles(
        labels=None, path=out.publish(), n_particles=n_kept, n_removed=n_removed, table=res.table, n_slabs=len(plan))


def _write_pass(data, plan, classes, st, lut, offsets, out, shape, vs, n_kept, n_removed) -> ChunkedParticles:
    """Pass 2: each slab relabelled with the final labels, written and measured."""
    from scipy import ndimage

    if out is not None:
        out.open()
    mom = _Moments(shape)
    result = np.zeros(shape, np.int32) if out is None else None
    for i, (z0, z1) in enumerate(plan):
        if out is not None and out.is_done(i):  # a rerun: the slab on disk (same bytes) is measured
            lab = out.read(z0, z1)
        else:
            loc, _ = ndimage.label(_mask(data, z0, z1, classes), structure=st, output=np.int32)
            lab = lut[np.where(loc > 0, loc.astype(np.int64) + offsets[i], 0)]
            del loc
            if out is not None:
                out.write(i, lab)
        mom.add(z0, lab)
        if result is not None:
            result[z0:z1] = lab
    return ChunkedParticles(labels=result, path=None, n_particles=n_kept, n_removed=n_removed,
                            table=mom.table(vs), n_slabs=len(plan))
