"""The slice-by-slice interface step fit against the whole-volume formula it replaces."""

from __future__ import annotations

import numpy as np
import pytest

from tomo4d.quantify._stepfit import step_fit
from tomo4d.quantify.thickness import _isin


def _reference(score, start=None):
    """The fit as a (nz + 1, ny, nx) prefix-sum array: cumsum in float64, argmax of the plateau mask."""
    nz = score.shape[0]
    pre = np.zeros((nz + 1,) + score.shape[1:], np.float64)
    np.cumsum(score.astype(np.float64), axis=0, out=pre[1:])
    if start is not None:
        k = np.arange(nz + 1)[:, None, None]
        base = np.take_along_axis(pre, start[None].astype(np.intp), axis=0)
        pre = np.where(k >= start[None], pre - base, -np.inf)
    best = pre.max(axis=0)
    tol = 1e-9 * max(1.0, float(np.abs(score).max(initial=0.0)))
    at = pre >= best[None] - tol
    first = np.argmax(at, axis=0)
    last = nz - np.argmax(at[::-1], axis=0)
    return 0.5 * (first + last) - 0.5, best > tol


@pytest.mark.parametrize("threads", [1, 2, 5])
@pytest.mark.parametrize("with_start", [False, True])
@pytest.mark.parametrize("cuts", [(0, 40), (0, 7, 8, 23, 40)])
def test_step_fit_equals_the_whole_volume_formula(with_start, cuts, threads):
    rng = np.random.default_rng(5)
    nz, ny, nx = 40, 6, 7
    z = np.arange(nz)[:, None, None]
    edge = rng.integers(5, 35, size=(ny, nx))
    score = np.where(z < edge, 1.0, -1.0) + rng.normal(0, 0.8, (nz, ny, nx))
    score[:, 0, 0] = 0.0  # a flat column: the plateau is the whole range
    score[10:20, 1, 1] = 0.0  # a plateau inside the column
    score = score.astype(np.float32)
    start = rng.integers(0, nz + 1, size=(ny, nx)) if with_start else None
    if with_start:
        start[0, 1] = nz  # searched only at the very end

    def slabs():
        return ((a, score[a:b]) for a, b in zip(cuts[:-1], cuts[1:]))

    pos, found = step_fit(slabs, (ny, nx), start, threads=threads)  # rows in bands walked side by side
    ref_pos, ref_found = _reference(score, start)
    np.testing.assert_array_equal(pos, ref_pos)
    np.testing.assert_array_equal(found, ref_found)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.int64])
def test_isin_lookup_equals_numpy(dtype):
    a = np.random.default_rng(1).integers(0, 12, size=(5, 6, 7)).astype(dtype)
    for values in ([3], [2, 5, 9], [1, 300, 70000, -4]):
        np.testing.assert_array_equal(_isin(a, values), np.isin(a, values))
