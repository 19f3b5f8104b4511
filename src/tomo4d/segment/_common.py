"""Input checks shared by the segmentation trainers and predictors."""

from __future__ import annotations

import numpy as np

from .._array import to_numpy
from ..errors import InputError
from ..volume import Volume


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
        from ..volume import normalise_voxel_size

        return normalise_voxel_size(voxel_size_nm)
    if isinstance(image, Volume) and image.voxel_size_known:
        return image.voxel_size_nm
    return None


def check_labels(labels, image_shape, *, name: str = "labels",
                 need_classes: int = 2) -> tuple[np.ndarray, tuple[int, ...]]:
    """Validate a label image against its image; return it as integer numpy and its classes (> 0).

    Raises
    ------
    InputError
        Shape differs from the image, labels are not non-negative integers,
        nothing is labelled, or fewer than ``need_classes`` classes appear.
    """
    data = labels.data if isinstance(labels, Volume) else labels
    arr = to_numpy(data)
    if tuple(arr.shape) != tuple(image_shape):
        squeezed = tuple(s for s in arr.shape if s != 1)
        if squeezed == tuple(s for s in image_shape if s != 1):
            arr = arr.reshape(image_shape)
        else:
            raise InputError(
                f"{name} has shape {tuple(arr.shape)} but the image has shape {tuple(image_shape)}; "
                f"give {name} of exactly the image's shape (0 = unlabelled, 1, 2, ... = classes)"
            )
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    if not np.issubdtype(arr.dtype, np.integer):
        if np.issubdtype(arr.dtype, np.floating) and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
            arr = arr.astype(np.int64)
        else:
            raise InputError(f"{name} has dtype {arr.dtype} with non-integer values; labels must be integers "
                             "(0 = unlabelled, 1, 2, ... = classes)")
    if arr.size and arr.min() < 0:
        raise InputError(f"{name} contains negative values (min {int(arr.min())}); use 0 for unlabelled and "
                         "1, 2, ... for classes")
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
