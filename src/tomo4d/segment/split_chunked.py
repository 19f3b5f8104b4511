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

2. Clusters in z order are grouped into batches whose grown boxes fit half the budget; a batch reads its z
   range of the mask and of the cluster labels once, splits each cluster, and stores provisional ids (one per
   marker and per markerless piece) in a scratch Zarr volume, with each id's first voxel (raster index in the
   volume) and voxel count.
3. Final labels: markers in raster order of their first voxel, then the markerless pieces in the same order
   (the numbering of the in-memory split), objects below ``min_voxels`` removed; written slab by slab.

A cluster larger than the budget is still split whole (its grown box in memory): a cluster spanning the
volume (a percolating network) cannot be split out of core; ``largest_box_voxels`` says how large it was.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from .._chunks import SlabStore, budget_bytes, plan_slabs, read_slab, volume_data
from .._validate import check_int
from ..errors import InputError
from ._watershed import ClusterIds, cluster_split
from .instances import _spacing, split_h

__all__ = ["SplitParticles", "split_particles_chunked"]

#: bytes per voxel of a batch's z range held at once (mask, cluster labels, provisional ids)
REGION_BYTES_PER_VOXEL = 13


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


def _mask(data, z0, z1, classes) -> np.ndarray:
    block, _ = read_slab(data, z0, z1)
    return np.isin(block, classes) if classes is not None else block > 0


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


def _batches(lo, hi, plane: int, budget: int) -> list[np.ndarray]:
    """Consecutive clusters (z order) whose grown boxes' z range fits ``budget`` bytes (at least one each)."""
    out, start = [], 0
    n = len(lo)
    while start < n:
        z0, z1, end = lo[start, 0], hi[start, 0], start + 1
        while end < n:
            a, b = min(z0, lo[end, 0]), max(z1, hi[end, 0])
            if (b - a) * plane * REGION_BYTES_PER_VOXEL > budget:
                break
            z0, z1, end = a, b, end + 1
        out.append(np.arange(start, end))
        start = end
    return out


def _split_batch(data, classes, clusters, ids, lo, hi, vs, h, connectivity, prov: ClusterIds, scratch):
    """Split the clusters ``ids`` (their grown boxes ``lo``, ``hi``) and merge their provisional ids into
    ``scratch`` (a Zarr array): returns the largest box (voxels)."""
    r0, r1 = int(lo[ids, 0].min()), int(hi[ids, 0].max())
    mask = _mask(data, r0, r1, classes)
    clus = clusters.read(r0, r1)
    out = np.zeros(mask.shape, np.int64)
    largest = 0
    for k in ids:
        box = tuple(slice(int(a) - (r0 if i == 0 else 0), int(b) - (r0 if i == 0 else 0))
                    for i, (a, b) in enumerate(zip(lo[k], hi[k])))
        mine = clus[box] == k + 1
        dist = ndi.distance_transform_edt(mask[box], sampling=vs).astype(np.float32)
        dist[~mine] = 0
        lab, markers, rest = cluster_split(mine, dist, h, connectivity)
        origin = (int(lo[k, 0]), int(lo[k, 1]), int(lo[k, 2]))
        got = prov.add(mine, lab, markers, rest, origin)
        out[box][mine] = got[mine]
        largest = max(largest, int(mine.size))
    region = np.asarray(scratch[r0:r1])
    scratch[r0:r1] = np.where(out > 0, out, region)
    return largest


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
    from ..quantify.particles_chunked import label_particles_chunked

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
        return _run(data, classes, shape, vs, h, connectivity, min_voxels, out, publish, scratch, chunk_budget_mb,
                    label_particles_chunked)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _run(data, classes, shape, vs, h, connectivity, min_voxels, out, publish, scratch, budget_mb, label_chunked):
    import zarr

    scratch.mkdir(parents=True, exist_ok=True)
    plan = out.slabs if out is not None else plan_slabs(shape, bytes_per_voxel=48, chunk_budget_mb=budget_mb)
    clusters = SlabStore(scratch / "clusters.ome.zarr", shape=shape, dtype=np.int32, slabs=plan, voxel_size_nm=vs,
                         name="clusters")
    cl = label_chunked(data, particle_class=classes, voxel_size_nm=vs, connectivity=3, out=clusters, publish=False)
    provisional = zarr.open_array(str(scratch / "provisional.zarr"), mode="w", shape=shape, dtype=np.int64,
                                  chunks=(max(1, min(64, shape[0])), min(256, shape[1]), min(256, shape[2])),
                                  fill_value=0)
    lo, hi = _boxes(cl.table, shape, vs)
    prov = ClusterIds(shape)
    batches = _batches(lo, hi, shape[1] * shape[2], budget_bytes(budget_mb) // 2)
    largest = 0
    for ids in batches:
        largest = max(largest, _split_batch(data, classes, clusters, ids, lo, hi, vs, h, connectivity, prov,
                                            provisional))
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
