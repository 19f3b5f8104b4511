"""Input checks shared by the segmentation trainers and predictors."""

from __future__ import annotations

import numpy as np

from .._array import to_numpy
from .._validate import check_labels as _check_labels
from ..errors import InputError
from ..volume import Volume, normalise_voxel_size


def image_array(image, *, name: str = "image"):
    """The voxels of a Volume or array (numpy/dask kept as is), checked to be 2D or 3D numeric."""
    data = image.data if isinstance(image, Volume) else image
    if not hasattr(data, "shape") or not hasattr(data, "dtype"):
        data = np.asarray(data)
    if data.ndim not in (2, 3):
        raise InputError(f"{name} must be 2D (y, x) or 3D (z, y, x), got shape {tuple(data.shape)}")
    if not (np.issubdtype(data.dtype, np.number) or data.dtype == bool):
        raise InputError(f"{name} has dtype {data.dtype}, which is not numeric; give grey values")
    if any(int(s) == 0 for s in data.shape):
        raise InputError(f"{name} is empty (shape {tuple(data.shape)})")
    return data


def voxel_size_of(image, voxel_size_nm=None) -> tuple[float, float, float] | None:
    """Voxel size (z, y, x) in nm: explicit argument, else the Volume's if known, else None."""
    if voxel_size_nm is not None:
        return normalise_voxel_size(voxel_size_nm)
    if isinstance(image, Volume) and image.voxel_size_known:
        return image.voxel_size_nm
    return None


def check_labels(labels, image_shape, *, name: str = "labels",
                 need_classes: int = 2) -> tuple[np.ndarray, tuple[int, ...]]:
    """Validate training/scoring labels against their image; return them as integer numpy and their classes (> 0).

    The value checks are :func:`tomo4d._validate.check_labels` (one implementation for every stage);
    here: the shape (singleton axes may differ) and the classes present.

    Raises
    ------
    InputError
        Shape differs from the image, labels are not non-negative integers,
        nothing is labelled, or fewer than ``need_classes`` classes appear.
    """
    data = labels.data if isinstance(labels, Volume) else labels
    shp = tuple(getattr(data, "shape", np.shape(data)))
    if shp != tuple(image_shape):
        squeezed = tuple(s for s in shp if s != 1)
        if squeezed == tuple(s for s in image_shape if s != 1):
            data = to_numpy(data).reshape(image_shape)
    arr = _check_labels(name, data, shape=image_shape, role="segmentation labels are expected")
    classes = tuple(int(c) for c in np.unique(arr) if c != 0)
    if not classes:
        raise InputError(f"{name} contain no labelled voxels (all are 0 = unlabelled); label some voxels of "
                         "each class with 1, 2, ...")
    if len(classes) < need_classes:
        raise InputError(f"{name} contain only class {classes[0]}; label voxels of at least two classes "
                         "(e.g. particles = 1 and background = 2) so the classifier can tell them apart")
    return arr, classes


def label_dtype(classes) -> np.dtype:
    """Smallest unsigned dtype that holds every class value."""
    m = max(int(c) for c in classes)
    return np.dtype(np.uint8 if m < 256 else np.uint16 if m < 65536 else np.uint32)
