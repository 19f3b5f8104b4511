"""Particle tracking across time steps: prediction by the DVC field, overlap + Hungarian matching.

For every step n >= 1 each live track (a particle seen at an earlier step) is predicted at step n:
its T0 centre of mass X0 moved by the measured displacement ``u_n(X0)`` (field T0 -> Tn), or its
last seen position without a field.  The voxels of the particle at the last step it was seen are
shifted by the predicted motion and looked up in the labels of step n, which gives the overlap
(IoU) with every particle they land on; particles of step n whose centre lies near the prediction
are candidates too.  Where a field covers a particle (:func:`field_uncertainty`: inside the reach
of its usable nodes, the 8 nearest nodes converged, their first-order predictions agreeing to
sigma px) the field's prediction is the only one, searched within ``2 + 3 sigma`` px (an overlap
proposes a particle only if the prediction covers most of it).  Elsewhere, and without a field,
particles within ``search_radius_factor`` equivalent radii are candidates, and with a field two
fallback predictions propose candidates as well: the last seen position moved by the field's
increment since then, and the last seen position unmoved; a pair costs its cheapest prediction,
fallbacks with a penalty.  (Fallbacks everywhere cost the snow case of ``benchmarks/bench_quantify.py``
correct links: a guess lands on a neighbour wherever particles move more than a radius.)  The cost of a
pair is ``(1 - IoU) + distance / equivalent diameter + |log volume ratio|``.  The candidate pairs
form a sparse bipartite graph; each connected component (a handful of particles) is solved
exactly with :func:`scipy.optimize.linear_sum_assignment`, so the whole matching costs
O(number of voxels + number of candidate pairs), never an N x N matrix.  Every particle may also stay
unmatched at 1.05 x the dearest candidate pair of its component (the alternative cost of the LAP
trackers, Jaqaman et al., Nat. Methods 2008): without it the assignment maximises the number of links
first, and one particle leaving the view shifts a whole chain of neighbours onto each other.

Particles of step n left unmatched start new tracks (e.g. entering the field of view).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from .._validate import check_number, show
from ..errors import InputError
from ._common import as_labels, step_names, voxel_size

log = logging.getLogger(__name__)

__all__ = ["Tracks", "track_particles", "link_particles", "field_uncertainty"]

#: cost of a pair that is not a candidate (never chosen)
_FORBIDDEN = 1e6
#: cost of leaving a particle unmatched, relative to the dearest candidate pair of its component
_ALTERNATIVE = 1.05
#: search radius around a field-driven prediction: base + this many local field uncertainties, px
_RADIUS_BASE_PX = 2.0
_RADIUS_SIGMAS = 3.0


@dataclass(frozen=True, eq=False)
class Tracks:
    """Particle tracks over the steps.

    Attributes
    ----------
    step_names : tuple of str
    label : (n_tracks, n_steps) int64
        Particle label of each track at each step (0 = not found).
    centroid_um : (n_tracks, n_steps, 3) float64
        Centre of mass (z, y, x), um from the centre of voxel 0; NaN where not found.
    volume_um3 : (n_tracks, n_steps) float64
    cost : (n_tracks, n_steps) float64
        Matching cost of the link into each step (0 at the first step of a track, NaN where lost).
    first_step : (n_tracks,) int64
        Step where each track starts.
    voxel_size_nm : (3,) float
    """

    step_names: tuple[str, ...]
    label: np.ndarray
    centroid_um: np.ndarray
    volume_um3: np.ndarray
    cost: np.ndarray
    first_step: np.ndarray
    voxel_size_nm: tuple[float, float, float]

    @property
    def n_tracks(self) -> int:
        return int(self.label.shape[0])

    @property
    def complete(self) -> np.ndarray:
        """(n_tracks,) bool: found at every step."""
        return np.all(self.label > 0, axis=1)

    @property
    def displacement_um(self) -> np.ndarray:
        """(n_tracks, n_steps, 3): centre of mass minus its position at the track's first step, um."""
        start = self.centroid_um[np.arange(self.n_tracks), self.first_step]
        return self.centroid_um - start[:, None, :]

    @property
    def axial_um(self) -> np.ndarray:
        """(n_tracks, n_steps): displacement along z (electrode thickness), um."""
        return self.displacement_um[..., 0]

    @property
    def lateral_um(self) -> np.ndarray:
        """(n_tracks, n_steps): in-plane (y, x) displacement magnitude, um."""
        d = self.displacement_um
        return np.hypot(d[..., 1], d[..., 2])

    def depth_um(self, collector_z_um: float = 0.0) -> np.ndarray:
        """(n_tracks,): z of each track at its first step above ``collector_z_um`` (depth in the electrode)."""
        return self.centroid_um[np.arange(self.n_tracks), self.first_step, 0] - float(collector_z_um)

    def to_columns(self, *, collector_z_um: float = 0.0) -> dict[str, np.ndarray]:
        """Long table: one row per (track, step) where the track was found."""
        t, s = np.nonzero(self.label > 0)
        d = self.displacement_um
        return {"track": t.astype(np.int64), "step": np.asarray(self.step_names)[s], "label": self.label[t, s],
                "centroid_z_um": self.centroid_um[t, s, 0], "centroid_y_um": self.centroid_um[t, s, 1],
                "centroid_x_um": self.centroid_um[t, s, 2], "volume_um3": self.volume_um3[t, s],
                "displacement_z_um": d[t, s, 0], "displacement_y_um": d[t, s, 1], "displacement_x_um": d[t, s, 2],
                "axial_um": self.axial_um[t, s], "lateral_um": self.lateral_um[t, s],
                "depth_um": self.depth_um(collector_z_um)[t], "cost": self.cost[t, s]}

    def summary(self) -> dict:
        return {"n_tracks": self.n_tracks, "n_complete": int(self.complete.sum()),
                "n_started_at_first_step": int((self.first_step == 0).sum())}


