"""Solving the nodes of one correlation: a plain pass, and PSF-compensated passes.

Both hand :class:`~tomo4d.dvc._backend.NodeProblem` batches to a backend and
collect the results in one :class:`~tomo4d.dvc._backend.NodeState`.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ._backend import Backend, NodeProblem, NodeState
from ._batches import SPLINE_MARGIN, Sources, node_boxes, plan_batches, reference_std
from .field import NodeStatus
from .options import CorrelationOptions, PsfCompensation

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class Prepared:
    """The checked inputs of one correlation: the volumes as given (read box by box), the node grid."""

    sources: Sources
    positions: np.ndarray
    grid_shape: tuple[int, int, int]
    node_spacing: tuple[int, int, int]
    half_window: tuple[int, int, int]
    voxel_size_nm: tuple[float, float, float]

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.sources.shape


@dataclass
class Screening:
    """What the batched pass found before solving: statuses, the nodes solved, the mask cover per node."""

    status: np.ndarray
    active: np.ndarray
    inside: np.ndarray
    start_phis: np.ndarray
    box_lo: np.ndarray
    box_hi: np.ndarray
    refetched: int = 0
    batches: int = 0
    largest_box_voxels: int = 0


def _reach(options: CorrelationOptions, half_window, search_radius: int) -> float:
    """How far beyond its initial warped window a node may read the deformed volume, px (module
    notes of :mod:`._batches`)."""
    hw = np.asarray(half_window, float)
    move = float(hw.max()) if options.max_displacement_px is None else float(options.max_displacement_px)
    spline = 2 + SPLINE_MARGIN if options.order == 3 else 2
    return move + search_radius + np.ceil(0.25 * hw.max()) + spline


def solve_batches(prep: Prepared, options: CorrelationOptions, backend: Backend, state: NodeState, *,
                  search_radius: int, solve: bool, budget_bytes: float,
                  progress: Callable[[int, int], None] | None, client=None) -> Screening:
    """Screen (mask, texture), search (integer shifts) and, if ``solve``, solve every node, batch by
    batch of the node grid (:mod:`._batches`); ``state`` is updated in place.  With a Dask distributed
    ``client`` and lazy volumes, every batch is a task (:func:`batch_task`) that reads its own box from
    the store; only its nodes' results (a few hundred bytes a node) come back."""
    n = len(prep.positions)
    scr = Screening(status=np.full(n, NodeStatus.NOT_CONVERGED, np.int8), active=np.zeros(n, bool),
                    inside=np.ones(n), start_phis=state.phis.copy(), box_lo=np.zeros((n, 3), np.int64),
                    box_hi=np.zeros((n, 3), np.int64))
    gstd = reference_std(prep.sources, budget_bytes) or 1.0
    reach = _reach(options, prep.half_window, search_radius)
    lo, hi = node_boxes(prep.positions, state.phis, prep.half_window, prep.shape, reach_deformed=reach)
    batches = plan_batches(lo, hi, prep.grid_shape, budget_bytes=budget_bytes)
    scr.batches, scr.largest_box_voxels = len(batches), max(b.voxels for b in batches)
    jobs = [(b.nodes, (prep.sources, prep.positions[b.nodes], state.phis[b.nodes], b.lo, b.hi, prep.half_window,
                       options, gstd, search_radius, solve)) for b in batches]
    done = 0
    for nodes, res in _results(jobs, client if prep.sources.lazy else None, backend):
        _merge(scr, state, nodes, res)
        done += len(nodes)
        if progress is not None:
            progress(done, n)
    if solve:
        _resolve_edge_nodes(prep, options, backend, state, scr, reach)
    return scr


def _results(jobs, client, backend):
    """``(nodes, BatchResult)`` of every job: here, in order, or as tasks of ``client`` as they finish."""
    if client is None:
        for nodes, args in jobs:
            yield nodes, run_batch(*args, backend=backend)
        return
    from distributed import as_completed

    futures = {client.submit(batch_task, *args, pure=False): nodes for nodes, args in jobs}
    for fut in as_completed(list(futures), loop=client.loop):  # the client need not be the default one
        yield futures[fut], fut.result()


