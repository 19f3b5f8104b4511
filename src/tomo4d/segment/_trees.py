"""Compiled traversal of a flattened random forest (numba, imported lazily).

The forest is stored as flat node arrays (all trees concatenated): for node
``n``, ``left[n]``/``right[n]`` are the global indices of its children (-1 at a
leaf), ``feature[n]`` and ``threshold[n]`` the split ("go left if
``x[feature] <= threshold``", scikit-learn's rule), and ``value[n, c]`` the
class fractions of the training samples that reached the leaf.  ``roots[t]`` is
the index of tree t's root.  The probability of class c is the mean over trees
of ``value[leaf, c]``, which is exactly scikit-learn's ``predict_proba``.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .._threads import numba_threads


@njit(cache=True, parallel=True, nogil=True)
def forest_proba(x, left, right, feature, threshold, value, roots, out):  # pragma: no cover - compiled
    """Write the mean leaf value over trees for every row of ``x`` (N, F) into ``out`` (N, C)."""
    n = x.shape[0]
    n_classes = value.shape[1]
    n_trees = roots.shape[0]
    inv = 1.0 / n_trees
    for i in prange(n):
        for c in range(n_classes):
            out[i, c] = 0.0
        for t in range(n_trees):
            node = roots[t]
            while left[node] != -1:
                if x[i, feature[node]] <= threshold[node]:
                    node = left[node]
                else:
                    node = right[node]
            for c in range(n_classes):
                out[i, c] += value[node, c]
        for c in range(n_classes):
            out[i, c] *= inv


def run(x: np.ndarray, forest) -> np.ndarray:
    """Probabilities (N, C) float32 of the rows of ``x`` (N, F) float32."""
    out = np.empty((x.shape[0], forest.value.shape[1]), np.float32)
    with numba_threads(None):    # tomo4d.threads / the CPUs this process may use; restored after
        forest_proba(np.ascontiguousarray(x, dtype=np.float32), forest.left, forest.right, forest.feature,
                     forest.threshold, forest.value, forest.roots, out)
    return out
