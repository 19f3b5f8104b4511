"""Compiled traversal of a flattened random forest (numba, imported lazily).

The forest is stored as flat node arrays (all trees concatenated): for node
``n``, ``left[n]``/``right[n]`` are the global indices of its children (-1 at a
leaf), ``feature[n]`` and ``threshold[n]`` the split ("go left if
``x[feature] <= threshold``", scikit-learn's rule), and ``value[n, c]`` the
class fractions of the training samples that reached the leaf.  ``roots[t]`` is
the index of tree t's root.  The probability of class c is the mean over trees
of ``value[leaf, c]``, which is exactly scikit-learn's ``predict_proba``.

For prediction the trees are repacked once (:func:`pack`): nodes numbered breadth-first per tree so that
each split's two children are adjacent (``right = left + 1``), thresholds rounded down to float32 (for a
float32 feature, ``x <= t`` in float64 holds exactly when ``x <= below32(t)``), so that a step down a tree
is ``node = child[node] + (x > thr[node])``.  A walk down a tree is a chain of dependent loads; six voxels
walk the same tree side by side (independent chains the CPU overlaps), from a block of feature rows copied
once (any input layout).  Per voxel the trees' values are still added in tree order, so the probabilities
are bit-identical to the plain one-voxel-at-a-time walk (tests/segment/test_forest.py).  On a 1024^2 x 8
slab of the 1024^3 benchmark (16 trees of ~1100 nodes, 10 levels walked per tree, 15 features, one
thread): 950 -> 450-490 ns/voxel (benchmarks/RESULTS.md "Pixel classifier").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit, prange

from .._threads import numba_threads

#: voxels whose features are copied into one block of rows
BLOCK = 240


@dataclass(frozen=True, eq=False)
class Packed:
    """A forest renumbered for the walk: ``child[n]`` the left child (the right one is ``child[n] + 1``), -1
    at a leaf; ``feature``, ``threshold`` (float32, rounded down), ``value`` (N, C), ``roots`` (T,)."""

    child: np.ndarray
    feature: np.ndarray
    threshold: np.ndarray
    value: np.ndarray
    roots: np.ndarray


def below32(t: np.ndarray) -> np.ndarray:
    """The largest float32 not above each float64 threshold (the same comparisons with float32 features)."""
    t32 = np.asarray(t, np.float64).astype(np.float32)
    up = t32.astype(np.float64) > t
    t32[up] = np.nextafter(t32[up], np.float32(-np.inf))
    return t32


def pack(forest) -> Packed:
    """The flat forest renumbered breadth-first per tree, each split's children adjacent."""
    left, right = np.asarray(forest.left), np.asarray(forest.right)
    order = np.empty(left.shape[0], np.int64)  # new index -> old index
    new_of = np.full(left.shape[0], -1, np.int64)
    n, roots = 0, []
    for r in np.asarray(forest.roots):
        roots.append(n)
        order[n], new_of[r] = r, n
        head, n = n, n + 1
        while head < n:  # breadth first: the queue is order[head:n]
            old = order[head]
            head += 1
            if left[old] != -1:
                order[n], order[n + 1] = left[old], right[old]
                new_of[left[old]], new_of[right[old]] = n, n + 1
                n += 2
    order = order[:n]
    old_left = left[order]
    child = np.where(old_left == -1, -1, new_of[np.maximum(old_left, 0)]).astype(np.int32)
    return Packed(child=child, feature=np.ascontiguousarray(np.asarray(forest.feature)[order], np.int32),
                  threshold=below32(np.asarray(forest.threshold, np.float64)[order]),
                  value=np.ascontiguousarray(np.asarray(forest.value)[order], np.float32),
                  roots=np.asarray(roots, np.int32))


@njit(cache=True, nogil=True, inline="always")
def _leaf(row, node, child, feature, threshold):  # pragma: no cover - compiled
    nxt = child[node]
    while nxt >= 0:
        node = nxt + np.int32(row[feature[node]] > threshold[node])
        nxt = child[node]
    return node


@njit(cache=True, nogil=True)
def _block(buf, m, child, feature, threshold, value, roots, acc):  # pragma: no cover - compiled
    """Add every tree's leaf value of the first ``m`` rows of ``buf`` to ``acc``, six rows side by side."""
    n_classes = value.shape[1]
    for t in range(roots.shape[0]):
        r = roots[t]
        cr = child[r]
        j = 0
        while j + 6 <= m:
            n0 = n1 = n2 = n3 = n4 = n5 = r
            c0 = c1 = c2 = c3 = c4 = c5 = cr
            while c0 >= 0 or c1 >= 0 or c2 >= 0 or c3 >= 0 or c4 >= 0 or c5 >= 0:
                if c0 >= 0:
                    n0 = c0 + np.int32(buf[j, feature[n0]] > threshold[n0])
                    c0 = child[n0]
                if c1 >= 0:
                    n1 = c1 + np.int32(buf[j + 1, feature[n1]] > threshold[n1])
                    c1 = child[n1]
                if c2 >= 0:
                    n2 = c2 + np.int32(buf[j + 2, feature[n2]] > threshold[n2])
                    c2 = child[n2]
                if c3 >= 0:
                    n3 = c3 + np.int32(buf[j + 3, feature[n3]] > threshold[n3])
                    c3 = child[n3]
                if c4 >= 0:
                    n4 = c4 + np.int32(buf[j + 4, feature[n4]] > threshold[n4])
                    c4 = child[n4]
                if c5 >= 0:
                    n5 = c5 + np.int32(buf[j + 5, feature[n5]] > threshold[n5])
                    c5 = child[n5]
            for c in range(n_classes):
                acc[j, c] += value[n0, c]
                acc[j + 1, c] += value[n1, c]
                acc[j + 2, c] += value[n2, c]
                acc[j + 3, c] += value[n3, c]
                acc[j + 4, c] += value[n4, c]
                acc[j + 5, c] += value[n5, c]
            j += 6
        for k in range(j, m):
            leaf = _leaf(buf[k], r, child, feature, threshold)
            for c in range(n_classes):
                acc[k, c] += value[leaf, c]


@njit(cache=True, parallel=True, nogil=True)
def forest_proba(x, child, feature, threshold, value, roots, out):  # pragma: no cover - compiled
    """Write the mean leaf value over trees for every row of ``x`` (N, F) into ``out`` (N, C)."""
    n, n_features = x.shape
    n_classes = value.shape[1]
    inv = 1.0 / roots.shape[0]
    for b in prange((n + BLOCK - 1) // BLOCK):
        i0 = b * BLOCK
        m = min(n, i0 + BLOCK) - i0
        buf = np.empty((BLOCK, n_features), np.float32)
        for f in range(n_features):
            for j in range(m):
                buf[j, f] = x[i0 + j, f]
        acc = np.zeros((BLOCK, n_classes), np.float32)
        _block(buf, m, child, feature, threshold, value, roots, acc)
        for j in range(m):
            for c in range(n_classes):
                out[i0 + j, c] = acc[j, c] * inv


def run(x: np.ndarray, packed: Packed) -> np.ndarray:
    """Probabilities (N, C) float32 of the rows of ``x`` (N, F) float32 in any memory layout (the feature
    stacks are stored channel by channel, :func:`tomo4d.segment.features.feature_buffer`: read in place)."""
    out = np.empty((x.shape[0], packed.value.shape[1]), np.float32)
    with numba_threads(None):    # tomo4d.threads / the CPUs this process may use; restored after
        forest_proba(np.asarray(x, dtype=np.float32), packed.child, packed.feature, packed.threshold,
                     packed.value, packed.roots, out)
    return out
