"""A start for DVC at large, non-uniform axial stretch: a 1D (z-only) registration.

A swelling electrode held by its current collector stretches along z, and not uniformly: the
phantom's silicon anode at 50 % expansion stretches ~34 % on the collector side and ~50 % on the
separator side, the collector does not move and the separator is carried as a block.  One global
affine (``tomo4d.register``) cannot represent that, and the regularised global DVC
(:func:`~tomo4d.dvc.correlate_global`) keeps what its start gets wrong wherever the lithiated
silicon has lost its texture (``benchmarks/RESULTS.md``, issue 15).

:func:`axial_profile_start` measures the axial map ``z -> z + w(z)`` first: ``w`` piecewise linear
on knots along z (optionally one profile per lateral tile, blended bilinearly between tile
centres), found by Gauss-Newton / Levenberg-Marquardt on the whole volume's grey levels,

    sum_x [J(z + w(z), y, x) - b(z) I(x) - a(z)]^2 / var(I)  +  reg |w''|^2  +  grey_reg (|a'|^2 / var(I) + |b'|^2)

with brightness ``a(z)`` and contrast ``b(z)`` per z (the same knots), which absorb the lithiation's
grey change slice by slice.  Every knot is fitted from a whole lateral slab of voxels, so texture
left anywhere in the slab decides it.  Coarse to fine: Gaussian-smoothed volumes (sigma 4, 2, 1 px)
with knots 4, 2, 1 times ``knot_spacing``, then the lateral tiles started from the single profile.
The result is a :class:`DisplacementField` to pass as ``initial`` to :func:`correlate_global` or
:func:`correlate`.  Lateral displacements are left at zero.

Measured on the phantom's default HQ series (``benchmarks/RESULTS.md``, issue 15, seventh session): the start
alone is 2-3x closer to the truth than the global affine (median 0.33 / 0.94 px at T1 / T3 against 0.57 /
1.64 px); give :func:`correlate_global` ``levels=1`` with it (its coarse levels undo the start), and
deconvolve both scans first where the PSF is known (T1 0.23 px, T3 0.65-0.69 px).
"""

from __future__ import annotations

import logging
import time

import numpy as np

from .._chunks import fits_budget, plan_slabs, read_slab, volume_data
from .._validate import (
    as_image,
    as_mask,
    check_int,
    check_number,
    check_same_shape,
    show,
)
from ..errors import InputError
from .field import DisplacementField, NodeStatus

__all__ = ["axial_profile_start"]

log = logging.getLogger(__name__)

#: smoothing sigma (px) and knot-spacing multiple of the coarse-to-fine stages
_STAGES = ((4.0, 4), (2.0, 2), (1.0, 1))