@dataclass(frozen=True, eq=False)
class BatchResult:
    """What one batch found: screening, the start after the integer search, and the solved state."""

    status: np.ndarray
    active: np.ndarray
    inside: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    start_phis: np.ndarray
    state: NodeState


def _merge(scr: Screening, state: NodeState, nodes, res: BatchResult) -> None:
    scr.status[nodes], scr.active[nodes], scr.inside[nodes] = res.status, res.active, res.inside
    scr.box_lo[nodes], scr.box_hi[nodes] = res.lo, res.hi
    if res.active.any():
        scr.start_phis[nodes] = res.start_phis
        state.put(nodes, res.state)


def batch_task(*args) -> BatchResult:
    """:func:`run_batch` as a cluster task: its box read on the worker's own synchronous scheduler (never
    through the cluster), with the backend of its options."""
    import dask

    from ._backend import select_backend

    with dask.config.set(scheduler="sync"):
        return run_batch(*args, backend=select_backend(args[6]))


def run_batch(sources: Sources, positions, phis, lo, hi, half_window, options: CorrelationOptions, gstd: float,
              search_radius: int, solve: bool, *, backend: Backend) -> BatchResult:
    """Screen, search and (if ``solve``) solve the nodes at ``positions`` (volume px) from ``phis``,
    reading only the box ``[lo, hi)`` of the volumes."""
    ref, dfm, msk = sources.read(lo, hi)
    local = positions - lo
    st, act, ins = screen_nodes(ref, msk, local, half_window, options, gstd, masked=sources.mask is not None)
    sub = NodeState.start(phis)
    if act.any() and search_radius > 0:
        integer_search(ref, dfm, local, half_window, sub.phis, act, search_radius)
    start = sub.phis.copy()
    if act.any() and solve:
        backend.solve(NodeProblem.build(ref, dfm, msk, local, half_window, options), sub, act)
    return BatchResult(st, act, ins, np.asarray(lo), np.asarray(hi), start, sub)


def _resolve_edge_nodes(prep, options, backend, state, scr: Screening, reach) -> None:
    """Solve again, in a box around its start and its solution, any node whose final window reaches
    its batch's box edge inside the volume (it may have read less than the whole volume gives)."""
    nodes = np.nonzero(scr.active)[0]
    if not len(nodes) or scr.batches == 1:
        return
    phis = state.phis[nodes]
    ok = np.all(np.isfinite(phis), axis=(1, 2))
    phis = np.where(ok[:, None, None], phis, scr.start_phis[nodes])
    spline = 2 + SPLINE_MARGIN if options.order == 3 else 2
    lo, hi = node_boxes(prep.positions[nodes], phis, prep.half_window, prep.shape, reach_deformed=spline)
    redo = np.any((lo < scr.box_lo[nodes]) | (hi > scr.box_hi[nodes]), axis=1)
    for k, lo_k, hi_k in zip(nodes[redo], lo[redo], hi[redo]):
        slo, shi = node_boxes(prep.positions[k:k + 1], scr.start_phis[k:k + 1], prep.half_window, prep.shape,
                              reach_deformed=reach)
        box_lo, box_hi = np.minimum(lo_k - reach, slo[0]).clip(0), np.maximum(hi_k + reach, shi[0])
        box_hi = np.minimum(box_hi, np.asarray(prep.shape)).astype(np.int64)
        box_lo = box_lo.astype(np.int64)
        ref, dfm, msk = prep.sources.read(box_lo, box_hi)
        problem = NodeProblem.build(ref, dfm, msk, prep.positions[k:k + 1] - box_lo, prep.half_window, options)
        sub = NodeState.start(scr.start_phis[k:k + 1])
        backend.solve(problem, sub, np.ones(1, np.bool_))
        state.put(np.array([k]), sub)
    scr.refetched = int(redo.sum())


