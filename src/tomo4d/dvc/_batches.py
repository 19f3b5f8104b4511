"""Node batches: a correlation solved block by block of the node grid, peak memory set by a budget.

Each batch is a block of the node grid.  It reads from the (possibly lazy: dask, Zarr, HDF5) volumes
only the box that holds its reference windows and the images of those windows in the deformed volume,
widened by everything a node can reach while it is solved:

- the initial guess's warped window, plus ``max_displacement_px`` (a node moving farther is
  ``DIVERGED``), plus the integer search radius, plus a quarter of the half-window for a change of F;
- the cubic B-spline's support (2 voxels) and :data:`SPLINE_MARGIN` voxels over which the spline
  prefilter (a recursive filter, pole -0.268) has decayed below float32 precision;
- one voxel for the reference gradients;
- the pre-smoothing's halo (read around the box, smoothed, trimmed: exact inside).

Inside the box every value the kernels read equals the whole-volume value: exactly for the
pre-smoothed volumes, the mask and the gradients, and to float32 rounding for the B-spline coefficients
(0.268^12 ~ 1e-7 relative).  A node whose final window still reaches the box's edge (inside the volume)
is solved again in a box around its own solution.  The batch's working arrays cost about
:data:`BYTES_PER_VOXEL` bytes per voxel of its box; blocks are halved until the largest box fits
``chunk_budget_mb`` (a single node's box that does not fit is solved anyway, and counted).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from .._array import as_float32, is_lazy, read_box
from .._validate import check_finite_chunk

#: working bytes per voxel of a batch's box: reference, deformed and B-spline coefficients (3 x 4),
#: gradients (12), mask (1), and the transient copies of reading, smoothing and filtering (~11)
BYTES_PER_VOXEL = 40
#: voxels beyond the farthest sample over which the spline prefilter's boundary effect has decayed
SPLINE_MARGIN = 12

_CORNERS = np.array([[a, b, c] for a in (-1, 1) for b in (-1, 1) for c in (-1, 1)], float)


@dataclass(frozen=True, eq=False)
class Sources:
    """The volumes of one correlation as given (numpy or lazy, any numeric dtype), read box by box."""

    reference: object
    deformed: object
    mask: object | None
    smooth_sigma_px: float

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(v) for v in self.reference.shape)

    @property
    def lazy(self) -> bool:
        return is_lazy(self.reference) or is_lazy(self.deformed)

    def _halo(self) -> int:
        # scipy's gaussian_filter radius: int(truncate * sigma + 0.5), truncate 4
        return int(4.0 * self.smooth_sigma_px + 0.5) if self.smooth_sigma_px > 0 else 0

    def _read_image(self, source, lo, hi, name: str) -> np.ndarray:
        shape = np.asarray(self.shape)
        h = self._halo()
        elo, ehi = np.maximum(lo - h, 0), np.minimum(hi + h, shape)
        box = tuple(slice(int(a), int(b)) for a, b in zip(elo, ehi))
        a = read_box(source, box)
        if is_lazy(source):
            check_finite_chunk(name, a, int(elo[0]))
        a = as_float32(a)
        if h:
            from scipy import ndimage

            a = ndimage.gaussian_filter(a, self.smooth_sigma_px)
        trim = tuple(slice(int(a0 - e0), int(a0 - e0 + (b0 - a0))) for a0, b0, e0 in zip(lo, hi, elo))
        return np.ascontiguousarray(a[trim])

    def read(self, lo, hi) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(reference, deformed, mask)`` of the box ``[lo, hi)``: float32, pre-smoothed as the whole
        volume would be, and the mask as bool (all True without one)."""
        lo, hi = np.asarray(lo, np.int64), np.asarray(hi, np.int64)
        ref = self._read_image(self.reference, lo, hi, "reference")
        dfm = self._read_image(self.deformed, lo, hi, "deformed")
        box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
        if self.mask is None:
            msk = np.ones(ref.shape, np.bool_)
        else:
            msk = np.ascontiguousarray(read_box(self.mask, box), np.bool_)
        return ref, dfm, msk

    def slabs(self, depth: int) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        """Pre-smoothed reference and mask, slab by slab along z (``depth`` slices each)."""
        shape = np.asarray(self.shape)
        for z0 in range(0, int(shape[0]), max(int(depth), 1)):
            lo = np.array([z0, 0, 0])
            hi = np.array([min(z0 + depth, shape[0]), shape[1], shape[2]])
            ref = self._read_image(self.reference, lo, hi, "reference")
            if self.mask is None:
                yield ref, None
            else:
                m = self.mask[int(lo[0]):int(hi[0])]
                yield ref, np.asarray(m.compute() if is_lazy(m) else m, np.bool_)


