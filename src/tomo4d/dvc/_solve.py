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
from .field import NodeStatus
from .options import CorrelationOptions, PsfCompensation

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class Prepared:
    """The checked inputs of one correlation (volumes pre-smoothed, grid laid out)."""

    reference: np.ndarray
    deformed: np.ndarray
    mask: np.ndarray | None
    positions: np.ndarray
    grid_shape: tuple[int, int, int]
    node_spacing: tuple[int, int, int]
    half_window: tuple[int, int, int]
    voxel_size_nm: tuple[float, float, float]

    @property
    def kernel_mask(self) -> np.ndarray:
        """The mask the kernels read (all True without a mask)."""
        return np.ones(self.reference.shape, np.bool_) if self.mask is None else self.mask


def solve_plain(prep: Prepared, options: CorrelationOptions, backend: Backend, state: NodeState, active: np.ndarray,
                progress: Callable[[int, int], None] | None) -> None:
    """Solve the ``active`` nodes on the volumes as given, in chunks so that progress can be reported."""
    problem = NodeProblem.build(prep.reference, prep.deformed, prep.kernel_mask, prep.positions, prep.half_window,
                                options)
    order_idx = np.nonzero(active)[0]
    chunk = max(256, len(order_idx) // 8 + 1)        # each chunk is one parallel batch
    done = 0
    for start in range(0, len(order_idx), chunk):
        sel = np.zeros(problem.n_nodes, np.bool_)
        sel[order_idx[start:start + chunk]] = True
        backend.solve(problem, state, sel)
        done += int(sel.sum())
        if progress is not None:
            progress(done, len(order_idx))


def solve_psf(prep: Prepared, options: CorrelationOptions, psf: PsfCompensation, backend: Backend, state: NodeState,
              active: np.ndarray, *, plain_first: bool, progress: Callable[[int, int], None] | None) -> dict:
    """PSF-compensated passes (see :mod:`tomo4d.dvc.psf`), after a plain pass when ``plain_first``
    (F must come from somewhere: a plain pass, or the initial field).  Returns notes."""
    from .psf import psf_covariance

    cov = psf_covariance(psf.psf_sigma_px, options.smooth_sigma_px)
    start_phis = state.phis.copy()
    if plain_first:
        solve_plain(prep, options, backend, state, active, None)
    notes = {}
    for _ in range(psf.passes):
        notes = _psf_pass(prep, options, backend, state, active, start_phis, cov, psf.tolerance_px2)
    if progress is not None:
        progress(int(active.sum()), int(active.sum()))
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
    hi = np.minimum(np.ceil(hi + reach) + 1, np.asarray(prep.reference.shape)).astype(np.int64)
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
    kmask = prep.kernel_mask
    for g in groups:
        nodes = idx[g]
        bd_g, br_g = bd[g].mean(0), br[g].mean(0)
        lo, hi = _group_box(prep, nodes, start[g], bd_g, br_g)
        box = tuple(slice(a, b) for a, b in zip(lo, hi))
        problem = NodeProblem.build(blur_covariance(prep.reference[box], br_g),
                                    blur_covariance(prep.deformed[box], bd_g), kmask[box],
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
