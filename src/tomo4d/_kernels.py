"""Compiled (numba) helpers shared by the kernels of several packages (imported only by those kernels)."""

from __future__ import annotations

from numba import njit


@njit(cache=True, inline="always")
def mirror_index(i, n):
    """Index ``i`` reflected into ``0 .. n - 1`` about the edge voxels' centres (scipy's ``mirror`` mode)."""
    if n == 1:
        return 0
    period = 2 * n - 2
    i = abs(i) % period
    if i >= n:
        i = period - i
    return i
