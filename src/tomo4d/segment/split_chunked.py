"""Touching particles separated out of core: the distance watershed of :func:`tomo4d.segment.split_touching`
one cluster of touching particles at a time, equal to the in-memory labels voxel for voxel.

1. Clusters: the fully connected (26-neighbour) components of the particle mask, labelled slab by slab and
   merged across slab faces (:func:`tomo4d.quantify.particles_chunked.label_particles_chunked`), with their
   bounding boxes.  Background separates clusters in every direction, so the split of one depends on nothing
   outside it:

   * its distance map: the nearest background voxel of any of its voxels lies within the largest inscribed
     ball's radius, at most half the smallest side of its bounding box (nm), so the Euclidean distance
     transform of the mask on the box grown by that radius (+1 voxel) is exact on the cluster;
   * its h-maxima and its watershed, flooded in a box holding only the cluster, in the in-memory split as
     here (:mod:`tomo4d.segment._watershed`: the tie-breaking of scikit-image's watershed depends on its
     whole queue).

2. Clusters are grouped by the 3D cell of their box's first corner (cells sized so that a group's region, the
   union of its members' grown boxes, fits the budget); a group reads its region of the mask and of the
   cluster labels once, computes one distance map there (exact for every member), floods each cluster in
   its own box, and stores provisional ids (one per marker and per markerless piece) in a scratch Zarr
   volume, with each id's first voxel (raster index in the volume) and voxel count.
3. Final labels: markers in raster order of their first voxel, then the markerless pieces in the same order
   (the numbering of the in-memory split), objects below ``min_voxels`` removed; written slab by slab.

A cluster larger than the budget is still split whole (its grown box in memory): a cluster spanning the
volume (a percolating network) cannot be split out of core; ``largest_box_voxels`` says how large the largest
region was.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from .._array import read_box
from .._chunks import SlabStore, budget_bytes, plan_slabs, volume_data
from .._validate import check_int
from ..errors import InputError
from ._watershed import ClusterIds, cluster_split
from .instances import _spacing, split_h

__all__ = ["SplitParticles", "split_particles_chunked"]

#: bytes per voxel of a group's region held at once (mask, cluster labels, the distance transform's float64
#: distances and int32 feature indices, float32 distances, provisional ids)
REGION_BYTES_PER_VOXEL = 40


@dataclass(frozen=True, eq=False)
class SplitParticles:
    """Result of :func:`split_particles_chunked`.

    Attributes
    ----------
    labels : numpy.ndarray or None
        int32 labels when no store was given.
    store : SlabStore or None
        The store written (published unless ``publish=False``).
    n_particles, n_removed : int
        Particles kept; objects removed below ``min_voxels``.
    n_clusters : int
        Clusters of touching particles split.
    n_batches : int
    largest_box_voxels : int
        Voxels of the largest grown cluster box held at once.
    """

    labels: np.ndarray | None
    store: SlabStore | None
    n_particles: int
    n_removed: int
    n_clusters: int
    n_batches: int
    largest_box_voxels: int


def _read_box(data, box, classes=None) -> np.ndarray:
    block = read_box(data, box)
    if classes is None:
        return block
    return np.isin(block, classes)


def _boxes(table, shape, vs) -> tuple[np.ndarray, np.ndarray]:
    """Cluster boxes grown by the largest possible distance value (+1 voxel), clipped to the volume.

    The ball of radius ``d(p)`` about a voxel holds no background inside the volume, so its part inside the
    volume lies in the cluster's box: along an axis where the box touches no border ``d <= side / 2``; touching
    one border (the ball may reach out of the volume there) ``d <= side``; spanning the axis, no bound."""
    lo, hi = np.asarray(table.bbox_min_px, np.int64), np.asarray(table.bbox_max_px, np.int64)
    vs, dims = np.asarray(vs, float), np.asarray(shape, np.int64)
    touch = (lo == 0).astype(int) + (hi == dims).astype(int)
    side = (hi - lo) * vs
    bound = np.where(touch == 0, 0.5 * side, np.where(touch == 1, side, np.inf))
    radius_nm = np.minimum(np.min(bound, axis=1), float((dims * vs).max())) + vs.max()
    pad = np.ceil(radius_nm[:, None] / vs[None, :]).astype(np.int64) + 1
    return np.maximum(lo - pad, 0), np.minimum(hi + pad, np.asarray(shape, np.int64))


def _groups(bmin, lo, hi, shape, budget: int) -> list[np.ndarray]:
    """Clusters grouped by the cell (z, y, x) of their box's first corner, cells sized so that a group's region
    (the union of its members' grown boxes) fits ``budget`` bytes; a group over it is split into its members."""
    if not len(lo):
        return []
    grow = int(np.percentile((hi - lo).max(axis=1), 95))
    core = np.array([min(64, shape[0]), min(256, shape[1]), min(256, shape[2])], np.int64)
    while np.prod(core + grow) * REGION_BYTES_PER_VOXEL > budget and core.max() > 8:
        core[int(np.argmax(core))] //= 2
    alone = (hi - lo).max(axis=1) > grow           # the largest 5 %: each in its own region
    out = [np.array([k]) for k in np.flatnonzero(alone)]
    cell = bmin // core
    order = np.flatnonzero(~alone)[np.lexsort((cell[~alone, 2], cell[~alone, 1], cell[~alone, 0]))]
    key = cell[order]
    cuts = np.flatnonzero(np.any(key[1:] != key[:-1], axis=1)) + 1
    for g in np.split(order, cuts) if order.size else []:
        size = np.prod(hi[g].max(axis=0) - lo[g].min(axis=0))
        out.extend([g] if len(g) == 1 or size * REGION_BYTES_PER_VOXEL <= budget else [g[i:i + 1] for i in range(len(g))])
    return out


def _split_group(data, classes, clusters, ids, lo, hi, bmin, bmax, vs, h, connectivity, prov: ClusterIds,
                 scratch) -> int:
    """Split the clusters ``ids``: one distance map of their region (the union of their grown boxes, where it is
    exact for each of them), each cluster flooded in its own box; provisional ids merged into ``scratch``.
    Returns the region's voxels."""
    r_lo, r_hi = lo[ids].min(axis=0), hi[ids].max(axis=0)
    region = tuple(slice(int(a), int(b)) for a, b in zip(r_lo, r_hi))
    mask = _read_box(data, region, classes)
    clus = _read_box(clusters, region)
    dist = ndi.distance_transform_edt(mask, sampling=vs).astype(np.float32)
    del mask
    out = np.zeros(clus.shape, np.int32)
    for k in ids:
        box = tuple(slice(int(a - o), int(b - o)) for a, b, o in zip(bmin[k], bmax[k], r_lo))
        mine = clus[box] == k + 1
        d = np.where(mine, dist[box], 0).astype(np.float32)
        got = prov.add(mine, *cluster_split(mine, d, h, connectivity), tuple(int(v) for v in bmin[k]))
        out[box][mine] = got[mine]
    old = np.asarray(scratch[region])
    scratch[region] = np.where(out > 0, out, old)
    return int(out.size)


def split_particles_chunked(segmentation, *, particle_class=None, voxel_size_nm=None, h_nm: float | None = None,
                            connectivity: int = 1, min_voxels: int = 0, out: SlabStore | None = None,
                            publish: bool = True, scratch_dir=None, chunk_budget_mb=None) -> SplitParticles:
    """Particles of a (lazy) phase segmentation with touching particles separated, out of core.

    Equals ``label_particles(segmentation, particle_class=..., split=True, min_volume_nm3=min_voxels x voxel,
    h_nm=..., connectivity=...)`` voxel for voxel, label values included (see the module docstring).

    Parameters
    ----------
    segmentation : (z, y, x) int array, dask array, Zarr array or Volume
        Phase labels (or a particle mask), read slab by slab.
    particle_class : int or sequence of int, optional
        Label value(s) of the particle phase; default every non-zero voxel.
    voxel_size_nm : float or (3,) float, optional
    h_nm, connectivity
        As :func:`~tomo4d.segment.split_touching`.
    min_voxels : int
        Particles with fewer voxels are removed.
    out : SlabStore, optional
        Where the labels (int32) go, slab by slab; default: returned in memory.
    publish : bool
        Publish ``out`` when complete.
    scratch_dir : path-like, optional
        Folder for the cluster labels and provisional ids (removed at the end); default beside ``out``, else a
        temporary folder.
    chunk_budget_mb : float, optional
        Working memory of a slab / batch, MiB.
    """
    data = volume_data(segmentation)
    if getattr(data, "ndim", 0) != 3:
        raise InputError(f"segmentation has shape {tuple(getattr(data, 'shape', ()))}; give a 3D (z, y, x) volume")
    shape = tuple(int(v) for v in data.shape)
    vs = _spacing(voxel_size_nm, 3, segmentation)
    h = split_h(h_nm, vs)
    connectivity = check_int("connectivity", connectivity, minimum=1, maximum=3)
    min_voxels = check_int("min_voxels", min_voxels, minimum=0)
    classes = None if particle_class is None else np.atleast_1d(np.asarray(particle_class, np.int64))
    own = scratch_dir is None and out is None
    scratch = Path(tempfile.mkdtemp(prefix="tomo4d-split-")) if own else Path(
        scratch_dir if scratch_dir is not None else out.path.parent / f".{out.path.name}.split")
    try:
        return _run(data, classes, shape, vs, h, connectivity, min_voxels, out, publish, scratch, chunk_budget_mb)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _run(data, classes, shape, vs, h, connectivity, min_voxels, out, publish, scratch, budget_mb):
    import zarr

    from ..quantify.particles_chunked import BYTES_PER_VOXEL, label_particles_chunked

    scratch.mkdir(parents=True, exist_ok=True)
    plan = out.slabs if out is not None else plan_slabs(shape, bytes_per_voxel=BYTES_PER_VOXEL,
                                                        chunk_budget_mb=budget_mb)
    clusters = SlabStore(scratch / "clusters.ome.zarr", shape=shape, dtype=np.int32, slabs=plan, voxel_size_nm=vs,
                         name="clusters")
    cl = label_particles_chunked(data, particle_class=classes, voxel_size_nm=vs, connectivity=3, out=clusters, publish=False)
    provisional = zarr.open_array(str(scratch / "provisional.zarr"), mode="w", shape=shape, dtype=np.int32,
                                  chunks=(max(1, min(32, shape[0])), min(128, shape[1]), min(128, shape[2])),
                                  fill_value=0)
    lo, hi = _boxes(cl.table, shape, vs)
    bmin, bmax = np.asarray(cl.table.bbox_min_px, np.int64), np.asarray(cl.table.bbox_max_px, np.int64)
    prov = ClusterIds(shape)
    batches = _groups(bmin, lo, hi, shape, budget_bytes(budget_mb))
    largest = 0
    for ids in batches:
        largest = max(largest, _split_group(data, classes, clusters, ids, lo, hi, bmin, bmax, vs, h, connectivity,
                                            prov, provisional))
    lut, n_kept, n_removed = prov.lut(min_voxels)
    result = np.zeros(shape, np.int32) if out is None else None
    if out is not None:
        out.open()
    for i, (z0, z1) in enumerate(plan):
        if out is not None and out.is_done(i):
            continue
        lab = lut[np.asarray(provisional[z0:z1])]
        if out is None:
            result[z0:z1] = lab
        else:
            out.write(i, lab)
    if out is not None and publish:
        out.publish()
    return SplitParticles(labels=result, store=out, n_particles=n_kept, n_removed=n_removed,
                          n_clusters=int(cl.n_particles), n_batches=len(batches), largest_box_voxels=largest)
