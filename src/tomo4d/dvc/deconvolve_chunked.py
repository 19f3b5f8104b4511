"""Richardson-Lucy deconvolution box by box within a memory budget (:func:`deconvolve_chunked`).

The same computation as :func:`tomo4d.dvc.deconvolve`: the grey levels normalised by the volume's min and range
and lifted by 0.05, reflect-padded by ``2 r`` (``r`` = the PSF's half-width, 3 sigma), ``iterations`` Richardson-
Lucy updates from 0.5 with zero beyond the padded volume (scikit-image's ``convolve(..., mode="same")``), the
padding cut and the grey levels put back.  Here the padded volume is cut into boxes; a *pass* runs ``k``
iterations on each box widened by a halo of ``2 r k`` voxels (each iteration convolves twice, so a wrong value at
the halo's edge moves inwards by ``2 r`` per iteration and never reaches the box), clipped at the padded volume's
faces, where zero is exactly what the whole-volume convolution sees.  Between passes the estimate is kept in a
float32 Zarr store; one pass, when the whole padded volume fits the budget.

Tolerance against :func:`deconvolve` (float64 FFT convolution): the convolutions are separable 1-D float64 ones
(the PSF is a product of three normalised 1-D Gaussians) and the estimate is rounded to float32 between passes:
~1e-6 of the grey range (measured in tests/dvc/test_deconvolve_chunked.py).  The passes resume: a pass whose
marker is on disk is not run again by a rerun of the same computation.
"""

from __future__ import annotations

import json
import math
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from scipy import ndimage

from .._array import read_box
from .._threads import resolve_threads
from .._validate import check_finite_chunk, check_int, check_number
from ..errors import InputError
from .deconvolve import gaussian_profile

__all__ = ["DECONVOLVE_BYTES_PER_VOXEL", "deconvolve_chunked", "open_deconvolved"]

#: working memory of a box per voxel of its widened extent: the estimate, the padded data, the blurred estimate,
#: the ratio (float64), a 1-D convolution's temporary, the float32 reads
DECONVOLVE_BYTES_PER_VOXEL = 48.0
#: largest share of a box's side taken by its halos before the iterations are split into more passes
HALO_SHARE = 0.15


def _kernel(sigma: float) -> np.ndarray:
    """The normalised 1-D factor of :func:`~tomo4d.dvc.deconvolve.gaussian_psf` (the PSF is its cube)."""
    g = gaussian_profile(sigma)
    return g / g.sum()


def _blur(a: np.ndarray, g: np.ndarray, ex=None, n: int = 1) -> np.ndarray:
    """``a`` convolved with ``g`` along each axis (zero outside), each axis's lines in ``n`` blocks side by side
    (scipy releases the GIL; every value computed as by one call: bit-identical)."""
    for axis in range(3):
        across = 1 if axis == 0 else 0  # blocks along another axis: whole lines in each
        out = np.empty_like(a)
        cuts = [a.shape[across] * i // n for i in range(n + 1)]

        def lines(lo: int, hi: int, axis=axis, across=across, src=a, dst=out) -> None:
            sl = tuple(slice(lo, hi) if d == across else slice(None) for d in range(3))
            ndimage.convolve1d(src[sl], g, axis=axis, output=dst[sl], mode="constant", cval=0.0)

        if ex is None or n == 1:
            lines(0, a.shape[across])
        else:
            for fut in [ex.submit(lines, lo, hi) for lo, hi in zip(cuts[:-1], cuts[1:]) if hi > lo]:
                fut.result()
        a = out
    return a


def _range(data, budget: int) -> tuple[float, float]:
    """Min and range of ``data`` read in z-slabs."""
    per_slice = max(1, int(np.prod(data.shape[1:]))) * 12
    depth = max(1, budget // per_slice)
    lo, hi = np.inf, -np.inf
    for z0 in range(0, data.shape[0], depth):
        blk = np.asarray(read_box(data, (slice(z0, z0 + depth),)), np.float64)
        check_finite_chunk("volume", blk, z0)
        lo, hi = min(lo, float(blk.min())), max(hi, float(blk.max()))
    return lo, (hi - lo) or 1.0


def _padded(data, lo, hi, pad: int, norm) -> np.ndarray:
    """Padded-volume voxels ``[lo, hi)`` (reflect padding by ``pad``), normalised as :func:`deconvolve`."""
    idx = []
    for a, n in enumerate(data.shape):
        i = np.abs(np.arange(lo[a], hi[a]) - pad)
        idx.append(np.where(i >= n, 2 * (n - 1) - i, i))
    box = read_box(data, tuple(slice(int(i.min()), int(i.max()) + 1) for i in idx))
    box = np.asarray(box, np.float64)[np.ix_(*(i - i.min() for i in idx))]
    return (box - norm[0]) / norm[1] + 0.05


def _plan(shape_p, r: int, iterations: int, budget: int):
    """Iterations per pass and the boxes (interior side) of the padded volume of ``shape_p``."""
    side = int((budget / DECONVOLVE_BYTES_PER_VOXEL) ** (1 / 3))
    if all(n <= side for n in shape_p) or np.prod(shape_p) * DECONVOLVE_BYTES_PER_VOXEL <= budget:
        return iterations, tuple(shape_p)  # one box: one pass
    k = max(1, min(iterations, int(HALO_SHARE * side / (4 * r))))
    inner = side - 4 * r * k
    if inner < 8:
        need = (8 + 4 * r) ** 3 * DECONVOLVE_BYTES_PER_VOXEL / 2**20
        raise InputError(f"chunk_budget_mb={budget / 2**20:g} is too small to deconvolve with a PSF of half-width "
                         f"{r} px box by box; give at least {math.ceil(need)}")
    return k, tuple(min(inner, n) for n in shape_p)


def _boxes(shape_p, inner):
    return [(np.array([z, y, x]), np.minimum(np.array([z, y, x]) + inner, shape_p))
            for z in range(0, shape_p[0], inner[0]) for y in range(0, shape_p[1], inner[1])
            for x in range(0, shape_p[2], inner[2])]


def _pass(data, src, dst, out, boxes, g, k: int, h: int, pad: int, norm, shape_p, last: bool, ex, n: int) -> None:
    """``k`` iterations on every box (halo ``h``), from ``src`` (None: the start, 0.5) into ``dst`` or, last,
    the output; the convolutions on ``n`` threads of ``ex``."""
    for lo, hi in boxes:
        elo, ehi = np.maximum(lo - h, 0), np.minimum(hi + h, shape_p)
        key = tuple(slice(int(a), int(b)) for a, b in zip(elo, ehi))
        u = np.full(tuple(ehi - elo), 0.5) if src is None else np.asarray(src[key], np.float64)
        x = _padded(data, elo, ehi, pad, norm)
        for _ in range(k):
            u *= _blur(x / (_blur(u, g, ex, n) + 1e-12), g, ex, n)
        inner = tuple(slice(int(a - e), int(b - e)) for a, b, e in zip(lo, hi, elo))
        if not last:
            dst[tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))] = u[inner].astype(np.float32)
            continue
        olo, ohi = np.maximum(lo, pad), np.minimum(hi, np.asarray(shape_p) - pad)  # the unpadded volume
        if np.any(ohi <= olo):
            continue
        part = u[tuple(slice(int(a - e), int(b - e)) for a, b, e in zip(olo, ohi, elo))]
        out[tuple(slice(int(a - pad), int(b - pad)) for a, b in zip(olo, ohi))] = \
            ((part - 0.05) * norm[1] + norm[0]).astype(np.float32)


