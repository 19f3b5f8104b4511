"""Out-of-core global registration: the levels of :func:`tomo4d.register.register` within a memory budget.

``register(..., chunk_budget_mb=...)`` sends volumes whose in-memory working set exceeds the budget here.  Each
level of the binning schedule is one of:

* **whole** (the binned pair fits the budget): both volumes are binned by streaming block means over z-slabs
  (each slab read lazily, slab edges on multiples of the factor), then the in-memory Gauss-Newton level runs on
  the binned pair.  Bit-identical to the in-memory level (the same float32 operations per binned voxel).  When
  the coarsest given level does not fit, coarser factors (x2) are put in front until one does: the pyramid's
  coarse end always sees the whole volume.
* **sampled** (it does not fit): sub-boxes of the fixed volume (over the mask's bounding box), as many as fit the
  budget beside the read of one, placed where the fixed image fixes the motion (:mod:`._sampling`: a greedy
  D-optimal choice on a coarse guide image of the first whole level; evenly spread boxes missed a collector's
  textured edge).  Each box keeps its fixed voxels (1-voxel halo for the
  central-difference gradient) and the moving box that the current estimate maps it into, widened by the cubic support, a slack
  for the updates and :data:`SPLINE_MARGIN` voxels so that the B-spline prefilter of the box equals the whole
  volume's to ~1e-7 (the prefilter's impulse response decays as 0.268^n).  A moving box that the estimate
  leaves is read again.  The Gauss-Newton sums of every box are taken about the level's centre (the box sums
  are moved from the box centre by the exact affine change of the coordinates ``u``) and added: the normal
  equations of the sampled voxels, exactly as the in-memory level forms them over all voxels.

Memory: one slab (binning) or one box read at a time, plus the kept level / boxes, all within the budget.
"""

from __future__ import annotations

import logging
import math

import numpy as np
from scipy import ndimage

from .._array import read_box, to_numpy
from .._validate import check_finite_chunk
from ..errors import InputError
from . import _global as g
from ._registration import Registration

log = logging.getLogger(__name__)

#: voxels of moving read beyond a box's cubic support: the prefilter of the box equals the whole volume's to
#: 0.268^12 ~ 1.4e-7 of the grey range there
SPLINE_MARGIN = 12
#: voxels of moving read beyond what the current estimate maps a box into: room for the next updates
SLACK = 4
#: interior side of a sampled box (level voxels) and the least number of boxes wanted
BOX_PX = 64
MIN_BOXES = 8