def _centroids(lab: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(present labels, voxel counts, centroids (n, 3) px) of a compact particle label volume."""
    count, sums, _ = _counts_and_sums_light(lab, int(lab.max()) + 1 if lab.size else 1)
    present = np.flatnonzero(count[1:]) + 1
    return present, count[present], sums[present] / count[present][:, None]


def _counts_and_sums_light(lab: np.ndarray, n_bins: int) -> tuple[np.ndarray, np.ndarray, None]:
    nz, ny, nx = lab.shape
    count = np.zeros(n_bins, np.int64)
    sums = np.zeros((n_bins, 3))
    yy = np.arange(ny, dtype=np.float64)[:, None]
    xx = np.arange(nx, dtype=np.float64)[None, :]
    for z in range(nz):
        s = lab[z].reshape(-1)
        c = np.bincount(s, minlength=n_bins)
        count += c
        sums[:, 0] += z * c
        sums[:, 1] += np.bincount(s, weights=np.broadcast_to(yy, (ny, nx)).reshape(-1), minlength=n_bins)
        sums[:, 2] += np.bincount(s, weights=np.broadcast_to(xx, (ny, nx)).reshape(-1), minlength=n_bins)
    return count, sums, None


def link_particles(src_labels: np.ndarray, dst_labels: np.ndarray, shift_px: np.ndarray, *,
                   src_ids: np.ndarray, search_radius_factor: float = 1.0,
                   search_radius_px=None, hypothesis_penalty=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Match particles of ``src_labels`` (ids ``src_ids``) to particles of ``dst_labels``.

    Parameters
    ----------
    src_labels, dst_labels : (z, y, x) int arrays
        Particle labels of the source and destination steps (same grid).
    shift_px : (len(src_ids), 3) or (len(src_ids), k, 3) float
        Predicted motion of each source particle from source to destination, px; with a middle
        axis, ``k`` alternative predictions (motion hypotheses, e.g. the DVC field and "did not
        move"): every hypothesis proposes candidates and a pair costs its cheapest hypothesis.
    src_ids : (n,) int
        Source labels to match (others are ignored).
    search_radius_factor : float
        Destination particles whose centre lies within this many equivalent radii of the
        predicted centre are candidates even without overlap.
    search_radius_px : (len(src_ids),) float, optional
        Per-source search radius in px instead (e.g. from the local uncertainty of a DVC field);
        NaN entries fall back to ``search_radius_factor`` equivalent radii.  Sources given a radius
        get overlap candidates only for destination particles covered at least half by the
        predicted voxels (a fragment cut by the border), not for every touching neighbour.
    hypothesis_penalty : (k,) float, optional
        Cost added to pairs proposed by each hypothesis (default 0 for the first, 0.25 for the
        others: the first is the preferred prediction).

    Returns
    -------
    (src (m,), dst (m,), cost (m,))
        Matched source labels, destination labels and pair costs (one-to-one).
    """
    from scipy import sparse
    from scipy.optimize import linear_sum_assignment
    from scipy.sparse.csgraph import connected_components
    from scipy.spatial import cKDTree

    src_ids = np.asarray(src_ids, np.int64)
    shift_px = np.asarray(shift_px, float)
    if shift_px.ndim == 2:
        shift_px = shift_px[:, None, :]
    if shift_px.ndim != 3 or shift_px.shape[0] != src_ids.size or shift_px.shape[2] != 3:
        raise InputError(f"shift_px has shape {shift_px.shape}; give ({src_ids.size}, 3) or ({src_ids.size}, k, 3) "
                         "predicted motions (px) for the source ids")
    n_h = shift_px.shape[1]
    if hypothesis_penalty is None:
        pen = np.r_[0.0, np.full(n_h - 1, 0.25)]
    else:
        pen = np.asarray(hypothesis_penalty, float).ravel()
        if pen.size != n_h or not np.all(np.isfinite(pen)) or np.any(pen < 0):
            raise InputError(f"hypothesis_penalty={show(hypothesis_penalty)} needs {n_h} finite values >= 0 (one per "
                             "motion hypothesis of shift_px)")
    empty = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0))
    if src_ids.size == 0:
        return empty
    ns = int(src_labels.max()) + 1
    nd = int(dst_labels.max()) + 1
    if nd <= 1:
        return empty
    # row index of each source label (-1: not tracked)
    row = np.full(ns, -1, np.int64)
    row[src_ids] = np.arange(src_ids.size)
    z, y, x = np.nonzero(src_labels)
    r = row[src_labels[z, y, x]]
    keep = r >= 0
    z, y, x, r = z[keep], y[keep], x[keep], r[keep]
    size_src = np.bincount(r, minlength=src_ids.size)
    # destination sizes and centres
    dcount, dsums, _ = _counts_and_sums_light(dst_labels.astype(np.intp, copy=False), nd)
    dpresent = np.flatnonzero(dcount[1:]) + 1
    dcent = np.full((nd, 3), np.nan)
    dcent[dpresent] = dsums[dpresent] / dcount[dpresent][:, None]
    scount = np.maximum(size_src, 1).astype(float)
    scent0 = np.stack([np.bincount(r, weights=c, minlength=src_ids.size) for c in (z, y, x)], 1) / scount[:, None]
    eq_r = np.cbrt(3.0 * scount / (4.0 * np.pi))
    radius = float(search_radius_factor) * eq_r
    tight = np.zeros(src_ids.size, bool)
    if search_radius_px is not None:
        given = np.asarray(search_radius_px, float).reshape(-1)
        if given.size != src_ids.size or np.any(given < 0):
            raise InputError(f"search_radius_px needs {src_ids.size} values >= 0 (NaN: the default), one per source id")
        tight = ~np.isnan(given)
        radius = np.where(tight, given, radius)
    tree = cKDTree(dcent[dpresent])
    best_key, best_cost = [], []
    for h in range(n_h):
        shift = shift_px[:, h, :]
        ok_h = np.all(np.isfinite(shift), axis=1)
        shift = np.where(ok_h[:, None], shift, 0.0)
        shift_i = np.round(shift).astype(np.int64)
        # overlap of the shifted source voxels with the destination particles
        zz, yy, xx = z + shift_i[r, 0], y + shift_i[r, 1], x + shift_i[r, 2]
        inside = ((zz >= 0) & (zz < dst_labels.shape[0]) & (yy >= 0) & (yy < dst_labels.shape[1])
                  & (xx >= 0) & (xx < dst_labels.shape[2]) & ok_h[r])
        d = np.zeros_like(r)
        d[inside] = dst_labels[zz[inside], yy[inside], xx[inside]]
        hit = d > 0
        pairs, inter = np.unique(r[hit] * nd + d[hit], return_counts=True)
        pr, pd = pairs // nd, pairs % nd
        scent = scent0 + shift
        near = tree.query_ball_point(scent, r=radius)
        near = [v if ok_h[i] else [] for i, v in enumerate(near)]
        nr = np.repeat(np.arange(src_ids.size), [len(v) for v in near])
        nd_ = dpresent[np.concatenate([np.asarray(v, np.int64) for v in near])] if nr.size else np.zeros(0, np.int64)
        k2 = np.unique(np.concatenate([pr * nd + pd, nr * nd + nd_]))
        cr, cd = k2 // nd, k2 % nd
        inter_all = np.zeros(k2.size)
        inter_all[np.searchsorted(k2, pairs)] = inter
        iou = inter_all / (size_src[cr] + dcount[cd] - inter_all)
        dist = np.linalg.norm(dcent[cd] - scent[cr], axis=1)
        # with a per-source radius, an overlap alone proposes a particle only if the prediction covers
        # most of it (a fragment of the particle cut by the border), not a touching neighbour
        keep = ~tight[cr] | (dist <= radius[cr]) | (inter_all >= 0.5 * dcount[cd])
        best_key.append(k2[keep])
        best_cost.append(((1.0 - iou) + dist / (2.0 * eq_r[cr])
                          + np.abs(np.log(dcount[cd] / np.maximum(size_src[cr], 1))) + pen[h])[keep])
    key = np.concatenate(best_key)
    cst = np.concatenate(best_cost)
    o = np.lexsort((cst, key))
    key, cst = key[o], cst[o]
    if key.size == 0:
        return empty
    first = np.r_[True, key[1:] != key[:-1]]
    k2, cost = key[first], cst[first]
    cr, cd = k2 // nd, k2 % nd
    # sparse bipartite graph -> connected components -> exact assignment in each
    n_r, n_d = src_ids.size, nd
    g = sparse.coo_matrix((np.ones(k2.size), (cr, n_r + cd)), shape=(n_r + n_d, n_r + n_d)).tocsr()
    n_comp, comp = connected_components(g, directed=False)
    ccomp = comp[cr]
    order = np.argsort(ccomp, kind="stable")
    bounds = np.flatnonzero(np.diff(ccomp[order])) + 1
    out_s, out_d, out_c = [], [], []
    for grp in np.split(order, bounds):
        if grp.size == 0:
            continue
        rows, ri = np.unique(cr[grp], return_inverse=True)
        cols, ci = np.unique(cd[grp], return_inverse=True)
        if rows.size == 1 or cols.size == 1:
            j = grp[np.argmin(cost[grp])]
            out_s.append(src_ids[cr[j]])
            out_d.append(cd[j])
            out_c.append(cost[j])
            continue
        # each row may also stay unmatched (its own dummy column) at 1.05 x the component's dearest pair:
        # with forbidden entries alone the assignment maximises the number of links first and shifts a
        # whole chain of particles onto their neighbours (cost 2-5 each) to link one more
        m = np.full((rows.size, cols.size + rows.size), _FORBIDDEN)
        m[ri, ci] = cost[grp]
        m[np.arange(rows.size), cols.size + np.arange(rows.size)] = _ALTERNATIVE * cost[grp].max()
        a, b = linear_sum_assignment(m)
        ok = b < cols.size
        out_s.extend(src_ids[rows[a[ok]]])
        out_d.extend(cols[b[ok]])
        out_c.extend(m[a[ok], b[ok]])
    return np.asarray(out_s, np.int64), np.asarray(out_d, np.int64), np.asarray(out_c, float)


