"""Local digital volume correlation on a node grid, all nodes solved as one batch.

For every node ``p`` a cubic window of ``2 hw + 1`` voxels of the reference is
matched to the deformed volume by a local affine Phi about ``p`` (12
parameters), minimising ``sum (deformed(Phi(x)) - reference(x))^2`` with the
inverse-compositional Gauss-Newton scheme: the Jacobian comes from the
reference gradients, so each node's Hessian is computed and inverted once, and
an iteration only resamples the deformed volume (cubic B-spline) and
accumulates a 12-vector.  The nodes of a level are solved together by a
compiled kernel running in parallel threads; a node that fails is flagged,
never raised.  Failed and outlier nodes are then replaced by interpolation from
converged neighbours, and counted in ``field.notes``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

import numpy as np

from .._validate import check_int, check_number, show
from ..errors import InputError
from ..register._global import as_image, as_mask, check_same_shape
from ..register.phi import check_phi
from .field import DisplacementField, NodeStatus, _triple, node_grid

log = logging.getLogger(__name__)

__all__ = ["correlate", "correlate_pyramid", "replace_bad_nodes", "flag_outliers", "correct_curvature"]


def _voxel_size(obj):
    from ..volume import Volume

    return obj.voxel_size_nm if isinstance(obj, Volume) else (1.0, 1.0, 1.0)


def _integer_search(ref, deformed, positions, hw, phis, active, radius):
    """Refine the translation of each active node by the best integer shift (normalised cross-correlation)."""
    r = int(radius)
    shape = np.asarray(ref.shape)
    for n in np.nonzero(active)[0]:
        p = positions[n]
        t0 = np.round(phis[n, :3, 3]).astype(int)
        lo = p - hw + t0 - r
        hi = p + hw + t0 + r + 1
        lo_c, hi_c = np.maximum(lo, 0), np.minimum(hi, shape)
        if np.any(hi_c - lo_c < 2 * hw + 1):
            continue
        win = ref[p[0] - hw[0]:p[0] + hw[0] + 1, p[1] - hw[1]:p[1] + hw[1] + 1, p[2] - hw[2]:p[2] + hw[2] + 1]
        big = deformed[lo_c[0]:hi_c[0], lo_c[1]:hi_c[1], lo_c[2]:hi_c[2]]
        from skimage.feature import match_template

        cc = match_template(big, win)
        k = np.unravel_index(int(np.argmax(cc)), cc.shape)
        shift = lo_c + np.asarray(k) - (p - hw)
        phis[n, :3, 3] = shift


def _select_backend(backend, device, threads):
    """``(solve, name)``: a function solving a batch of nodes in place, and the backend's name."""
    if backend not in ("auto", "numba", "torch"):
        raise InputError(f"backend={backend!r}: use 'auto', 'numba' or 'torch'")
    if backend == "auto":
        import importlib.util

        backend = "numba"
        if importlib.util.find_spec("torch") is not None:
            import torch

            if torch.cuda.is_available():
                backend = "torch"
    if backend == "torch":
        from ._torch_backend import resolve_device, solve_nodes_torch

        dev = resolve_device(device)

        def solve(ref, grad, mask, image, coef, opts, positions, hw, phis, sel, status, iterations, residual,
                  delta):
            solve_nodes_torch(ref, grad, mask, image, coef, opts[0], opts[1], positions, hw, phis, sel, opts[2],
                              opts[3], opts[4], status, iterations, residual, delta, device=dev)

        return solve, f"torch:{dev}"
    if device is not None:
        raise InputError(f"device={device!r} needs backend='torch' (the numba backend runs on the CPU)")
    from . import _kernels

    _kernels.set_threads(threads)

    def solve(ref, grad, mask, image, coef, opts, positions, hw, phis, sel, status, iterations, residual, delta):
        _kernels.solve_nodes(ref, grad, mask, image, coef, opts[0], opts[1], positions, hw, phis, sel, opts[2],
                             opts[3], opts[4], status, iterations, residual, delta)

    return solve, "numba"


