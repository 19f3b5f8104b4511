"""Training labels read slab by slab, never as a whole volume.

A forest is trained on at most ``max_samples_per_class`` voxels per class, so holding a label volume the size of
the image (1 GiB at 1024^3 as uint8, 8 GiB at 2048^3) only to find those voxels makes the segment stage's
memory grow with the volume.  Two sources give the labels of any z-slab on demand instead:

* :class:`LabelPlanes`: only some planes of a label file (the labelled slices along any axis), the rest 0;
* :class:`LabelSlabs`: a label array or lazy (dask/Zarr) volume, read one slab at a time and checked as read.

Both may stand on a coarser grid than the image (``scale``: each label voxel covers ``scale`` image voxels per
axis, the runner's analysis grid after a 2x enhancement).  :func:`label_source` wraps whatever the trainer is
given; ``counts_by_z`` (one pass) gives the number of voxels of every class in every z-plane, from which the
trainer draws its samples before it computes a single feature (:mod:`tomo4d.segment.forest`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._array import read_box, to_numpy
from .._validate import check_labels as _check_labels
from .._validate import show
from ..errors import InputError
from ..volume import Volume

_SLAB_BYTES = 64 * 2**20   # labels read per slab while counting (int64 bincount temporaries: 8x per plane)


def _smallest(top: int) -> np.dtype:
    return np.dtype(np.uint8 if top < 2**8 else np.uint16 if top < 2**16 else np.uint32)


class _Source:
    """Shared by the two sources: the image-grid shape and slabs from the label-grid slabs (``_series_slab``)."""

    grid_shape: tuple[int, int, int]
    scale: int

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) * self.scale for s in self.grid_shape)

    @property
    def ndim(self) -> int:
        return 3

    def read(self, z0: int, z1: int) -> np.ndarray:
        """The labels of image planes ``z0:z1`` (0 = unlabelled), dense."""
        s = self.scale
        zs0, zs1 = z0 // s, -(-z1 // s)
        slab = self._series_slab(zs0, zs1)
        if s == 1:
            return slab
        for axis in range(3):
            slab = np.repeat(slab, s, axis=axis)
        return slab[z0 - zs0 * s: z1 - zs0 * s]

    def counts_by_z(self) -> np.ndarray:
        """``(shape[0], K)`` int64: voxels of value ``k`` (``k >= 1``; column 0 is left 0) in every image plane."""
        rows = self._grid_counts()
        rows[:, 0] = 0
        s = self.scale
        return np.repeat(rows * (s * s), s, axis=0) if s > 1 else rows

    def _series_slab(self, zs0: int, zs1: int) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def _grid_counts(self) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError


def _plane_counts(planes) -> np.ndarray:
    """``(len(planes), K)`` bincounts of a sequence of integer arrays."""
    counts = [np.bincount(np.asarray(p).ravel()) for p in planes]
    k = max((c.size for c in counts), default=1)
    out = np.zeros((len(counts), max(k, 1)), np.int64)
    for i, c in enumerate(counts):
        out[i, :c.size] = c
    return out


@dataclass(frozen=True, eq=False)
class LabelPlanes(_Source):
    """Labels on planes ``indices`` along ``axis`` of a ``grid_shape`` volume, every other voxel unlabelled.

    ``planes`` is the label volume restricted to those planes (``grid_shape`` with ``len(indices)`` along
    ``axis``, e.g. :func:`tomo4d.segment.read_label_planes`); ``shift`` is added to every plane value (the
    runner's ``segment.slices`` make 0 a class: shift 1); ``scale`` as in the module docstring.
    """

    grid_shape: tuple[int, int, int]
    axis: int
    indices: tuple[int, ...]
    planes: np.ndarray
    shift: int = 0
    scale: int = 1

    def __post_init__(self):
        gs = tuple(int(s) for s in self.grid_shape)
        idx = tuple(int(i) for i in self.indices)
        object.__setattr__(self, "grid_shape", gs)
        object.__setattr__(self, "indices", idx)
        if self.axis not in (0, 1, 2) or len(gs) != 3:
            raise InputError(f"LabelPlanes: axis={show(self.axis)} of a {len(gs)}D shape; give 0, 1 or 2 of (z, y, x)")
        want = list(gs)
        want[self.axis] = len(idx)
        if tuple(self.planes.shape) != tuple(want) or len(set(idx)) != len(idx) \
                or any(not 0 <= i < gs[self.axis] for i in idx):
            raise InputError(f"LabelPlanes: planes of shape {tuple(self.planes.shape)} at indices {show(list(idx))} "
                             f"do not fit shape {gs} along axis {self.axis}; give distinct indices inside the volume "
                             f"and planes of shape {tuple(want)}")
        if not isinstance(self.scale, (int, np.integer)) or self.scale < 1:
            raise InputError(f"LabelPlanes: scale={show(self.scale)} must be an integer >= 1")

    @property
    def dtype(self) -> np.dtype:
        return _smallest(int(self.planes.max(initial=0)) + int(self.shift))

    def _series_slab(self, zs0: int, zs1: int) -> np.ndarray:
        out = np.zeros((zs1 - zs0,) + self.grid_shape[1:], self.dtype)
        vals = self.planes.astype(out.dtype) + out.dtype.type(self.shift)
        if self.axis == 0:
            for k, i in enumerate(self.indices):
                if zs0 <= i < zs1:
                    out[i - zs0] = vals[k]
        else:
            key = [slice(None)] * 3
            key[self.axis] = list(self.indices)
            out[tuple(key)] = vals[zs0:zs1]
        return out

    def _grid_counts(self) -> np.ndarray:
        vals = self.planes.astype(np.int64) + int(self.shift)
        if self.axis == 0:
            per = _plane_counts(vals)
            rows = np.zeros((self.grid_shape[0], per.shape[1]), np.int64)
            rows[list(self.indices)] = per
            return rows
        return _plane_counts(vals)   # axis 1 or 2: row z of every plane


@dataclass(frozen=True, eq=False)
class LabelSlabs(_Source):
    """A label array or lazy volume (numpy, dask, Zarr; ``(z, y, x)``) read slab by slab, each slab checked
    (non-negative whole numbers) as it is read; ``name`` is the parameter or file named in messages."""

    data: object
    name: str = "labels"
    scale: int = 1

    @property
    def grid_shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.data.shape)

    def _series_slab(self, zs0: int, zs1: int) -> np.ndarray:
        box = read_box(self.data, (slice(zs0, zs1), slice(None), slice(None)))
        return _check_labels(self.name, box, role="segmentation labels are expected")

    def _grid_counts(self) -> np.ndarray:
        nz, ny, nx = self.grid_shape
        depth = max(1, _SLAB_BYTES // max(1, ny * nx * 8))
        parts = [_plane_counts(self._series_slab(z0, min(nz, z0 + depth))) for z0 in range(0, nz, depth)]
        k = max(p.shape[1] for p in parts)
        return np.concatenate([np.pad(p, ((0, 0), (0, k - p.shape[1]))) for p in parts])


def label_source(labels, image_shape, *, name: str = "labels") -> _Source:
    """``labels`` (array, lazy array, Volume, :class:`LabelPlanes` or :class:`LabelSlabs`) as a slab source of
    ``image_shape`` (a 2D image ``(y, x)`` counts as ``(1, y, x)``; singleton axes may differ).

    Raises
    ------
    InputError
        Not an array, or a shape other than the image's.
    """
    shape3 = tuple(int(s) for s in image_shape)
    shape3 = (1,) + shape3 if len(shape3) == 2 else shape3
    if isinstance(labels, _Source):
        src = labels
    else:
        data = labels.data if isinstance(labels, Volume) else labels
        if data is None or not hasattr(data, "shape"):
            data = _check_labels(name, data, role="segmentation labels are expected")
        shp = tuple(int(s) for s in data.shape)
        if shp != shape3 and tuple(s for s in shp if s != 1) == tuple(s for s in shape3 if s != 1):
            data = data.reshape(shape3) if hasattr(data, "reshape") else np.reshape(to_numpy(data), shape3)
        if data.ndim != 3 or tuple(data.shape) != shape3:
            raise InputError(f"{name} have shape {shp} but the image has shape {tuple(image_shape)}; give labels of "
                             "the image's shape (0 = unlabelled)")
        src = LabelSlabs(data, name=name)
    if tuple(src.shape) != shape3:
        raise InputError(f"{name} cover shape {tuple(src.shape)} but the image has shape {tuple(image_shape)}; give "
                         "labels of the image's shape (0 = unlabelled)")
    return src


__all__ = ["LabelPlanes", "LabelSlabs", "label_source"]
