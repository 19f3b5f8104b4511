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
3-4e-7 of the grey range (measured; tests/dvc/test_deconvolve_chunked.py allows 2e-6).  The passes resume: a pass whose
marker is on disk is not run again by a rerun of the same computation.
"""

from __future__ import annotations

import json
import math
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
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


def _starts(n_p: int, inner: int, pad: int) -> list[int]:
    """Box edges along one padded axis: 0, then ``pad + k inner``: every box but the first (which holds the
    padding too) covers whole output chunks of side ``inner``."""
    return [0] + list(range(pad + inner, n_p, inner))


def _boxes(shape_p, inner, pad: int):
    edges = [_starts(n, s, pad) + [n] for n, s in zip(shape_p, inner)]
    return [(np.array([z0, y0, x0]), np.array([z1, y1, x1]))
            for z0, z1 in zip(edges[0][:-1], edges[0][1:]) for y0, y1 in zip(edges[1][:-1], edges[1][1:])
            for x0, x1 in zip(edges[2][:-1], edges[2][1:])]


@dataclass(frozen=True)
class _Plan:
    """One box-by-box deconvolution: the PSF factor, padding, box side, grey normalisation and the work folder
    (estimates ``u0``/``u1`` stored with a front offset so that box edges fall on their chunk edges)."""

    shape: tuple[int, int, int]
    g: np.ndarray
    pad: int
    inner: tuple[int, int, int]
    norm: tuple[float, float]
    work: str

    @property
    def shape_p(self) -> tuple[int, int, int]:
        return tuple(s + 2 * self.pad for s in self.shape)

    @property
    def offset(self) -> np.ndarray:
        return np.array([(-self.pad) % s for s in self.inner])

    def store(self, i: int, mode: str = "r"):
        import zarr

        shape = tuple(int(a + b) for a, b in zip(self.shape_p, self.offset))
        return zarr.open_array(str(Path(self.work) / f"u{i}.zarr"), mode=mode, shape=shape, chunks=self.inner,
                               dtype="f4")

    def output(self, mode: str = "r"):
        import zarr

        return zarr.open_array(str(Path(self.work) / "out.zarr"), mode=mode, shape=self.shape, chunks=self.inner,
                               dtype="f4")


def _box(data, plan: _Plan, j: int, k: int, lo, hi, last: bool, threads: int | None = None) -> None:
    """Pass ``j`` (``k`` iterations, halo ``2 r k``) on the box ``[lo, hi)`` of the padded volume: from the
    estimate of pass ``j - 1`` (none: the start, 0.5) into that of pass ``j`` or, last, the output.  Whole chunks
    written (the same bytes when a cluster retries it)."""
    h = (len(plan.g) // 2) * 2 * k
    shape_p, off = np.asarray(plan.shape_p), plan.offset
    elo, ehi = np.maximum(lo - h, 0), np.minimum(hi + h, shape_p)
    if j == 0:
        u = np.full(tuple(ehi - elo), 0.5)
    else:
        u = np.asarray(plan.store((j - 1) % 2)[tuple(slice(int(a), int(b)) for a, b in zip(elo + off, ehi + off))],
                       np.float64)
    x = _padded(data, elo, ehi, plan.pad, plan.norm)
    n = resolve_threads(threads)
    with ThreadPoolExecutor(n, thread_name_prefix="tomo4d-deconvolve") as ex:
        for _ in range(k):
            u *= _blur(x / (_blur(u, plan.g, ex, n) + 1e-12), plan.g, ex, n)
    if not last:
        part = u[tuple(slice(int(a - e), int(b - e)) for a, b, e in zip(lo, hi, elo))]
        plan.store(j % 2, "r+")[tuple(slice(int(a), int(b)) for a, b in zip(lo + off, hi + off))] = \
            part.astype(np.float32)
        return
    olo, ohi = np.maximum(lo, plan.pad), np.minimum(hi, shape_p - plan.pad)  # the unpadded volume
    if np.any(ohi <= olo):
        return
    part = u[tuple(slice(int(a - e), int(b - e)) for a, b, e in zip(olo, ohi, elo))]
    plan.output("r+")[tuple(slice(int(a - plan.pad), int(b - plan.pad)) for a, b in zip(olo, ohi))] = \
        ((part - 0.05) * plan.norm[1] + plan.norm[0]).astype(np.float32)


def _run_pass(data, plan: _Plan, j: int, k: int, last: bool, client, threads) -> None:
    boxes = _boxes(plan.shape_p, plan.inner, plan.pad)
    if client is None:
        for lo, hi in boxes:
            _box(data, plan, j, k, lo, hi, last, threads)
        return
    from distributed import wait

    futures = [client.submit(_box, data, plan, j, k, lo, hi, last, pure=False) for lo, hi in boxes]
    wait(futures)
    for fut in futures:
        fut.result()  # a task that failed (after the cluster's retries) fails the pass


def deconvolve_chunked(volume, out, *, psf_sigma_px: float, iterations: int = 20, chunk_budget_mb: float = 512.0,
                       threads: int | None = None, client=None):
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
    client : distributed.Client, optional
        Each pass's boxes as tasks on its cluster (every task writes whole chunks of the shared stores: a retried
        task writes the same bytes); the work folder must be on storage the workers share.

    Returns
    -------
    dask.array.Array
        The deconvolved volume, read lazily from ``out`` (:func:`open_deconvolved`).
    """
    data = volume.data if hasattr(volume, "voxel_size_nm") and hasattr(volume, "data") else volume
    if len(data.shape) != 3:
        raise InputError(f"volume has shape {tuple(data.shape)}; give a 3D (z, y, x) volume")
    sigma = check_number("psf_sigma_px", psf_sigma_px, minimum=0, exclusive_minimum=True)
    n = check_int("iterations", iterations, minimum=1)
    budget = int(check_number("chunk_budget_mb", chunk_budget_mb, minimum=0, exclusive_minimum=True) * 2**20)
    out = Path(out)
    g = _kernel(sigma)
    r = len(g) // 2
    shape = tuple(int(s) for s in data.shape)
    k, inner = _plan(tuple(s + 4 * r for s in shape), r, n, budget)
    work = out.parent / f".{out.name}.rl"
    plan = _Plan(shape=shape, g=g, pad=2 * r, inner=inner, norm=_range(data, budget), work=str(work))
    key = {"shape": list(shape), "sigma": sigma, "iterations": n, "k": k, "inner": list(inner),
           "norm": list(plan.norm)}
    if work.exists() and _read_key(work) != key:
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    (work / "key.json").write_text(json.dumps(key), encoding="utf-8")
    passes = [min(k, n - i) for i in range(0, n, k)]
    for i in range(min(2, len(passes) - 1)):
        plan.store(i, "a")
    plan.output("a")
    for j, kj in enumerate(passes):
        marker = work / f"pass{j}.done"
        if not marker.exists():
            _run_pass(data, plan, j, kj, j == len(passes) - 1, client, threads)
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