def axial_profile_start(reference, deformed, *, knot_spacing: int = 4, tiles=(1, 1), regularisation: float = 1.0,
                        grey_regularisation: float = 1.0, iterations: int = 30, phi0=None, mask=None,
                        search_radius_px: int | None = None, node_spacing: int = 4,
                        lateral: bool = False, chunk_budget_mb: float | None = None) -> DisplacementField:
    """Axial map ``z -> z + w(z)`` (per lateral tile) as a displacement field, reference -> deformed.

    Parameters
    ----------
    reference, deformed : (z, y, x) array or Volume
        Same shape; the axial (stacking) direction is z.
    knot_spacing : int
        Knot spacing of ``w`` along z at the finest stage, px (>= 2).
    tiles : (int, int)
        Lateral tiles (y, x), each with its own profile, solved after (and started from) the single
        profile of the whole volume; ``(1, 1)``: one profile.
    regularisation : float
        Weight of the squared curvature of ``w`` (px^-1 units, >= 0), relative to the data term
        normalised by the reference's variance per voxel.
    grey_regularisation : float
        Weight of the squared slopes of the brightness and contrast profiles (>= 0); the brightness's in units of
        the reference's variance, so that the weight means the same for scans in any grey units.
    iterations : int
        Levenberg-Marquardt iterations per stage (>= 1).
    phi0 : (4, 4) array, optional
        Global affine about the volume centre (e.g. ``tomo4d.register(...).phi``); its axial
        displacement at each tile centre starts the coarsest stage (default: zero).
    mask : (z, y, x) bool array, optional
        Reference voxels to match.
    search_radius_px : int, optional
        Radius of the integer search that precedes the fit: each slab of ``2 knot_spacing`` slices of the
        reference is matched (normalised cross-correlation, lateral texture) to the deformed slab shifted
        by up to this many px from the start; default a quarter of the volume's z size; 0: no search.
    node_spacing : int
        Spacing of the returned field's grid (the global DVC's control grid of this spacing).
    lateral : bool
        Also fit an in-plane scale ``1 + s(z)`` about the lateral centre on the same knots (the electrode's
        lateral expansion, which grows from the collector up: 1.3-1.7 % on the phantom at T3); the field's
        lateral displacement is then ``s(z) (y - c_y, x - c_x)``.  With ``tiles``, the tiles refine ``w`` only.
        Synthetic test: lateral error 0.05 px where the motion is 0.19 px (median).  On the phantom at T3
        the start improves (0.94 -> 0.89 px; the separator's lateral error 0.5 -> 0.05 px), but the global
        DVC started from it returns to the same field as without (0.65 px): its optimum, not its start,
        lacks the lateral expansion (benchmarks/RESULTS.md, issue 15).
    chunk_budget_mb : float, optional
        Memory budget (MiB, default 512) for volumes that are not numpy arrays (Zarr, dask, a lazy Volume):
        when the fit's working set (:data:`AXIAL_BYTES_PER_VOXEL` per voxel) exceeds it, both volumes (and the
        mask) are read slab by slab and averaged over ``b x b`` lateral blocks, the smallest ``b`` that fits;
        z is kept whole.  The axial map commutes with a lateral average, so the fit is the same problem on
        fewer, less noisy columns (finer lateral texture is averaged away).  ``notes["axial_profile"]
        ["lateral_bin"]`` records ``b``; numpy arrays are used whole.

    Returns
    -------
    DisplacementField
        Nodes on ``control_grid(shape, node_spacing)``: displacement ``(w, 0, 0)``, F from central
        differences, status ``CONVERGED``; ``notes["axial_profile"]`` holds the knots (px), the
        profiles per tile and the final data cost.
    """
    from .global_dvc import _phis, control_grid

    check_int("knot_spacing", knot_spacing, minimum=2)
    check_number("regularisation", regularisation, minimum=0)
    check_number("grey_regularisation", grey_regularisation, minimum=0)
    check_int("iterations", iterations, minimum=1)
    check_int("node_spacing", node_spacing, minimum=2)
    ty, tx = _check_tiles(tiles)
    ref, dfm, msk, b = _inputs(reference, deformed, mask, chunk_budget_mb)
    shape = ref.shape if b == 1 else tuple(int(v) for v in volume_data(reference).shape)
    if shape[0] < 2 * knot_spacing or ref.shape[1] < ty or ref.shape[2] < tx:
        raise InputError(f"the volume of shape {shape} is too small for knot_spacing={knot_spacing} and "
                         f"tiles={show(tiles)}: give a smaller knot_spacing or fewer tiles")
    t0 = time.perf_counter()
    radius = shape[0] // 4 if search_radius_px is None else check_int("search_radius_px", search_radius_px, minimum=0)
    z = np.arange(shape[0], dtype=float)
    w0 = np.zeros(shape[0]) if phi0 is None else _affine_w(phi0, shape, (1, 1), z)[0, 0]  # the full grid's centre
    w_tiles, knots, cost, s_knots = _solve_stages(ref, dfm, msk, w0, (ty, tx), knot_spacing, regularisation,
                                                  grey_regularisation, iterations, radius, lateral=bool(lateral))
    pos, gs, origin = control_grid(shape, node_spacing)
    w_nodes = _blend_tiles(w_tiles, knots, shape, (ty, tx), pos)
    u = np.zeros((len(pos), 3))
    u[:, 0] = w_nodes
    if s_knots is not None:
        s_nodes = np.interp(pos[:, 0], knots, s_knots)
        u[:, 1:] = s_nodes[:, None] * (pos[:, 1:] - (np.asarray(shape[1:], float) - 1) / 2)
    phis = _phis(u.reshape(gs + (3,)), node_spacing)
    notes = {"method": "axial_profile", "volume_shape_zyx": list(shape), "grid_origin_px": origin.tolist(),
             "axial_profile": {"knots_z_px": knots.tolist(), "tiles": [ty, tx], "lateral_bin": b,
                               "lateral_scale": None if s_knots is None else np.asarray(s_knots).round(5).tolist(),
                               "w_px": np.asarray(w_tiles).round(4).tolist(), "data_cost": cost},
             "seconds": round(time.perf_counter() - t0, 3)}
    log.info("axial profile start: %d knots x %d tiles, lateral bin %d, in %.2f s", len(knots), ty * tx, b,
             notes["seconds"])
    return DisplacementField(positions_zyx_px=pos, phi=phis, status=np.full(len(pos), NodeStatus.CONVERGED, np.int8),
                             grid_shape=gs, node_spacing_px=(node_spacing,) * 3, half_window_px=(node_spacing,) * 3,
                             notes=notes)


