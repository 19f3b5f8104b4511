"""The centre-of-rotation search at real detector widths: coarse to fine (tomo4d.reconstruct.engine.find_center)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("algotom")

from tomo4d.reconstruct import engine  # noqa: E402

NCOL, N_ANGLES = 1024, 256  # 4x the coarse stage's 256 columns: the coarse-to-fine path


def disc_sinogram(ncol: int, n_angles: int, axis: float, seed: int = 1) -> np.ndarray:
    """Exact parallel-beam line integrals of a cylinder with 60 discs (particles/pores), 180 degrees, noise-free."""
    rng = np.random.default_rng(seed)
    theta = np.linspace(0.0, np.pi, n_angles, endpoint=False)[:, None]
    u = np.arange(ncol)[None, :] - axis
    big_r = 0.3 * ncol
    discs = [(0.0, 0.0, big_r, 0.002)]
    for _ in range(60):
        r = rng.uniform(0.01, 0.04) * ncol
        a, d = rng.uniform(0, 2 * np.pi), np.sqrt(rng.uniform()) * (big_r - r)
        discs.append((d * np.cos(a), d * np.sin(a), r, rng.choice([0.004, -0.002])))
    out = np.zeros((n_angles, ncol))
    for x, y, r, mu in discs:
        u0 = x * np.cos(theta) + y * np.sin(theta)
        out += mu * 2 * np.sqrt(np.maximum(r * r - (u - u0) ** 2, 0.0))
    return out.astype(np.float32)


@pytest.mark.parametrize("offset", [-20.0, -6.75, 19.75])
def test_centre_at_1024_columns_coarse_to_fine(offset, monkeypatch):
    """Within 0.2 px at offsets up to +-20 px (quarter-pixel axes: a search that stopped at the 0.5 px stage, or
    at the coarse 4-px grid, misses by >= 0.25 px), with < 200 evaluations of Vo's metric (algotom's own search
    at this width evaluates it 2 * W/4 + 33 = 545 times: 23 min wall for 3 rows of a 1024^2 scan)."""
    from algotom.prep import calculation

    calls = []
    metric = calculation.calculate_center_metric
    monkeypatch.setattr(calculation, "calculate_center_metric", lambda *a: calls.append(a[1].shape) or metric(*a))
    axis = (NCOL - 1) / 2 + offset
    found = engine.find_center(disc_sinogram(NCOL, N_ANGLES, axis), NCOL / 4)
    assert abs(found - axis) < 0.2, (found, axis)
    assert len(calls) < 200, len(calls)
    assert sum(shape[1] == NCOL for shape in calls) <= 25  # full-width evaluations: the fine stages only


def test_centre_small_sinogram_is_algotoms_search():
    """Below twice the coarse size the search is algotom's find_center_vo unchanged."""
    from algotom.prep import calculation

    axis = (200 - 1) / 2 + 7.25
    sino = disc_sinogram(200, 180, axis)
    mine = engine.find_center(sino, 50)
    assert mine == float(calculation.find_center_vo(sino, start=49, stop=150, step=0.25, ncore=1))
    assert abs(mine - axis) < 0.2
