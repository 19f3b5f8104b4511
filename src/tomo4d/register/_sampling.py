"""Where the sampled boxes of an out-of-core registration level go: where the fixed image carries information.

A sampled level (:mod:`._outofcore`) keeps only as many boxes as fit its budget.  Spread evenly over the region,
they can all miss the structure that fixes the motion: the align stage registers on a current-collector slab
(a featureless foil plus a few textured slices of electrode next to it), and at 1024^3 with 512 MB the 90 boxes
of the finest level all fell inside the foil.  The normal equations then hold only noise in five of the six rigid
directions, and the level walked away from the (correct) coarse result to a 1.4 px / 0.2 deg error at T1 and
16.5 px / 1.4 deg at T2 (the in-memory registration of the same pair: 0.1 px, 0.00 deg).

So the boxes are chosen like a D-optimal design: the region is cut into candidate boxes of the level's box side
(the tiling plus boxes flush with the region's far ends), each candidate's Gauss-Newton matrix is computed on a
small **guide** image (the first whole level's fixed image and mask, block-averaged to at most 1/16 of the
budget), and boxes are taken greedily, each the candidate that most increases ``log det`` of the summed matrix
(rigid: its 6x6 restriction) and overlapping no box already taken.  Boxes that tile the region are all taken (no
choice: the in-memory normal equations).  The moving boxes, the sums and the updates are unchanged.
"""

from __future__ import annotations

import numpy as np

from . import _global as g

#: the guide image (fixed float32 + mask) takes at most this share of the level's budget
GUIDE_SHARE = 1.0 / 16.0
#: relative ridge added to the summed matrix while choosing (keeps log det finite before every direction is seen)
RIDGE = 1e-9


class Guide:
    """A coarse copy of the fixed image (and mask) of factor ``factor`` used to score candidate boxes."""

    def __init__(self, fixed_b: np.ndarray, mask_b: np.ndarray | None, b: int, budget: int):
        k = 1
        while np.prod([n // (k * 2) for n in fixed_b.shape]) >= 27 and \
                np.prod([n // k for n in fixed_b.shape]) * 5.0 > GUIDE_SHARE * budget:
            k *= 2
        self.factor = b * k
        self.fixed = np.ascontiguousarray(g._bin(np.asarray(fixed_b, np.float32), k), np.float32)
        sel = np.ones(self.fixed.shape, bool) if mask_b is None else \
            g._bin(np.asarray(mask_b, np.float32), k) > 0  # any masked voxel: a thin band must stay visible
        self.sel = np.ascontiguousarray(sel)
        self.nbytes = self.fixed.nbytes + self.sel.nbytes

    def information(self, boxes, b: int, rigid: bool) -> np.ndarray:
        """The Gauss-Newton matrix (12x12, rigid 6x6) of each level-``b`` box ``(lo, hi)`` on the guide, about the
        guide's centre."""
        from . import _kernels

        shape = np.asarray(self.fixed.shape)
        c = (shape - 1.0) / 2.0
        s = b / self.factor
        out = []
        for lo, hi in boxes:
            glo = np.clip(np.floor(np.asarray(lo) * s).astype(int), 1, shape - 2)
            ghi = np.clip(np.ceil(np.asarray(hi) * s).astype(int), glo + 1, shape - 1)
            sub = self.fixed[glo[0] - 1:ghi[0] + 1, glo[1] - 1:ghi[1] + 1, glo[2] - 1:ghi[2] + 1]
            sel = np.zeros(sub.shape, bool)
            sel[1:-1, 1:-1, 1:-1] = self.sel[glo[0]:ghi[0], glo[1]:ghi[1], glo[2]:ghi[2]]
            mom = np.empty((sub.shape[0], 3, 3, 4, 4))
            _kernels.hessian_moments(np.ascontiguousarray(sub), sel, 0, sub.shape[0], mom)
            shift = glo - 1 + (np.asarray(sub.shape) - 1.0) / 2.0 - c
            out.append(g.gauss_newton_matrix(g.moments_about(mom.sum(axis=0), shift), rigid))
        return np.asarray(out)


def candidates(region_lo, region_hi, side) -> list[tuple[np.ndarray, np.ndarray]]:
    """Boxes of ``side`` over ``[region_lo, region_hi)``: the tiling, and per axis one more flush with the far end."""
    starts = []
    for a in range(3):
        r0, r1, s = int(region_lo[a]), int(region_hi[a]), int(side[a])
        st = list(range(r0, r1, s))
        if (r1 - r0) % s and r1 - s > r0:
            st.append(r1 - s)  # the last tile is short: a whole box flush with the end as well
        starts.append(st)
    return [(np.array([z, y, x]), np.minimum(np.array([z, y, x]) + side, region_hi))
            for z in starts[0] for y in starts[1] for x in starts[2]]


def choose(boxes, info: np.ndarray, n: int) -> list[int]:
    """Indices of at most ``n`` non-overlapping boxes taken greedily by the largest increase of ``log det``."""
    lo = np.array([bx[0] for bx in boxes])
    hi = np.array([bx[1] for bx in boxes])
    total = info.sum(axis=0)
    acc = np.diag(RIDGE * np.maximum(np.diag(total), np.diag(total).max() * 1e-12))
    free = np.ones(len(boxes), bool)
    taken: list[int] = []
    while len(taken) < n and free.any():
        idx = np.flatnonzero(free)
        _, logdet = np.linalg.slogdet(acc + info[idx])
        j = int(idx[int(np.argmax(logdet))])
        taken.append(j)
        acc = acc + info[j]
        free &= ~np.all((lo < hi[j]) & (hi > lo[j]), axis=1)
    return taken
