"""Chunked prediction for every segmentation model (pixel classifier and U-Net).

A model exposes ``classes``, ``halo`` (voxels of context along z, y, x),
``bytes_per_slice(ny, nx)`` and ``proba_slab(source, z0, z1)`` which reads
``source[z0 - halo : z1 + halo]`` itself.  The functions here walk the volume
in z-slabs sized from a memory budget, so only one slab (plus its halo) of
the input, of the features and of the probabilities is ever in memory.  The
input may be lazy (dask, zarr) and the output any array that accepts slice
assignment (numpy, ``numpy.memmap``, a zarr array), or a lazy dask array
(:func:`predict_lazy`) that :func:`tomo4d.io.save_volume` streams to disk.
"""

from __future__ import annotations

import logging

import numpy as np

from .._array import read_box
from .._validate import check_finite, check_finite_chunk, check_int
from ..errors import InputError
from ._common import image_array, label_dtype

log = logging.getLogger(__name__)

DEFAULT_SLAB_BYTES = 256 * 2**20


def _slab(model, shape, slab_depth, max_bytes) -> int:
    if slab_depth is not None:
        return int(min(check_int("slab_depth", slab_depth, minimum=1), shape[0]))
    per = max(model.bytes_per_slice(shape[1], shape[2]), 1)
    return int(max(1, min(shape[0], max_bytes // per)))


def _check_model(model, data) -> None:
    if data.ndim == 2 and getattr(model, "features", None) is not None and model.features.ndim == 3:
        raise InputError("this pixel classifier uses 3D features and needs a (z, y, x) volume, not a 2D image")


def _as3d(data):
    return data[None] if data.ndim == 2 else data


class _FiniteSource:
    """A lazy (z, y, x) source whose every read is checked for NaN/Inf (no extra pass over the volume)."""

    def __init__(self, data, name: str = "image"):
        self.data, self.name = data, name
        self.shape, self.dtype, self.ndim = tuple(data.shape), data.dtype, data.ndim

    def __getitem__(self, key):
        block = read_box(self.data, key)
        z0 = key.start if isinstance(key, slice) and key.start is not None else 0
        check_finite_chunk(self.name, block, z0)
        return block


def _source(data, name: str = "image"):
    """The 3D source of a prediction: numpy checked for NaN/Inf now, lazy input checked chunk by chunk."""
    src = _as3d(data)
    if isinstance(src, np.ndarray):
        check_finite(name, src)
        return src
    if not (np.issubdtype(src.dtype, np.floating) or np.issubdtype(src.dtype, np.complexfloating)):
        return src
    return _FiniteSource(src, name)


def predict_proba(model, image, *, slab_depth: int | None = None, max_slab_bytes: int = DEFAULT_SLAB_BYTES,
                  progress=None) -> np.ndarray:
    """Class probabilities of every voxel.

    Parameters
    ----------
    model : PixelClassifier or UNetSegmenter
        A trained model.
    image : Volume or array_like, shape (y, x) or (z, y, x)
        Grey values; may be lazy (read slab by slab, with the model's halo).
    slab_depth : int, optional
        z-slices per chunk; default from ``max_slab_bytes``.
    max_slab_bytes : int
        Working-memory budget of one chunk in bytes.
    progress : callable(done, total), optional
        Called after each slab with the number of z-slices done.

    Returns
    -------
    numpy.ndarray, float32, shape ``(C,) + image.shape``
        Channel c is the probability of class ``model.classes[c]``.
    """
    data = image_array(image)
    _check_model(model, data)
    src = _source(data)
    out = np.empty((len(model.classes),) + tuple(src.shape), np.float32)
    depth = _slab(model, src.shape, slab_depth, max_slab_bytes)
    for z0 in range(0, src.shape[0], depth):
        z1 = min(z0 + depth, src.shape[0])
        out[:, z0:z1] = model.proba_slab(src, z0, z1)
        if progress is not None:
            progress(z1, src.shape[0])
    return out[:, 0] if data.ndim == 2 else out


def predict_labels(model, image, *, out=None, slab_depth: int | None = None,
                   max_slab_bytes: int = DEFAULT_SLAB_BYTES, progress=None):
    """Most probable class of every voxel (label values of ``model.classes``).

    Parameters
    ----------
    model, image, slab_depth, max_slab_bytes, progress
        As in :func:`predict_proba`.
    out : array-like, optional
        Where to write the labels (same shape as ``image``; numpy, memmap or a
        zarr array).  Default: a new numpy array of the smallest unsigned dtype.

    Returns
    -------
    array
        ``out``, filled.
    """
    data = image_array(image)
    _check_model(model, data)
    src = _source(data)
    classes = np.asarray(model.classes, dtype=label_dtype(model.classes))
    if out is None:
        out = np.empty(tuple(data.shape), classes.dtype)
    elif tuple(out.shape) != tuple(data.shape):
        raise InputError(f"out has shape {tuple(out.shape)}, the image {tuple(data.shape)}; give an output of "
                         "the image's shape")
    target = out[None] if (data.ndim == 2 and isinstance(out, np.ndarray)) else out
    depth = _slab(model, src.shape, slab_depth, max_slab_bytes)
    for z0 in range(0, src.shape[0], depth):
        z1 = min(z0 + depth, src.shape[0])
        p = model.proba_slab(src, z0, z1)
        target[z0:z1] = classes[np.argmax(p, axis=0)]
        if progress is not None:
            progress(z1, src.shape[0])
    return out


def predict_lazy(model, image, *, probabilities: bool = False, slab_depth: int | None = None,
                 max_slab_bytes: int = DEFAULT_SLAB_BYTES):
    """A lazy dask array of labels (or probabilities) computed slab by slab on demand.

    Pass it to :func:`tomo4d.io.save_volume` to segment a volume larger than
    memory straight to disk: each z-chunk reads only its slab and halo of the
    input.

    Returns
    -------
    dask.array.Array
        Labels, shape ``(z, y, x)``, z-chunked, or with ``probabilities``
        float32 of shape ``(C, z, y, x)``.
    """
    import dask
    import dask.array as da

    data = image_array(image)
    _check_model(model, data)
    src = _source(data)
    depth = _slab(model, src.shape, slab_depth, max_slab_bytes)
    classes = np.asarray(model.classes, dtype=label_dtype(model.classes))
    n_classes = len(classes)

    def block(z0, z1):
        p = model.proba_slab(src, z0, z1)
        return p if probabilities else classes[np.argmax(p, axis=0)]

    parts = []
    for z0 in range(0, src.shape[0], depth):
        z1 = min(z0 + depth, src.shape[0])
        shape = ((n_classes,) if probabilities else ()) + (z1 - z0,) + tuple(src.shape[1:])
        dtype = np.float32 if probabilities else classes.dtype
        parts.append(da.from_delayed(dask.delayed(block, pure=False)(z0, z1), shape=shape, dtype=dtype))
    arr = da.concatenate(parts, axis=1 if probabilities else 0)
    if data.ndim == 2:
        arr = arr[:, 0] if probabilities else arr[0]
    return arr


__all__ = ["predict_proba", "predict_labels", "predict_lazy"]
