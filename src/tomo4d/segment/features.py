"""Multiscale pixel features for the pixel classifier (Ilastik-like).

For every scale ``sigma`` (in voxels of the finest axis) the feature stack holds

==============  ==========================================================  =========
kind            definition                                                  channels
==============  ==========================================================  =========
``intensity``   Gaussian-smoothed intensity                                 1
``gradient``    Gaussian gradient magnitude                                 1
``laplacian``   Laplacian of Gaussian                                       1
``hessian``     eigenvalues of the Hessian of Gaussian, ascending           ndim
``texture``     eigenvalues of the structure tensor (inner ``sigma/2``,     ndim
                outer ``sigma``), ascending
==============  ==========================================================  =========

plus the raw intensity first when ``include_raw`` is set.  ``ndim=2`` computes
the features in each ``(y, x)`` slice on its own (slice-wise, no mixing along
z); ``ndim=3`` computes them in 3D, with the Gaussian widths scaled per axis so
that the kernels are isotropic in nanometres on anisotropic voxels.

Every filter is a (derivative of a) Gaussian truncated at ``truncate`` sigmas,
so the features of a voxel depend only on a neighbourhood of known radius
(:func:`feature_halo`).  Eigenvalues of 3x3 fields are computed in closed form
(:mod:`tomo4d.segment._eig`, numba), 3-5x faster than LAPACK per voxel.  That is what makes chunked prediction exact: a slab
read with that halo around it gives the same features as the whole volume.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from .._array import as_float32, read_box
from .._validate import show
from ..errors import InputError

FEATURE_KINDS = ("intensity", "gradient", "laplacian", "hessian", "texture")


@dataclass(frozen=True)
class FeatureSpec:
    """Which features the pixel classifier computes.

    Attributes
    ----------
    sigmas : tuple of float
        Gaussian scales in voxels of the finest axis (default 0.7, 1.6, 3.5, 5).
    kinds : tuple of str
        Subset of :data:`FEATURE_KINDS`, computed at every sigma.
    ndim : int
        2 for slice-wise features in ``(y, x)`` planes, 3 for 3D features.
    truncate : float
        Gaussian kernels are cut at ``truncate * sigma``; sets the halo.
    include_raw : bool
        Add the unsmoothed intensity as the first feature.
    voxel_ratio : (float, float, float)
        Voxel size along (z, y, x) divided by the smallest one; the per-axis
        sigma is ``sigma / voxel_ratio[axis]`` so that kernels are isotropic in
        nm.  Set from the training image's voxel size by the trainer.
    """

    sigmas: tuple[float, ...] = (0.7, 1.6, 3.5, 5.0)
    kinds: tuple[str, ...] = FEATURE_KINDS
    ndim: int = 2
    truncate: float = 3.0
    include_raw: bool = True
    voxel_ratio: tuple[float, float, float] = (1.0, 1.0, 1.0)

    def __post_init__(self):
        try:
            sig = tuple(float(s) for s in self.sigmas)
        except (TypeError, ValueError):
            raise InputError(f"sigmas={show(self.sigmas)} must be a sequence of positive numbers (voxels)") from None
        if not sig or not all(math.isfinite(s) and s > 0 for s in sig):
            raise InputError(f"sigmas={show(self.sigmas)} must be a non-empty sequence of positive numbers (voxels)")
        kinds = tuple(str(k) for k in self.kinds)
        bad = [k for k in kinds if k not in FEATURE_KINDS]
        if bad or not kinds:
            raise InputError(f"kinds={self.kinds!r}: use a non-empty subset of {', '.join(FEATURE_KINDS)}")
        if self.ndim not in (2, 3):
            raise InputError(f"ndim={show(self.ndim)} must be 2 (slice-wise features) or 3 (3D features)")
        if not (math.isfinite(float(self.truncate)) and float(self.truncate) >= 1.0):
            raise InputError(f"truncate={show(self.truncate)} must be a number >= 1 (kernel radius in sigmas)")
        ratio = tuple(float(r) for r in self.voxel_ratio)
        if len(ratio) != 3 or not all(math.isfinite(r) and r > 0 for r in ratio):
            raise InputError(f"voxel_ratio={show(self.voxel_ratio)} must be three positive numbers (z, y, x)")
        object.__setattr__(self, "sigmas", tuple(sorted(set(sig))))
        object.__setattr__(self, "kinds", tuple(k for k in FEATURE_KINDS if k in kinds))
        object.__setattr__(self, "truncate", float(self.truncate))
        object.__setattr__(self, "voxel_ratio", ratio)

    @classmethod
    def for_voxel_size(cls, voxel_size_nm: Sequence[float], **kwargs) -> FeatureSpec:
        """A spec whose :attr:`voxel_ratio` follows ``voxel_size_nm`` (z, y, x)."""
        vs = np.asarray(voxel_size_nm, dtype=np.float64)
        return cls(voxel_ratio=tuple(float(v) for v in vs / vs.min()), **kwargs)

    @property
    def n_features(self) -> int:
        """Number of feature channels."""
        return len(feature_names(self))

    def to_dict(self) -> dict:
        return {"sigmas": list(self.sigmas), "kinds": list(self.kinds), "ndim": self.ndim,
                "truncate": self.truncate, "include_raw": self.include_raw,
                "voxel_ratio": list(self.voxel_ratio)}

    @classmethod
    def from_dict(cls, d) -> FeatureSpec:
        return cls(sigmas=tuple(d["sigmas"]), kinds=tuple(d["kinds"]), ndim=int(d["ndim"]),
                   truncate=float(d["truncate"]), include_raw=bool(d["include_raw"]),
                   voxel_ratio=tuple(d["voxel_ratio"]))


def feature_names(spec: FeatureSpec) -> tuple[str, ...]:
    """Names of the feature channels, in the order :func:`compute_features` stacks them."""
    names = ["raw"] if spec.include_raw else []
    for s in spec.sigmas:
        for kind in spec.kinds:
            if kind in ("hessian", "texture"):
                names += [f"{kind}_ev{i}_s{s:g}" for i in range(spec.ndim)]
            else:
                names.append(f"{kind}_s{s:g}")
    return tuple(names)


def _axes(spec: FeatureSpec) -> tuple[int, ...]:
    return (1, 2) if spec.ndim == 2 else (0, 1, 2)


def _axis_sigmas(spec: FeatureSpec, sigma: float) -> tuple[float, float, float]:
    """Per-axis sigma in voxels (0 on axes that are not filtered)."""
    axes = _axes(spec)
    return tuple(sigma / spec.voxel_ratio[a] if a in axes else 0.0 for a in range(3))  # type: ignore[return-value]


def _radius(sigma: float, truncate: float) -> int:
    # scipy.ndimage's own rule for the kernel radius
    return int(truncate * float(sigma) + 0.5) if sigma > 0 else 0


def feature_halo(spec: FeatureSpec) -> tuple[int, int, int]:
    """Halo in voxels along (z, y, x) that makes chunked features exact.

    The widest operator is the structure tensor: a derivative of Gaussian at
    ``sigma/2`` followed by a Gaussian at ``sigma``; its support is the sum of
    both kernel radii.  Other features use one kernel of radius
    ``int(truncate * sigma + 0.5)``.
    """
    halo = [0, 0, 0]
    for s in spec.sigmas:
        outer = _axis_sigmas(spec, s)
        inner = _axis_sigmas(spec, s / 2.0)
        for a in range(3):
            r = _radius(outer[a], spec.truncate)
            if "texture" in spec.kinds:
                r = max(r, _radius(outer[a], spec.truncate) + _radius(inner[a], spec.truncate))
            halo[a] = max(halo[a], r)
    return tuple(halo)  # type: ignore[return-value]


def _gauss(img: np.ndarray, sig, order, truncate: float) -> np.ndarray:
    return ndi.gaussian_filter(img, sigma=sig, order=order, truncate=truncate, mode="reflect",
                               output=np.float32)


def _order(axis_orders: dict[int, int]) -> tuple[int, int, int]:
    return tuple(axis_orders.get(a, 0) for a in range(3))  # type: ignore[return-value]


def _eigvals_into(components: dict[tuple[int, int], np.ndarray], axes: tuple[int, ...], outs) -> None:
    """Ascending eigenvalues of a symmetric 2x2 or 3x3 field given its upper components, into ``outs``."""
    if len(axes) == 2:
        from ._eig import eigvalsh2_into

        a, b = axes
        xx, yy, xy = components[(a, a)], components[(b, b)], components[(a, b)]
        if all(o.flags.c_contiguous for o in outs):
            eigvalsh2_into(xx, yy, xy, outs[0], outs[1])
            return
        lo, hi = np.empty(xx.shape, np.float32), np.empty(xx.shape, np.float32)
        eigvalsh2_into(xx, yy, xy, lo, hi)
        outs[0][...], outs[1][...] = lo, hi
        return
    from ._eig import eigvalsh3

    c = components
    for o, ev in zip(outs, eigvalsh3(c[(0, 0)], c[(1, 1)], c[(2, 2)], c[(0, 1)], c[(0, 2)], c[(1, 2)])):
        o[...] = ev


def feature_buffer(shape, spec: FeatureSpec) -> np.ndarray:
    """An empty ``shape + (F,)`` float32 feature array stored channel by channel (each channel contiguous).

    Filling it channel by channel writes each voxel's cache line once instead of F times (the interleaved
    layout streamed the whole stack per channel: 195 -> 13 ns per voxel and channel on a 1024^2 x 8 slab);
    :func:`tomo4d.segment._trees.run` reads it in place.  Channels start 192 bytes apart from a multiple of
    their size: slabs of 2^k voxels would otherwise put every channel's voxel i in the same cache set (the
    forest walk read them 1.6x slower).
    """
    n = int(np.prod(shape, dtype=np.int64))
    flat = np.empty((spec.n_features, n + 48), np.float32)[:, :n]
    return np.moveaxis(flat.reshape((spec.n_features,) + tuple(int(s) for s in shape)), 0, -1)


def _compute(img: np.ndarray, spec: FeatureSpec, out: np.ndarray, crop: tuple[slice, ...]) -> None:
    """Fill ``out[..., k]`` with feature k of ``img`` (3D float32), cropped by ``crop``."""
    axes = _axes(spec)
    t = spec.truncate
    k = 0

    def put(a):
        nonlocal k
        out[..., k] = a[crop]
        k += 1

    if spec.include_raw:
        put(img)
    for s in spec.sigmas:
        sig = _axis_sigmas(spec, s)
        if "intensity" in spec.kinds:
            put(_gauss(img, sig, (0, 0, 0), t))
        if "gradient" in spec.kinds:
            acc = np.zeros(img.shape, np.float32)
            for a in axes:
                d = _gauss(img, sig, _order({a: 1}), t)
                acc += d * d
            put(np.sqrt(acc, out=acc))
        second: dict[tuple[int, int], np.ndarray] = {}
        if "laplacian" in spec.kinds or "hessian" in spec.kinds:
            for i, a in enumerate(axes):
                for b in axes[i:]:
                    orders = {a: 2} if a == b else {a: 1, b: 1}
                    second[(a, b)] = _gauss(img, sig, _order(orders), t)[crop]
        if "laplacian" in spec.kinds:
            lap = sum(second[(a, a)] for a in axes)
            out[..., k] = lap
            k += 1
        if "hessian" in spec.kinds:
            _eigvals_into(second, axes, [out[..., k + j] for j in range(len(axes))])
            k += len(axes)
        del second
        if "texture" in spec.kinds:
            inner = _axis_sigmas(spec, s / 2.0)
            grads = {a: _gauss(img, inner, _order({a: 1}), t) for a in axes}
            comps = {}
            for i, a in enumerate(axes):
                for b in axes[i:]:
                    comps[(a, b)] = _gauss(grads[a] * grads[b], sig, (0, 0, 0), t)[crop]
            del grads
            _eigvals_into(comps, axes, [out[..., k + j] for j in range(len(axes))])
            k += len(axes)
    assert k == out.shape[-1]


def compute_features(image, spec: FeatureSpec | None = None) -> np.ndarray:
    """Feature stack of a 2D image or 3D volume.

    Parameters
    ----------
    image : array_like, shape (y, x) or (z, y, x)
        Grey values (any numeric dtype; computed in float32).
    spec : FeatureSpec, optional
        Which features; default :class:`FeatureSpec()`.  A 2D image needs
        ``spec.ndim == 2``.

    Returns
    -------
    numpy.ndarray, float32, shape ``image.shape + (spec.n_features,)``
        Channels in the order of :func:`feature_names`.
    """
    spec = spec or FeatureSpec()
    img = as_float32(image)
    if img.ndim == 2:
        if spec.ndim == 3:
            raise InputError("a 2D image needs FeatureSpec(ndim=2); 3D features need a (z, y, x) volume")
        return compute_features(img[None], spec)[0]
    if img.ndim != 3:
        raise InputError(f"image must be 2D (y, x) or 3D (z, y, x), got shape {img.shape}")
    out = feature_buffer(img.shape, spec)
    _compute(img, spec, out, (slice(None),) * 3)
    return out


def features_of_slab(source, z0: int, z1: int, spec: FeatureSpec, *, threads: int | None = None) -> np.ndarray:
    """Features of slices ``z0:z1`` of a (possibly lazy) volume, reading only slab + halo.

    The result equals ``compute_features(source)[z0:z1]``: the halo along z is :func:`feature_halo`, and at
    the true volume borders the same mirror boundary applies.

    Parameters
    ----------
    source : array-like (numpy, dask, zarr), shape (z, y, x)
        The volume; only ``source[z0 - halo : z1 + halo]`` is read.
    z0, z1 : int
        Slab bounds.
    spec : FeatureSpec
    threads : int, optional
        The slab is cut along z into this many parts computed side by side, each with its own halo (scipy's
        filters release the GIL; the same values as one part).  Default: :func:`tomo4d.threads` / the CPUs
        this process may use.

    Returns
    -------
    numpy.ndarray, float32, shape ``(z1 - z0, y, x, spec.n_features)`` (stored channel by channel,
    :func:`feature_buffer`)
    """
    from concurrent.futures import ThreadPoolExecutor

    from .._threads import resolve_threads

    ny, nx = (int(n) for n in source.shape[1:])
    out = feature_buffer((z1 - z0, ny, nx), spec)
    parts = max(1, min(resolve_threads(threads), z1 - z0))
    cuts = [z0 + (z1 - z0) * i // parts for i in range(parts + 1)]
    if parts == 1:
        _part(source, z0, z1, spec, out)
        return out
    with ThreadPoolExecutor(parts, thread_name_prefix="tomo4d-features") as ex:
        done = [ex.submit(_part, source, a, b, spec, out[a - z0:b - z0]) for a, b in zip(cuts[:-1], cuts[1:])]
        for f in done:
            f.result()
    return out


def _part(source, z0: int, z1: int, spec: FeatureSpec, out: np.ndarray) -> None:
    """Fill ``out`` with the features of slices ``z0:z1`` of ``source`` (reads the part and its halo)."""
    nz = int(source.shape[0])
    hz = feature_halo(spec)[0]
    a0, a1 = max(0, z0 - hz), min(nz, z1 + hz)
    block = as_float32(read_box(source, slice(a0, a1)))
    crop = (slice(z0 - a0, z0 - a0 + (z1 - z0)), slice(None), slice(None))
    if spec.ndim == 2:
        # slice-wise features: no halo along z is needed at all
        block = block[crop]
        crop = (slice(None),) * 3
    _compute(block, spec, out, crop)
