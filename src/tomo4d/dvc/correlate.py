"""Local digital volume correlation on a node grid, all nodes solved as one batch.

For every node ``p`` a cubic window of ``2 hw + 1`` voxels of the reference is
matched to the deformed volume by a local affine Phi about ``p`` (12
parameters), minimising ``sum (deformed(Phi(x)) - reference(x))^2`` with the
inverse-compositional Gauss-Newton scheme: the Jacobian comes from the
reference gradients, so each node's Hessian is computed and inverted once, and
an iteration only resamples the deformed volume (cubic B-spline) and
accumulates a 12-vector.  The nodes of a level are solved together by a
backend (:mod:`tomo4d.dvc._backend`: compiled threads or batched tensors); a
node that fails is flagged, never raised.  Failed and outlier nodes are then
replaced by interpolation from converged neighbours, and counted in
``field.notes``.

:func:`correlate` reads as its steps: check the inputs (:func:`_prepare`), the
initial guess (:func:`_initial_guess`), then batch by batch of the node grid
(:mod:`._batches`: each batch reads only its box of the volumes, so numpy, dask,
Zarr or HDF5 volumes larger than memory correlate within ``chunk_budget_mb``)
screen nodes by mask and texture, search and solve (:mod:`._solve`; then the PSF
passes), map the statuses (:func:`_node_statuses`), post-process (:func:`_postprocess`).
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable

import numpy as np

from .._array import is_lazy
from .._validate import as_lazy_image, as_lazy_mask, check_int, check_same_shape, show
from ..errors import InputError
from ..register.phi import check_phi
from ..volume import Volume
from ._backend import NodeState, select_backend
from ._batches import BYTES_PER_VOXEL, Sources
from ._solve import Prepared, solve_batches, solve_psf
from .field import DisplacementField, NodeStatus, _triple, node_grid
from .options import CorrelationOptions, PsfCompensation, resolve_options
from .postprocess import correct_curvature, flag_outliers, replace_bad_nodes

log = logging.getLogger(__name__)

__all__ = ["correlate", "CorrelationOptions", "PsfCompensation", "flag_outliers", "replace_bad_nodes",
           "correct_curvature", "FAILED_WARNING_FRACTION"]

#: more than this fraction of the correlated nodes not converged or diverged: the field is returned
#: unreplaced, with a warning (interpolating from a minority of nodes would hide the failure)
FAILED_WARNING_FRACTION = 0.5


def correlate(reference, deformed, *, node_spacing=10, half_window=None, mask=None, phi0=None,
              initial: DisplacementField | None = None, search_radius_px: int = 0,
              options: CorrelationOptions | None = None, psf: PsfCompensation | None = None,
              progress: Callable[[int, int], None] | None = None, client=None, **shortcuts) -> DisplacementField:
    """Local DVC: one affine Phi per node of a regular grid, reference -> deformed.

    Parameters
    ----------
    reference, deformed : (z, y, x) array or Volume
        Same shape, no NaNs; Volumes with known voxel sizes must have the same.
    node_spacing : int or (3,) int
        Distance between nodes, px (at most the volume's size along each axis).
    half_window : int or (3,) int, optional
        Half size of each correlation window, px (window ``2 hw + 1``); default
        ``node_spacing`` (50 % overlap between neighbouring windows).
    mask : (z, y, x) bool array, optional
        Reference voxels belonging to the sample; voxels outside are ignored
        and nodes with less than ``options.mask_fraction`` of their window
        inside are skipped (``OUTSIDE_MASK``).  A mask that leaves no node is refused.
    phi0 : (4, 4) array, optional
        Global initial guess about the volume centre (e.g. ``register(...).phi``).
    initial : DisplacementField, optional
        Initial guess interpolated from another field of these volumes (e.g. a
        coarser level); a field measured on another volume shape, or whose
        nodes lie outside the volume, is refused.
    search_radius_px : int
        If > 0, an integer search of this radius around the initial guess
        (normalised cross-correlation) precedes Gauss-Newton.
    options : CorrelationOptions, optional
        Everything else about the correlation (see :class:`CorrelationOptions`):
        interpolation order, iterations and tolerance, screening, out-of-view
        threshold, replacement, outlier test, curvature correction, smoothing,
        grey model, backend, device and threads.  Default ``CorrelationOptions()``.
    psf : PsfCompensation, optional
        Compensate the scanner's blur at large strain (see
        :class:`PsfCompensation` and :mod:`tomo4d.dvc.psf`): each node compares
        images blurred to a common effective PSF implied by its own F.  F comes
        from a first plain pass (or from ``initial``), then ``psf.passes``
        compensated passes run on groups of nodes with equal blurs.  Matters at
        strains of a few % and more when sigma is a few px (10 % strain, sigma
        2.8 px, supersampled phantom: 0.096 -> 0.023 px; benchmarks/RESULTS.md).
    progress : callable(done, total), optional
        Called with the number of nodes solved.
    client : distributed.Client, optional
        With lazy volumes (dask over Zarr, HDF5, TIFF on a file system every
        worker sees), each node batch is a task on this Dask cluster: it reads
        its own box and returns only its nodes' results.  In-memory volumes are
        solved here (shipping them to every task would cost more than it saves).
    **shortcuts
        Any field of :class:`CorrelationOptions` as a keyword (``order=1``,
        ``max_iterations=20``, ``backend="torch"``, ...), and ``psf_sigma_px``,
        ``psf_passes``, ``psf_tolerance_px2`` for :class:`PsfCompensation`.  A
        shortcut that contradicts ``options`` (or a PSF shortcut next to
        ``psf``) is refused.

    Returns
    -------
    DisplacementField
        Statuses per node (:class:`NodeStatus`).  ``OUT_OF_VIEW``: the warped
        window left the deformed volume (the sample grew out of the scanned
        region); such nodes are neither replaced nor usable.  ``notes`` holds
        timings, the backend, ``measured_status_counts`` (before replacement),
        ``failed_fraction`` (not converged or diverged among correlated nodes;
        above :data:`FAILED_WARNING_FRACTION` the field is returned unreplaced
        with a logged warning), ``out_of_view`` (final count, including failed
        nodes whose replacement would leave the view), ``replaced``/``n_replaced``,
        ``outliers``, the curvature correction and the PSF groups.

    Raises
    ------
    InputError
        Bad options, volumes of different shapes or voxel sizes, NaN voxels, a
        node spacing or window larger than the volume, a mask that leaves no
        node, or an ``initial`` field of another grid.
    """
    opts, psf = resolve_options(options, psf, shortcuts)
    search_radius_px = check_int("search_radius_px", search_radius_px, minimum=0)
    prep = _prepare(reference, deformed, mask, node_spacing, half_window, opts)
    t_start = time.perf_counter()
    phis = _initial_guess(prep, phi0, initial)
    backend = select_backend(opts)
    state = NodeState.start(phis)
    budget = opts.chunk_budget_mb * 2**20
    scr = solve_batches(prep, opts, backend, state, search_radius=search_radius_px,
                        solve=psf is None or initial is None, budget_bytes=budget,
                        progress=progress if psf is None else None, client=client)
    status, active = scr.status, scr.active
    if not active.any():
        _no_node(prep, opts, scr)
    psf_notes = {}
    if psf is not None:
        psf_notes = solve_psf(prep, opts, psf, backend, state, active, scr.start_phis, progress)
    status, phis = _node_statuses(status, active, state)
    seconds = time.perf_counter() - t_start
    n_active = int(active.sum())
    notes = {"seconds": seconds, "nodes_per_second": n_active / max(seconds, 1e-9), "correlated_nodes": n_active,
             "backend": backend.name, **psf_notes, "volume_shape_zyx": [int(v) for v in prep.shape],
             "batches": scr.batches, "batch_box_mib": scr.largest_box_voxels * BYTES_PER_VOXEL / 2**20,
             "batch_resolved_nodes": scr.refetched,
             **_status_notes(status, active)}
    field = DisplacementField(positions_zyx_px=prep.positions.astype(float), phi=phis, status=status,
                              grid_shape=prep.grid_shape, node_spacing_px=prep.node_spacing,
                              half_window_px=prep.half_window, voxel_size_nm=prep.voxel_size_nm,
                              iterations=state.iterations, residual=state.residual, notes=notes)
    log.info("DVC %d nodes (%d correlated) in %.2f s: %s", field.n_nodes, n_active, seconds, field.status_counts())
    return _postprocess(field, opts)


# -- steps of correlate ------------------------------------------------------------------------------

def _voxel_sizes(reference, deformed) -> tuple[float, float, float]:
    """The reference's voxel size (1 px = 1 unit for arrays); Volumes of known, different sizes refused."""

    if isinstance(reference, Volume) and isinstance(deformed, Volume) and reference.voxel_size_known \
            and deformed.voxel_size_known \
            and not np.allclose(reference.voxel_size_nm, deformed.voxel_size_nm, rtol=1e-6, atol=0.0):
        raise InputError(f"reference has voxel size {show(reference.voxel_size_nm)} nm but deformed has "
                         f"{show(deformed.voxel_size_nm)} nm (z, y, x); correlate scans of the same voxel size "
                         "(resample one of them first, e.g. tomo4d.register with binning)")
    return reference.voxel_size_nm if isinstance(reference, Volume) else (1.0, 1.0, 1.0)