def field_uncertainty(field, points_zyx_px) -> tuple[np.ndarray, np.ndarray]:
    """Displacement of a DVC field at T0 points and its local uncertainty, px.

    The uncertainty is the RMS spread, about the interpolated displacement, of the first-order
    predictions ``t_k + (F_k - I)(p - x_k)`` of the 8 nodes nearest to each point: on a smooth,
    well measured field they agree to a few hundredths of a px; where windows straddle two
    motions or a node is wrong they disagree by px.  It is infinite where the field does not cover
    the point: outside the box of the usable nodes grown by their half-window (the reach of the
    outer windows; half a node spacing when the field records none), or with a node among the 8
    that did not converge (interpolated nodes agree with each other by construction, so their
    spread says nothing; :attr:`DisplacementField.converged`).

    Returns
    -------
    (displacement (m, 3), uncertainty (m,))
    """
    from scipy.spatial import cKDTree

    pts = np.asarray(points_zyx_px, float).reshape(-1, 3)
    u, _ = field.interpolate(pts)
    pos, ok = field.positions_zyx_px, field.usable
    k = min(8, len(pos))
    _, idx = cKDTree(pos).query(pts, k=k)
    idx = idx.reshape(len(pts), k)
    reach = np.asarray(field.half_window_px, float)   # the outer windows measured up to there
    if not np.all(reach > 0):  # no window recorded: half the node spacing (or nearest-neighbour distance)
        sp = np.asarray(field.node_spacing_px, float)
        if not np.all(sp > 0):
            sp = np.full(3, np.median(cKDTree(pos).query(pos, k=2)[0][:, 1]) if len(pos) > 1 else 0.0)
        reach = sp / 2
    lo, hi = pos[ok].min(0) - reach, pos[ok].max(0) + reach
    inside = np.all((pts >= lo) & (pts <= hi), axis=1) & np.all(field.converged[idx], axis=1)
    est = field.phi[idx, :3, 3] + np.einsum("mkab,mkb->mka", field.phi[idx, :3, :3] - np.eye(3),
                                            pts[:, None, :] - pos[idx])
    sigma = np.sqrt(np.mean(np.sum((est - u[:, None, :]) ** 2, axis=-1), axis=1))
    return u, np.where(inside, sigma, np.inf)


