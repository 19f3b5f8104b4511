"""Matching the particles of two steps: candidate pairs from motion hypotheses, then an exact
assignment per connected component of the sparse candidate graph (see :mod:`tomo4d.quantify.tracking`)."""

from __future__ import annotations

import numpy as np

from .._validate import show
from ..errors import InputError
from ._label_source import LabelSource, centroids

#: cost of a pair that is not a candidate (never chosen)
_FORBIDDEN = 1e6
#: cost of leaving a particle unmatched, relative to the dearest candidate pair of its component
_ALTERNATIVE = 1.05
#: components whose dense cost matrix (rows x (cols + rows)) has more entries are matched on the sparse graph
DENSE_MAX = 4_000_000


def _hypothesis_shifts(shift_px, n_src, hypothesis_penalty) -> tuple[np.ndarray, np.ndarray]:
    """``shift_px`` as (n_src, k, 3) and the penalty of each of its ``k`` hypotheses."""
    shift_px = np.asarray(shift_px, float)
    if shift_px.ndim == 2:
        shift_px = shift_px[:, None, :]
    if shift_px.ndim != 3 or shift_px.shape[0] != n_src or shift_px.shape[2] != 3:
        raise InputError(f"shift_px has shape {shift_px.shape}; give ({n_src}, 3) or ({n_src}, k, 3) "
                         "predicted motions (px) for the source ids")
    n_h = shift_px.shape[1]
    if hypothesis_penalty is None:
        return shift_px, np.r_[0.0, np.full(n_h - 1, 0.25)]
    pen = np.asarray(hypothesis_penalty, float).ravel()
    if pen.size != n_h or not np.all(np.isfinite(pen)) or np.any(pen < 0):
        raise InputError(f"hypothesis_penalty={show(hypothesis_penalty)} needs {n_h} finite values >= 0 (one per "
                         "motion hypothesis of shift_px)")
    return shift_px, pen


class _Sources:
    """Sizes, centres, equivalent radii and search radii of the source particles (rows)."""

    def __init__(self, size, sums, src_ids, search_radius_factor, search_radius_px):
        self.size = size
        scount = np.maximum(self.size, 1).astype(float)
        self.centre = sums / scount[:, None]
        self.eq_r = np.cbrt(3.0 * scount / (4.0 * np.pi))
        self.radius = float(search_radius_factor) * self.eq_r
        self.tight = np.zeros(src_ids.size, bool)
        if search_radius_px is not None:
            given = np.asarray(search_radius_px, float).reshape(-1)
            if given.size != src_ids.size or np.any(given < 0):
                raise InputError(f"search_radius_px needs {src_ids.size} values >= 0 (NaN: the default), "
                                 "one per source id")
            self.tight = ~np.isnan(given)
            self.radius = np.where(self.tight, given, self.radius)


class _Overlaps:
    """Voxel counts of every (source row, destination label) pair under the shifted source voxels, per
    hypothesis, and the sources' sizes and coordinate sums: one pass over the source slabs, each reading
    only the destination slices its shifted voxels land in (windows of ``window`` slices)."""

    def __init__(self, src: LabelSource, dst: LabelSource, row, shift_px, window: int):
        n_src, n_h = shift_px.shape[:2]
        self.ok = np.all(np.isfinite(shift_px), axis=2)                    # (n_src, k)
        self.shift_i = np.round(np.where(self.ok[..., None], shift_px, 0.0)).astype(np.int64)
        self.size = np.zeros(n_src, np.int64)
        self.sums = np.zeros((n_src, 3))
        self.nd, self.dst, self.window = dst.n_bins, dst, max(1, int(window))
        found = [[] for _ in range(n_h)]
        for z0, z1 in src.slabs():
            block = src.read(z0, z1)
            z, y, x = np.nonzero(block)
            r = row[block[z, y, x]]
            keep = r >= 0
            z, y, x, r = z[keep] + z0, y[keep], x[keep], r[keep]
            self.size += np.bincount(r, minlength=n_src)
            for j, c in enumerate((z, y, x)):
                self.sums[:, j] += np.bincount(r, weights=c, minlength=n_src)
            for h in range(n_h):
                found[h].append(self._lookup(z, y, x, r, h))
        self.pairs = [_merge(f) for f in found]

    def _lookup(self, z, y, x, r, h) -> tuple[np.ndarray, np.ndarray]:
        """(pair keys, voxel counts) of the shifted voxels of one slab under hypothesis ``h``."""
        s = self.shift_i[:, h]
        zz, yy, xx = z + s[r, 0], y + s[r, 1], x + s[r, 2]
        nz, ny, nx = self.dst.shape
        inside = (zz >= 0) & (zz < nz) & (yy >= 0) & (yy < ny) & (xx >= 0) & (xx < nx) & self.ok[r, h]
        zz, yy, xx, rr = zz[inside], yy[inside], xx[inside], r[inside]
        if not zz.size:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        lo, hi = int(zz.min()), int(zz.max()) + 1
        if hi - lo > self.window:   # sort the look-ups by destination slice, read window by window
            o = np.argsort(zz, kind="stable")
            zz, yy, xx, rr = zz[o], yy[o], xx[o], rr[o]
        d = np.zeros_like(rr)
        for a in range(lo, hi, self.window):
            b = min(a + self.window, hi)
            sel = slice(*np.searchsorted(zz, [a, b])) if hi - lo > self.window else slice(None)
            d[sel] = self.dst.read(a, b)[zz[sel] - a, yy[sel], xx[sel]]
        hit = d > 0
        return np.unique(rr[hit] * self.nd + d[hit], return_counts=True)