def _prepare(reference, deformed, mask, node_spacing, half_window, opts: CorrelationOptions) -> Prepared:
    """Check the volumes, mask and grid (volumes stay as given: batches read and smooth their boxes)."""
    voxel = _voxel_sizes(reference, deformed)
    ref = as_lazy_image(reference, name="reference")
    dfm = as_lazy_image(deformed, name="deformed")
    check_same_shape(ref, dfm, ("reference", "deformed"))
    shape = tuple(int(v) for v in ref.shape)
    msk = as_lazy_mask(mask, shape)
    sp = _triple(node_spacing, "node_spacing")
    hw = _triple(sp if half_window is None else half_window, "half_window")
    # the largest spacing whose windows fit along each axis (the half-window defaults to the spacing)
    fit = [(n - 1) // 2 if half_window is None else n - 1 - 2 * h for n, h in zip(shape, hw)]
    too_far = [a for a in range(3) if sp[a] > shape[a] or (half_window is None and sp[a] > fit[a])]
    if too_far:
        a = too_far[0]
        why = (f"larger than the volume along {'zyx'[a]} ({sp[a]} px > {shape[a]} voxels, shape {shape})"
               if sp[a] > shape[a] else
               f"too large for the volume along {'zyx'[a]} ({shape[a]} voxels, shape {shape}): the half-window "
               f"defaults to the node spacing, so each window would span {2 * sp[a] + 1} voxels")
        hint = f"at most {min(fit)}" if min(fit) > 0 else "a smaller one with a smaller half_window"
        raise InputError(f"node_spacing={show(node_spacing)} is {why}; give a node spacing in px (voxels), {hint}")
    positions, grid_shape = node_grid(shape, node_spacing=sp, half_window=hw)
    return Prepared(sources=Sources(ref, dfm, msk, opts.smooth_sigma_px), positions=positions,
                    grid_shape=grid_shape, node_spacing=sp, half_window=hw,
                    voxel_size_nm=tuple(float(v) for v in voxel))


def _check_initial(initial, shape) -> None:
    """Refuse an initial field that is not a field of volumes of ``shape``."""
    if not isinstance(initial, DisplacementField):
        raise InputError(f"initial={show(initial)} is not a DisplacementField; give a field of these volumes "
                         "(e.g. from a coarser level) or omit initial")
    known = initial.volume_shape_zyx
    if known is not None and known != tuple(shape):
        raise InputError(f"initial was measured on volumes of shape {known} but reference has shape {tuple(shape)}; "
                         "give a field of these volumes (e.g. the coarser level of this pair) or omit initial")
    if initial.n_nodes:
        pos = initial.positions_zyx_px
        if np.any(pos < 0) or np.any(pos > np.asarray(shape) - 1):
            raise InputError(f"initial has nodes at z, y, x {show([float(v) for v in pos.min(0)])} .. "
                             f"{show([float(v) for v in pos.max(0)])} px, outside the reference of shape "
                             f"{tuple(shape)}; give a field of these volumes or omit initial")


def _initial_guess(prep: Prepared, phi0, initial) -> np.ndarray:
    """Per-node Phi (N, 4, 4) to start from: identity, the global ``phi0``, or the ``initial`` field."""
    positions = prep.positions
    phis = np.tile(np.eye(4), (len(positions), 1, 1))
    if phi0 is not None:
        g = check_phi(phi0, name="phi0")
        c = (np.asarray(prep.shape, float) - 1.0) / 2.0
        phis[:, :3, :3] = g[:3, :3]
        phis[:, :3, 3] = (positions - c) @ g[:3, :3].T + c + g[:3, 3] - positions
    if initial is not None:
        _check_initial(initial, prep.shape)
        u, f = initial.interpolate(positions.astype(float))
        phis[:, :3, :3] = f
        phis[:, :3, 3] = u
    return phis


def _no_node(prep: Prepared, opts: CorrelationOptions, scr) -> None:
    """Raise the error of a correlation in which no node can be correlated, saying why."""
    n = len(prep.positions)
    status = scr.status
    n_mask = int((status == NodeStatus.OUTSIDE_MASK).sum())
    if n_mask == n:
        m = prep.sources.mask
        cover = float(m.mean().compute() if is_lazy(m) else np.mean(m))
        raise InputError(f"no node can be correlated: the mask selects none of the {n} nodes (each needs "
                         f"mask_fraction={show(opts.mask_fraction)} of its window inside the mask; the mask covers "
                         f"{100 * cover:.3g} % of the volume and at most {100 * scr.inside.max():.3g} % of a "
                         "window); check the mask, or lower mask_fraction or the node spacing")
    raise InputError(f"no node can be correlated: {n_mask} of {n} outside the mask, "
                     f"{int((status == NodeStatus.LOW_TEXTURE).sum())} without texture; check the mask or lower "
                     "min_texture/mask_fraction")


def _node_statuses(status, active, state: NodeState) -> tuple[np.ndarray, np.ndarray]:
    """Final ``(status, phis)``: the backends' statuses on correlated nodes; non-finite Phi -> ``DIVERGED``."""
    status = status.copy()
    status[active] = state.status[active]
    phis = state.phis.copy()
    bad = ~np.all(np.isfinite(phis), axis=(1, 2))
    status[bad] = NodeStatus.DIVERGED
    phis[bad] = np.eye(4)
    return status, phis


def _status_notes(status, active) -> dict:
    """Counts before post-processing: statuses and the failed fraction."""
    vals, counts = np.unique(status, return_counts=True)
    failed = int(np.isin(status[active], [NodeStatus.NOT_CONVERGED, NodeStatus.DIVERGED]).sum())
    return {"measured_status_counts": {NodeStatus(int(v)).name.lower(): int(c) for v, c in zip(vals, counts)},
            "failed_fraction": failed / max(int(active.sum()), 1)}


def _postprocess(field: DisplacementField, opts: CorrelationOptions) -> DisplacementField:
    """Outliers and replacement (unless most nodes failed), then the curvature correction."""
    failed = field.notes["failed_fraction"]
    most_failed = failed > FAILED_WARNING_FRACTION
    if most_failed:
        warnings.warn(f"DVC: {100 * failed:.0f} % of the {field.notes['correlated_nodes']} correlated nodes did not "
                      f"converge or diverged ({field.notes['measured_status_counts']}); the field is returned with "
                      f"these statuses{', not replaced by interpolation' if opts.replace else ''}: check the initial "
                      "guess (phi0, search_radius_px, a pyramid), max_iterations, smoothing and the volumes",
                      RuntimeWarning, stacklevel=3)
    if most_failed and opts.replace:
        field = field.with_(notes={**field.notes, "n_replaced": 0, "replaced": {},
                                   "replace_skipped": f"{100 * failed:.0f} % of the correlated nodes failed"})
    elif opts.replace:
        if opts.outlier_threshold > 0:
            field = flag_outliers(field, threshold=opts.outlier_threshold)
        field = replace_bad_nodes(field, out_of_view_fraction=opts.out_of_view_fraction)
    if opts.curvature_correction:
        field = correct_curvature(field)
    return field.with_(notes={**field.notes, "out_of_view": int((field.status == NodeStatus.OUT_OF_VIEW).sum())})
