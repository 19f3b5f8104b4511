"""The one place where tomo4d checks what a caller hands it.

Every public function validates its inputs here, at the boundary, so that a bad
value always gets the same kind of message: the parameter's name, the value
(written as a person would type it, never a numpy repr) and the fix.  Each check
raises :class:`~tomo4d.errors.InputError` (exit status 2 on the command line).

Policies decided here, once for every stage:

* **numbers**: ``bool`` and strings are not numbers; an integer parameter refuses
  ``8.7`` (it is not rounded) and ``"8"``; NaN and infinities are refused; a value
  outside its range is an error naming the range, never clamped.
* **non-finite voxels**: refused with their count (:func:`check_finite`); the
  message says how to mask or fill them.
* **labels**: non-negative integers (integral floats accepted), optionally from
  a stated set of expected values (:func:`check_labels`).
* **images**: 3D ``(z, y, x)``, numeric, finite, computed in float32 (:func:`as_image`);
  two images compared voxel by voxel have the same shape (:func:`check_same_shape`);
  a mask has the image's shape and keeps at least one voxel (:func:`as_mask`).
* **voxel sizes**: the argument, else the first Volume that knows its size, else an
  error (:func:`voxel_size`): no quantity in nm is computed from a guessed size.
"""

from __future__ import annotations

import math
import numbers
import os

import numpy as np

from ._array import as_float32, to_numpy
from .errors import InputError