def _predictor(displacement, n_steps):
    """callable(step, points_px (m, 3)) -> (displacement px (m, 3) from T0, uncertainty px (m,)), or None.

    The uncertainty is infinite where the field does not cover a point (NaN from a callable)."""
    from ..dvc import DisplacementField

    if displacement is None:
        return None
    if callable(displacement):
        def call(step, pts):
            u = np.asarray(displacement(step, pts), float).reshape(-1, 3)
            if u.shape[0] != len(pts):
                raise InputError(f"the displacement callable returned {u.shape[0]} rows for {len(pts)} points")
            covered = np.all(np.isfinite(u), axis=1)
            return u, np.where(covered, np.nan, np.inf)   # NaN: covered, uncertainty unknown

        return call
    fields = list(displacement)
    if len(fields) not in (n_steps, n_steps - 1):
        raise InputError(f"displacement has {len(fields)} fields for {n_steps} steps; give one field T0 -> Tn per "
                         f"step (n_steps - 1 = {n_steps - 1}, or n_steps with None first)")
    if len(fields) == n_steps - 1:
        fields = [None] + fields
    for i, f in enumerate(fields[1:], 1):
        if f is not None and not isinstance(f, DisplacementField):
            raise InputError(f"displacement[{i}] is a {type(f).__name__}; give DisplacementField objects (T0 -> Tn)")

    def predict(step, pts):
        f = fields[step]
        if f is None:
            return np.zeros_like(pts), np.zeros(len(pts))
        return field_uncertainty(f, pts)

    return predict


