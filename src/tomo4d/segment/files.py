"""Files of the segmentation stage: models, images (2D or 3D) and label volumes.

Label volumes are plain integer arrays (0 = background/unlabelled), written
as TIFF or (OME-)Zarr with :func:`tomo4d.io.save_volume`, so napari opens
them as a Labels layer.  A 2D TIFF (e.g. a mask drawn in Fiji) is read as a
one-slice volume ``(1, y, x)``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import FormatError, InputError
from ..volume import Volume, VolumeMetadata

_SAFETENSORS_MAX_HEADER = 100 * 2**20


def model_kind(path) -> str:
    """``"rf"`` (pixel classifier, ``.npz``), ``"unet"`` (``.safetensors``) or ``"steps"`` (folder)."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"model {str(p)!r} does not exist; check the path")
    if p.is_dir():
        if (p / "index.json").is_file():
            return "steps"
        raise FormatError(f"{str(p)!r} is a folder without index.json; not a tomo4d model")
    with open(p, "rb") as fh:
        head = fh.read(9)
    if head[:4] == b"PK\x03\x04":
        return "rf"
    if len(head) == 9:
        n = int.from_bytes(head[:8], "little")
        if 0 < n < _SAFETENSORS_MAX_HEADER and head[8:9] == b"{":
            return "unet"
    raise FormatError(f"{str(p)!r} is neither a tomo4d pixel classifier (.npz) nor a U-Net (.safetensors)")


def load_model(path, *, device: str | None = None):
    """Load a pixel classifier, a U-Net or a folder of per-time-step models (no pickle).

    Parameters
    ----------
    path : path-like
        Written by ``.save()`` of :class:`PixelClassifier`, :class:`UNetSegmenter`
        or :class:`StepModels`.
    device : str, optional
        U-Net only: ``"cpu"`` or ``"cuda"`` (default: the GPU when present).
    """
    kind = model_kind(path)
    if kind == "rf":
        from .forest import PixelClassifier

        return PixelClassifier.load(path)
    if kind == "unet":
        from .unet import UNetSegmenter

        return UNetSegmenter.load(path, device=device)
    from .unet import StepModels

    return StepModels.load(path)


def _is_2d_tiff(p: Path) -> bool:
    if p.suffix.lower() not in (".tif", ".tiff") or not p.is_file():
        return False
    import tifffile

    try:
        with tifffile.TiffFile(p) as tif:
            shape = tif.series[0].shape
            n_pages = len(tif.pages)
    except Exception:
        return False
    return len([s for s in shape if s != 1]) == 2 and n_pages == 1


def read_image(path, *, voxel_size_nm=None) -> Volume:
    """Open a 3D volume (lazy, any tomo4d format) or a 2D TIFF as a ``(1, y, x)`` Volume."""
    from ..io import open_image, open_volume

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
    vol = read_image(path)
    arr = vol.numpy()
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
    from ..io import save_volume

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


__all__ = ["model_kind", "load_model", "read_image", "read_labels", "save_labels"]
