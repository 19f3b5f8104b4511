"""Small array helpers shared by every stage: float policy, chunk iteration and block binning."""

from __future__ import annotations

import weakref
from collections.abc import Iterator

import numpy as np

from .errors import InputError


def as_float32(array) -> np.ndarray:
    """Return ``array`` as float32 (the one compute precision of tomo4d).

    float32 input is returned without a copy; integers and other floats are
    converted.  float64 is demoted on purpose: every algorithm in tomo4d is
    written to be accurate in float32.
    """
    a = np.asarray(array)
    if a.dtype == np.float32:
        return a
    if not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
        raise InputError(f"array of dtype {a.dtype} is not numeric; give a numeric image")
    return a.astype(np.float32)


def read_only(value, *, dtype=None, copy: bool = True) -> np.ndarray:
    """``value`` as an array that cannot be written: what a frozen result holds (results are never modified after
    construction).  A writeable array is copied (``copy=True``: the caller's array cannot change the result either;
    for node-sized arrays) or viewed (``copy=False``: no second copy of a volume; the caller's own array, if kept,
    still can); an array that is already read-only is kept as it is."""
    a = np.asarray(value, dtype=dtype)
    if not a.flags.writeable:
        return a
    a = a.copy() if copy else a.view()
    a.setflags(write=False)
    return a


def is_lazy(array) -> bool:
    """True for dask arrays (anything with a ``dask`` graph), False for numpy."""
    return hasattr(array, "dask") and hasattr(array, "compute")


#: dask array name -> the store reader it was made from (:func:`lazy_from_reader`); weak: gone with the reader
_READERS: weakref.WeakValueDictionary = weakref.WeakValueDictionary()


def lazy_from_reader(reader, *, chunks, name: str):
    """``dask.array.from_array(reader)`` whose boxes :func:`read_box` reads from ``reader`` itself.

    For readers that are safe to call from several threads at once (Zarr): the io layer's stores.
    """
    import dask.array as da

    arr = da.from_array(reader, chunks=chunks, asarray=False, fancy=False, name=name,
                        meta=np.empty((0,) * len(reader.shape), reader.dtype))
    _READERS[arr.name] = reader
    return arr


def read_box(data, key) -> np.ndarray:
    """``data[key]`` as numpy.  A lazy volume opened from a store is read straight from the store: building,
    optimising and running a dask graph for one box cost 3.5x the read itself (35 vs 10 ms for a 60^3 box of a
    (4, 256, 256)-chunked Zarr label volume, measured); any other lazy array goes through dask."""
    if is_lazy(data):
        reader = _READERS.get(getattr(data, "name", None))
        if reader is not None and tuple(reader.shape) == tuple(data.shape):
            return np.asarray(reader[key])
        return to_numpy(data[key])
    return np.asarray(data[key])


def to_numpy(array) -> np.ndarray:
    """Materialise a numpy or dask array as numpy (with the scheduler dask would choose, :func:`local_scheduler`)."""
    if is_lazy(array):
        return np.asarray(array.compute(scheduler=local_scheduler()))
    return np.asarray(array)


def local_scheduler():
    """The scheduler of a dask array's ``compute`` here: ``None`` (dask decides) when dask.distributed is imported
    or a scheduler is configured (``dask.config``), else dask's threaded scheduler.

    That is what dask would choose, minus its search for a distributed client, which imports dask.distributed
    (~1 s of CPU, on the first compute of every process, e.g. ``tomo4d info``): without the module imported no
    client can exist.
    """
    import sys

    if "distributed" in sys.modules:
        return None
    import dask

    if dask.config.get("scheduler", None) is not None:
        return None
    from dask.threaded import get

    return get


def slab_bounds(n: int, step: int) -> Iterator[tuple[int, int]]:
    """Yield ``(start, stop)`` pairs covering ``range(n)`` in steps of ``step``."""
    step = max(int(step), 1)
    for start in range(0, n, step):
        yield start, min(start + step, n)


def iter_slabs(array, step: int) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(z_start, slab)`` numpy slabs of at most ``step`` slices along axis 0.

    Works for numpy and dask arrays; only one slab is in memory at a time,
    which is what makes conversions of volumes larger than memory possible.
    """
    for start, stop in slab_bounds(array.shape[0], step):
        yield start, read_box(array, slice(start, stop))


def prefetched_slabs(array, step: int) -> Iterator[tuple[int, np.ndarray]]:
    """:func:`iter_slabs`, the next slab read on a helper thread while the caller works on this one.

    For writers: decoding (reading) the next slab overlaps compressing and writing the current one; at most
    two slabs are in memory.  An error while reading is raised where that slab is asked for.
    """
    from concurrent.futures import ThreadPoolExecutor

    bounds = list(slab_bounds(array.shape[0], step))
    if len(bounds) < 2:
        yield from iter_slabs(array, step)
        return
    with ThreadPoolExecutor(1, thread_name_prefix="tomo4d-read") as pool:
        nxt = pool.submit(lambda b: read_box(array, slice(b[0], b[1])), bounds[0])
        for k, (start, _) in enumerate(bounds):
            slab = nxt.result()
            if k + 1 < len(bounds):
                nxt = pool.submit(lambda b: read_box(array, slice(b[0], b[1])), bounds[k + 1])
            yield start, slab
            del slab


def slab_depth(shape, itemsize: int, *, target_bytes: int = 64 * 2**20, multiple: int = 1) -> int:
    """Number of z-slices whose bytes are close to ``target_bytes`` (a multiple of ``multiple``)."""
    per_slice = max(int(np.prod(shape[1:], dtype=np.int64)) * int(itemsize), 1)
    depth = max(target_bytes // per_slice, 1)
    if multiple > 1:
        depth = max((depth // multiple) * multiple, multiple)
    return int(min(depth, max(shape[0], 1)))


def bin_volume(a: np.ndarray, b: int) -> np.ndarray:
    """Block-mean binning by ``b`` along every axis (trailing voxels that do not fill a block are dropped).

    ``b = 1`` returns ``a`` itself; otherwise the result is float32 of shape ``a.shape // b``.
    """
    if b == 1:
        return a
    s = [n // b for n in a.shape]
    c = a[: s[0] * b, : s[1] * b, : s[2] * b]
    return c.reshape(s[0], b, s[1], b, s[2], b).mean(axis=(1, 3, 5), dtype=np.float32)