def show(value) -> str:
    """``value`` as a person would write it: numpy scalars and arrays without their repr wrappers."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, np.ndarray):
        if value.size > 8:
            return f"array of shape {value.shape} and dtype {value.dtype}"
        value = value.tolist()
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (tuple, list)):
        inner = ", ".join(show(v) for v in value)
        return f"({inner})" if isinstance(value, tuple) else f"[{inner}]"
    return repr(value)


def _range_text(minimum, maximum, *, exclusive_minimum: bool = False) -> str:
    lo = "" if minimum is None else (f"> {show(minimum)}" if exclusive_minimum else f">= {show(minimum)}")
    hi = "" if maximum is None else f"<= {show(maximum)}"
    return " and ".join(t for t in (lo, hi) if t) or "finite"


def check_int(name: str, value, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """Return ``value`` as ``int``; refuse non-integers, booleans, strings and values out of range."""
    ok_type = isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))
    if not ok_type and isinstance(value, (float, np.floating)) and math.isfinite(value) and float(value).is_integer():
        ok_type = True
    if not ok_type:
        raise InputError(f"{name}={show(value)} is not an integer; give a whole number "
                         f"{_range_text(minimum, maximum)}")
    v = int(value)
    if (minimum is not None and v < minimum) or (maximum is not None and v > maximum):
        raise InputError(f"{name}={v} is out of range; give a whole number {_range_text(minimum, maximum)}")
    return v


def check_number(name: str, value, *, minimum: float | None = None, maximum: float | None = None,
                 exclusive_minimum: bool = False) -> float:
    """Return ``value`` as ``float``; refuse strings, booleans, NaN, infinities and values out of range."""
    rng = _range_text(minimum, maximum, exclusive_minimum=exclusive_minimum)
    if not isinstance(value, numbers.Real) or isinstance(value, (bool, np.bool_)):
        raise InputError(f"{name}={show(value)} is not a number; give a finite number {rng}")
    v = float(value)
    if not math.isfinite(v):
        raise InputError(f"{name}={show(v)} is not finite; give a finite number {rng}")
    too_low = minimum is not None and (v <= minimum if exclusive_minimum else v < minimum)
    if too_low or (maximum is not None and v > maximum):
        raise InputError(f"{name}={show(v)} is out of range; give a number {rng}")
    return v


def as_numbers(name: str, value, *, what: str = "a number or an array of numbers") -> np.ndarray:
    """``value`` (number or array) as float64; strings, booleans and other objects refused by name."""
    try:
        a = np.asarray(value)
        ok = a.dtype.kind in "iuf"
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise InputError(f"{name}={show(value)} is not numeric; give {what}")
    return a.astype(np.float64)


def check_path(name: str, value) -> str:
    """Return ``value`` as a path string; refuse anything that is not a ``str`` or path-like."""
    if isinstance(value, (str, os.PathLike)) and os.fspath(value) != "":
        return os.fspath(value)
    raise InputError(f"{name}={show(value)} is not a path; give a file or folder name as a string or pathlib.Path")


def count_nonfinite(array) -> int:
    """Number of NaN/Inf values in a numpy or dask array (dask: computed chunk by chunk)."""
    a = array.data if hasattr(array, "voxel_size_nm") else array
    if hasattr(a, "dask"):
        if not np.issubdtype(a.dtype, np.floating) and not np.issubdtype(a.dtype, np.complexfloating):
            return 0
        import dask.array as da

        return int(da.count_nonzero(~da.isfinite(a)).compute())
    a = np.asarray(a)
    if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.complexfloating)):
        return 0
    return int(a.size - np.count_nonzero(np.isfinite(a)))


_NONFINITE_FIX = ("tomo4d refuses them rather than guess: fill them (e.g. with the median) or crop them away, "
                  "and mask that region")


def check_finite(name: str, array) -> None:
    """Refuse an image holding NaN or Inf voxels, saying how many (the one non-finite policy of tomo4d)."""
    n = count_nonfinite(array)
    if n:
        size = int(np.prod(getattr(array, "shape", (0,)), dtype=np.int64)) or 1
        raise InputError(f"{name} holds {n} non-finite (NaN/Inf) voxels ({100 * n / size:.3g} % of {size}); "
                         + _NONFINITE_FIX)


def check_finite_chunk(name: str, block, z0: int) -> None:
    """Refuse a chunk ``block`` (z-slices ``z0 .. z0 + len(block) - 1`` of ``name``) holding NaN/Inf voxels.

    The check of lazy, chunk-by-chunk paths: each chunk is checked as it is read (no extra pass
    over a volume larger than memory); the message names the z-range of the chunk and the first
    bad slice.  Voxels of chunks not yet read are not counted.
    """
    a = np.asarray(block)
    if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.complexfloating)):
        return
    bad = ~np.isfinite(a)
    n = int(np.count_nonzero(bad))
    if n:
        z0 = int(z0)
        first = z0 + int(np.argmax(bad.reshape(bad.shape[0], -1).any(axis=1))) if a.ndim >= 2 else z0
        raise InputError(f"{name} holds {n} non-finite (NaN/Inf) voxels in z-slices {z0}..{z0 + a.shape[0] - 1} "
                         f"(first at z = {first}; found while processing chunk by chunk, so later slices were "
                         "not checked); " + _NONFINITE_FIX)


def show_values(values) -> str:
    """Sorted label values as ``{0, 255}``, or a summary when there are many."""
    v = [int(x) for x in values]
    if len(v) <= 12:
        return "{" + ", ".join(str(x) for x in v) + "}"
    return f"{len(v)} distinct values from {v[0]} to {v[-1]} ({', '.join(str(x) for x in v[:6])}, ...)"


def present_values(arr: np.ndarray) -> np.ndarray:
    """The sorted distinct values of an integer array (a histogram for <= 16-bit unsigned labels: 2.6 ns/voxel
    against 9.5 for ``np.unique``'s hash on uint8)."""
    if arr.size == 0:
        return np.zeros(0, arr.dtype)
    if arr.dtype.kind == "u" and arr.dtype.itemsize <= 2:
        return np.flatnonzero(np.bincount(arr.ravel())).astype(arr.dtype)
    return np.unique(arr)


def check_labels(name: str, labels, *, expected=None, role: str = "labels", fix: str | None = None,
                 shape=None, instances: bool = False, ndim=None) -> np.ndarray:
    """Return ``labels`` as an integer numpy array; refuse what cannot be the labels a function expects.

    Parameters
    ----------
    name : str
        The parameter (or file) named in messages.
    labels : array_like, dask array or Volume
        Label image.  Booleans become 0/1; floats are accepted only when every value is a
        whole number (a grey-value image is refused).
    expected : mapping {value: meaning} or iterable of int, optional
        The only values allowed (e.g. phase codes); any other value found is refused,
        naming the values found and those expected.
    role : str
        What the labels are for, in messages (e.g. ``"phase_volumes expects phase labels"``).
    fix : str, optional
        How to correct unexpected values (default: relabel them).
    shape : tuple, optional
        Required shape (e.g. the image's).
    instances : bool
        Particle (instance) labels, one value per particle: a binary mask (a single non-zero
        value) whose voxels form several separate objects is refused.
    ndim : int or tuple of int, optional
        Allowed numbers of dimensions.

    Raises
    ------
    InputError
        Non-numeric, grey-value (non-integer), non-finite or negative labels, a wrong shape or
        dimension, values outside ``expected``, or (``instances``) a binary mask of many objects.
    """
    data = labels.data if hasattr(labels, "voxel_size_nm") and hasattr(labels, "data") else labels
    if data is None or isinstance(data, (str, bytes, bool, numbers.Number)):
        raise InputError(f"{name}={show(data)} is not a label image; give an integer array or Volume "
                         "(0 = background, 1, 2, ... = labels)")
    try:
        arr = np.asarray(to_numpy(data))
    except (TypeError, ValueError) as exc:  # pragma: no cover - exotic inputs
        raise InputError(f"{name} could not be read as an array ({exc}); give an integer label array") from None
    if ndim is not None:
        dims = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if arr.ndim not in dims:
            want = " or ".join(f"{d}D" for d in dims)
            raise InputError(f"{name} has shape {tuple(arr.shape)}; give a {want} label image")
    if shape is not None and tuple(arr.shape) != tuple(shape):
        raise InputError(f"{name} has shape {tuple(arr.shape)} but the image has shape {tuple(shape)}; give "
                         f"{name} of exactly the image's shape")
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise InputError(f"{name} has dtype {arr.dtype}, which is not a label type; give integer labels "
                         "(0 = background, 1, 2, ...)")
    if np.issubdtype(arr.dtype, np.floating):
        n_bad = count_nonfinite(arr)
        if n_bad:
            raise InputError(f"{name} holds {n_bad} non-finite (NaN/Inf) values; labels are whole numbers "
                             "(0 = background, 1, 2, ...): give the label image, not a grey-value image")
        frac = arr != np.round(arr)
        if frac.any():
            ex = np.unique(arr[frac])[:3]
            raise InputError(f"{name} has dtype {arr.dtype} with non-integer values (e.g. "
                             f"{', '.join(f'{float(x):.4g}' for x in ex)}); this looks like a grey-value image, "
                             "not labels: give integer labels (0 = background, 1, 2, ...)")
        arr = arr.astype(np.int64)
    if arr.size and arr.min() < 0:
        neg = np.unique(arr[arr < 0])
        raise InputError(f"{name} holds negative values {show_values(neg)}; labels must be >= 0 "
                         "(0 = background, 1, 2, ...): relabel them")
    if expected is not None:
        allowed = {int(k) for k in (expected.keys() if hasattr(expected, "keys") else expected)}
        found = present_values(arr)
        extra = [int(v) for v in found if int(v) not in allowed]
        if extra:
            if hasattr(expected, "keys"):
                want = ", ".join(f"{int(k)} {expected[k]}" for k in sorted(expected, key=int))
            else:
                want = show_values(sorted(allowed))
            n_extra = int(np.count_nonzero(~np.isin(arr, list(allowed))))
            example = extra[-1] if extra else 0
            hint = fix or (f"relabel them to the expected values (e.g. labels[labels == {example}] = "
                           f"{min(allowed) if allowed else 0}; --map {example}:... on the commands that have it)")
            raise InputError(f"{name} holds values {show_values(found)}; {role}: {want}; values "
                             f"{show_values(extra)} ({100 * n_extra / arr.size:.3g} % of the voxels) are none of "
                             f"these: {hint}")
    if instances and arr.size:
        nz = arr[arr != 0]
        if nz.size and nz.min() == nz.max():
            from scipy import ndimage as ndi

            n_obj = ndi.label(arr != 0)[1]
            if n_obj > 1:
                raise InputError(
                    f"{name} holds only the values {show_values(np.unique(arr))}: a binary mask of {n_obj} separate "
                    f"objects, not particle labels (one value per particle); {role}: label the particles first "
                    "(tomo4d.segment.label_particles / 'tomo4d segment particles')")
    return arr


def _unwrap(obj):
    """The array of a :class:`~tomo4d.volume.Volume` (recognised by its attributes), else ``obj``."""
    return obj.data if hasattr(obj, "voxel_size_nm") and hasattr(obj, "data") else obj


def as_image(obj, *, name: str) -> np.ndarray:
    """Return a 3D ``(z, y, x)`` image (array, dask array or Volume) as float32 numpy; refuse other shapes, non-numbers, NaN/Inf."""
    a = np.asarray(to_numpy(_unwrap(obj)))
    if a.ndim != 3:
        raise InputError(f"{name} has shape {a.shape}; give a 3D (z, y, x) volume")
    if not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
        raise InputError(f"{name} has dtype {a.dtype}; give a numeric volume")
    check_finite(name, a)
    return as_float32(a)


def as_lazy_image(obj, *, name: str):
    """Return a 3D ``(z, y, x)`` image (array, dask array or Volume) as given, for chunk-by-chunk readers:
    a dask array stays lazy (its NaN/Inf are refused chunk by chunk as read, :func:`check_finite_chunk`),
    anything else becomes numpy, checked whole.  Not converted to float32."""
    from ._array import is_lazy

    a = _unwrap(obj)
    if not is_lazy(a):
        a = np.asarray(a)
    if len(a.shape) != 3:
        raise InputError(f"{name} has shape {tuple(a.shape)}; give a 3D (z, y, x) volume")
    if not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
        raise InputError(f"{name} has dtype {a.dtype}; give a numeric volume")
    if not is_lazy(a):
        check_finite(name, a)
    return a


def as_lazy_mask(mask, shape, *, name: str = "mask"):
    """:func:`as_mask` for chunk-by-chunk readers: a dask mask stays lazy (its shape and emptiness checked)."""
    from ._array import is_lazy

    if mask is None:
        return None
    m = _unwrap(mask)
    if not is_lazy(m):
        return as_mask(m, shape, name=name)
    if tuple(m.shape) != tuple(shape):
        raise InputError(f"{name} has shape {tuple(m.shape)} but the volume has shape {tuple(shape)}; give a boolean "
                         "mask of the same shape")
    if not bool(m.astype(bool).any().compute()):
        raise InputError(f"{name} excludes every voxel; give a mask with True where the sample is")
    return m


def check_same_shape(a: np.ndarray, b: np.ndarray, names=("fixed", "moving")) -> None:
    """Refuse two images compared voxel by voxel (named ``names``) whose shapes differ."""
    if a.shape != b.shape:
        raise InputError(f"{names[0]} has shape {a.shape} but {names[1]} has shape {b.shape}; they must be "
                         "the same (crop or resample one of them first)")


def as_mask(mask, shape, *, name: str = "mask") -> np.ndarray | None:
    """Return ``mask`` (array or Volume; ``None`` passes) as bool of ``shape``; refuse another shape or an empty mask."""
    if mask is None:
        return None
    m = np.asarray(to_numpy(_unwrap(mask)))
    if m.shape != tuple(shape):
        raise InputError(f"{name} has shape {m.shape} but the volume has shape {tuple(shape)}; give a boolean "
                         "mask of the same shape")
    m = m.astype(bool)
    if not m.any():
        raise InputError(f"{name} excludes every voxel; give a mask with True where the sample is")
    return m


def voxel_size(voxel_size_nm, *objs) -> tuple[float, float, float]:
    """Return the voxel size ``(z, y, x)`` in nm: the argument, else the first Volume's known size; else refuse.

    Quantities in physical units need it, so an unknown size is an error, never a guess.
    """
    if voxel_size_nm is None:
        for o in objs:
            if hasattr(o, "voxel_size_nm") and getattr(o, "voxel_size_known", False):
                return tuple(float(v) for v in o.voxel_size_nm)
        raise InputError("voxel_size_nm is not known; pass voxel_size_nm=(z, y, x) in nm (or a Volume that "
                         "carries it; --voxel-size on the command line)")
    try:
        vs = np.atleast_1d(np.asarray(voxel_size_nm, dtype=np.float64))
    except (TypeError, ValueError):
        vs = np.zeros(0)
    if vs.size == 1:
        vs = np.repeat(vs, 3)
    if vs.size != 3 or not np.all(np.isfinite(vs)) or np.any(vs <= 0):
        raise InputError(f"voxel_size_nm={show(voxel_size_nm)} must be one positive number or three (z, y, x), in nm")
    return tuple(float(v) for v in vs)


def check_device(name: str, device, *, option: str = "--device"):
    """Return ``device`` as a ``torch.device`` that this torch build can use; ``None``: CUDA when available.

    Refuses, naming ``name`` (and the command-line ``option``) and the fix: values that are not
    device names (``"gpu"``, ``3.5``), device types other than ``cpu`` and ``cuda`` (``mps`` when
    torch offers it), ``cuda`` on a CPU-only torch build or a machine without a visible GPU, and a
    CUDA index beyond the GPUs present (``cuda:7`` with one GPU).  ``"auto"`` is the same as ``None``.
    """
    import torch

    if device is None or (isinstance(device, str) and device.strip().lower() == "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    usage = f"use {name}='cpu' or 'cuda' (or 'cuda:N' for GPU N); {option} cpu on the command line"
    if isinstance(device, torch.device):
        dev = device
    elif isinstance(device, str) and device.strip():
        try:
            dev = torch.device(device.strip())
        except (RuntimeError, ValueError, TypeError):
            raise InputError(f"{name}={show(device)} is not a torch device; {usage}") from None
    else:
        raise InputError(f"{name}={show(device)} is not a device name; {usage}")
    if dev.type == "cpu":
        return dev
    if dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return dev
        raise InputError(f"{name}={show(device)} but this torch sees no Apple GPU (MPS); use {option} cpu")
    if dev.type != "cuda":
        raise InputError(f"{name}={show(device)}: device type {dev.type!r} is not supported by tomo4d; {usage}")
    version = torch.__version__.split("+")[0]
    if torch.version.cuda is None:
        raise InputError(f"{name}={show(device)} but this torch build has no CUDA (torch {version}, CPU-only); "
                         f"use {option} cpu, or install a CUDA build of torch")
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if n == 0:
        raise InputError(f"{name}={show(device)} but torch {version} (CUDA {torch.version.cuda}) sees no GPU "
                         f"(driver missing, or CUDA_VISIBLE_DEVICES empty?); use {option} cpu")
    if dev.index is not None and dev.index >= n:
        have = ", ".join(f"cuda:{i}" for i in range(n))
        raise InputError(f"{name}={show(device)} but torch sees {n} GPU{'s' if n > 1 else ''} ({have}); "
                         f"give one of those, or {option} cpu")
    return dev
