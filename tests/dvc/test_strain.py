"""Strain from displacement fields on grids: exact for affine fields, accurate for smooth ones."""

from __future__ import annotations

import numpy as np
import pytest

from tomo4d.dvc import DisplacementField, NodeStatus, node_grid, regional_strain, strain_field, strain_histogram
from tomo4d.errors import InputError


def _grid_field(u, shape=(120, 100, 100), spacing=10):
    pos, gs = node_grid(shape, node_spacing=spacing, half_window=spacing)
    pos = pos.astype(float)
    phi = np.tile(np.eye(4), (len(pos), 1, 1))
    phi[:, :3, 3] = u(pos)
    return DisplacementField(pos, phi, np.zeros(len(pos), np.int8), grid_shape=gs,
                             node_spacing_px=(spacing,) * 3, half_window_px=(spacing,) * 3)


@pytest.mark.parametrize("g", [np.diag([0.1, -0.02, 0.03]), np.array([[0.05, 0.02, 0], [0, 0, 0.01], [0.03, 0, -0.04]])])
def test_affine_field_exact(g):
    s = strain_field(_grid_field(lambda p: (p - 50) @ g.T + 1.0))
    np.testing.assert_allclose(s.F, np.broadcast_to(np.eye(3) + g, s.F.shape), atol=1e-10)
    np.testing.assert_allclose(s.strain, np.broadcast_to((g + g.T) / 2, s.strain.shape), atol=1e-10)
    np.testing.assert_allclose(s.volumetric, np.linalg.det(np.eye(3) + g) - 1, atol=1e-10)
    np.testing.assert_allclose(s.zz, g[0, 0], atol=1e-10)
    assert s.valid.all()


def test_smooth_field_up_to_10_percent():
    """e_zz = 0.1 cos(pi z / 120) (strains up to 10 %): median error < 2e-3."""
    amp = 0.1 * 120 / np.pi
    s = strain_field(_grid_field(lambda p: np.stack([amp * np.sin(np.pi * p[:, 0] / 120), 0 * p[:, 0],
                                                     0 * p[:, 0]], axis=1)))
    true = 0.1 * np.cos(np.pi * s.positions_zyx_px[..., 0] / 120)
    assert np.median(np.abs(s.zz - true)) < 2e-3
    assert np.abs(s.yy).max() < 1e-12


def test_regional_stats_and_histogram():
    s = strain_field(_grid_field(lambda p: np.stack([0.001 * (p[:, 0] - 60) ** 2, 0 * p[:, 0], 0 * p[:, 0]], 1)))
    stats = regional_strain(s, {"bottom": lambda p: p[..., 0] < 60, "top": lambda p: p[..., 0] >= 60},
                            components=("zz",))
    bottom, top = stats
    assert bottom.region == "bottom" and bottom.mean < 0 < top.mean
    assert bottom.n_nodes + top.n_nodes == s.valid.sum()
    counts, edges = strain_histogram(s, "zz", bins=10)
    assert counts.sum() == s.valid.sum() and len(edges) == 11


def test_unusable_nodes_invalidate_neighbours():
    f = _grid_field(lambda p: np.zeros_like(p))
    st = f.status.copy()
    st[np.ravel_multi_index((5, 4, 4), f.grid_shape)] = NodeStatus.DIVERGED  # interior node
    s = strain_field(f.with_(status=st))
    assert (~s.valid).sum() == 7


def test_strain_needs_grid():
    f = _grid_field(lambda p: np.zeros_like(p))
    with pytest.raises(InputError, match="grid"):
        strain_field(f.with_(grid_shape=None))
    with pytest.raises(InputError, match="component"):
        strain_field(f).component("qq")
