"""Input handling shared by the quality metrics: arrays, voxel sizes, masks."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .._array import as_float32, to_numpy
from .._validate import check_finite, check_int, check_number, show
from ..errors import InputError
from ..volume import Volume, normalise_voxel_size


def image_array(obj, name: str) -> np.ndarray:
    """``obj`` (numpy, dask, Volume) as a finite float32 array of 2 or 3 dimensions."""
    data = obj.data if isinstance(obj, Volume) else obj
    try:
        a = as_float32(to_numpy(data))
    except InputError as exc:
        raise InputError(f"{name}: {exc}") from None
    if a.ndim == 3 and a.shape[0] == 1 and not isinstance(obj, Volume):
        pass  # a single-slice volume stays 3D
    if a.ndim not in (2, 3):
        raise InputError(f"{name} has shape {a.shape}; give a 2D (y, x) slice or a 3D (z, y, x) volume")
    if a.size == 0 or min(a.shape) == 0:
        raise InputError(f"{name} is empty (shape {a.shape}); give a non-empty image")
    check_finite(name, a)
    return a


def image_pair(reference, image, *, names=("reference", "image")) -> tuple[np.ndarray, np.ndarray]:
    """Two float32 arrays of the same shape (validated)."""
    r = image_array(reference, names[0])
    i = image_array(image, names[1])
    if r.shape != i.shape:
        raise InputError(f"{names[0]} has shape {r.shape} but {names[1]} has shape {i.shape}; "
                         "resample or crop them to the same grid (register them first)")
    return r, i


def mask_array(mask, shape: tuple[int, ...], name: str = "mask") -> np.ndarray | None:
    """Validate a boolean mask of ``shape`` (a 2D mask broadcasts over the slices of a volume)."""
    if mask is None:
        return None
    m = to_numpy(mask.data if isinstance(mask, Volume) else mask)
    if m.dtype != bool:
        if not np.issubdtype(m.dtype, np.number):
            raise InputError(f"{name} of dtype {m.dtype} is not a mask; give a boolean array")
        m = m != 0
    if m.shape != tuple(shape):
        if len(shape) == 3 and m.shape == tuple(shape[1:]):
            m = np.broadcast_to(m, shape)
        else:
            raise InputError(f"{name} has shape {m.shape} but the image has shape {tuple(shape)}; "
                             "give a mask of the image's shape (or one 2D (y, x) mask for a volume)")
    if not m.any():
        raise InputError(f"{name} selects no pixel (all False); give a mask with some True pixels")
    return m


def voxel_size_of(obj, voxel_size_nm, *, name: str = "voxel_size_nm",
                  required: bool = True) -> tuple[float, float, float] | None:
    """Voxel size (z, y, x) in nm: explicit value, else the Volume's, else an error (or None)."""
    if voxel_size_nm is not None:
        try:
            return normalise_voxel_size(voxel_size_nm)
        except InputError as exc:
            raise InputError(f"{name}: {exc}") from None
    if isinstance(obj, Volume) and obj.voxel_size_known:
        return obj.voxel_size_nm
    if required:
        raise InputError(f"{name} is not given and the input carries no voxel size; "
                         "pass voxel_size_nm=... (nm), e.g. voxel_size_nm=50")
    return None


def check_range(name: str, value, lo=None, hi=None, *, integer: bool = False):
    """Validate a scalar option; returns it as float (or int); out of range is an error, never clamped."""
    if integer:
        return check_int(name, value, minimum=lo, maximum=hi)
    return check_number(name, value, minimum=lo, maximum=hi)


def fov_mask(shape: Sequence[int], *, radius_px: float | None = None, center_px=None,
             margin_px: float = 0.0) -> np.ndarray:
    """Circular field-of-view mask of a tomographic slice (or of every slice of a volume).

    Parameters
    ----------
    shape : (y, x) or (z, y, x)
        Shape of the image; a 3D shape gives a cylinder along z.
    radius_px : float, optional
        Radius in pixels; default half the smaller of the y and x sizes.
    center_px : (y, x), optional
        Centre in pixel coordinates; default the image centre ``((ny - 1) / 2, (nx - 1) / 2)``.
    margin_px : float
        Pixels removed from the rim (reconstruction artefacts are strongest there).

    Returns
    -------
    numpy.ndarray of bool, shape ``shape``
        True inside the field of view.
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) not in (2, 3) or min(shape) < 1:
        raise InputError(f"shape={show(shape)} must be (y, x) or (z, y, x) with positive sizes")
    ny, nx = shape[-2:]
    cy, cx = ((ny - 1) / 2, (nx - 1) / 2) if center_px is None else (float(center_px[0]), float(center_px[1]))
    r = min(ny, nx) / 2 if radius_px is None else check_range("radius_px", radius_px, 0)
    r = r - check_range("margin_px", margin_px, 0)
    if r <= 0:
        raise InputError(f"radius_px - margin_px = {r:g} leaves an empty field of view; give a larger radius")
    yy, xx = np.ogrid[:ny, :nx]
    m = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    if not m.any():
        raise InputError(f"the field of view (centre {(cy, cx)}, radius {r:g}) misses the image; check center_px")
    return np.broadcast_to(m, shape).copy() if len(shape) == 3 else m


@dataclass(frozen=True)
class SliceStatistics:
    """A metric evaluated on every z-slice of a volume.

    Attributes
    ----------
    values : tuple of float
        One value per evaluated slice, in the order of ``slices``.
    slices : tuple of int
        z index of each value.
    mean, std, min, max : float
        Statistics over the slices (std is the population standard deviation).
    """

    values: tuple[float, ...]
    slices: tuple[int, ...]
    mean: float
    std: float
    min: float
    max: float

    @classmethod
    def from_values(cls, values, slices) -> SliceStatistics:
        v = np.asarray(values, dtype=np.float64)
        return cls(tuple(float(x) for x in v), tuple(int(s) for s in slices), float(v.mean()),
                   float(v.std()), float(v.min()), float(v.max()))

    @property
    def n_slices(self) -> int:
        return len(self.values)

    def to_dict(self) -> dict:
        return {"mean": self.mean, "std": self.std, "min": self.min, "max": self.max,
                "slices": list(self.slices), "values": list(self.values)}


def pick_slices(nz: int, slices, n_default: int) -> tuple[int, ...]:
    """Validated z indices: ``slices`` if given, else ``n_default`` evenly spaced in the central 80 %."""
    if slices is None:
        if nz <= n_default:
            return tuple(range(nz))
        lo, hi = int(0.1 * nz), int(math.ceil(0.9 * nz)) - 1
        return tuple(sorted({int(round(v)) for v in np.linspace(lo, hi, n_default)}))
    out = []
    for s in np.atleast_1d(slices):
        si = int(s)
        if si != s or not (-nz <= si < nz):
            raise InputError(f"slices contains {show(s)}; give integer z indices in [0, {nz - 1}]")
        out.append(si % nz)
    if not out:
        raise InputError("slices is empty; give at least one z index or None for the default")
    return tuple(out)