#: working memory of the fit per voxel (both volumes, their smoothed copies, the slab search's, the mask)
AXIAL_BYTES_PER_VOXEL = 40


def _inputs(reference, deformed, mask, chunk_budget_mb):
    """(reference, deformed, mask, b): float32 volumes, whole (b = 1), or lazy ones averaged over b x b lateral
    blocks slab by slab when the whole fit exceeds the budget (mask: blocks entirely inside)."""
    big = [v for v in (reference, deformed) if not isinstance(volume_data(v), np.ndarray)]
    b = 1
    if big:
        sh = tuple(int(v) for v in volume_data(reference).shape)
        if len(sh) != 3:
            raise InputError(f"reference has shape {sh}; give a (z, y, x) volume")
        if tuple(volume_data(deformed).shape) != sh:
            raise InputError(f"deformed has shape {tuple(volume_data(deformed).shape)}, reference {sh}; give "
                             "volumes of one shape")
        while not fits_budget((sh[0], sh[1] // b, sh[2] // b), AXIAL_BYTES_PER_VOXEL, chunk_budget_mb) \
                and min(sh[1], sh[2]) // (b + 1) >= 8:
            b += 1
    if b == 1:  # whole (a lazy volume within the budget read at once)
        reference, deformed = (read_slab(volume_data(v), 0, volume_data(v).shape[0])[0]
                               if any(v is w for w in big) else v for v in (reference, deformed))
        ref = as_image(reference, name="reference").astype(np.float32, copy=False)
        dfm = as_image(deformed, name="deformed").astype(np.float32, copy=False)
        check_same_shape(ref, dfm, ("reference", "deformed"))
        return ref, dfm, as_mask(mask, ref.shape), 1
    ref, dfm = (_lateral_mean(volume_data(v), b, chunk_budget_mb) for v in (reference, deformed))
    msk = None if mask is None else _lateral_mean(volume_data(mask), b, chunk_budget_mb) > 0.999
    return ref, dfm, msk, b


def _lateral_mean(data, b: int, chunk_budget_mb) -> np.ndarray:
    """``data`` averaged over ``b x b`` lateral blocks (the last partial row/column of blocks dropped), read
    slab by slab: (nz, ny // b, nx // b) float32."""
    nz, ny, nx = (int(v) for v in data.shape)
    out = np.empty((nz, ny // b, nx // b), np.float32)
    for z0, z1 in plan_slabs(data.shape, bytes_per_voxel=12, chunk_budget_mb=chunk_budget_mb):
        block, _ = read_slab(data, z0, z1)
        block = block[:, : ny // b * b, : nx // b * b].astype(np.float32)
        out[z0:z1] = block.reshape(z1 - z0, ny // b, b, nx // b, b).mean(axis=(2, 4))
    return out


def _check_tiles(tiles) -> tuple[int, int]:
    try:
        ty, tx = (int(v) for v in tiles)
        ok = ty >= 1 and tx >= 1 and (ty, tx) == tuple(tiles)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise InputError(f"tiles={show(tiles)} is not two positive integers (y, x); give e.g. (1, 1) or (3, 3)")
    return ty, tx


def _knots(nz: int, h: int) -> np.ndarray:
    """Knots from 0 to nz - 1, spacing about ``h`` (the last knot at the last slice)."""
    k = max(1, int(round((nz - 1) / h)))
    return np.linspace(0.0, nz - 1.0, k + 1)


def _basis(z: np.ndarray, knots: np.ndarray) -> np.ndarray:
    """Hat functions (len(z), K): piecewise-linear interpolation on ``knots``."""
    eye = np.eye(len(knots))
    return np.stack([np.interp(z, knots, eye[k]) for k in range(len(knots))], axis=1)


def _tile_slices(shape, tiles):
    ey = np.linspace(0, shape[1], tiles[0] + 1).round().astype(int)
    ex = np.linspace(0, shape[2], tiles[1] + 1).round().astype(int)
    return [[(slice(ey[i], ey[i + 1]), slice(ex[j], ex[j + 1])) for j in range(tiles[1])] for i in range(tiles[0])]


def _affine_w(phi0, shape, tiles, z) -> np.ndarray:
    """Axial displacement of ``phi0`` along z at each tile centre: (ty, tx, nz)."""
    from ..register.phi import apply_phi_to_points, check_phi

    g = check_phi(phi0, name="phi0")
    c = (np.asarray(shape, float) - 1.0) / 2.0
    out = np.zeros(tuple(tiles) + (len(z),))
    for i, row in enumerate(_tile_slices(shape, tiles)):
        for j, (sy, sx) in enumerate(row):
            pts = np.stack([z, np.full_like(z, (sy.start + sy.stop - 1) / 2), np.full_like(z, (sx.start + sx.stop - 1) / 2)], 1)
            out[i, j] = (apply_phi_to_points(pts, g, centre=c) - pts)[:, 0]
    return out


def _solve_stages(ref, dfm, msk, w0, tiles, h, reg, greg, iterations, search_radius, lateral=False):
    """Coarse-to-fine single profile, then per tile; returns (w knots (ty, tx, K), knots, data cost, s knots or
    None): with ``lateral``, the single profile carries an in-plane scale ``s(z)`` too (:func:`_fit_lateral`)."""
    from scipy import ndimage

    nz = ref.shape[0]
    z = np.arange(nz, dtype=float)
    w_full = np.asarray(w0, float)
    if search_radius:
        w_full = _slab_search(ndimage.gaussian_filter(ref, 1.0), ndimage.gaussian_filter(dfm, 1.0), w_full,
                              2 * h, search_radius)
    stages = [(s, m, (1, 1)) for s, m in _STAGES] + ([(1.0, 1, tiles)] if tiles != (1, 1) else [])
    cost, s_knots, s_full = float("nan"), None, None
    for sigma, mult, tl in stages:
        stride = max(1, int(sigma))
        i_s = ndimage.gaussian_filter(ref, sigma)[:, ::stride, ::stride]
        j_s = ndimage.gaussian_filter(dfm, sigma)[:, ::stride, ::stride]
        m_s = None if msk is None else msk[:, ::stride, ::stride]
        knots = _knots(nz, h * mult)
        phi = _basis(z, knots)
        var = float(np.var(i_s)) or 1.0
        w_out = []
        if lateral and tl == (1, 1):
            wk = np.linalg.lstsq(phi, w_full, rcond=None)[0]
            sk = np.zeros(len(knots)) if s_knots is None else np.linalg.lstsq(phi, s_full, rcond=None)[0]
            wk, s_knots, cost = _fit_lateral(i_s, j_s, m_s, phi, knots, wk, sk, reg, greg, iterations, var)
            w_tiles, w_full = np.asarray([[wk]]), wk @ phi.T
            s_full = s_knots @ phi.T
            continue
        for row in _tile_slices(i_s.shape, tl):
            w_row = []
            for sy, sx in row:
                cols = (slice(None), sy, sx)
                w0 = w_full
                wk = np.linalg.lstsq(phi, w0, rcond=None)[0]
                mt = None if m_s is None else m_s[cols].reshape(nz, -1)
                wk, cost = _fit_tile(i_s[cols].reshape(nz, -1), j_s[cols].reshape(nz, -1), mt, phi, knots, wk,
                                     reg, greg, iterations, var)
                w_row.append(wk)
            w_out.append(w_row)
        w_tiles = np.asarray(w_out)
        w_full = w_tiles[0, 0] @ phi.T if tl == (1, 1) else None
    if s_knots is not None:
        s_knots = np.interp(knots, np.arange(nz, dtype=float), s_full)
    return w_tiles, knots, cost, s_knots


def _slab_search(ref, dfm, w0, h, radius) -> np.ndarray:
    """w (nz,) from an integer ZNCC search of slabs of ``h`` slices about ``w0``; poor slabs interpolated."""
    nz = ref.shape[0]
    hh = max(1, h // 2)
    centres, shifts, scores = [], [], []
    for zc in range(hh, nz - hh, hh):
        a = ref[zc - hh:zc + hh + 1].ravel()
        a = (a - a.mean()) / (a.std() * a.size + 1e-12)
        best, d_best = -2.0, 0
        base = int(round(w0[zc]))
        for d in range(base - radius, base + radius + 1):
            if zc + d - hh < 0 or zc + d + hh > nz - 1:
                continue
            b = dfm[zc + d - hh:zc + d + hh + 1].ravel()
            score = float(a @ (b - b.mean())) / (b.std() + 1e-12)
            if score > best:
                best, d_best = score, d
        centres.append(zc)
        shifts.append(d_best)
        scores.append(best)
    centres, shifts, scores = np.asarray(centres, float), np.asarray(shifts, float), np.asarray(scores)
    good = scores >= max(0.2, 0.5 * np.median(scores))
    if good.sum() < 2:
        return w0
    sh = shifts[good]
    med = np.array([np.median(sh[max(0, i - 1):i + 2]) for i in range(len(sh))])  # a 3-point median: outliers out
    return np.interp(np.arange(nz, dtype=float), centres[good], med)


def _interp_rows(vol, zq):
    """``vol`` (nz, m) linearly interpolated at rows ``zq`` (nz,); rows outside the volume: valid False."""
    nz = vol.shape[0]
    valid = (zq >= 0) & (zq <= nz - 1)
    zc = np.clip(zq, 0, nz - 1 - 1e-6)
    i0 = np.floor(zc).astype(int)
    f = (zc - i0)[:, None]
    return (1 - f) * vol[i0] + f * vol[i0 + 1], valid


def _fit_tile(i_t, j_t, m_t, phi, knots, wk, reg, greg, iterations, var):
    """Levenberg-Marquardt on (w, a, b) knots of one tile; returns (w knots, final data cost)."""
    nz, k = phi.shape
    g_t = np.gradient(j_t, axis=0)
    dk = np.diff(knots).mean()
    d2 = np.diff(np.eye(k), 2, axis=0)
    d1 = np.diff(np.eye(k), 1, axis=0)
    r_mat = np.zeros((3 * k, 3 * k))
    r_mat[:k, :k] = reg * d2.T @ d2 / dk ** 3
    r_mat[k:2 * k, k:2 * k] = r_mat[2 * k:, 2 * k:] = greg * d1.T @ d1 / dk + 1e-6 * np.eye(k)
    r_mat[k:2 * k, k:2 * k] /= var  # the brightness a in grey units: its terms / var(I), as the data term's
    ref_p = np.concatenate([np.zeros(2 * k), np.ones(k)])  # the tiny ridge pulls a -> 0, b -> 1 where no data
    p = np.concatenate([wk, np.zeros(k), np.ones(k)])
    scale = 1.0 / (var * i_t.shape[1])

    def evaluate(p, full):
        z = np.arange(nz, dtype=float)
        w, a, b = phi @ p[:k], phi @ p[k:2 * k], phi @ p[2 * k:]
        jw, valid = _interp_rows(j_t, z + w)
        wt = valid[:, None] * (np.ones_like(i_t) if m_t is None else m_t)
        r = jw - b[:, None] * i_t - a[:, None]
        dp = p - ref_p
        cost = scale * float(np.sum(wt * r * r)) + float(dp @ r_mat @ dp)
        if not full:
            return cost, None, None
        g, _ = _interp_rows(g_t, z + w)
        sums = {n: scale * np.sum(wt * v, axis=1) for n, v in
                (("gg", g * g), ("g", g), ("gi", g * i_t), ("n", np.ones_like(i_t)), ("i", i_t), ("ii", i_t * i_t),
                 ("gr", g * r), ("r", r), ("ir", i_t * r))}
        blk = lambda s: phi.T @ (s[:, None] * phi)  # noqa: E731
        h = np.block([[blk(sums["gg"]), -blk(sums["g"]), -blk(sums["gi"])],
                      [-blk(sums["g"]), blk(sums["n"]), blk(sums["i"])],
                      [-blk(sums["gi"]), blk(sums["i"]), blk(sums["ii"])]])
        grad = np.concatenate([phi.T @ sums["gr"], -phi.T @ sums["r"], -phi.T @ sums["ir"]])
        return cost, h + r_mat, grad + r_mat @ dp

    # keep the map monotone: 1 + w' > 0.2
    p, cost = _levenberg_marquardt(evaluate, p, iterations, lambda t: np.all(np.diff(phi @ t[:k]) > -0.8))
    return p[:k], cost


def _levenberg_marquardt(evaluate, p, iterations, admissible):
    """Minimise ``evaluate(p, full) -> (cost, H, grad)`` from ``p`` (steps refused unless ``admissible``);
    returns (p, cost)."""
    cost, h, grad = evaluate(p, True)
    mu = 1e-3
    for _ in range(iterations):
        trial = p + np.linalg.solve(h + mu * np.diag(np.diag(h) + 1e-12), -grad)
        if admissible(trial):
            c_new, _, _ = evaluate(trial, False)
            if c_new < cost:
                done = cost - c_new < 1e-9 * max(cost, 1e-30)
                p, mu = trial, max(mu / 3, 1e-7)
                cost, h, grad = evaluate(p, True)
                if done:
                    break
                continue
        mu *= 4
        if mu > 1e6:
            break
    return p, cost


def _blend_tiles(w_tiles, knots, shape, tiles, pos) -> np.ndarray:
    """w at ``pos`` (N, 3): each tile's profile at z, bilinear between tile centres (constant beyond)."""
    ty, tx = tiles
    prof = np.array([[np.interp(pos[:, 0], knots, w_tiles[i, j]) for j in range(tx)] for i in range(ty)])
    if ty * tx == 1:
        return prof[0, 0]
    rows = _tile_slices(shape, tiles)
    cy = np.array([(r[0][0].start + r[0][0].stop - 1) / 2 for r in rows])
    cx = np.array([(s[1].start + s[1].stop - 1) / 2 for s in rows[0]])
    fy = np.interp(pos[:, 1], cy, np.arange(ty)) if ty > 1 else np.zeros(len(pos))
    fx = np.interp(pos[:, 2], cx, np.arange(tx)) if tx > 1 else np.zeros(len(pos))
    iy0, ix0 = np.floor(fy).astype(int), np.floor(fx).astype(int)
    iy1, ix1 = np.minimum(iy0 + 1, ty - 1), np.minimum(ix0 + 1, tx - 1)
    ay, ax = fy - iy0, fx - ix0
    n = np.arange(len(pos))
    return ((1 - ay) * (1 - ax) * prof[iy0, ix0, n] + (1 - ay) * ax * prof[iy0, ix1, n]
            + ay * (1 - ax) * prof[iy1, ix0, n] + ay * ax * prof[iy1, ix1, n])


def _fit_lateral(i_s, j_s, m_s, phi, knots, wk, sk, reg, greg, iterations, var):
    """Levenberg-Marquardt on (w, s, a, b) knots of the whole volume: the axial map ``z + w(z)`` and an
    in-plane scale ``1 + s(z)`` about the lateral centre (the electrode's lateral expansion); returns
    (w knots, s knots, final data cost)."""
    from scipy import ndimage

    nz, ny, nx = i_s.shape
    k = phi.shape[1]
    grads = np.gradient(j_s)
    yy, xx = np.meshgrid(np.arange(ny) - (ny - 1) / 2, np.arange(nx) - (nx - 1) / 2, indexing="ij")
    dy, dx = yy.ravel(), xx.ravel()
    i_t = i_s.reshape(nz, -1)
    m_t = None if m_s is None else m_s.reshape(nz, -1)
    dk = np.diff(knots).mean()
    d2 = np.diff(np.eye(k), 2, axis=0)
    d1 = np.diff(np.eye(k), 1, axis=0)
    half = max(ny, nx) / 2.0                           # s in px at the lateral edge: regularised like w
    r_mat = np.zeros((4 * k, 4 * k))
    r_mat[:k, :k] = reg * d2.T @ d2 / dk ** 3
    r_mat[k:2 * k, k:2 * k] = reg * half ** 2 * d2.T @ d2 / dk ** 3 + 1e-6 * half ** 2 * np.eye(k)
    r_mat[2 * k:3 * k, 2 * k:3 * k] = r_mat[3 * k:, 3 * k:] = greg * d1.T @ d1 / dk + 1e-6 * np.eye(k)
    r_mat[2 * k:3 * k, 2 * k:3 * k] /= var  # the brightness a in grey units: / var(I), as the data term's
    ref_p = np.concatenate([np.zeros(3 * k), np.ones(k)])
    p = np.concatenate([wk, sk, np.zeros(k), np.ones(k)])
    scale = 1.0 / (var * i_t.shape[1])
    zc = np.arange(nz, dtype=float)[:, None]

    def sample(vol, coords):
        return ndimage.map_coordinates(vol, coords, order=1, mode="nearest").reshape(nz, -1)

    def evaluate(p, full):
        w, sc, a, b = (phi @ p[j * k:(j + 1) * k] for j in range(4))
        coords = np.stack(np.broadcast_arrays(zc + w[:, None], (ny - 1) / 2 + (1 + sc[:, None]) * dy[None],
                                              (nx - 1) / 2 + (1 + sc[:, None]) * dx[None]))
        valid = (coords[0] >= 0) & (coords[0] <= nz - 1) & (coords[1] >= 0) & (coords[1] <= ny - 1) \
            & (coords[2] >= 0) & (coords[2] <= nx - 1)
        flat = coords.reshape(3, -1)
        jw = sample(j_s, flat)
        wt = valid * (1.0 if m_t is None else m_t)
        r = jw - b[:, None] * i_t - a[:, None]
        dp = p - ref_p
        cost = scale * float(np.sum(wt * r * r)) + float(dp @ r_mat @ dp)
        if not full:
            return cost, None, None
        gz = sample(grads[0], flat)
        gs = sample(grads[1], flat) * dy[None] + sample(grads[2], flat) * dx[None]
        feats = (gz, gs, -np.ones_like(i_t), -i_t)
        h = np.zeros((4 * k, 4 * k))
        grad = np.zeros(4 * k)
        for u in range(4):
            grad[u * k:(u + 1) * k] = phi.T @ (scale * np.sum(wt * feats[u] * r, axis=1))
            for v in range(u, 4):
                blk = phi.T @ ((scale * np.sum(wt * feats[u] * feats[v], axis=1))[:, None] * phi)
                h[u * k:(u + 1) * k, v * k:(v + 1) * k] = blk
                h[v * k:(v + 1) * k, u * k:(u + 1) * k] = blk.T
        return cost, h + r_mat, grad + r_mat @ dp

    p, cost = _levenberg_marquardt(evaluate, p, iterations, lambda t: np.all(np.diff(phi @ t[:k]) > -0.8)
                                   and np.all(np.abs(phi @ t[k:2 * k]) < 0.5))
    return p[:k], p[k:2 * k], cost
