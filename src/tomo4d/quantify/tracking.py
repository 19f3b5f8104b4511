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

Label volumes that are not numpy arrays (Zarr, dask, a lazy Volume) are read slab by slab under
``chunk_budget_mb`` (:mod:`tomo4d.quantify._label_source`): sizes and centres are per-slab integer sums and the
overlaps of the shifted source voxels are looked up in windows of the destination, so the tracks are those of
the in-memory path exactly and the memory is set by the budget, not by the volume.
The matching of two steps (:func:`link_particles`: candidates, costs, assignment) lives in
:mod:`tomo4d.quantify._linking`.
"""

# ``tomo4d.dvc`` is imported inside the functions that need it: it loads scipy.ndimage (~0.25 s).
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from .._validate import check_number
from ..errors import InputError
from ._common import step_names, voxel_size
from ._label_source import LabelSource, centroids, dst_window, is_lazy, label_source
from ._linking import link_particles, link_sources

log = logging.getLogger(__name__)

__all__ = ["Tracks", "track_particles", "link_particles", "field_uncertainty"]

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
                    names: Sequence[str] | None = None, progress: Callable[[int, int], None] | None = None,
                    chunk_budget_mb: float | None = None) -> Tracks:
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
    chunk_budget_mb : float, optional
        Memory budget of one slab (MiB, default 512) for label volumes that are not numpy arrays (Zarr,
        dask, a lazy Volume): those are read slab by slab (out of core; the tracks equal the in-memory
        ones exactly); numpy arrays are used whole.

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
    labs = _compact_series(items, chunk_budget_mb)
    window = dst_window(chunk_budget_mb, labs[0].shape) if any(is_lazy(a) for a in items) else None
    hist = _History(n_steps, float(np.prod(vs)) / 1e9)
    for i, n, c in zip(*centroids(labs[0])):
        hist.start(0, i, c, n, c.copy())
    if progress is not None:
        progress(1, n_steps)
    for s in range(1, n_steps):
        d_ids, d_cnt, d_cen = centroids(labs[s])
        new_links, matched_dst = _link_step(hist, labs, s, predict, search_radius_factor, fallback_penalty, window)
        pos = {int(k): j for j, k in enumerate(d_ids)}
        for t, (db, cc) in new_links.items():
            j = pos[db]
            hist.record(t, s, db, d_cen[j], d_cnt[j], cc)
        # unmatched particles of this step start new tracks
        new = np.array([j for j, k in enumerate(d_ids) if int(k) not in matched_dst], np.int64)
        refs = _reference_positions(predict, s, d_cen[new]) if new.size else np.zeros((0, 3))
        for j, ref in zip(new, refs):
            hist.start(s, d_ids[j], d_cen[j], d_cnt[j], ref)
        if progress is not None:
            progress(s + 1, n_steps)
    return hist.tracks(names, [a.values for a in labs], vs)


def _compact_series(items, chunk_budget_mb) -> list[LabelSource]:
    """Compact (1..n) particle labels of every step (the original value of each: ``.values``)."""
    labs = [label_source(a, name=f"label_series[{i}]", chunk_budget_mb=chunk_budget_mb) for i, a in enumerate(items)]
    for i, a in enumerate(labs[1:], 1):
        if a.shape != labs[0].shape:
            raise InputError(f"label_series[{i}] has shape {a.shape}, T0 has {labs[0].shape}; use one voxel grid")
    return labs


class _History:
    """Growing per-track histories (label, centre px, volume um^3, link cost over the steps), the
    step each track starts and was last seen at, and its T0-referenced position for the field."""

    def __init__(self, n_steps: int, vox_um3: float):
        self.n_steps, self.vox_um3 = n_steps, vox_um3
        self.label, self.centre, self.volume, self.cost = [], [], [], []
        self.first, self.x0, self.last_seen = [], [], []

    def start(self, step, label, centre, n_voxels, x0) -> None:
        """A new track found first at ``step``."""
        n = self.n_steps
        self.label.append(np.zeros(n, np.int64))
        self.centre.append(np.full((n, 3), np.nan))
        self.volume.append(np.full(n, np.nan))
        self.cost.append(np.full(n, np.nan))
        self.first.append(step)
        self.x0.append(x0)
        self.last_seen.append(step)
        self.record(len(self.label) - 1, step, label, centre, n_voxels, 0.0)

    def record(self, t, step, label, centre, n_voxels, cost) -> None:
        """Track ``t`` found at ``step``."""
        self.label[t][step], self.centre[t][step] = label, centre
        self.volume[t][step], self.cost[t][step] = n_voxels * self.vox_um3, cost
        self.last_seen[t] = step

    def tracks(self, names, values, vs) -> Tracks:
        n_steps = self.n_steps
        scale = np.asarray(vs) / 1e3
        lab_out = np.stack(self.label) if self.label else np.zeros((0, n_steps), np.int64)
        for s in range(n_steps):  # back to the original label values
            lab_out[:, s] = values[s][lab_out[:, s]]
        return Tracks(step_names=names, label=lab_out,
                      centroid_um=(np.stack(self.centre) * scale) if self.centre else np.zeros((0, n_steps, 3)),
                      volume_um3=np.stack(self.volume) if self.volume else np.zeros((0, n_steps)),
                      cost=np.stack(self.cost) if self.cost else np.zeros((0, n_steps)),
                      first_step=np.asarray(self.first, np.int64), voxel_size_nm=vs)


def _link_step(hist, labs, s, predict, search_radius_factor, fallback_penalty, window) -> tuple[dict, set]:
    """Links of the live tracks into step ``s``: {track: (label at s, cost)}, and the labels taken.

    The tracks are grouped by the step they were last seen at (usually ``s - 1``), latest first;
    each group is matched to the particles of step ``s`` that earlier groups left free."""
    dst = labs[s]
    last_seen = np.asarray(hist.last_seen, np.int64)
    live = np.arange(len(last_seen))
    matched_dst = set()
    new_links = {}
    for src_step in np.unique(last_seen[live])[::-1]:
        tr = live[last_seen[live] == src_step]
        tr = np.array([t for t in tr if t not in new_links], np.int64)
        if tr.size == 0:
            continue
        src_lab = np.array([hist.label[t][src_step] for t in tr])
        pos_src = np.array([hist.centre[t][src_step] for t in tr])
        vol_src = np.array([hist.volume[t][src_step] for t in tr]) / hist.vox_um3
        hyp, pens, radius = _hypotheses(predict, s, int(src_step), np.array([hist.x0[t] for t in tr]), pos_src,
                                        fallback_penalty, search_radius_factor * np.cbrt(0.75 * vol_src / np.pi))
        dst_masked = dst.masked(matched_dst) if matched_dst else dst
        a, b, c = link_sources(labs[src_step], dst_masked, hyp, src_ids=src_lab,
                               search_radius_factor=search_radius_factor, search_radius_px=radius,
                               hypothesis_penalty=pens, window=window)
        lookup = dict(zip(src_lab.tolist(), tr.tolist()))
        for sa, db, cc in zip(a.tolist(), b.tolist(), c.tolist()):
            new_links[lookup[sa]] = (db, cc)
            matched_dst.add(db)
    return new_links, matched_dst


def _reference_positions(predict, step, centres) -> np.ndarray:
    """T0-referenced positions ``(m, 3)`` of particles first seen at ``step``: the prediction inverted
    approximately (5 fixed-point iterations, all particles at once: one field evaluation per iteration; the
    centres themselves without a field).  A row whose iterate is not finite keeps its last finite one."""
    p = np.array(centres, dtype=np.float64, copy=True).reshape(-1, 3)
    if predict is not None:
        for _ in range(5):
            q = centres - predict(step, p)[0]
            p = np.where(np.all(np.isfinite(q), axis=1)[:, None], q, p)
    return p
