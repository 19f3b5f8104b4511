"""Input handling shared by the quantification modules: label volumes, voxel sizes, phase codes."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .._array import to_numpy
from ..errors import InputError

__all__ = ["PhaseCodes", "as_labels", "voxel_size", "as_image3d"]


@dataclass(frozen=True)
class PhaseCodes:
    """Which label values of a phase segmentation mean what.

    The defaults are the values of :class:`tomo4d.phantom.Phase` (the convention of tomo4d
    segmentations); pass another instance for segmentations with other codes.

    Attributes
    ----------
    pore, matrix, silicon, lithiated, collector, separator : tuple of int
        Label values of each phase (several values allowed, empty tuple for "absent").
    """

    pore: tuple[int, ...] = (0,)
    matrix: tuple[int, ...] = (1,)
    silicon: tuple[int, ...] = (2,)
    lithiated: tuple[int, ...] = (3,)
    collector: tuple[int, ...] = (4,)
    separator: tuple[int, ...] = (5,)

    def __post_init__(self):
        for name in ("pore", "matrix", "silicon", "lithiated", "collector", "separator"):
            v = getattr(self, name)
            try:
                vals = (int(v),) if np.isscalar(v) else tuple(int(a) for a in v)
            except (TypeError, ValueError):
                raise InputError(f"PhaseCodes.{name}={v!r} must be an integer label value or a tuple of them") from None
            object.__setattr__(self, name, vals)

    @property
    def anode(self) -> tuple[int, ...]:
        """Solid phases of the anode (matrix, silicon, lithiated silicon)."""
        return self.matrix + self.silicon + self.lithiated

    def names(self) -> dict[str, tuple[int, ...]]:
        """``{phase name: label values}`` in a fixed order."""
        return {"pore": self.pore, "matrix": self.matrix, "silicon": self.silicon, "lithiated_silicon": self.lithiated,
                "collector": self.collector, "separator": self.separator}


def as_labels(obj, *, name: str, ndim: int = 3) -> np.ndarray:
    """A numpy integer label array from an array or a :class:`~tomo4d.volume.Volume`."""
    from ..volume import Volume

    data = obj.data if isinstance(obj, Volume) else obj
    try:
        a = np.asarray(to_numpy(data))
    except Exception as exc:  # pragma: no cover - exotic inputs
        raise InputError(f"{name} could not be read as an array ({exc})") from None
    if a.ndim != ndim:
        raise InputError(f"{name} has shape {a.shape}; give a {ndim}D (z, y, x) label volume")
    if a.dtype == bool:
        return a.astype(np.uint8)
    if not np.issubdtype(a.dtype, np.integer):
        if np.issubdtype(a.dtype, np.floating) and a.size and np.all(np.isfinite(a)) and np.all(a == np.round(a)):
            return a.astype(np.int64)
        raise InputError(f"{name} has dtype {a.dtype}; give integer labels (0 = background)")
    if a.size and a.min() < 0:
        raise InputError(f"{name} has negative values (min {a.min()}); labels must be >= 0")
    return a


def as_image3d(obj, *, name: str) -> np.ndarray:
    """A float32 3D numpy image from an array or a Volume (NaN/inf rejected)."""
    from ..volume import Volume

    data = obj.data if isinstance(obj, Volume) else obj
    a = np.asarray(to_numpy(data))
    if a.ndim != 3:
        raise InputError(f"{name} has shape {a.shape}; give a 3D (z, y, x) volume")
    if not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
        raise InputError(f"{name} has dtype {a.dtype}; give a numeric volume")
    a = a.astype(np.float32, copy=False)
    if not np.all(np.isfinite(a)):
        raise InputError(f"{name} contains NaN or inf; mask or fill them first")
    return a


def voxel_size(voxel_size_nm, *objs) -> tuple[float, float, float]:
    """Voxel size (z, y, x) in nm: the argument, else the first Volume's known size.

    Raises :class:`InputError` when neither gives one: quantities in physical units need it.
    """
    from ..volume import Volume

    if voxel_size_nm is None:
        for o in objs:
            if isinstance(o, Volume) and o.voxel_size_known:
                return tuple(float(v) for v in o.voxel_size_nm)
        raise InputError("voxel_size_nm is not known; pass voxel_size_nm=(z, y, x) in nm (or a Volume that "
                         "carries it; --voxel-size on the command line)")
    vs = np.atleast_1d(np.asarray(voxel_size_nm, dtype=np.float64))
    if vs.size == 1:
        vs = np.repeat(vs, 3)
    if vs.size != 3 or not np.all(np.isfinite(vs)) or np.any(vs <= 0):
        raise InputError(f"voxel_size_nm={voxel_size_nm!r} must be one positive number or three (z, y, x), in nm")
    return tuple(float(v) for v in vs)


def check_int(name: str, value, *, minimum: int = 0) -> int:
    try:
        v = int(value)
    except (TypeError, ValueError):
        raise InputError(f"{name}={value!r} is not an integer") from None
    if v != value or v < minimum:
        raise InputError(f"{name}={value!r} must be an integer >= {minimum}")
    return v


def check_fraction(name: str, value, *, open_low: bool = False) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name}={value!r} is not a number; give a fraction in [0, 1]") from None
    if not (math.isfinite(v) and 0.0 <= v <= 1.0) or (open_low and v == 0.0):
        raise InputError(f"{name}={value!r} must be a fraction in {'(0' if open_low else '[0'}, 1]")
    return v


def step_names(n: int, names=None) -> tuple[str, ...]:
    if names is None:
        return tuple(f"T{i}" for i in range(n))
    names = tuple(str(s) for s in names)
    if len(names) != n:
        raise InputError(f"step_names has {len(names)} names for {n} steps; give one name per step")
    return names