def reference_std(sources: Sources, budget_bytes: float) -> float:
    """Standard deviation of the whole pre-smoothed reference, accumulated slab by slab in float64."""
    shape = sources.shape
    depth = max(int(budget_bytes // (BYTES_PER_VOXEL * shape[1] * shape[2])), 1)
    n, s, s2 = 0, 0.0, 0.0
    for ref, _ in sources.slabs(depth):
        r = ref.astype(np.float64)
        n += r.size
        s += float(r.sum())
        s2 += float(np.square(r).sum())
    mean = s / max(n, 1)
    return float(np.sqrt(max(s2 / max(n, 1) - mean * mean, 0.0)))


def node_boxes(positions, phis, half_window, shape, *, reach_deformed: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-node box ``(lo, hi)`` (N, 3): the reference window plus one voxel, and the warped window
    of ``phis`` plus ``reach_deformed``, clipped to the volume."""
    hw = np.asarray(half_window, float)
    pos = np.asarray(positions, float)
    warped = np.einsum("nij,kj->nki", phis[:, :3, :3], _CORNERS * hw) + (pos + phis[:, :3, 3])[:, None, :]
    lo = np.minimum(pos - hw - 1, warped.min(1) - reach_deformed)
    hi = np.maximum(pos + hw + 2, warped.max(1) + reach_deformed + 1)
    lo = np.clip(np.floor(np.nan_to_num(lo, nan=0.0)), 0, None).astype(np.int64)
    hi = np.minimum(np.ceil(np.nan_to_num(hi, nan=np.inf, posinf=1e12)), np.asarray(shape)).astype(np.int64)
    return lo, hi


@dataclass(frozen=True)
class Batch:
    """A block of nodes (indices into the grid's node list) and the box ``[lo, hi)`` it reads."""

    nodes: np.ndarray
    lo: np.ndarray
    hi: np.ndarray

    @property
    def voxels(self) -> int:
        return int(np.prod(self.hi - self.lo))


def _blocks(grid_shape, block) -> Iterator[np.ndarray]:
    ids = np.arange(int(np.prod(grid_shape))).reshape(tuple(grid_shape))
    for a in range(0, grid_shape[0], block[0]):
        for b in range(0, grid_shape[1], block[1]):
            for c in range(0, grid_shape[2], block[2]):
                yield ids[a:a + block[0], b:b + block[1], c:c + block[2]].ravel()


def plan_batches(lo: np.ndarray, hi: np.ndarray, grid_shape, *, budget_bytes: float) -> list[Batch]:
    """Blocks of the node grid whose boxes (union of their nodes' boxes) fit ``budget_bytes``: the block
    starts as the whole grid and its longest side (in voxels of box) is halved until the largest fits."""
    gs = [int(v) for v in grid_shape]
    block = list(gs)
    while True:
        batches = [Batch(ids, lo[ids].min(0), hi[ids].max(0)) for ids in _blocks(gs, block)]
        worst = max(batches, key=lambda b: b.voxels)
        if worst.voxels * BYTES_PER_VOXEL <= budget_bytes or all(v == 1 for v in block):
            return batches
        ext = (worst.hi - worst.lo).astype(float)
        ext[[v == 1 for v in block]] = -1.0
        a = int(np.argmax(ext))
        block[a] = (block[a] + 1) // 2