def screen_nodes(ref, msk, positions, half_window, options: CorrelationOptions, gstd: float, *, masked: bool):
    """``(status, active, inside)`` of nodes at ``positions`` of the crop ``ref``/``msk``: skipped for the
    mask (``OUTSIDE_MASK``: less than ``mask_fraction`` of the window inside) or the texture
    (``LOW_TEXTURE``: window std below ``min_texture`` x the whole reference's ``gstd``)."""
    hw = half_window
    n = len(positions)
    status = np.full(n, NodeStatus.NOT_CONVERGED, np.int8)
    active = np.ones(n, bool)
    inside = np.ones(n)
    for k, p in enumerate(positions):
        s = tuple(slice(p[i] - hw[i], p[i] + hw[i] + 1) for i in range(3))
        if masked:
            inside[k] = msk[s].mean()
            if inside[k] < options.mask_fraction:
                status[k] = NodeStatus.OUTSIDE_MASK
                active[k] = False
                continue
        w = ref[s] if not masked else ref[s][msk[s]]
        if w.std() < options.min_texture * gstd:
            status[k] = NodeStatus.LOW_TEXTURE
            active[k] = False
    return status, active, inside


def integer_search(ref, deformed, positions, half_window, phis, active, radius) -> None:
    """Refine the translation of each active node by the best integer shift (normalised
    cross-correlation) within ``radius`` of its initial guess; ``phis`` updated in place."""
    from skimage.feature import match_template

    hw = np.asarray(half_window)
    r = int(radius)
    shape = np.asarray(ref.shape)
    for n in np.nonzero(active)[0]:
        p = positions[n]
        t0 = np.round(phis[n, :3, 3]).astype(int)
        lo_c = np.maximum(p - hw + t0 - r, 0)
        hi_c = np.minimum(p + hw + t0 + r + 1, shape)
        if np.any(hi_c - lo_c < 2 * hw + 1):
            continue
        win = ref[p[0] - hw[0]:p[0] + hw[0] + 1, p[1] - hw[1]:p[1] + hw[1] + 1, p[2] - hw[2]:p[2] + hw[2] + 1]
        cc = match_template(deformed[lo_c[0]:hi_c[0], lo_c[1]:hi_c[1], lo_c[2]:hi_c[2]], win)
        k = np.unravel_index(int(np.argmax(cc)), cc.shape)
        phis[n, :3, 3] = lo_c + np.asarray(k) - (p - hw)


def solve_psf(prep: Prepared, options: CorrelationOptions, psf: PsfCompensation, backend: Backend, state: NodeState,
              active: np.ndarray, start_phis: np.ndarray, progress: Callable[[int, int], None] | None) -> dict:
    """PSF-compensated passes (see :mod:`tomo4d.dvc.psf`) from ``state`` (a plain pass, or the initial
    field: F must come from somewhere), each node restarting from ``start_phis`` where its F is unusable.
    Each group of nodes with equal blurs reads its own box.  Returns notes."""
    from .psf import psf_covariance

    cov = psf_covariance(psf.psf_sigma_px, options.smooth_sigma_px)
    notes = {}
    for _ in range(psf.passes):
        notes = _psf_pass(prep, options, backend, state, active, start_phis, cov, psf.tolerance_px2)
    if progress is not None:
        progress(len(prep.positions), len(prep.positions))
    return notes


def _neighbour_median_f(f, usable, grid_shape):
    """Component-wise median of F over each node's 3x3x3 grid neighbourhood (usable nodes only).

    The blur compensation needs the local deformation gradient, which varies
    slowly; a single window's affine fit is noisy (its F_zz scatters by ~1e-2
    on the phantom), while the neighbourhood median is not biased by a few
    failed or interface nodes."""
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


