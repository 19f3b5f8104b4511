"""The interface step fit of :mod:`tomo4d.quantify.thickness`, one z-slice at a time.

Per (y, x) column, the interface index ``k`` (between voxels ``k - 1`` and ``k``) maximises the prefix sum
``P(k) = score[0] + ... + score[k - 1]`` (float64, added in z order), searched in ``[start, nz]`` when a
``start`` map is given (there as ``P(k) - P(start)``); the result is the middle of the plateau of positions
within ``tol = 1e-9 max(1, max|score|)`` of the maximum.  Two passes over the score (the maximum, then the
plateau's ends); each keeps only ``(ny, nx)`` maps, so the same code serves a whole volume
(:func:`~tomo4d.quantify.electrode_thickness`) and a volume read slab by slab
(:func:`~tomo4d.quantify.chunked.electrode_thickness_chunked`), with bit-identical results.

One slice at a time instead of ``np.cumsum(axis=0)`` over the volume and ``argmax`` of a (nz, ny, nx) mask:
the same float64 additions in the same order.  On a 1024 x 256 x 256 column block of the 1024^3 benchmark's
segmentation (one thread) the cumsum along the slow axis took 10.4 of the stage's 26.4 CPU s; this takes 0.9
(benchmarks/RESULTS.md "Thickness step fit").
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np

#: ``slabs()`` yields ``(z0, score)``: a float32 (n, ny, nx) score slab starting at slice z0, in z order
Slabs = Callable[[], Iterable[tuple[int, np.ndarray]]]


class _Prefix:
    """The running prefix sum of one pass and its value at each k (``-inf`` below ``start``)."""

    def __init__(self, ny_nx, start):
        self.carry = np.zeros(ny_nx, np.float64)
        self.start = start
        self.base = np.zeros(ny_nx, np.float64) if start is not None else None

    def first(self) -> np.ndarray:
        if self.start is None:
            return self.carry.copy()
        return np.where(self.start <= 0, 0.0, -np.inf)

    def step(self, k: int, s_k: np.ndarray) -> np.ndarray:
        """P(k) after adding slice ``k - 1``'s score ``s_k``."""
        np.add(self.carry, s_k, out=self.carry)
        if self.start is None:
            return self.carry
        np.copyto(self.base, self.carry, where=self.start == k)
        return np.where(self.start <= k, self.carry - self.base, -np.inf)


def step_fit(slabs: Slabs, ny_nx, start: np.ndarray | None = None, *,
             threads: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Interface position (voxel units, ``k - 0.5``, plateau centre) and "found" (maximum > tol) per column.

    Columns are independent: the rows are cut into ``threads`` bands walked side by side (numpy releases the
    GIL), each slab handed to every band; default :func:`tomo4d.threads` / the CPUs this process may use.
    """
    from concurrent.futures import ThreadPoolExecutor

    from .._threads import resolve_threads

    ny, nx = (int(n) for n in ny_nx)
    n = max(1, min(resolve_threads(threads), ny))
    bands = [(ny * i // n, ny * (i + 1) // n) for i in range(n)]
    with ThreadPoolExecutor(n, thread_name_prefix="tomo4d-stepfit") as ex:
        best, amax = _maximum(ex, slabs, bands, (ny, nx), start)
        tol = 1e-9 * max(1.0, amax)
        first, last = _plateau(ex, slabs, bands, (ny, nx), start, best - tol)
    return 0.5 * (first + last) - 0.5, best > tol


def _prefixes(bands, shape, start) -> list[_Prefix]:
    return [_Prefix((b1 - b0, shape[1]), None if start is None else start[b0:b1]) for b0, b1 in bands]


def _each_band(ex, fn, bands) -> list:
    return [f.result() for f in [ex.submit(fn, i, b0, b1) for i, (b0, b1) in enumerate(bands)]]


def _maximum(ex, slabs, bands, shape, start) -> tuple[np.ndarray, float]:
    """Pass 1: the largest P(k) per column and the largest |score|."""
    pres = _prefixes(bands, shape, start)
    best = np.concatenate([p.first() for p in pres])
    amax = 0.0
    for z0, s in slabs():
        def walk(i, b0, b1, z0=z0, s=s):
            out = best[b0:b1]
            for j in range(s.shape[0]):
                np.maximum(out, pres[i].step(z0 + 1 + j, s[j, b0:b1]), out=out)
            return float(np.abs(s[:, b0:b1]).max(initial=0.0))

        amax = max([amax, *_each_band(ex, walk, bands)])
    return best, amax


def _plateau(ex, slabs, bands, shape, start, floor) -> tuple[np.ndarray, np.ndarray]:
    """Pass 2: the first and last k with P(k) >= ``floor`` per column."""
    pres = _prefixes(bands, shape, start)
    at = np.concatenate([p.first() for p in pres]) >= floor
    first = np.where(at, 0, -1)
    last = first.copy()
    for z0, s in slabs():
        def walk(i, b0, b1, z0=z0, s=s):
            f, la, fl = first[b0:b1], last[b0:b1], floor[b0:b1]
            for j in range(s.shape[0]):
                k = z0 + 1 + j
                hit = pres[i].step(k, s[j, b0:b1]) >= fl
                np.copyto(f, k, where=hit & (f < 0))
                np.copyto(la, k, where=hit)

        _each_band(ex, walk, bands)
    return first, last