def _hypotheses(predict, step, src_step, ref, pos_src, fallback_penalty, default_radius):
    """Motion hypotheses ``(n, k, 3)`` px from the last seen positions, their penalties and search radii (px).

    With a field the prediction is its displacement T0 -> step at the T0 position ``ref``, searched
    within ``_RADIUS_BASE_PX + _RADIUS_SIGMAS x`` its local uncertainty.  Where the field does not
    cover a particle, or is so uncertain there that this radius reaches ``default_radius``, two
    fallbacks (NaN elsewhere: no candidates) are added at a penalty: the last seen position moved
    by the field's increment since then, and the last seen position unmoved."""
    n = len(ref)
    if predict is None:
        return np.zeros((n, 1, 3)), [0.0], None
    u, sigma = predict(step, ref)
    radius = _RADIUS_BASE_PX + _RADIUS_SIGMAS * sigma   # NaN: unknown (a callable), inf: not covered
    covered = ~(radius >= default_radius)
    radius = np.where(covered, radius, np.nan)
    hyp = [ref + u - pos_src]
    if fallback_penalty is not None and not covered.all():
        off = np.where(covered, np.nan, 0.0)[:, None]
        if src_step > 0:
            hyp.append(u - predict(src_step, ref)[0] + off)
        hyp.append(np.zeros_like(pos_src) + off)
    return np.stack(hyp, 1), [0.0] + [float(fallback_penalty or 0.0)] * (len(hyp) - 1), radius