def _merge(found) -> tuple[np.ndarray, np.ndarray]:
    """Pair keys and counts summed over slabs."""
    if len(found) == 1:
        return found[0]
    keys = np.concatenate([k for k, _ in found])
    counts = np.concatenate([c for _, c in found])
    u, inv = np.unique(keys, return_inverse=True)
    return u, np.bincount(inv, weights=counts, minlength=u.size).astype(np.int64)


def _hypothesis_pairs(src, ov, h, dcount, dcent, dpresent, tree, shift, pen):
    """Candidate pair keys ``row * nd + dst`` of one motion hypothesis ``shift`` (n, 3) and their costs."""
    nd = ov.nd
    n_src = src.size.size
    ok_h = ov.ok[:, h]
    shift = np.where(ok_h[:, None], shift, 0.0)
    pairs, inter = ov.pairs[h]
    pr, pd = pairs // nd, pairs % nd
    scent = src.centre + shift
    near = tree.query_ball_point(scent, r=src.radius)
    near = [v if ok_h[i] else [] for i, v in enumerate(near)]
    nr = np.repeat(np.arange(n_src), [len(v) for v in near])
    nd_ = dpresent[np.concatenate([np.asarray(v, np.int64) for v in near])] if nr.size else np.zeros(0, np.int64)
    k2 = np.unique(np.concatenate([pr * nd + pd, nr * nd + nd_]))
    cr, cd = k2 // nd, k2 % nd
    inter_all = np.zeros(k2.size)
    inter_all[np.searchsorted(k2, pairs)] = inter
    iou = inter_all / (src.size[cr] + dcount[cd] - inter_all)
    dist = np.linalg.norm(dcent[cd] - scent[cr], axis=1)
    # with a per-source radius, an overlap alone proposes a particle only if the prediction covers
    # most of it (a fragment of the particle cut by the border), not a touching neighbour
    keep = ~src.tight[cr] | (dist <= src.radius[cr]) | (inter_all >= 0.5 * dcount[cd])
    cost = ((1.0 - iou) + dist / (2.0 * src.eq_r[cr])
            + np.abs(np.log(dcount[cd] / np.maximum(src.size[cr], 1))) + pen)[keep]
    return k2[keep], cost


def _candidate_pairs(src, ov, dst: LabelSource, shift_px, pen):
    """Candidate pairs over all hypotheses, each at its cheapest: (row (m,), dst (m,), cost (m,))."""
    from scipy.spatial import cKDTree

    nd = ov.nd
    dpresent, dcnt, dcen = centroids(dst)
    if dpresent.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    dcount = np.zeros(nd, np.int64)
    dcount[dpresent] = dcnt
    dcent = np.full((nd, 3), np.nan)
    dcent[dpresent] = dcen
    tree = cKDTree(dcen)
    best_key, best_cost = [], []
    for h in range(shift_px.shape[1]):
        k, c = _hypothesis_pairs(src, ov, h, dcount, dcent, dpresent, tree, shift_px[:, h, :], pen[h])
        best_key.append(k)
        best_cost.append(c)
    key = np.concatenate(best_key)
    cst = np.concatenate(best_cost)
    o = np.lexsort((cst, key))
    key, cst = key[o], cst[o]
    first = np.r_[True, key[1:] != key[:-1]] if key.size else np.zeros(0, bool)
    k2 = key[first]
    return k2 // nd, k2 % nd, cst[first]


