"""The distance watershed of :func:`tomo4d.segment.split_touching`, one cluster of touching particles at a time.

A cluster is a fully connected component of the particle mask; background separates clusters in every
direction, so a cluster's markers and watershed depend on nothing outside it, provided the tie-breaking does
not either.  scikit-image's watershed pushes every marker voxel at the same age, so the order in which it
floods equal values depends on the heap's whole content: run on a whole volume, one cluster's boundaries
change (by a few voxels) with its neighbours.  So both the in-memory split and the out-of-core one
(:mod:`tomo4d.segment.split_chunked`) flood each cluster on its own, in a box holding only it: the same
voxels in the same relative order, hence the same labels however the volume is cut.  Numbering
(:class:`ClusterIds`): markers in raster order of their first voxel in the volume, then the pieces no marker
reached in the same order, as one watershed of the whole volume numbers them.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi


def h_maxima(dist: np.ndarray, h: float, footprint) -> np.ndarray:
    """Maxima of a float distance map that rise at least ``h`` above the saddle to any higher ground: the
    reconstruction of :func:`skimage.morphology.h_maxima` (float path, same rounding guard) without its early
    exit when ``h`` exceeds the whole image's range (:func:`cluster_split` applies that rule per cluster)."""
    from skimage.morphology import reconstruction

    d = np.asarray(dist)
    rec = reconstruction(_h_seed(d, h), d, method="dilation", footprint=footprint)
    return (d - rec) >= h


def _h_seed(d: np.ndarray, h: float) -> np.ndarray:
    """The seed of the h-maxima reconstruction: ``d - h`` less scikit-image's rounding guard."""
    return d - h - 2 * np.finfo(d.dtype).resolution * np.abs(d)


def _one_regional_maximum(mine: np.ndarray, dist: np.ndarray, full) -> bool:
    """Whether ``dist`` has a single regional maximum in its box (full connectivity), tested cheaply: every
    regional-maximum plateau is a whole connected component of the voxels no neighbour exceeds (a voxel of
    that set next to a plateau would equal it), and no such component of the background (0, next to the
    cluster's positive distances) touches one of the cluster; so one component inside the cluster means one
    regional maximum."""
    top = (dist >= ndi.maximum_filter(dist, footprint=full, mode="nearest")) & mine
    if ndi.label(top, structure=full)[1] == 1:
        return True
    # several components: plateaus that rise elsewhere hold some (20 % of the one-particle clusters of the 1024^3
    # run's segmentation); scikit-image's regional maxima count them exactly, at ~3x the cost of the test above
    from skimage.morphology import local_maxima

    return ndi.label(local_maxima(dist, connectivity=dist.ndim, allow_borders=True) & mine, structure=full)[1] == 1


def _h_maxima_unimodal(dist: np.ndarray, h: float) -> np.ndarray:
    """:func:`h_maxima` of a map with one regional maximum: every upper level set is then connected, so the
    reconstruction of ``f = dist - h - resolution`` under ``dist`` is ``min(dist, max f)`` exactly (the same
    float32 values the reconstruction copies, the same comparison)."""
    rec = np.minimum(dist, _h_seed(dist, h).max())
    return (dist - rec) >= h


def _flood_one_marker(mine: np.ndarray, markers: np.ndarray, footprint) -> np.ndarray:
    """The watershed from a single marker label: every voxel of ``mine`` connected (``footprint``) to a
    marker voxel gets label 1, as the flood reaches it unopposed; the rest stays 0."""
    comp, _ = ndi.label(mine, structure=footprint, output=np.int32)
    reached = np.zeros(int(comp.max()) + 1, bool)
    reached[np.unique(comp[markers > 0])] = True
    reached[0] = False
    return reached[comp].astype(np.int32)