def track_particles(label_series: Sequence, *, displacement=None, voxel_size_nm=None,
                    search_radius_factor: float = 1.5, fallback_penalty: float | None = 0.25,
                    names: Sequence[str] | None = None, progress: Callable[[int, int], None] | None = None) -> Tracks:
    """Track particles through the steps of a time series of particle labellings.

    Parameters
    ----------
    label_series : sequence of (z, y, x) int arrays or Volumes
        Particle labels T0..Tn on one (time-aligned) voxel grid; label values need not agree
        between steps.
    displacement : sequence of DisplacementField, or callable, optional
        Fields T0 -> Tn (one per step n >= 1, or one per step with ``None`` for T0) on the same
        voxel grid (px), e.g. from :func:`tomo4d.dvc.correlate`; or ``f(step, points_px) ->
        displacement_px`` for T0 points ``(m, 3)`` (NaN rows: no prediction there; a callable's
        uncertainty is unknown, so its particles are searched within ``search_radius_factor``
        equivalent radii).  Without one, each particle is predicted at
        its last seen position (enough only for motions below a particle radius per step).
    voxel_size_nm : float or (3,) float, optional
    search_radius_factor : float
        See :func:`link_particles`.
    fallback_penalty : float or None
        With a field, a particle the field does not cover (:func:`field_uncertainty` infinite, or
        so uncertain that ``2 + 3 sigma`` px reaches ``search_radius_factor`` equivalent radii; NaN
        from a callable) also gets two fallback predictions: its last seen position moved by the
        field's increment since that step, and its last seen position unmoved; they rescue
        particles where the measured field is missing or locally wrong (e.g. next to the rigid
        collector, where DVC windows straddle two motions).  Pairs found only through a fallback
        cost this much more.  ``None``: the field alone everywhere.
    names : sequence of str, optional
    progress : callable(done, total), optional

    Returns
    -------
    Tracks
    """
    items = list(label_series)
    if len(items) < 1:
        raise InputError("label_series is empty; give one particle label volume per step")
    check_number("search_radius_factor", search_radius_factor, minimum=0.0)
    if fallback_penalty is not None:
        check_number("fallback_penalty", fallback_penalty, minimum=0.0)
    vs = voxel_size(voxel_size_nm, *items)
    names = step_names(len(items), names)
    predict = _predictor(displacement, len(items))
    n_steps = len(items)
    from .particles import _sequential

    labs, values = [], []
    for i, a in enumerate(items):
        compact, vals = _sequential(as_labels(a, name=f"label_series[{i}]", instances=True))
        labs.append(compact)
        values.append(vals)
    for i, a in enumerate(labs[1:], 1):
        if a.shape != labs[0].shape:
            raise InputError(f"label_series[{i}] has shape {a.shape}, T0 has {labs[0].shape}; use one voxel grid")
    ids, cnt, cen = _centroids(labs[0])
    # track state (lists grow when new particles appear)
    lab_hist = [np.zeros(n_steps, np.int64) for _ in ids]
    cen_hist = [np.full((n_steps, 3), np.nan) for _ in ids]
    vol_hist = [np.full(n_steps, np.nan) for _ in ids]
    cost_hist = [np.full(n_steps, np.nan) for _ in ids]
    first = [0] * len(ids)
    x0 = [c.copy() for c in cen]  # T0-referenced position for the field
    vox_um3 = float(np.prod(vs)) / 1e9
    for t, (i, n, c) in enumerate(zip(ids, cnt, cen)):
        lab_hist[t][0], cen_hist[t][0], vol_hist[t][0], cost_hist[t][0] = i, c, n * vox_um3, 0.0
    if progress is not None:
        progress(1, n_steps)
    last_seen = np.zeros(len(ids), np.int64)
    for s in range(1, n_steps):
        dst = labs[s]
        d_ids, d_cnt, d_cen = _centroids(dst)
        live = np.arange(len(lab_hist))
        # group the live tracks by the step they were last seen at (usually s - 1)
        matched_dst = set()
        new_links = {}
        for src_step in np.unique(last_seen[live])[::-1]:
            tr = live[last_seen[live] == src_step]
            tr = np.array([t for t in tr if t not in new_links], np.int64)
            if tr.size == 0:
                continue
            src_lab = np.array([lab_hist[t][src_step] for t in tr])
            pos_src = np.array([cen_hist[t][src_step] for t in tr])
            vol_src = np.array([vol_hist[t][src_step] for t in tr]) / vox_um3
            hyp, pens, radius = _hypotheses(predict, s, int(src_step), np.array([x0[t] for t in tr]), pos_src,
                                            fallback_penalty, search_radius_factor * np.cbrt(0.75 * vol_src / np.pi))
            dst_masked = dst if not matched_dst else np.where(np.isin(dst, list(matched_dst)), 0, dst)
            a, b, c = link_particles(labs[src_step], dst_masked, hyp, src_ids=src_lab,
                                     search_radius_factor=search_radius_factor, search_radius_px=radius,
                                     hypothesis_penalty=pens)
            lookup = dict(zip(src_lab.tolist(), tr.tolist()))
            for sa, db, cc in zip(a.tolist(), b.tolist(), c.tolist()):
                new_links[lookup[sa]] = (db, cc)
                matched_dst.add(db)
        pos = {int(k): j for j, k in enumerate(d_ids)}
        for t, (db, cc) in new_links.items():
            j = pos[db]
            lab_hist[t][s], cen_hist[t][s], vol_hist[t][s], cost_hist[t][s] = db, d_cen[j], d_cnt[j] * vox_um3, cc
            last_seen[t] = s
        # unmatched particles of this step start new tracks
        fresh = [j for j, k in enumerate(d_ids) if int(k) not in matched_dst]
        for j in fresh:
            h = np.zeros(n_steps, np.int64)
            h[s] = d_ids[j]
            lab_hist.append(h)
            ch = np.full((n_steps, 3), np.nan)
            ch[s] = d_cen[j]
            cen_hist.append(ch)
            vh = np.full(n_steps, np.nan)
            vh[s] = d_cnt[j] * vox_um3
            vol_hist.append(vh)
            kh = np.full(n_steps, np.nan)
            kh[s] = 0.0
            cost_hist.append(kh)
            first.append(s)
            # reference position for the field: invert the prediction approximately (fixed point)
            p = d_cen[j].copy()
            if predict is not None:
                for _ in range(5):
                    q = d_cen[j] - predict(s, p[None])[0][0]
                    p = q if np.all(np.isfinite(q)) else p
            x0.append(p)
        last_seen = np.concatenate([last_seen, np.full(len(fresh), s, np.int64)])
        if progress is not None:
            progress(s + 1, n_steps)
    scale = np.asarray(vs) / 1e3
    lab_out = np.stack(lab_hist) if lab_hist else np.zeros((0, n_steps), np.int64)
    for s in range(n_steps):  # back to the original label values
        lab_out[:, s] = values[s][lab_out[:, s]]
    return Tracks(step_names=names, label=lab_out,
                  centroid_um=(np.stack(cen_hist) * scale) if cen_hist else np.zeros((0, n_steps, 3)),
                  volume_um3=np.stack(vol_hist) if vol_hist else np.zeros((0, n_steps)),
                  cost=np.stack(cost_hist) if cost_hist else np.zeros((0, n_steps)),
                  first_step=np.asarray(first, np.int64), voxel_size_nm=vs)