def _assign(cr, cd, cost, src_ids, nd):
    """One-to-one links from candidate pairs: sparse bipartite graph -> connected components ->
    exact assignment in each (every row may also stay unmatched)."""
    from scipy import sparse
    from scipy.optimize import linear_sum_assignment
    from scipy.sparse.csgraph import connected_components

    n_r, n_d = src_ids.size, nd
    g = sparse.coo_matrix((np.ones(cr.size), (cr, n_r + cd)), shape=(n_r + n_d, n_r + n_d)).tocsr()
    _, comp = connected_components(g, directed=False)
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
        alt = _ALTERNATIVE * cost[grp].max()
        if rows.size * (cols.size + rows.size) <= DENSE_MAX:
            m = np.full((rows.size, cols.size + rows.size), _FORBIDDEN)
            m[ri, ci] = cost[grp]
            m[np.arange(rows.size), cols.size + np.arange(rows.size)] = alt
            a, b = linear_sum_assignment(m)
            ok = b < cols.size
            got = m[a[ok], b[ok]]
        else:
            a, b, got, ok = _sparse_assignment(ri, ci, cost[grp], rows.size, cols.size, alt)
        out_s.extend(src_ids[rows[a[ok]]])
        out_d.extend(cols[b[ok]])
        out_c.extend(got)
    return np.asarray(out_s, np.int64), np.asarray(out_d, np.int64), np.asarray(out_c, float)


def _sparse_assignment(ri, ci, cost, n_rows: int, n_cols: int, alt: float):
    """The dense assignment's optimum on the sparse graph (the candidate pairs and one dummy column per row):
    every row is matched, so adding 1 to every weight (scipy's matching needs non-zero weights) adds n_rows to
    every matching and keeps the optimum.  A component of the 1024^3 benchmark's tracking (213k particles a
    step) made the dense matrix 9 GiB."""
    from scipy import sparse
    from scipy.sparse.csgraph import min_weight_full_bipartite_matching

    r = np.concatenate([ri, np.arange(n_rows)])
    c = np.concatenate([ci, n_cols + np.arange(n_rows)])
    w = np.concatenate([cost, np.full(n_rows, alt)]) + 1.0
    g = sparse.csr_matrix((w, (r, c)), shape=(n_rows, n_cols + n_rows))
    a, b = min_weight_full_bipartite_matching(g)
    ok = b < n_cols
    key = ri.astype(np.int64) * n_cols + ci
    order = np.argsort(key)
    got = cost[order[np.searchsorted(key[order], a[ok].astype(np.int64) * n_cols + b[ok])]]  # exact, not w - 1
    return a, b, got, ok


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
    from ._label_source import label_source

    return link_sources(label_source(src_labels, name="src_labels"), label_source(dst_labels, name="dst_labels"),
                        shift_px, src_ids=src_ids, search_radius_factor=search_radius_factor,
                        search_radius_px=search_radius_px, hypothesis_penalty=hypothesis_penalty)


def link_sources(src: LabelSource, dst: LabelSource, shift_px, *, src_ids, search_radius_factor: float = 1.0,
                 search_radius_px=None, hypothesis_penalty=None, window: int | None = None):
    """:func:`link_particles` on compact :class:`LabelSource` labels (in memory or read slab by slab;
    ``window``: destination slices read at once, default all)."""
    src_ids = np.asarray(src_ids, np.int64)
    shift_px, pen = _hypothesis_shifts(shift_px, src_ids.size, hypothesis_penalty)
    empty = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0))
    if src_ids.size == 0 or dst.n_bins <= 1:
        return empty
    row = np.full(src.n_bins, -1, np.int64)   # row index of each source label (-1: not tracked)
    row[src_ids] = np.arange(src_ids.size)
    ov = _Overlaps(src, dst, row, shift_px, dst.shape[0] if window is None else window)
    sources = _Sources(ov.size, ov.sums, src_ids, search_radius_factor, search_radius_px)
    cr, cd, cost = _candidate_pairs(sources, ov, dst, shift_px, pen)
    if cr.size == 0:
        return empty
    return _assign(cr, cd, cost, src_ids, dst.n_bins)
