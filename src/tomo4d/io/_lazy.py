"""Lazy array adaptors: turn a "read these z-slices" function into a dask array."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .._array import slab_depth
from .._validate import show
from ..errors import InputError


def _normalise_key(key, ndim: int):
    if not isinstance(key, tuple):
        key = (key,)
    if any(k is Ellipsis for k in key):
        i = key.index(Ellipsis)
        key = key[:i] + (slice(None),) * (ndim - len(key) + 1) + key[i + 1:]
    return key + (slice(None),) * (ndim - len(key))


class ZSliceArray:
    """Array-like over a volume stored slice by slice along z.

    ``read(indices)`` must return a numpy array of shape ``(len(indices), y, x)``.
    Only the z-slices asked for are read, which is what makes
    :func:`dask.array.from_array` on it lazy and chunked.
    """

    def __init__(self, read: Callable[[list[int]], np.ndarray], shape, dtype):
        self._read = read
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.ndim = 3

    def __getitem__(self, key):
        zkey, *rest = _normalise_key(key, 3)
        if isinstance(zkey, slice):
            idx = list(range(*zkey.indices(self.shape[0])))
            squeeze = False
        else:
            z = int(zkey)
            if z < 0:
                z += self.shape[0]
            if not 0 <= z < self.shape[0]:
                raise IndexError(f"z index {zkey} out of range for {self.shape[0]} slices")
            idx, squeeze = [z], True
        if not idx:
            out = np.empty((0,) + self.shape[1:], self.dtype)
        else:
            out = np.asarray(self._read(idx)).reshape((len(idx),) + self.shape[1:])
        out = out[(slice(None), *rest)]
        return out[0] if squeeze else out


def resolve_chunks(chunks, shape, dtype, *, native=None):
    """Turn the user's ``chunks`` argument into an explicit dask chunk shape.

    ``"auto"`` uses ``native`` (a storage chunk shape) when given, enlarged
    along z to about 64 MiB slabs for slice-based storage; an int is a cube
    edge; a tuple is used as is (``-1`` meaning the whole axis).
    """
    if chunks is None or chunks == "auto":
        if native is not None:
            return tuple(int(c) for c in native)
        depth = slab_depth(shape, np.dtype(dtype).itemsize)
        return (depth, shape[1], shape[2])
    if isinstance(chunks, (bool, np.bool_, str, bytes)):
        raise InputError(f"chunks={show(chunks)} is not understood; use 'auto', an int or a (z, y, x) tuple")
    if isinstance(chunks, (int, np.integer)):
        if chunks <= 0:
            raise InputError(f"chunks={show(chunks)} must be positive, 'auto' or a (z, y, x) tuple")
        return tuple(min(int(chunks), s) for s in shape)
    try:
        c = tuple(int(v) for v in chunks)
    except (TypeError, ValueError):
        raise InputError(f"chunks={show(chunks)} is not understood; use 'auto', an int or a (z, y, x) tuple") from None
    if len(c) != 3 or any(v == 0 or v < -1 for v in c):
        raise InputError(f"chunks={show(chunks)} must have three positive entries (or -1 for a whole axis)")
    return tuple(s if v == -1 else min(v, s) for v, s in zip(c, shape))


def lazy_from_slices(read, shape, dtype, chunks="auto", *, name: str):
    """Dask array reading z-slices through ``read`` on demand."""
    import dask.array as da

    arr = ZSliceArray(read, shape, dtype)
    c = resolve_chunks(chunks, arr.shape, arr.dtype)
    return da.from_array(arr, chunks=c, asarray=False, fancy=False, name=name, meta=np.empty((0, 0, 0), arr.dtype))