def _local_f(state: NodeState, idx: np.ndarray, start_phis: np.ndarray, grid_shape):
    """``(start, F)`` of the nodes ``idx``: where each pass starts, and the smoothed F that sets its blurs."""
    phis = state.phis
    ok = state.status[idx] != NodeStatus.DIVERGED
    ok &= state.status[idx] != NodeStatus.LOW_TEXTURE
    ok &= np.all(np.isfinite(phis[idx]), axis=(1, 2))
    start = np.where(ok[:, None, None], phis[idx], start_phis[idx])
    f_all = np.where(np.all(np.isfinite(phis), axis=(1, 2))[:, None, None], phis, start_phis)[:, :3, :3]
    det = np.linalg.det(f_all)
    usable = np.zeros(len(phis), bool)
    usable[idx[ok]] = True
    usable &= (det > 0.2) & (det < 5.0)
    f = _neighbour_median_f(f_all, usable, grid_shape)[idx]
    det = np.linalg.det(f)
    return start, np.where(((det > 0.2) & (det < 5.0))[:, None, None], f, np.eye(3))


def _group_box(prep: Prepared, nodes, start, bd_g, br_g):
    """Crop holding a group's reference windows and their current images in the deformed volume,
    plus the reach of the blur and of the cubic spline: ``(lo, hi)`` voxel corners."""
    hw = np.asarray(prep.half_window, np.int64)
    offsets = np.array([[a, b, c] for a in (-1, 1) for b in (-1, 1) for c in (-1, 1)], float) * hw
    pos = prep.positions[nodes].astype(float)
    warped = np.einsum("nij,kj->nki", start[:, :3, :3], offsets) + (pos + start[:, :3, 3])[:, None, :]
    lo = np.minimum((pos - hw).min(0), warped.reshape(-1, 3).min(0))
    hi = np.maximum((pos + hw).max(0), warped.reshape(-1, 3).max(0))
    reach = 4.0 * np.sqrt(max(np.linalg.eigvalsh(bd_g).max(), np.linalg.eigvalsh(br_g).max(), 0.0)) + 6
    lo = np.maximum(np.floor(lo - reach), 0).astype(np.int64)
    hi = np.minimum(np.ceil(hi + reach) + 1, np.asarray(prep.shape)).astype(np.int64)
    return lo, hi


def _psf_pass(prep: Prepared, options: CorrelationOptions, backend: Backend, state: NodeState, active: np.ndarray,
              start_phis: np.ndarray, cov: np.ndarray, tolerance_px2: float) -> dict:
    """One PSF-compensated pass: group nodes by their compensating blurs, blur cropped copies of both
    volumes per group and re-solve the group's nodes into ``state``."""
    from .psf import blur_covariance, compensating_blurs, group_nodes

    idx = np.nonzero(active)[0]
    start, f = _local_f(state, idx, start_phis, prep.grid_shape)
    bd, br = compensating_blurs(f, cov)
    groups = group_nodes(bd, br, tolerance_px2)
    for g in groups:
        nodes = idx[g]
        bd_g, br_g = bd[g].mean(0), br[g].mean(0)
        lo, hi = _group_box(prep, nodes, start[g], bd_g, br_g)
        ref, dfm, msk = prep.sources.read(lo, hi)
        problem = NodeProblem.build(blur_covariance(ref, br_g), blur_covariance(dfm, bd_g), msk,
                                    prep.positions[nodes] - lo, prep.half_window, options)
        sub = NodeState.start(start[g])
        backend.solve(problem, sub, np.ones(len(nodes), np.bool_))
        state.put(nodes, sub)
    sd = np.sqrt(np.diag(cov))
    log.info("DVC PSF compensation: %d node groups, scanner-frame blur sigma (z, y, x) = %s px", len(groups),
             np.round(sd, 3))
    return {"psf_sigma_effective_px": [float(v) for v in sd], "psf_groups": len(groups),
            "psf_max_extra_sigma_px": float(np.sqrt(max(np.linalg.eigvalsh(bd).max(), np.linalg.eigvalsh(br).max(),
                                                        0.0)))}