def deconvolve_chunked(volume, out, *, psf_sigma_px: float, iterations: int = 20, chunk_budget_mb: float = 512.0,
                       threads: int | None = None):
    """:func:`tomo4d.dvc.deconvolve` of a volume of any size into the Zarr array ``out``, box by box.

    Parameters
    ----------
    volume : array_like, dask array or lazy Volume, shape (z, y, x)
        Read box by box (NaN refused as read).
    out : path-like
        Zarr array written (float32, the volume's shape), published when complete; its hidden ``.<name>.rl``
        folder holds the passes of an interrupted run, which a rerun with the same inputs resumes.
    psf_sigma_px, iterations
        As :func:`tomo4d.dvc.deconvolve`.
    chunk_budget_mb : float
        Memory of one box (:data:`DECONVOLVE_BYTES_PER_VOXEL` per voxel of its widened extent).
    threads : int, optional
        Threads of the convolutions (default :func:`tomo4d.threads`); the result does not depend on them.

    Returns
    -------
    dask.array.Array
        The deconvolved volume, read lazily from ``out`` (:func:`open_deconvolved`).
    """
    import zarr

    data = volume.data if hasattr(volume, "voxel_size_nm") and hasattr(volume, "data") else volume
    if len(data.shape) != 3:
        raise InputError(f"volume has shape {tuple(data.shape)}; give a 3D (z, y, x) volume")
    sigma = check_number("psf_sigma_px", psf_sigma_px, minimum=0, exclusive_minimum=True)
    n = check_int("iterations", iterations, minimum=1)
    budget = int(check_number("chunk_budget_mb", chunk_budget_mb, minimum=0, exclusive_minimum=True) * 2**20)
    out = Path(out)
    g = _kernel(sigma)
    r = len(g) // 2
    pad = 2 * r
    shape_p = tuple(int(s) + 2 * pad for s in data.shape)
    k, inner = _plan(shape_p, r, n, budget)
    norm = _range(data, budget)
    work = out.parent / f".{out.name}.rl"
    key = {"shape": [int(s) for s in data.shape], "sigma": sigma, "iterations": n, "k": k, "inner": list(inner),
           "norm": list(norm)}
    if work.exists() and _read_key(work) != key:
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    (work / "key.json").write_text(json.dumps(key), encoding="utf-8")
    boxes, passes = _boxes(shape_p, inner), [min(k, n - i) for i in range(0, n, k)]
    stores = [zarr.open_array(str(work / f"u{i}.zarr"), mode="a", shape=shape_p, chunks=inner, dtype="f4")
              for i in range(min(2, len(passes) - 1))]
    result = zarr.open_array(str(work / "out.zarr"), mode="a", shape=tuple(data.shape), chunks=inner, dtype="f4")
    n_threads = resolve_threads(threads)
    with ThreadPoolExecutor(n_threads, thread_name_prefix="tomo4d-deconvolve") as ex:
        for j, kj in enumerate(passes):
            marker = work / f"pass{j}.done"
            if marker.exists():
                continue
            src = None if j == 0 else stores[(j - 1) % 2]
            last = j == len(passes) - 1
            _pass(data, src, None if last else stores[j % 2], result, boxes, g, kj, 2 * r * kj, pad, norm, shape_p,
                  last, ex, n_threads)
            marker.touch()
    if out.exists():
        shutil.rmtree(out)
    (work / "out.zarr").rename(out)
    shutil.rmtree(work)
    return open_deconvolved(out)


def open_deconvolved(path):
    """The Zarr array written by :func:`deconvolve_chunked` as a lazy dask array (boxes read straight from it)."""
    import zarr

    from .._array import lazy_from_reader

    arr = zarr.open_array(str(path), mode="r")
    return lazy_from_reader(arr, chunks=arr.chunks, name=f"deconvolved-{Path(path).resolve()}")


def _read_key(work: Path):
    try:
        return json.loads((work / "key.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