def cluster_split(mine: np.ndarray, dist: np.ndarray, h: float, connectivity: int):
    """``(labels, markers, rest)`` of one cluster ``mine`` (bool, in a box) with its distances ``dist`` (0 off
    the cluster): markers the h-maxima labelled with full connectivity (none when the cluster's distances never
    reach ``h``: too flat to hold one), labels the watershed of ``-dist`` from them inside the cluster, rest the
    pieces no marker reached (1..).

    Most clusters are one particle: a map with one regional maximum gets its h-maxima in closed form and a
    single marker floods unopposed, both equal to scikit-image's reconstruction and watershed voxel for voxel
    (tests/segment/test_watershed.py); at 1024^3 (~185 000 clusters a step) they took 45 % of the split's
    CPU time (reconstruction 19.6 s + watershed 8.7 s of 63 s on a 1024 x 256 x 256 block; now 12.7 s for the
    whole per-cluster split, 43 s in all; session 16)."""
    from skimage.segmentation import watershed

    full = ndi.generate_binary_structure(mine.ndim, mine.ndim)
    footprint = ndi.generate_binary_structure(mine.ndim, int(connectivity))
    if float(dist[mine].max(initial=0.0)) < h:
        markers = np.zeros(mine.shape, np.int32)
    else:
        hm = _h_maxima_unimodal(dist, h) if _one_regional_maximum(mine, dist, full) else h_maxima(dist, h, full)
        markers, _ = ndi.label(hm & mine, structure=full, output=np.int32)
    if not markers.any():
        lab = markers
    elif markers.max() == 1:
        lab = _flood_one_marker(mine, markers, footprint)
    else:
        lab = watershed(-dist, markers, mask=mine, connectivity=footprint)
    rest, _ = ndi.label(mine & (lab == 0), structure=footprint, output=np.int32)
    return lab, markers, rest


class ClusterIds:
    """Provisional ids of every marker and markerless piece of the clusters split so far, with the raster
    index of each one's first voxel in the volume of ``shape``, its kind and size; :meth:`lut` numbers them."""

    def __init__(self, shape):
        self.shape, self.count = tuple(int(v) for v in shape), 0
        self.first, self.kind, self.size = [], [], []

    def add(self, mine, lab, markers, rest, origin) -> np.ndarray:
        """Provisional ids (int64, 0 off the cluster) of one cluster split in its box at ``origin``."""
        n_m, n_r = int(markers.max(initial=0)), int(rest.max(initial=0))
        ids = np.zeros(lab.shape, np.int64)
        ids[mine] = np.where(lab[mine] > 0, self.count + lab[mine], self.count + n_m + rest[mine])
        for kind, img, n in ((0, markers, n_m), (1, rest, n_r)):
            if not n:
                continue
            flat = np.flatnonzero(img)
            _, first = np.unique(img.ravel()[flat], return_index=True)
            coords = np.array(np.unravel_index(flat[first], img.shape)) + np.asarray(origin)[:, None]
            self.first.append(np.ravel_multi_index(tuple(coords), self.shape))
            self.kind.append(np.full(n, kind, np.int8))
        self.size.append(np.bincount(ids[mine] - self.count, minlength=n_m + n_r + 1)[1:])
        self.count += n_m + n_r
        return ids

    def lut(self, min_voxels: int = 0) -> tuple[np.ndarray, int, int]:
        """provisional id -> label (markers by first voxel, then markerless pieces; below ``min_voxels``
        removed: 0), labels kept, objects removed."""
        if not self.count:
            return np.zeros(1, np.int32), 0, 0
        first, kind = np.concatenate(self.first), np.concatenate(self.kind)
        size = np.concatenate(self.size)   # all three in id order: per cluster its markers, then its pieces
        rank = np.lexsort((first, kind))
        kept = rank[size[rank] >= min_voxels]
        lut = np.zeros(self.count + 1, np.int32)
        lut[kept + 1] = np.arange(1, kept.size + 1, dtype=np.int32)
        return lut, int(kept.size), int(self.count - kept.size)


def split_clusters(m: np.ndarray, dist: np.ndarray, h: float, connectivity: int) -> np.ndarray:
    """The split of a whole in-memory mask, cluster by cluster (int32 labels 1..n)."""
    full = ndi.generate_binary_structure(m.ndim, m.ndim)
    clusters, _ = ndi.label(m, structure=full, output=np.int32)
    ids = ClusterIds(m.shape)
    prov = np.zeros(m.shape, np.int64)
    for k, sl in enumerate(ndi.find_objects(clusters), 1):
        if sl is None:
            continue
        mine = clusters[sl] == k
        d = np.where(mine, dist[sl], 0).astype(dist.dtype)
        got = ids.add(mine, *cluster_split(mine, d, h, connectivity), tuple(s.start for s in sl))
        prov[sl][mine] = got[mine]
    return ids.lut(0)[0][prov]
