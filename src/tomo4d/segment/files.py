"""Files of the segmentation stage: images (2D or 3D) and label volumes (models: :mod:`~tomo4d.segment.models`).

Label volumes are plain integer arrays (0 = background/unlabelled), written
as TIFF or (OME-)Zarr with :func:`tomo4d.io.save_volume`, so napari opens
them as a Labels layer.  A 2D TIFF (e.g. a mask drawn in Fiji) is read as a
one-slice volume ``(1, y, x)``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile

from .._array import to_numpy
from ..errors import InputError
from ..io import open_image, open_volume, save_volume
from ..volume import Volume, VolumeMetadata


def _is_2d_tiff(p: Path) -> bool:
    if p.suffix.lower() not in (".tif", ".tiff") or not p.is_file():
        return False
    try:
        with tifffile.TiffFile(p) as tif:
            shape = tif.series[0].shape
            n_pages = len(tif.pages)
    except Exception:
        return False
    return len([s for s in shape if s != 1]) == 2 and n_pages == 1


def read_image(path, *, voxel_size_nm=None) -> Volume:
    """Open a 3D volume (lazy, any tomo4d format) or a 2D TIFF as a ``(1, y, x)`` Volume."""
    p = Path(path)
    if _is_2d_tiff(p):
        img = open_image(p)
        return Volume(img[None], voxel_size_nm, VolumeMetadata(name=p.stem, provenance=(f"read 2D tiff {p}",)),
                      source=p)
    return open_volume(p, voxel_size_nm=voxel_size_nm)


def read_labels(path) -> np.ndarray:
    """Read a label image/volume (TIFF, Zarr, ...) as a numpy integer array ``(z, y, x)``.

    A 2D file gives ``(1, y, x)``.  Binary masks stored as {0, 255} stay as
    they are (map them with :func:`numpy.where` if needed).
    """
    return _as_label_array(read_image(path).numpy(), path)


def read_label_planes(path, axis: int, indices) -> tuple[tuple[int, int, int], np.ndarray]:
    """``(shape, planes)``: the shape of the label volume ``path`` and only its planes ``indices`` along
    ``axis`` (read lazily, checked as :func:`read_labels` checks a whole volume): the labelled slices of a
    1024^3 label file without loading its 1 GiB."""
    vol = read_image(path)
    key = [slice(None)] * 3
    key[int(axis)] = [int(i) for i in indices]
    planes = vol.data[tuple(key)]
    return tuple(int(v) for v in vol.shape), _as_label_array(np.asarray(to_numpy(planes)), path)


def _as_label_array(arr: np.ndarray, path) -> np.ndarray:
    if not np.issubdtype(arr.dtype, np.integer):
        if np.issubdtype(arr.dtype, np.floating) and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)) \
                and arr.min() >= 0:
            arr = arr.astype(np.int64)
            m = int(arr.max()) if arr.size else 0
            arr = arr.astype(np.uint8 if m < 256 else np.uint16 if m < 65536 else np.uint32)
        else:
            raise InputError(f"labels {str(path)!r} have dtype {arr.dtype} with non-integer values; give an "
                             "integer label image (0 = unlabelled, 1, 2, ... classes)")
    if arr.size and arr.min() < 0:
        raise InputError(f"labels {str(path)!r} contain negative values; use 0, 1, 2, ...")
    return arr


def save_labels(labels, path, *, voxel_size_nm=None, name: str = "labels", overwrite: bool = False,
                progress=None) -> Path:
    """Write an integer label volume (TIFF or Zarr; napari-compatible), atomically.

    Parameters
    ----------
    labels : array_like or dask array of int, (y, x) or (z, y, x)
    path : path-like
        ``.tif``/``.tiff`` or ``.zarr``/``.ome.zarr`` (any :func:`tomo4d.io.save_volume` format).
    voxel_size_nm : float or (z, y, x), optional
    """
    data = labels.data if isinstance(labels, Volume) else labels
    if not hasattr(data, "dtype"):
        data = np.asarray(data)
    if not (np.issubdtype(data.dtype, np.integer) or data.dtype == bool):
        raise InputError(f"labels have dtype {data.dtype}; give integer labels")
    if data.dtype == bool:
        data = data.astype(np.uint8)
    if data.ndim == 2:
        data = data[None]
    vs = voxel_size_nm
    if vs is None and isinstance(labels, Volume):
        vs = labels.voxel_size_nm
    vol = Volume(data, vs, VolumeMetadata(name=name, modality="label"))
    return save_volume(vol, path, overwrite=overwrite, progress=progress)


__all__ = ["read_image", "read_label_planes", "read_labels", "save_labels"]