def level_fits(shape, b: int, budget: int) -> bool:
    """The level of factor ``b`` of a volume of ``shape`` fits ``budget`` bytes in memory."""
    n = math.prod(int(s) // b for s in shape)
    return n * g.LEVEL_BYTES_PER_VOXEL <= budget


def schedule(shape, levels: list[int], budget: int) -> list[int]:
    """``levels`` with coarser factors (x2) in front until the coarsest fits the budget (if any can)."""
    out = list(levels)
    b = out[0]
    while not level_fits(shape, b, budget) and min(shape) // (2 * b) >= g.MIN_VOXELS_PER_AXIS:
        b *= 2
        out.insert(0, b)
    return out


def _read(data, lo, hi, name: str) -> np.ndarray:
    """``data[lo:hi]`` (3 axes) as numpy, NaN/Inf refused chunk by chunk."""
    block = read_box(data, tuple(slice(int(a), int(c)) for a, c in zip(lo, hi)))
    check_finite_chunk(name, block, int(lo[0]))
    return block


def _read_binned(data, lo_b, hi_b, b: int, name: str, *, mask: bool = False) -> np.ndarray:
    """Level-``b`` voxels ``[lo_b, hi_b)`` of ``data`` (block means of full-resolution voxels, as ``_bin``)."""
    block = _read(data, np.asarray(lo_b) * b, np.asarray(hi_b) * b, name)
    block = block.astype(np.float32) if mask else np.asarray(block, np.float32)
    out = g._bin(block, b)
    return np.ascontiguousarray(out > 0.5 if mask else out)


def bin_streamed(data, b: int, budget: int, name: str, *, mask: bool = False) -> np.ndarray:
    """The block mean by ``b`` of the whole of ``data``, read in z-slabs of a multiple of ``b`` slices."""
    nz, ny, nx = (int(s) for s in data.shape)
    per_slice = ny * nx * (np.dtype(data.dtype).itemsize + 8.0)
    depth = max(b, int(budget // 2 // per_slice) // b * b)
    out = np.empty((nz // b, ny // b, nx // b), bool if mask else np.float32)
    for z0 in range(0, (nz // b) * b, depth):
        z1 = min(z0 + depth, (nz // b) * b)
        out[z0 // b:z1 // b] = _read_binned(data, (z0 // b, 0, 0), (z1 // b, ny // b, nx // b), b, name, mask=mask)
    return out


def _mask_bbox(mask, budget: int):
    """``(lo, hi)`` full-resolution bounding box of the True voxels of ``mask`` (read in z-slabs)."""
    nz, ny, nx = (int(s) for s in mask.shape)
    depth = max(1, int(budget // 4 // max(ny * nx, 1)))
    anyz, anyy, anyx = np.zeros(nz, bool), np.zeros(ny, bool), np.zeros(nx, bool)
    for z0 in range(0, nz, depth):
        blk = np.asarray(to_numpy(mask[z0:z0 + depth])).astype(bool)
        anyz[z0:z0 + len(blk)] = blk.any(axis=(1, 2))
        anyy |= blk.any(axis=(0, 2))
        anyx |= blk.any(axis=(0, 1))
    idx = [np.flatnonzero(a) for a in (anyz, anyy, anyx)]
    return np.array([i[0] for i in idx]), np.array([i[-1] + 1 for i in idx])


def _axis_starts(r0: int, r1: int, s: int, k: int) -> list[int]:
    """``k`` starts of boxes of side ``s`` spread over ``[r0, r1)`` (a tiling when ``k`` boxes cover it)."""
    if k >= -(-(r1 - r0) // s):
        return list(range(r0, r1, s))
    if k == 1:
        return [r0 + (r1 - r0 - s) // 2]
    return [int(round(v)) for v in np.linspace(r0, r1 - s, k)]


def layout(region_lo, region_hi, budget: int, order: int, b: int, itemsize: int, *, shape_b=None,
           box_px: int = BOX_PX, max_boxes: int | None = None, pick=None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Boxes ``[(lo, hi), ...]`` (level voxels, interior) over the region: the boxes kept and the read of one
    within the budget (a moving box is at most the level's ``shape_b``).  All the tiles when they fit; else
    ``pick(candidates, n)`` (:mod:`._sampling`: where the fixed image holds information) or, without it, ``n``
    boxes spread evenly."""
    ext = np.asarray(region_hi) - np.asarray(region_lo)
    pad = 2 * (SLACK + 3 + (SPLINE_MARGIN if order > 1 else 0))
    best = None
    s = int(min(box_px, ext.max()))
    while True:  # the side (box_px, halved down to 16) sampling most voxels; MIN_BOXES boxes when possible
        side = np.minimum(s, ext)
        mov = side + pad if shape_b is None else np.minimum(side + pad, shape_b)
        kept = np.prod(side + 2) * 5.0 + np.prod(mov) * 4.0
        read = np.prod(mov * b) * (itemsize + 4.0) + np.prod(mov) * 4.0  # block, float32 copy; coefficients
        n = max(int((budget - read) // kept), 0)  # the boxes kept, and the transient read of one
        n = min(n, int(np.prod([-(-int(e) // int(d)) for e, d in zip(ext, side)])))
        if max_boxes is not None:
            n = min(n, int(max_boxes))
        score = (min(n, MIN_BOXES), n * float(np.prod(side))) if n else (-1, -kept)  # none fits: the smallest
        if best is None or score > best[0]:
            best = (score, side, max(n, 1))
        if s <= 16:
            break
        s //= 2
    _, side, n = best
    cand = np.array([-(-int(e) // int(d)) for e, d in zip(ext, side)])
    k = cand.copy()
    if np.prod(k) > n and pick is not None:
        from ._sampling import candidates

        return pick(candidates(region_lo, region_hi, side), n)
    if np.prod(k) > n:
        k = np.maximum(1, np.floor(cand * (n / np.prod(cand)) ** (1 / 3))).astype(int)
        grown = True
        while grown:
            grown = False
            for a in np.argsort(-(cand - k) / cand):
                if k[a] < cand[a] and np.prod(k) // k[a] * (k[a] + 1) <= n:
                    k[a] += 1
                    grown = True
    starts = [_axis_starts(int(region_lo[a]), int(region_hi[a]), int(side[a]), int(k[a])) for a in range(3)]
    boxes = []
    for z in starts[0]:
        for y in starts[1]:
            for x in starts[2]:
                lo = np.array([z, y, x])
                boxes.append((lo, np.minimum(lo + side, region_hi)))
    return boxes


def _shift_matrix(d) -> np.ndarray:
    """``u = A u_local`` for homogeneous centred coordinates whose centre moves by ``-d``."""
    a = np.eye(4)
    a[:3, 3] = d
    return a


class _Box:
    """One sampled region of a level: fixed voxels (with a 1-voxel halo) and the moving box they map into."""

    def __init__(self, f, m, msk, lo, hi, b: int, shape_b, c):
        self.data_m, self.b, self.shape_b = m, b, np.asarray(shape_b)
        self.origin = lo - 1                              # level index of the fixed array's voxel 0
        self.fixed = _read_binned(f, self.origin, hi + 1, b, "fixed")
        self.sel = np.zeros(self.fixed.shape, bool)
        self.sel[1:-1, 1:-1, 1:-1] = True
        if msk is not None:
            self.sel &= _read_binned(msk, self.origin, hi + 1, b, "mask", mask=True)
        self.inner = (lo.astype(float), hi.astype(float) - 1.0)  # fixed voxels used, level index
        c_local = (np.asarray(self.fixed.shape) - 1.0) / 2.0
        self.a = _shift_matrix(self.origin + c_local - c)
        self.coef = None

    def moments(self, slabs) -> np.ndarray:
        from . import _kernels

        out = np.empty((self.fixed.shape[0], 3, 3, 4, 4))
        slabs(_kernels.hessian_moments, self.fixed.shape[0], self.fixed, self.sel, out)
        return g.moments_about(out.sum(axis=0), self.a[:3, 3])

    def _mapped(self, phi, c) -> tuple[np.ndarray, np.ndarray]:
        corners = np.array([[self.inner[i][0], self.inner[j][1], self.inner[k][2]]
                            for i in (0, 1) for j in (0, 1) for k in (0, 1)])
        p = (corners - c) @ phi[:3, :3].T + c + phi[:3, 3]
        return p.min(axis=0), p.max(axis=0)

    def _covers(self, pmin, pmax, glo, ghi) -> bool:
        return bool(np.all((pmin >= self.vlo) | (self.vlo <= glo)) and np.all((pmax <= self.vhi) | (self.vhi >= ghi)))

    def prepare_moving(self, phi, c, order: int, glo, ghi) -> None:
        """Read the moving box the estimate ``phi`` maps this box into, unless the one held still covers it."""
        pmin, pmax = self._mapped(phi, c)
        if self.coef is not None and self._covers(pmin, pmax, glo, ghi):
            return
        sp = SPLINE_MARGIN if order > 1 else 0
        lo = np.clip(np.floor(pmin).astype(int) - (2 + SLACK + sp), 0, self.shape_b - 1)
        hi = np.clip(np.ceil(pmax).astype(int) + (3 + SLACK + sp), lo + 1, self.shape_b)
        block = _read_binned(self.data_m, lo, hi, self.b, "moving")
        if order > 1:
            block = ndimage.spline_filter(block, order=order, output=np.float32, mode="mirror")
        self.coef, self.m_origin = np.ascontiguousarray(block, np.float32), lo
        # moving positions whose taps stay SPLINE_MARGIN inside an edge of the box that is not the volume's
        self.vlo = np.where(lo > 0, lo + sp + 1.0, -np.inf)
        self.vhi = np.where(hi < self.shape_b, hi - sp - 3.0, np.inf)

    def sums(self, phi, c, order: int, glo, ghi, shift: float, slabs) -> np.ndarray:
        """The kernel's sums over this box, coordinates ``u`` about the level centre ``c``."""
        from . import _kernels

        mat = np.ascontiguousarray(phi[:3, :3])
        off = mat @ (self.origin - c) + c + phi[:3, 3] - self.m_origin
        lo = np.maximum(glo, self.vlo) - self.m_origin
        hi = np.minimum(ghi, self.vhi) - self.m_origin
        out = np.empty((self.fixed.shape[0], _kernels.N_SUMS))
        slabs(_kernels.warp_sums, self.fixed.shape[0], self.coef, self.fixed, self.sel, mat, off, lo, hi, order,
              shift, out)
        s = out.sum(axis=0)
        jt = s[g.N_PHOTO:].reshape(3, 3, 4)
        s[g.N_PHOTO:] = np.einsum("jk,vik->vij", self.a, jt).ravel()
        return s


def _boxes(f, m, msk, b: int, budget: int, order: int, *, box_px: int, max_boxes, msk_bbox, guide=None,
           rigid: bool = False):
    """The sampled boxes of level ``b`` with the level's inverse Hessian, grey shift and spread, radius."""
    shape_b = np.array([int(n) // b for n in f.shape])
    c = (shape_b - 1.0) / 2.0
    r0, r1 = np.ones(3, int), shape_b - 1
    if msk_bbox is not None:
        r0 = np.maximum(r0, msk_bbox[0] // b)
        r1 = np.minimum(r1, -(-msk_bbox[1] // b))
    itemsize = max(np.dtype(f.dtype).itemsize, np.dtype(m.dtype).itemsize)
    pick = None
    if guide is not None:  # the boxes where the fixed image fixes the motion (tomo4d.register._sampling)
        from ._sampling import choose

        def pick(cands, n):
            return [cands[i] for i in sorted(choose(cands, guide.information(cands, b, rigid), n))]

        budget = max(budget - guide.nbytes, 0)
    spots = layout(r0, r1, budget, order, b, itemsize, shape_b=shape_b, box_px=box_px, max_boxes=max_boxes,
                   pick=pick)
    boxes = [_Box(f, m, msk, lo, hi, b, shape_b, c) for lo, hi in spots]
    if msk is not None and b > 1 and sum(int(bx.sel.sum()) for bx in boxes) < 64:
        boxes = [_Box(f, m, None, lo, hi, b, shape_b, c) for lo, hi in spots]  # as the in-memory level
    boxes = [bx for bx in boxes if bx.sel.any()]
    n = sum(int(bx.sel.sum()) for bx in boxes)
    if n < 64:
        raise InputError(f"only {n} voxels to register at this level; enlarge the mask or the volume")
    vals = np.concatenate([bx.fixed[bx.sel].astype(np.float64) for bx in boxes])
    radius = max(float(np.max(np.abs(np.stack(bx.inner) - c))) for bx in boxes)
    return boxes, c, float(vals.mean()), float(vals.std()) or 1.0, radius, n


def gn_level_boxes(f, m, msk, b: int, phi, *, budget: int, rigid: bool, order: int, max_iterations: int,
                   tolerance_px: float, margin: int, photometric: bool, slabs, box_px: int = BOX_PX,
                   max_boxes=None, msk_bbox=None, guide=None):
    """One Gauss-Newton level on sampled boxes (level coordinates, Phi about the level centre)."""
    boxes, c, shift, t_std, radius, n_used = _boxes(f, m, msk, b, budget, order, box_px=box_px,
                                                    max_boxes=max_boxes, msk_bbox=msk_bbox, guide=guide, rigid=rigid)
    hinv = g.hessian_inverse(sum(bx.moments(slabs) for bx in boxes), rigid)
    glo, ghi = np.full(3, float(margin)), boxes[0].shape_b - 1.0 - margin
    converged, it, dnorm, resid, prev = False, 0, float("inf"), float("nan"), float("inf")
    for it in range(1, max_iterations + 1):  # noqa: B007 (read after the loop: the iteration count)
        s = np.zeros(g.N_PHOTO + 36)
        for bx in boxes:
            bx.prepare_moving(phi, c, order, glo, ghi)
            s += bx.sums(phi, c, order, glo, ghi, shift, slabs)
        if s[0] < 64:
            log.warning("registration moved the volume out of the field of view; stopping")
            break
        phi, resid, dnorm = g.gn_update(phi, s, hinv, rigid=rigid, photometric=photometric, t_std=t_std,
                                        radius=radius)
        if g.is_converged(dnorm, prev, tolerance_px):
            converged = True
            break
        prev = dnorm
    return phi, converged, it, resid, dnorm, {"boxes": len(boxes), "voxels": n_used}


def register_levels(f, m, msk, phi, levels, *, budget: int, rigid, order, max_iterations, tolerance_px,
                    margin_px, photometric, progress, pool, n_threads, box_px: int = BOX_PX, max_boxes=None,
                    sampling: str = "informative"):
    """The out-of-core counterpart of ``_global._register_levels`` (lazy ``f``, ``m``, ``msk``)."""
    c_full = (np.asarray(f.shape, float) - 1.0) / 2.0
    levels = schedule(f.shape, levels, budget)
    bbox = None if msk is None else _mask_bbox(msk, budget)
    guide = None  # the first whole level, coarsened: where the sampled levels put their boxes
    total_it, converged, resid, dnorm, how = 0, False, float("nan"), float("nan"), []
    for i, b in enumerate(levels):
        slabs = g._Slabs(pool, n_threads)
        pb = g._phi_to_level(phi, c_full, b, f.shape)
        tol = (tolerance_px if i == len(levels) - 1 else max(tolerance_px, g.COARSE_TOLERANCE_PX)) / b
        kw = dict(rigid=rigid, order=order, max_iterations=max_iterations, tolerance_px=tol, margin=margin_px,
                  photometric=photometric, slabs=slabs)
        if level_fits(f.shape, b, budget):
            fb, mb = bin_streamed(f, b, budget, "fixed"), bin_streamed(m, b, budget, "moving")
            mkb = None if msk is None else bin_streamed(msk, b, budget, "mask", mask=True)
            if mkb is not None and mkb.sum() < 64:
                mkb = None if b > 1 else mkb
            pb, converged, it, resid, dnorm = g._gn_level(fb, mb, mkb, pb, **kw)
            if guide is None and sampling == "informative":
                from ._sampling import Guide

                guide = Guide(fb, mkb, b, budget)
            del fb, mb, mkb
            how.append({"binning": b, "route": "whole"})
        else:
            pb, converged, it, resid, dnorm, info = gn_level_boxes(f, m, msk, b, pb, budget=budget, box_px=box_px,
                                                                   max_boxes=max_boxes, msk_bbox=bbox, guide=guide,
                                                                   **kw)
            how.append({"binning": b, "route": "sampled", **info})
        phi = g._phi_from_level(pb, c_full, b, f.shape)
        total_it += it
        log.debug("register level bin %d (%s): %d iterations, residual %.4f", b, how[-1]["route"], it, resid)
        if progress is not None:
            progress(i + 1, len(levels))
    return Registration(phi=phi, converged=bool(converged), iterations=int(total_it), residual=float(resid),
                          centre_zyx_px=tuple(float(v) for v in c_full), delta_phi_norm=float(dnorm),
                          levels=tuple(levels), method="gauss-newton",
                          extra={"out_of_core": {"chunk_budget_mb": budget / 2**20, "levels": how}})


#: working memory of :func:`apply_phi_slab` per output voxel: the output (float32) and the moving box it samples
#: (input, float32 copy, float64 prefilter), for small rotations
APPLY_BYTES_PER_VOXEL = 4.0 + 2 * (8.0 + 8.0)


def apply_phi_slab(image, phi, z0: int, z1: int, *, order: int = 3, threads: int | None = None) -> np.ndarray:
    """Slices ``[z0, z1)`` of ``apply_phi(image, phi, order=order)`` (mode ``"nearest"``, the image's grid and
    centre), reading only the box of ``image`` they sample (lazy input: dask or a lazy Volume's data).

    The box is widened by the interpolation support and, for ``order > 1``, :data:`SPLINE_MARGIN` voxels: the
    B-spline prefilter of the box equals the whole image's to ~1e-7 of its grey range (the prefilter's
    response decays as 0.268^n), so slabs written one after the other reproduce :func:`apply_phi` to that
    accuracy (integer outputs, rounded: identical but for the rare voxel at a rounding boundary).

    The box is prefiltered once (as scipy's ``affine_transform`` does it: edge-padded by 12, float64) and the
    slab's slices are interpolated in ``threads`` z-parts side by side (scipy releases the GIL; default
    :func:`tomo4d.threads` / the CPUs this process may use).  The parts differ from one call only in how the
    sample coordinates are rounded (~1e-13 px).
    """
    from concurrent.futures import ThreadPoolExecutor

    from .._threads import resolve_threads
    from .phi import check_phi

    p = check_phi(phi)
    data = image.data if hasattr(image, "voxel_size_nm") and hasattr(image, "data") else image
    shape = np.asarray(data.shape, int)
    c = (shape - 1.0) / 2.0
    f = p[:3, :3]
    off = c + p[:3, 3] - f @ c
    corners = np.array([[z, y, x] for z in (z0, z1 - 1) for y in (0, shape[1] - 1) for x in (0, shape[2] - 1)],
                       float)
    pos = corners @ f.T + off
    sp = SPLINE_MARGIN if order > 1 else 0
    lo = np.clip(np.floor(pos.min(axis=0)).astype(int) - (2 + sp), 0, shape - 1)
    hi = np.clip(np.ceil(pos.max(axis=0)).astype(int) + (3 + sp), lo + 1, shape)
    box = np.asarray(_read(data, lo, hi, "image"), np.float32)
    n = max(1, min(resolve_threads(threads), int(z1 - z0)))
    out = np.empty((int(z1 - z0), int(shape[1]), int(shape[2])), np.float32)
    npad = 12 if order > 1 else 0
    with ThreadPoolExecutor(n, thread_name_prefix="tomo4d-resample") as ex:
        coeffs = _spline_coefficients(box, int(order), ex, n) if order > 1 else box
        del box

        def part(a: int, b: int) -> None:
            ndimage.affine_transform(coeffs, f, offset=f @ np.array([a, 0.0, 0.0]) + off - lo + npad,
                                     output=out[a - z0:b - z0], order=int(order), mode="nearest", prefilter=False)

        cuts = [int(z0) + (int(z1) - int(z0)) * i // n for i in range(n + 1)]
        _all(ex, part, zip(cuts[:-1], cuts[1:]))
    return out


def _all(ex, fn, args) -> None:
    for fut in [ex.submit(fn, *a) for a in args]:
        fut.result()


def _spline_coefficients(box: np.ndarray, order: int, ex, n: int) -> np.ndarray:
    """scipy ``affine_transform``'s own prefilter of ``box`` (edge-padded by 12, float64, axis after axis),
    each axis's lines filtered in ``n`` blocks side by side (the same values as one call)."""
    c = np.pad(box, 12, mode="edge").astype(np.float64)
    for axis in range(3):
        across = 1 if axis == 0 else 0  # blocks along another axis: whole lines in each
        cuts = [c.shape[across] * i // n for i in range(n + 1)]

        def lines(a: int, b: int, axis=axis, across=across) -> None:
            sl = tuple(slice(a, b) if d == across else slice(None) for d in range(3))
            ndimage.spline_filter1d(c[sl], order, axis=axis, output=c[sl], mode="nearest")

        _all(ex, lines, zip(cuts[:-1], cuts[1:]))
    return c