def _neighbour_median_f(f, usable, grid_shape):
    """Component-wise median of F over each node's 3x3x3 grid neighbourhood (usable nodes only).

    The blur compensation needs the local deformation gradient, which varies
    slowly; a single window's affine fit is noisy (its F_zz scatters by ~1e-2
    on the phantom), while the neighbourhood median is not biased by a few
    failed or interface nodes."""
    import warnings

    if grid_shape is None or int(np.prod(grid_shape)) != len(f):
        return f
    g = np.where(usable[:, None, None], f, np.nan).reshape(tuple(grid_shape) + (9,))
    pad = np.pad(g, [(1, 1)] * 3 + [(0, 0)], constant_values=np.nan)
    gs = grid_shape
    stack = np.stack([pad[a:a + gs[0], b:b + gs[1], c:c + gs[2]] for a in range(3) for b in range(3)
                      for c in range(3)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        med = np.nanmedian(stack, axis=0).reshape(-1, 3, 3)
    return np.where(np.all(np.isfinite(med), axis=(1, 2))[:, None, None], med, f)


def _psf_pass(ref, dfm, kmask, cov, opts, positions, hw, phis, active, kstatus, iters, resid, delta, solve,
              start_phis, tolerance_px2, order, grid_shape):
    """One PSF-compensated pass (see :mod:`tomo4d.dvc.psf`): group nodes by their compensating blurs,
    blur cropped copies of both volumes per group and re-solve the group's nodes in place."""
    from scipy import ndimage

    from . import _kernels
    from .psf import blur_covariance, compensating_blurs, group_nodes

    idx = np.nonzero(active)[0]
    ok = kstatus[idx] != _kernels.K_DIVERGED
    ok &= kstatus[idx] != _kernels.K_SINGULAR
    ok &= np.all(np.isfinite(phis[idx]), axis=(1, 2))
    start = np.where(ok[:, None, None], phis[idx], start_phis[idx])
    f_all = np.where(np.all(np.isfinite(phis), axis=(1, 2))[:, None, None], phis, start_phis)[:, :3, :3]
    det = np.linalg.det(f_all)
    usable = np.zeros(len(phis), bool)
    usable[idx[ok]] = True
    usable &= (det > 0.2) & (det < 5.0)
    f = _neighbour_median_f(f_all, usable, grid_shape)[idx]
    det = np.linalg.det(f)
    f = np.where(((det > 0.2) & (det < 5.0))[:, None, None], f, np.eye(3))
    bd, br = compensating_blurs(f, cov)
    groups = group_nodes(bd, br, tolerance_px2)
    shape = np.asarray(ref.shape)
    offsets = np.array([[a, b, c] for a in (-1, 1) for b in (-1, 1) for c in (-1, 1)], float) * hw
    for g in groups:
        nodes = idx[g]
        bd_g, br_g = bd[g].mean(0), br[g].mean(0)
        # box holding the group's reference windows and their current images in the deformed volume,
        # plus the reach of the blur and of the cubic spline
        pos = positions[nodes].astype(float)
        warped = np.einsum("nij,kj->nki", start[g, :3, :3], offsets) + (pos + start[g, :3, 3])[:, None, :]
        lo = np.minimum((pos - hw).min(0), warped.reshape(-1, 3).min(0))
        hi = np.maximum((pos + hw).max(0), warped.reshape(-1, 3).max(0))
        reach = 4.0 * np.sqrt(max(np.linalg.eigvalsh(bd_g).max(), np.linalg.eigvalsh(br_g).max(), 0.0)) + 6
        lo = np.maximum(np.floor(lo - reach), 0).astype(np.int64)
        hi = np.minimum(np.ceil(hi + reach) + 1, shape).astype(np.int64)
        box = tuple(slice(a, b) for a, b in zip(lo, hi))
        r = blur_covariance(ref[box], br_g)
        d = blur_covariance(dfm[box], bd_g)
        grad = np.stack(np.gradient(r)).astype(np.float32)
        coef = ndimage.spline_filter(d, order=3, output=np.float32, mode="mirror") if order == 3 else d
        sub_phis = start[g].copy()
        sub_status = np.full(len(nodes), _kernels.K_NOT_CONVERGED, np.int8)
        sub_it = np.zeros(len(nodes), np.int32)
        sub_res = np.full(len(nodes), np.nan)
        sub_delta = np.full(len(nodes), np.nan)
        solve(r, grad, np.ascontiguousarray(kmask[box]), d, coef, opts, positions[nodes] - lo, hw, sub_phis,
              np.ones(len(nodes), np.bool_), sub_status, sub_it, sub_res, sub_delta)
        phis[nodes], kstatus[nodes], iters[nodes] = sub_phis, sub_status, sub_it
        resid[nodes], delta[nodes] = sub_res, sub_delta
    sd = np.sqrt(np.diag(cov))
    log.info("DVC PSF compensation: %d node groups, scanner-frame blur sigma (z, y, x) = %s px", len(groups),
             np.round(sd, 3))
    return {"psf_sigma_effective_px": [float(v) for v in sd], "psf_groups": len(groups),
            "psf_max_extra_sigma_px": float(np.sqrt(max(np.linalg.eigvalsh(bd).max(), np.linalg.eigvalsh(br).max(),
                                                        0.0)))}


def correlate(reference, deformed, *, node_spacing=10, half_window=None, mask=None, phi0=None,
              initial: DisplacementField | None = None, search_radius_px: int = 0, order: int = 3,
              max_iterations: int = 50, tolerance_px: float = 1e-3, min_texture: float = 0.02,
              mask_fraction: float = 0.5, max_displacement_px: float | None = None,
              replace: bool = True, outlier_threshold: float = 3.0, threads: int | None = None,
              switch_px: float = 0.05, curvature_correction: bool = True, smooth_sigma_px: float = 0.0,
              psf_sigma_px=None, psf_passes: int = 1, psf_tolerance_px2: float = 0.1,
              backend: str = "auto", device=None,
              progress: Callable[[int, int], None] | None = None) -> DisplacementField:
    """Local DVC: one affine Phi per node of a regular grid, reference -> deformed.

    Parameters
    ----------
    reference, deformed : (z, y, x) array or Volume
        Same shape, no NaNs.
    node_spacing : int or (3,) int
        Distance between nodes, px.
    half_window : int or (3,) int, optional
        Half size of each correlation window, px (window ``2 hw + 1``); default
        ``node_spacing`` (50 % overlap between neighbouring windows).
    mask : (z, y, x) bool array, optional
        Reference voxels belonging to the sample; voxels outside are ignored
        and nodes with less than ``mask_fraction`` of their window inside are
        skipped (``OUTSIDE_MASK``).
    phi0 : (4, 4) array, optional
        Global initial guess about the volume centre (e.g. ``register(...).phi``).
    initial : DisplacementField, optional
        Initial guess interpolated from another field (e.g. a coarser level).
    search_radius_px : int
        If > 0, an integer search of this radius around the initial guess
        (normalised cross-correlation) precedes Gauss-Newton.
    order : int
        Interpolation of the deformed volume: 3 (cubic B-spline) or 1 (linear).
    max_iterations : int
        Gauss-Newton iterations per node.
    tolerance_px : float
        Convergence when an update moves the window by less than this, px.
    min_texture : float
        Skip windows whose grey-level standard deviation is below this fraction
        of the whole reference's (``LOW_TEXTURE``).
    mask_fraction : float
        Minimum fraction of window voxels inside ``mask``.
    max_displacement_px : float, optional
        A node moving farther than this from its initial guess is ``DIVERGED``;
        default the half-window.
    replace : bool
        Flag outliers and replace non-converged/diverged/outlier nodes by
        interpolation from converged neighbours (status ``INTERPOLATED``;
        counts in ``notes["replaced"]``).
    outlier_threshold : float
        Normalised median test threshold (see :func:`flag_outliers`); 0 disables.
    smooth_sigma_px : float
        Gaussian pre-smoothing of both volumes, px (0: none).  Use ~1 for noisy
        scans: noise in the reference gradients otherwise inflates the
        Hessian, shrinks every Gauss-Newton step and stalls convergence.
    switch_px : float
        With ``order=3``, iterate with (cheaper) linear interpolation until an
        update is smaller than this, px, then with cubic B-splines; 0: cubic only.
    curvature_correction : bool
        Remove the bias of the affine window model on curved fields: an affine
        fit over a window of second moments ``s_k^2 = hw_k (hw_k + 1) / 3``
        returns ``u + 1/2 sum_k s_k^2 d2u/dx_k^2`` at the node, so that term
        (second differences of the node displacements on the grid) is
        subtracted.  Needs >= 3 nodes per axis; recorded in ``notes``.
    psf_sigma_px : float or (3,) float, optional
        Gaussian point-spread function of the scans, px (one sigma or
        ``(z, y, x)``), e.g. the scanner's known blur sigma / voxel size.
        When given, each node compares images blurred to a common effective
        PSF implied by its own F: a scanner blurs in its frame, so a stretched
        sample pulled back to the reference looks sharper along the stretch
        (covariance ``F^-1 S F^-T`` instead of ``S``).  The deformed volume is
        blurred by ``F D+ F^T`` and the reference by ``D-``, where
        ``D = S - F^-1 S F^-T = D+ - D-`` (derivation in
        :mod:`tomo4d.dvc.psf`); ``S`` includes ``smooth_sigma_px``.  F comes
        from a first plain pass (or from ``initial``), then ``psf_passes``
        compensated passes run on groups of nodes with equal blurs.  None
        (default): no compensation, a single pass.  Matters at strains of a
        few % and more when sigma is a few px (10 % strain, sigma 2.8 px,
        supersampled phantom: 0.096 -> 0.023 px; see benchmarks/RESULTS.md).
    psf_passes : int
        Compensated passes (each re-estimates the blurs from the latest F).
    psf_tolerance_px2 : float
        Nodes whose compensating covariances agree to this, px^2, share one
        pair of blurred volumes.
    backend : {"auto", "numba", "torch"}
        Per-node Gauss-Newton implementation: the compiled CPU kernel
        (``numba``) or batched tensors (``torch``, CPU or GPU, float32).
        ``auto``: torch when it is installed and ``torch.cuda.is_available()``,
        else numba.  Both give the same field within ~1e-3 px.
    device : str or torch.device, optional
        Torch device (default ``"cuda"`` when available, else ``"cpu"``);
        only with the torch backend.
    threads : int, optional
        Compute threads (default all cores available to numba; torch threads
        are left as configured).
    progress : callable(done, total), optional
        Called with the number of nodes solved.

    Returns
    -------
    DisplacementField
    """
    ref = as_image(reference, name="reference")
    dfm = as_image(deformed, name="deformed")
    check_same_shape(ref, dfm, ("reference", "deformed"))
    msk = as_mask(mask, ref.shape)
    smooth_sigma_px = check_number("smooth_sigma_px", smooth_sigma_px, minimum=0.0)
    if smooth_sigma_px > 0:
        from scipy import ndimage as _ndi

        ref = _ndi.gaussian_filter(ref, smooth_sigma_px)
        dfm = _ndi.gaussian_filter(dfm, smooth_sigma_px)
    sp = _triple(node_spacing, "node_spacing")
    hw = _triple(sp if half_window is None else half_window, "half_window")
    if order not in (1, 3) or isinstance(order, bool):
        raise InputError(f"order={show(order)}: use 1 (linear) or 3 (cubic)")
    max_iterations = check_int("max_iterations", max_iterations, minimum=1)
    search_radius_px = check_int("search_radius_px", search_radius_px, minimum=0)
    tolerance_px = check_number("tolerance_px", tolerance_px, minimum=0.0, exclusive_minimum=True)
    min_texture = check_number("min_texture", min_texture, minimum=0.0)
    mask_fraction = check_number("mask_fraction", mask_fraction, minimum=0.0, maximum=1.0)
    switch_px = check_number("switch_px", switch_px, minimum=0.0)
    outlier_threshold = check_number("outlier_threshold", outlier_threshold, minimum=0.0)
    if max_displacement_px is not None:
        max_displacement_px = check_number("max_displacement_px", max_displacement_px, minimum=0.0,
                                           exclusive_minimum=True)
    if threads is not None:
        threads = check_int("threads", threads, minimum=1)
    positions, grid_shape = node_grid(ref.shape, node_spacing=sp, half_window=hw)
    n = positions.shape[0]
    t_start = time.perf_counter()
    # initial guess
    phis = np.tile(np.eye(4), (n, 1, 1))
    if phi0 is not None:
        g = check_phi(phi0, name="phi0")
        c = (np.asarray(ref.shape, float) - 1.0) / 2.0
        phis[:, :3, :3] = g[:3, :3]
        phis[:, :3, 3] = (positions - c) @ g[:3, :3].T + c + g[:3, 3] - positions
    if initial is not None:
        if not isinstance(initial, DisplacementField):
            raise InputError("initial must be a DisplacementField (e.g. from a coarser level)")
        u, f = initial.interpolate(positions.astype(float))
        phis[:, :3, :3] = f
        phis[:, :3, 3] = u
    status = np.full(n, NodeStatus.NOT_CONVERGED, np.int8)
    active = np.ones(n, bool)
    # masks and texture
    win_slices = [tuple(slice(p[i] - hw[i], p[i] + hw[i] + 1) for i in range(3)) for p in positions]
    gstd = float(ref.std()) or 1.0
    for k, s in enumerate(win_slices):
        if msk is not None and msk[s].mean() < mask_fraction:
            status[k] = NodeStatus.OUTSIDE_MASK
            active[k] = False
            continue
        w = ref[s] if msk is None else ref[s][msk[s]]
        if w.std() < min_texture * gstd:
            status[k] = NodeStatus.LOW_TEXTURE
            active[k] = False
    if not active.any():
        raise InputError(f"no node can be correlated: {int((status == NodeStatus.OUTSIDE_MASK).sum())} outside "
                         f"the mask, {int((status == NodeStatus.LOW_TEXTURE).sum())} without texture; check the "
                         "mask or lower min_texture/mask_fraction")
    if search_radius_px > 0:
        _integer_search(ref, dfm, positions, np.asarray(hw), phis, active, search_radius_px)
    _initial_phis = phis.copy()
    from scipy import ndimage

    from . import _kernels

    solve, backend_name = _select_backend(backend, device, threads)
    cov = None
    if psf_sigma_px is not None:
        from .psf import psf_covariance

        cov = psf_covariance(psf_sigma_px, smooth_sigma_px)
        psf_passes = check_int("psf_passes", psf_passes, minimum=1)     # 1 is usually enough
        psf_tolerance_px2 = check_number("psf_tolerance_px2", psf_tolerance_px2, minimum=0.0,
                                         exclusive_minimum=True)
    kmask = np.ones(ref.shape, np.bool_) if msk is None else msk
    iters = np.zeros(n, np.int32)
    resid = np.full(n, np.nan)
    delta = np.full(n, np.nan)
    kstatus = np.full(n, _kernels.K_NOT_CONVERGED, np.int8)
    maxd = float(max(hw)) if max_displacement_px is None else float(max_displacement_px)
    opts = (int(order), float(switch_px), int(max_iterations), float(tolerance_px), maxd)
    hw_arr = np.asarray(hw, np.int64)
    psf_notes = {}
    if cov is None or initial is None:
        grad = np.stack(np.gradient(ref)).astype(np.float32)
        coef = (ndimage.spline_filter(dfm, order=3, output=np.float32, mode="mirror") if order == 3 else dfm)
        # solve in chunks so that progress can be reported; each chunk is one parallel batch
        order_idx = np.nonzero(active)[0]
        chunk = max(256, len(order_idx) // 8 + 1)
        done = 0
        for start in range(0, len(order_idx), chunk):
            sel = np.zeros(n, np.bool_)
            sel[order_idx[start:start + chunk]] = True
            solve(ref, grad, kmask, dfm, coef, opts, positions, hw_arr, phis, sel, kstatus, iters, resid, delta)
            done += int(sel.sum())
            if progress is not None and cov is None:
                progress(done, len(order_idx))
    if cov is not None:
        start_phis = phis.copy() if initial is not None else _initial_phis
        for _ in range(int(psf_passes)):
            psf_notes = _psf_pass(ref, dfm, kmask, cov, opts, positions, hw_arr, phis, active, kstatus, iters,
                                  resid, delta, solve, start_phis, float(psf_tolerance_px2), order, grid_shape)
        if progress is not None:
            progress(int(active.sum()), int(active.sum()))
    kmap = {_kernels.K_CONVERGED: NodeStatus.CONVERGED, _kernels.K_NOT_CONVERGED: NodeStatus.NOT_CONVERGED,
            _kernels.K_DIVERGED: NodeStatus.DIVERGED, _kernels.K_SINGULAR: NodeStatus.LOW_TEXTURE}
    for kcode, st in kmap.items():
        status[active & (kstatus == kcode)] = st
    bad = ~np.all(np.isfinite(phis), axis=(1, 2))
    status[bad] = NodeStatus.DIVERGED
    phis[bad] = np.eye(4)
    seconds = time.perf_counter() - t_start
    n_active = int(active.sum())
    field = DisplacementField(positions_zyx_px=positions.astype(float), phi=phis, status=status,
                              grid_shape=grid_shape, node_spacing_px=sp, half_window_px=hw,
                              voxel_size_nm=_voxel_size(reference), iterations=iters, residual=resid,
                              notes={"seconds": seconds, "nodes_per_second": n_active / max(seconds, 1e-9),
                                     "correlated_nodes": n_active, "backend": backend_name, **psf_notes,
                                     "volume_shape_zyx": [int(v) for v in ref.shape],
                                     "measured_status_counts": None})
    field.notes["measured_status_counts"] = field.status_counts()
    log.info("DVC %d nodes (%d correlated) in %.2f s: %s", n, n_active, seconds, field.status_counts())
    if replace:
        if outlier_threshold > 0:
            field = flag_outliers(field, threshold=outlier_threshold)
        field = replace_bad_nodes(field)
    if curvature_correction:
        field = correct_curvature(field)
    return field


def correct_curvature(field: DisplacementField) -> DisplacementField:
    """Subtract the second-order bias of affine windows from the node displacements (see :func:`correlate`)."""
    from .field import _fill_from_neighbours

    if field.grid_shape is None or min(field.grid_shape) < 3 or not field.usable.any():
        return field.with_(notes={**field.notes, "curvature_correction": False})
    u = _fill_from_neighbours(field.positions_zyx_px, field.displacement_zyx_px, field.usable)
    ug = field.grid(u)
    corr = np.zeros_like(ug)
    for k in range(3):
        s2 = field.half_window_px[k] * (field.half_window_px[k] + 1) / 3.0
        h = float(field.node_spacing_px[k])
        d2 = np.gradient(np.gradient(ug, h, axis=k, edge_order=2), h, axis=k, edge_order=2)
        corr += 0.5 * s2 * d2
    phi = field.phi.copy()
    ok = field.usable
    phi[ok, :3, 3] -= corr.reshape(-1, 3)[ok]
    return field.with_(phi=phi, notes={**field.notes, "curvature_correction": True,
                                       "curvature_correction_max_px": float(np.abs(corr).max())})


def flag_outliers(field: DisplacementField, *, threshold: float = 3.0, epsilon_px: float = 0.1
                  ) -> DisplacementField:
    """Mark converged nodes whose displacement disagrees with their neighbours as ``OUTLIER``.

    A normalised median test (after Westerweel & Scarano 2005) made exact for
    linear fields: each of the 13 neighbour directions ``d`` of the 3x3x3
    neighbourhood predicts the node's displacement, by ``(u(p+d) + u(p-d)) / 2``
    when both neighbours converged, else by linear extrapolation
    ``2 u(p+d) - u(p+2d)`` from one side.  The node is an outlier when
    ``|u - median(pred)| / (median |pred - median(pred)| + epsilon_px) > threshold``
    for any component.  Needs a regular grid; other fields are returned unchanged.
    """
    import warnings

    if field.grid_shape is None:
        return field
    gs = field.grid_shape
    u = field.grid(field.displacement_zyx_px)
    ok = field.grid(field.converged)
    pad = np.pad(np.where(ok[..., None], u, np.nan), [(2, 2)] * 3 + [(0, 0)], constant_values=np.nan)

    def shifted(d):
        a, b, c = 2 + d[0], 2 + d[1], 2 + d[2]
        return pad[a:a + gs[0], b:b + gs[1], c:c + gs[2]]

    dirs = [(a, b, c) for a in (-1, 0, 1) for b in (-1, 0, 1) for c in (-1, 0, 1) if (a, b, c) > (0, 0, 0)]
    preds = []
    for d in dirs:
        d = np.asarray(d)
        plus, minus = shifted(d), shifted(-d)
        both = (plus + minus) / 2.0
        ext_p = 2 * plus - shifted(2 * d)
        ext_m = 2 * minus - shifted(-2 * d)
        pred = np.where(np.isfinite(both), both, np.where(np.isfinite(ext_p), ext_p, ext_m))
        preds.append(pred)
    preds = np.stack(preds)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        med = np.nanmedian(preds, axis=0)
        spread = np.nanmedian(np.abs(preds - med), axis=0)
        score = np.abs(u - med) / (spread + epsilon_px)
    n_pred = np.isfinite(preds[..., 0]).sum(0)
    flags = ok & (n_pred >= 3) & np.any(score > threshold, axis=-1)
    notes = {**field.notes, "outliers": int(flags.sum())}
    if not flags.any():
        return field.with_(notes=notes)
    status = field.status.copy()
    status[flags.ravel()] = NodeStatus.OUTLIER
    log.info("DVC: %d outlier nodes flagged", int(flags.sum()))
    return field.with_(status=status, notes=notes)


def replace_bad_nodes(field: DisplacementField, *, statuses: Sequence[NodeStatus] = (
        NodeStatus.NOT_CONVERGED, NodeStatus.DIVERGED, NodeStatus.OUTLIER), k: int = 8) -> DisplacementField:
    """Replace nodes with one of ``statuses`` by inverse-distance interpolation of the ``k`` nearest
    converged nodes (whole Phi: displacement and F).  Replaced nodes get status ``INTERPOLATED``;
    ``notes["replaced"]`` counts them per original status."""
    from .field import _idw

    bad = np.isin(field.status, [int(s) for s in statuses])
    good = field.converged
    counts = {NodeStatus(int(s)).name.lower(): int((field.status == s).sum()) for s in statuses
              if (field.status == s).any()}
    notes = {**field.notes, "replaced": counts, "n_replaced": int(bad.sum())}
    if not bad.any():
        return field.with_(notes=notes)
    if not good.any():
        log.warning("DVC: no converged node, %d bad nodes cannot be replaced", int(bad.sum()))
        notes["n_replaced"] = 0
        return field.with_(notes=notes)
    vals = field.phi[:, :3, :].reshape(field.n_nodes, 12)
    new = _idw(field.positions_zyx_px[good], vals[good], field.positions_zyx_px[bad], k=k)
    phi = field.phi.copy()
    phi[bad, :3, :] = new.reshape(-1, 3, 4)
    status = field.status.copy()
    status[bad] = NodeStatus.INTERPOLATED
    log.info("DVC: %d nodes replaced by interpolation from converged neighbours (%s)", int(bad.sum()), counts)
    return field.with_(phi=phi, status=status, notes=notes)


def correlate_pyramid(reference, deformed, *, pyramid: Sequence[int] = (100, 70, 35), half_windows=None,
                      mask=None, phi0=None, search_radius_px: int = 0,
                      progress: Callable[[int, int], None] | None = None, **options) -> DisplacementField:
    """Local DVC refined over a pyramid of node spacings (coarse to fine).

    Each level runs :func:`correlate` with ``node_spacing = pyramid[i]`` and
    ``half_window = half_windows[i]`` (default: equal to the spacing, i.e. 50 %
    window overlap, as in the literature: 100 -> 70 -> 35), initialised by
    interpolating the previous level's field (the first level by ``phi0`` and an
    optional integer search).  Levels whose windows do not fit in the volume are
    skipped.

    Returns
    -------
    DisplacementField
        The finest level; ``notes["levels"]`` summarises every level.
    """
    if isinstance(pyramid, (str, bytes)) or not hasattr(pyramid, "__iter__"):
        raise InputError(f"pyramid={show(pyramid)} must be a sequence of node spacings, e.g. (100, 70, 35)")
    levels = [check_int(f"pyramid[{i}]", s, minimum=1) for i, s in enumerate(pyramid)]
    if not levels:
        raise InputError("pyramid is empty; give node spacings, coarse to fine, e.g. (100, 70, 35)")
    if half_windows is None:
        hws = list(levels)
    else:
        if isinstance(half_windows, (str, bytes)) or not hasattr(half_windows, "__iter__"):
            raise InputError(f"half_windows={show(half_windows)} must be a sequence, one per pyramid level")
        hws = [check_int(f"half_windows[{i}]", h, minimum=1) for i, h in enumerate(half_windows)]
    if len(hws) != len(levels):
        raise InputError(f"half_windows={show(hws)} needs one value per pyramid level ({len(levels)})")
    search_radius_px = check_int("search_radius_px", search_radius_px, minimum=0)
    shape = np.asarray(getattr(reference, "shape", np.shape(reference)))
    if not np.all(shape >= 2 * hws[-1] + 1):
        # the finest level is the result: never replaced by a coarser one
        raise InputError(f"the finest pyramid level (node spacing {levels[-1]}, half-window {hws[-1]}) needs "
                         f"windows of {2 * hws[-1] + 1} voxels but the volume has shape "
                         f"{tuple(int(v) for v in shape)}; use a finest half-window <= {(int(shape.min()) - 1) // 2}")
    # coarser levels whose windows do not fit are skipped (listed in notes["levels"])
    usable = [(s, h) for s, h in zip(levels, hws) if np.all(shape >= 2 * h + 1)]
    field = None
    summaries = []
    for i, (s, h) in enumerate(usable):
        field = correlate(reference, deformed, node_spacing=s, half_window=h, mask=mask,
                          phi0=phi0 if field is None else None, initial=field,
                          search_radius_px=search_radius_px if field is None else 0, **options)
        summaries.append({"node_spacing_px": s, "half_window_px": h, **field.status_counts(),
                          "seconds": field.notes.get("seconds")})
        if progress is not None:
            progress(i + 1, len(usable))
    field.notes["levels"] = summaries
    return field
