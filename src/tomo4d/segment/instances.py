"""From a phase segmentation to particle labels.

Connected components, removal of small objects and separation of touching
particles by a watershed on the Euclidean distance map, whose markers are the
h-maxima of that map (centres that rise at least ``h_nm`` above the neck
joining them to a neighbour).  Distances honour anisotropic voxels: they are
computed in nanometres with the voxel size as sampling.

These functions work on in-memory arrays (2D or 3D).  The watershed floods one
cluster of touching particles at a time (:mod:`tomo4d.segment._watershed`), so
:func:`tomo4d.segment.split_particles_chunked` gives the same labels out of core.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from .._array import to_numpy
from .._validate import check_int, check_labels, check_number, show, show_values
from ..errors import InputError
from ..volume import Volume
from ._watershed import split_clusters


@dataclass(frozen=True)
class Particles:
    """Particle (instance) labels.

    Attributes
    ----------
    labels : numpy.ndarray, int32
        0 = no particle, 1..n_particles = one label per particle (sequential).
    n_particles : int
        Number of particles kept.
    volumes_nm3 : numpy.ndarray, float64, (n_particles,)
        Volume of particle ``i + 1`` in nm^3 (area in nm^2 for a 2D image).
    n_removed : int
        Objects removed for being smaller than the minimum size.
    """

    labels: np.ndarray
    n_particles: int
    volumes_nm3: np.ndarray
    n_removed: int


def _mask(segmentation, particle_class) -> np.ndarray:
    data = segmentation.data if isinstance(segmentation, Volume) else segmentation
    if getattr(data, "dtype", None) == np.bool_:
        arr = to_numpy(data)
        if arr.ndim not in (2, 3):
            raise InputError(f"segmentation must be 2D or 3D, got shape {arr.shape}")
        return arr
    arr = check_labels("segmentation", data, ndim=(2, 3),
                       role="label_particles expects phase labels or a particle mask")
    if particle_class is None:
        return arr > 0
    pc = check_int("particle_class", particle_class, minimum=0)
    present = np.unique(arr)
    if pc not in present:
        raise InputError(f"particle_class={pc} does not occur in the segmentation (values "
                         f"{show_values(present)}); pass the label value of the particle phase")
    return arr == pc


def _spacing(voxel_size_nm, ndim: int, image=None) -> tuple[float, ...]:
    if voxel_size_nm is None and isinstance(image, Volume) and image.voxel_size_known:
        voxel_size_nm = image.voxel_size_nm
    if voxel_size_nm is None:
        return (1.0,) * ndim
    vs = np.atleast_1d(np.asarray(voxel_size_nm, dtype=np.float64))
    if vs.size == 1:
        vs = np.repeat(vs, ndim)
    if vs.size == 3 and ndim == 2:
        vs = vs[1:]
    if vs.size != ndim or not np.all(np.isfinite(vs)) or np.any(vs <= 0):
        raise InputError(f"voxel_size_nm={show(voxel_size_nm)} must be one positive number or one per axis "
                         f"({ndim} for this {ndim}D image), in nm")
    return tuple(float(v) for v in vs)


def connected_components(mask, *, connectivity: int = 1) -> np.ndarray:
    """Label the connected components of a boolean mask.

    Parameters
    ----------
    mask : array_like of bool, 2D or 3D
    connectivity : int
        1 = faces only (6 neighbours in 3D), up to ``ndim`` = faces, edges and corners.

    Returns
    -------
    numpy.ndarray, int32
        0 background, 1..n components.
    """
    m = np.asarray(to_numpy(mask), dtype=bool)
    connectivity = check_int("connectivity", connectivity, minimum=1, maximum=m.ndim)
    lab, _ = ndi.label(m, structure=ndi.generate_binary_structure(m.ndim, connectivity), output=np.int32)
    return lab


def remove_small_objects(labels, *, min_voxels: int) -> tuple[np.ndarray, int]:
    """Drop labelled objects with fewer than ``min_voxels`` voxels and relabel 1..n sequentially.

    Returns
    -------
    (numpy.ndarray int32, int)
        The relabelled array and the number of objects removed.
    """
    lab = check_labels("labels", labels)
    min_voxels = check_int("min_voxels", min_voxels, minimum=0)
    sizes = np.bincount(lab.ravel())
    keep = sizes >= min_voxels
    keep[0] = False
    present = sizes > 0
    present[0] = False
    n_removed = int(np.count_nonzero(present & ~keep))
    new = np.zeros(sizes.size, np.int32)
    new[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
    return new[lab], n_removed


def split_touching(mask, *, voxel_size_nm=None, h_nm: float | None = None, smooth_voxels: float = 0.0,
                   connectivity: int = 1) -> np.ndarray:
    """Separate touching particles with a distance-transform watershed.

    Parameters
    ----------
    mask : array_like of bool, 2D or 3D
        Particle phase.
    voxel_size_nm : float or per-axis, optional
        Voxel size; distances are in nm (1 nm voxels when unknown).
    h_nm : float, optional
        A distance maximum is a particle centre only if it rises at least this
        much above the neck to its neighbour.  Default: half a voxel (of the
        largest voxel edge).  Larger merges more, smaller splits more.
    smooth_voxels : float
        Gaussian smoothing of the distance map (voxels) against noisy borders
        (default none: smoothing merges small touching particles).
    connectivity : int
        Neighbourhood of the watershed and of the markers.

    Returns
    -------
    numpy.ndarray, int32
        0 background, 1..n particles.
    """
    m = np.asarray(to_numpy(mask), dtype=bool)
    spacing = _spacing(voxel_size_nm, m.ndim)
    h = split_h(h_nm, spacing)
    smooth_voxels = check_number("smooth_voxels", smooth_voxels, minimum=0.0)
    connectivity = check_int("connectivity", connectivity, minimum=1, maximum=m.ndim)
    if not m.any():
        return np.zeros(m.shape, np.int32)
    dist = ndi.distance_transform_edt(m, sampling=spacing).astype(np.float32)
    if smooth_voxels > 0:
        dist = ndi.gaussian_filter(dist, smooth_voxels) * m
    return split_clusters(m, dist, h, connectivity)


def split_h(h_nm, spacing) -> float:
    """The h of :func:`split_touching` (nm): ``h_nm`` checked, default half the largest voxel edge."""
    return 0.5 * max(spacing) if h_nm is None else check_number("h_nm", h_nm, minimum=0.0, exclusive_minimum=True)


def label_particles(segmentation, *, particle_class: int | None = None, voxel_size_nm=None,
                    min_volume_nm3: float = 0.0, split: bool = True, h_nm: float | None = None,
                    connectivity: int = 1) -> Particles:
    """Particle labels from a phase segmentation.

    Parameters
    ----------
    segmentation : Volume or array_like, 2D or 3D
        Integer phase labels, or a boolean particle mask.
    particle_class : int, optional
        Label value of the particle phase; default: every non-zero voxel.
    voxel_size_nm : float or per-axis, optional
        Voxel size (default: the Volume's, else 1 nm).
    min_volume_nm3 : float
        Objects smaller than this (nm^3; nm^2 in 2D) are removed.
    split : bool
        Separate touching particles (:func:`split_touching`); otherwise
        connected components.
    h_nm, connectivity
        See :func:`split_touching`.

    Returns
    -------
    Particles
    """
    m = _mask(segmentation, particle_class)
    spacing = _spacing(voxel_size_nm, m.ndim, segmentation)
    min_volume_nm3 = check_number("min_volume_nm3", min_volume_nm3, minimum=0.0)
    voxel = float(np.prod(spacing))
    if split:
        lab = split_touching(m, voxel_size_nm=spacing, h_nm=h_nm, connectivity=connectivity)
    else:
        lab = connected_components(m, connectivity=connectivity)
    min_vox = int(math.ceil(float(min_volume_nm3) / voxel - 1e-9))
    lab, n_removed = remove_small_objects(lab, min_voxels=min_vox)
    n = int(lab.max())
    volumes = np.bincount(lab.ravel(), minlength=n + 1)[1:].astype(np.float64) * voxel
    return Particles(labels=lab, n_particles=n, volumes_nm3=volumes, n_removed=n_removed)


__all__ = ["Particles", "connected_components", "remove_small_objects", "split_touching", "label_particles"]
