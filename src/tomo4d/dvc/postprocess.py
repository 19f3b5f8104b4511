"""Post-processing of measured fields: outlier test, replacement of failed nodes, curvature bias.

Each function takes a :class:`~tomo4d.dvc.field.DisplacementField` and returns
a new one (fields are never modified); what was done is counted in ``notes``.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence

import numpy as np

from .field import DisplacementField, NodeStatus, _fill_from_neighbours, _idw_first_order

log = logging.getLogger(__name__)

__all__ = ["flag_outliers", "flag_low_texture", "replace_bad_nodes", "correct_curvature", "window_out_of_view"]


def correct_curvature(field: DisplacementField) -> DisplacementField:
    """Subtract the second-order bias of affine windows from the node displacements.

    An affine fit over a window of second moments ``s_k^2 = hw_k (hw_k + 1) / 3``
    returns ``u + 1/2 sum_k s_k^2 d2u/dx_k^2`` at the node, so that term (second
    differences of the node displacements on the grid, unusable nodes filled from
    usable neighbours) is subtracted at usable nodes.  Needs >= 3 nodes per axis;
    ``notes["curvature_correction"]`` says whether it was applied.
    """

    if field.grid_shape is None or min(field.grid_shape) < 3 or not field.usable.any():
        return field.with_(notes={**field.notes, "curvature_correction": False})
    u = _fill_from_neighbours(field.positions_zyx_px, field.displacement_zyx_px, field.usable)
    ug = field.grid(u)
    unusable = field.grid(~field.usable).astype(float)
    corr = np.zeros_like(ug)
    for k in range(3):
        s2 = field.half_window_px[k] * (field.half_window_px[k] + 1) / 3.0
        h = float(field.node_spacing_px[k])
        d2 = np.gradient(np.gradient(ug, h, axis=k, edge_order=2), h, axis=k, edge_order=2)
        # a stencil reaching an unusable node would differentiate the fill, not a measurement
        # (e.g. a layer of OUT_OF_VIEW nodes): no correction along that axis there
        g = np.gradient(np.eye(ug.shape[k]), axis=0, edge_order=2)
        reach = (np.abs(g) @ np.abs(g) > 0).astype(float)
        touched = np.moveaxis(np.tensordot(reach, np.moveaxis(unusable, k, 0), axes=(1, 0)), 0, k) > 0
        corr += np.where(touched[..., None], 0.0, 0.5 * s2 * d2)
    phi = field.phi.copy()
    ok = field.usable
    phi[ok, :3, 3] -= corr.reshape(-1, 3)[ok]
    return field.with_(phi=phi, notes={**field.notes, "curvature_correction": True,
                                       "curvature_correction_max_px": float(np.abs(corr).max())})


def flag_outliers(field: DisplacementField, *, threshold: float = 3.0, epsilon_px: float = 0.1
                  ) -> DisplacementField:
    """Mark converged nodes whose displacement disagrees with their neighbours as ``OUTLIER``.

    A normalised median test (after Westerweel & Scarano 2005) made exact for
    quadratic fields by the neighbours' own gradients (``F - I`` of their Phi):
    each of the 13 neighbour directions ``d`` of the 3x3x3 neighbourhood
    predicts the node's displacement, by
    ``(u(p+d) + u(p-d)) / 2 - (F(p+d) - F(p-d)) d / 4`` when both neighbours
    converged, else from one side by
    ``u(p+d) - (F(p+d) - I) d + (F(p+2d) - F(p+d)) d / 2`` (first order,
    without the last term, when ``p+2d`` did not converge).  The plain average
    misses by ``d^T H d / 2`` where the field curves: a 35-55 % graded stretch
    over 320 px at the study's 35 px spacing is 0.38 px, which flagged 80 of
    its 128 sound nodes (session 33; two-node extrapolation from one side
    missed by ``2 b d^2`` and flagged 24 sound edge-row nodes, session 32).
    The node is an outlier when
    ``|u - median(pred)| / (median |pred - median(pred)| + epsilon_px) > threshold``
    for any component.  Needs a regular grid; other fields are returned unchanged.
    """

    if field.grid_shape is None:
        return field
    gs = field.grid_shape
    u = field.grid(field.displacement_zyx_px)
    ok = field.grid(field.converged)
    grad = field.grid(field.phi[:, :3, :3] - np.eye(3))  # (gz, gy, gx, 3, 3): each node's F - I
    pad = np.pad(np.where(ok[..., None], u, np.nan), [(2, 2)] * 3 + [(0, 0)], constant_values=np.nan)
    padg = np.pad(np.where(ok[..., None, None], grad, np.nan), [(2, 2)] * 3 + [(0, 0)] * 2, constant_values=np.nan)
    h = np.asarray(field.node_spacing_px, float)

    def shifted(a, d):
        i, j, k = 2 + d[0], 2 + d[1], 2 + d[2]
        return a[i:i + gs[0], j:j + gs[1], k:k + gs[2]]

    def one_sided(d, step):         # from p+d (and p+2d's gradient when it converged), d = step in px
        g1, g2 = shifted(padg, d) @ step, shifted(padg, 2 * d) @ step
        first = shifted(pad, d) - g1
        second = first + (g2 - g1) / 2.0
        return np.where(np.isfinite(second), second, first)

    dirs = [(a, b, c) for a in (-1, 0, 1) for b in (-1, 0, 1) for c in (-1, 0, 1) if (a, b, c) > (0, 0, 0)]
    preds = []
    for d in dirs:
        d = np.asarray(d)
        step = d * h
        both = (shifted(pad, d) + shifted(pad, -d)) / 2.0 - (shifted(padg, d) - shifted(padg, -d)) @ step / 4.0
        ext_p, ext_m = one_sided(d, step), one_sided(-d, -step)
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


def flag_low_texture(field: DisplacementField, reference, *, noise_sigma: float, mask=None,
                     min_snr: float | None = None) -> DisplacementField:
    """Mark usable nodes whose window holds no grey-level structure above the noise as ``LOW_TEXTURE``.

    Per node, the variance of ``reference`` over its window (+- ``half_window_px``; masked voxels only) less the noise
    variance ``noise_sigma**2``, relative to the noise variance: a window of pure noise reads 0 within the variance
    estimate's standard error, ``sqrt(2 / n)`` for ``n`` voxels.  Below ``min_snr`` (default: three standard errors
    of the window's voxel count) the node's value is not a measurement but the neighbours' (global DVC: the
    regularisation's continuation).  Give the scan the field was measured on (not deconvolved) and the noise of
    that scan, e.g. ``std(repeat - reference) / sqrt(2)`` from a repeated scan.  ``notes["low_texture"]`` counts
    every LOW_TEXTURE node of the result (those the field already had, e.g. from a composed increment, included).

    On the demo (LQ, 9^3 windows, threshold 0.16) the separator, whose fibres the 313 nm blur wiped out, reads
    0.00-0.03 and is flagged; the anode reads 0.48-1.5 and the HQ separator 0.28-0.39, kept (session 20).
    """
    from scipy import ndimage

    from .._validate import as_image, as_mask, check_number

    ref = as_image(reference, name="reference")
    sigma = check_number("noise_sigma", noise_sigma, minimum=0, exclusive_minimum=True)
    if min_snr is not None:
        check_number("min_snr", min_snr, minimum=0)
    m = as_mask(mask, ref.shape)
    k = tuple(2 * int(round(float(h))) + 1 for h in np.broadcast_to(field.half_window_px, (3,)))
    w = np.ones(ref.shape, np.float32) if m is None else m.astype(np.float32)
    x = ref.astype(np.float32) - np.float32(ref.mean())  # centred: the moments' cancellation stays small
    n = ndimage.uniform_filter(w, k, mode="constant")
    m1 = ndimage.uniform_filter(w * x, k, mode="constant")
    m2 = ndimage.uniform_filter(w * x * x, k, mode="constant")
    idx = tuple(np.clip(np.rint(field.positions_zyx_px[:, a]).astype(np.int64), 0, ref.shape[a] - 1) for a in range(3))
    cnt = n[idx] * float(np.prod(k))
    with np.errstate(invalid="ignore", divide="ignore"):
        var = m2[idx] / n[idx] - (m1[idx] / n[idx]) ** 2
        snr = (var - sigma ** 2) / sigma ** 2
        limit = 3.0 * np.sqrt(2.0 / np.maximum(cnt, 1.0)) if min_snr is None else np.full(len(cnt), float(min_snr))
    flags = field.usable & (cnt >= 1) & ~(snr >= limit)
    status = field.status.copy()
    status[flags] = NodeStatus.LOW_TEXTURE
    # every LOW_TEXTURE node of the result, not only this call's: a composed field inherits its first pair's
    notes = {**field.notes, "low_texture": int((status == NodeStatus.LOW_TEXTURE).sum())}
    if not flags.any():
        return field.with_(notes=notes)
    log.info("DVC: %d nodes without texture above the noise flagged", int(flags.sum()))
    return field.with_(status=status, notes=notes)


def replace_bad_nodes(field: DisplacementField, *, statuses: Sequence[NodeStatus] = (
        NodeStatus.NOT_CONVERGED, NodeStatus.DIVERGED, NodeStatus.OUTLIER), k: int = 8,
        out_of_view_fraction: float | None = 0.05) -> DisplacementField:
    """Replace failed nodes by interpolation from converged neighbours.

    Parameters
    ----------
    field : DisplacementField
    statuses : sequence of NodeStatus
        Statuses to replace (default not converged, diverged, outlier;
        ``OUT_OF_VIEW`` nodes are not replaced: there is no measurement beyond
        them, only extrapolation).
    k : int
        Inverse-distance interpolation of the ``k`` nearest converged nodes
        (whole Phi: F, and each neighbour's displacement carried to the node by
        its own F, so that an affine field is replaced exactly).
    out_of_view_fraction : float or None
        When the field records its volume shape (``notes["volume_shape_zyx"]``),
        a node whose window the interpolated Phi would map more than this
        fraction outside the volume becomes ``OUT_OF_VIEW`` instead (its Phi is
        kept); None: no such check.

    Returns
    -------
    DisplacementField
        Replaced nodes get status ``INTERPOLATED``; ``notes["replaced"]`` counts
        them per original status, ``notes["n_replaced"]`` in all and
        ``notes["not_replaced_out_of_view"]`` those refused as out of view.
    """

    bad = np.isin(field.status, [int(s) for s in statuses])
    good = field.converged
    notes = {**field.notes, "replaced": {}, "n_replaced": 0}
    if not bad.any():
        return field.with_(notes=notes)
    if not good.any():
        log.warning("DVC: no converged node, %d bad nodes cannot be replaced", int(bad.sum()))
        return field.with_(notes=notes)
    vals = field.phi[:, :3, :].reshape(field.n_nodes, 12)
    new = np.tile(np.eye(4), (field.n_nodes, 1, 1))
    # each neighbour's displacement carried to the node by its own F (exact for an affine field; unchanged, the
    # neighbours at a 45 % stretch's edge row put the replaced node 3.8 px off, tests/dvc/test_pyramid.py)
    new[bad, :3, :] = _idw_first_order(field.positions_zyx_px[good], vals[good], field.positions_zyx_px[bad],
                                       k=k).reshape(-1, 3, 4)
    status = field.status.copy()
    shape = field.volume_shape_zyx
    if out_of_view_fraction is not None and shape is not None:
        out = np.zeros(field.n_nodes, bool)
        out[bad] = window_out_of_view(field.positions_zyx_px[bad], new[bad], field.half_window_px,
                                      shape) > out_of_view_fraction
        status[out] = NodeStatus.OUT_OF_VIEW
        notes["not_replaced_out_of_view"] = int(out.sum())
        bad &= ~out
    counts = {NodeStatus(int(s)).name.lower(): int((field.status[bad] == s).sum()) for s in statuses
              if (field.status[bad] == s).any()}
    notes.update(replaced=counts, n_replaced=int(bad.sum()))
    phi = field.phi.copy()
    phi[bad, :3, :] = new[bad, :3, :]
    status[bad] = NodeStatus.INTERPOLATED
    log.info("DVC: %d nodes replaced by interpolation from converged neighbours (%s)", int(bad.sum()), counts)
    return field.with_(phi=phi, status=status, notes=notes)


def window_out_of_view(positions: np.ndarray, phi: np.ndarray, half_window, shape, *, samples: int = 11
                       ) -> np.ndarray:
    """Fraction (N,) of each node's window that its Phi maps outside a volume of ``shape``.

    Geometric (the mask is ignored): the window is sampled on at most
    ``samples`` points per axis, and a point counts as outside when it falls
    below 0 or beyond ``shape - 1`` along any axis, as in the kernels.
    """
    axes = [np.linspace(-h, h, min(2 * int(h) + 1, samples)) for h in half_window]
    off = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    pos = np.asarray(positions, float)
    phi = np.asarray(phi, float)
    warped = np.einsum("nij,kj->nki", phi[:, :3, :3], off) + (pos + phi[:, :3, 3])[:, None, :]
    outside = np.any((warped < 0) | (warped > np.asarray(shape, float) - 1), axis=-1)
    return outside.mean(axis=1)
