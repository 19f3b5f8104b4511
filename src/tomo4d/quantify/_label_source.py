"""A step's particle labels for tracking, compact (1..n), held in memory or read slab by slab.

Tracking needs, per step, the voxel count and centre of every particle and, for the candidate pairs of two
steps, the destination label under every shifted source voxel.  Both are sums over voxels, so they are
accumulated slab by slab along z (:mod:`tomo4d._chunks`): a lazy label volume (a Zarr store, a dask array,
a lazy :class:`~tomo4d.volume.Volume`, the runner's :class:`~tomo4d._chunks.SlabStore`) is never read whole.
Coordinates are integers, so the sums are exact in any order: the streamed results equal the in-memory ones
bit for bit (tests/quantify/test_tracking_chunked.py).
"""

from __future__ import annotations

import numpy as np

from .._chunks import budget_bytes, plan_slabs, read_slab, volume_data
from ..errors import InputError
from ._common import as_labels
from .particles import _sequential

#: largest label value of a lazy volume mapped through a lookup table (8 bytes per value); above it the
#: labels are renumbered with a sorted search per slab
_MAX_LUT = 50_000_000


def is_lazy(obj) -> bool:
    """``obj`` (an array, Volume or store) is not a numpy array in memory."""
    return not isinstance(volume_data(obj), np.ndarray)


class LabelSource:
    """Compact particle labels of one step: ``read(z0, z1)`` gives slices ``[z0, z1)`` as intp 1..n.

    In memory (one slab: the whole array) or lazy (slabs of ``depth`` slices, values renumbered through
    ``values``: ``values[k]`` is the original label of compact label ``k``).  ``masked`` returns the same
    labels with some compact labels set to 0 (particles already taken)."""

    def __init__(self, data, values: np.ndarray, *, compact: bool, depth: int, hidden=None):
        self.data, self.values = data, np.asarray(values)
        self.shape = tuple(int(s) for s in data.shape)
        self.compact = compact                  # data holds compact labels already (in memory)
        self.depth = max(1, int(depth))
        self.hidden = None if hidden is None or not len(hidden) else np.unique(np.asarray(hidden, np.intp))
        self._visible = None   # per compact label: not hidden (a lookup, not a search per read)
        if self.hidden is not None:
            self._visible = np.ones(self.values.size, bool)
            self._visible[self.hidden] = False
        self._lut = None

    @property
    def n_bins(self) -> int:
        return int(self.values.size)

    def slabs(self) -> list[tuple[int, int]]:
        nz = self.shape[0]
        return [(z0, min(z0 + self.depth, nz)) for z0 in range(0, nz, self.depth)]

    def read(self, z0: int, z1: int) -> np.ndarray:
        z0, z1 = max(int(z0), 0), min(int(z1), self.shape[0])
        if self.compact:
            out = self.data[z0:z1]
        else:
            raw, _ = read_slab(self.data, z0, z1)
            out = self._renumber(raw)
        if self._visible is not None:
            out = np.where(self._visible[out], out, 0)
        return out

    def _renumber(self, raw: np.ndarray) -> np.ndarray:
        top = int(self.values[-1])
        if top <= _MAX_LUT:
            if self._lut is None:
                self._lut = np.zeros(top + 1, np.intp)
                self._lut[self.values] = np.arange(self.values.size)
            return self._lut[raw]
        return np.searchsorted(self.values, raw).astype(np.intp)

    def masked(self, labels) -> LabelSource:
        """The same labels with the compact labels ``labels`` hidden (read as 0)."""
        hide = np.asarray(list(labels), np.intp)
        if self.hidden is not None:
            hide = np.concatenate([self.hidden, hide])
        out = LabelSource(self.data, self.values, compact=self.compact, depth=self.depth, hidden=hide)
        out._lut = self._lut
        return out


#: working bytes per voxel of a streamed slab in tracking (labels, their renumbering, the coordinates of the
#: particle voxels and the shifted look-ups of one hypothesis)
TRACK_BYTES_PER_VOXEL = 64


def label_source(obj, *, name: str, chunk_budget_mb=None) -> LabelSource:
    """A :class:`LabelSource` of ``obj``: an in-memory array (validated, compact, one slab) or a lazy volume
    (integer values >= 0 checked slab by slab, its present labels found in one pass)."""
    data = volume_data(obj)
    if isinstance(data, np.ndarray):
        compact, values = _sequential(as_labels(obj, name=name, instances=True))
        return LabelSource(compact, values, compact=True, depth=max(compact.shape[0], 1))
    if len(getattr(data, "shape", ())) != 3:
        raise InputError(f"{name} has shape {tuple(getattr(data, 'shape', ()))}; give a (z, y, x) particle label "
                         "volume")
    if not np.issubdtype(np.dtype(data.dtype), np.integer):
        raise InputError(f"{name} has dtype {data.dtype}; particle labels must be integers (0 = background)")
    plan = plan_slabs(data.shape, bytes_per_voxel=TRACK_BYTES_PER_VOXEL, chunk_budget_mb=chunk_budget_mb)
    present = []
    for z0, z1 in plan:
        block, _ = read_slab(data, z0, z1)
        if block.size and int(block.min()) < 0:
            raise InputError(f"{name} has negative values (slices {z0}..{z1 - 1}); particle labels are >= 0 "
                             "(0 = background)")
        present.append(np.unique(block))
    values = np.union1d(np.zeros(1, np.int64), np.unique(np.concatenate(present)) if present else [0])
    return LabelSource(data, values.astype(np.int64), compact=False, depth=plan[0][1] - plan[0][0])


def dst_window(chunk_budget_mb, shape) -> int:
    """Slices of a destination window read at once for the look-ups of a source slab (half the budget)."""
    per_slice = max(8.0 * int(shape[1]) * int(shape[2]), 1.0)
    return max(1, int(budget_bytes(chunk_budget_mb) / 2 // per_slice))


def counts_and_sums(src: LabelSource) -> tuple[np.ndarray, np.ndarray]:
    """Voxel count and coordinate sums (z, y, x) of every compact label, slab by slab (exact integer sums)."""
    n_bins = src.n_bins
    count = np.zeros(n_bins, np.int64)
    sums = np.zeros((n_bins, 3))
    _, ny, nx = src.shape
    yy = np.broadcast_to(np.arange(ny, dtype=np.float64)[:, None], (ny, nx)).reshape(-1)
    xx = np.broadcast_to(np.arange(nx, dtype=np.float64)[None, :], (ny, nx)).reshape(-1)
    for z0, z1 in src.slabs():
        block = src.read(z0, z1)
        for k in range(block.shape[0]):
            s = block[k].reshape(-1)
            c = np.bincount(s, minlength=n_bins)
            count += c
            sums[:, 0] += (z0 + k) * c
            sums[:, 1] += np.bincount(s, weights=yy, minlength=n_bins)
            sums[:, 2] += np.bincount(s, weights=xx, minlength=n_bins)
    return count, sums


def centroids(src: LabelSource) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(present compact labels, voxel counts, centroids (n, 3) px)."""
    count, sums = counts_and_sums(src)
    present = np.flatnonzero(count[1:]) + 1
    return present, count[present], sums[present] / count[present][:, None]
