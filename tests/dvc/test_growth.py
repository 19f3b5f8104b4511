"""A sample that swells out of the scanned region: windows that leave the deformed volume are OUT_OF_VIEW."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from tomo4d.dvc import DisplacementField, NodeStatus, correlate, replace_bad_nodes, strain_field

STRETCH = 0.2
CENTRE = 29.5


@pytest.fixture(scope="module")
def stretched(texture):
    """The texture stretched 20 % along z about its centre: the top and bottom 10 % of the deformed
    volume's content came from beyond the reference (the windows of the outer node layers leave it)."""
    grid = np.stack(np.meshgrid(*[np.arange(n, dtype=float) for n in texture.shape], indexing="ij"))
    pull = np.stack([(grid[0] - CENTRE) / (1 + STRETCH) + CENTRE, grid[1], grid[2]])
    return ndimage.map_coordinates(texture, pull, order=3, mode="mirror").astype(np.float32)


def _window_leaves(pos, hw, shape):
    """Nodes whose window, stretched by the truth, has more than 5 % of its voxels outside the volume."""
    dz = np.arange(-hw, hw + 1)
    z = CENTRE + (1 + STRETCH) * (pos[:, :1] + dz[None, :] - CENTRE)
    return ((z < 0) | (z > shape[0] - 1)).mean(1) > 0.05


@pytest.mark.parametrize("grey_model", ["ssd", "znssd"])
def test_windows_leaving_the_view_are_out_of_view_and_kept_out_of_strain(texture, stretched, grey_model):
    """Outer node layers are OUT_OF_VIEW (not converged, not replaced); every valid strain matches the truth.

    Before OUT_OF_VIEW those nodes came back CONVERGED from their partial windows and the strain of the
    bottom layers was off by 0.097 and 0.03 (measured, half-window 6); now 1e-4 on the valid nodes.
    Under ZNSSD the window statistics must also skip the samples outside the volume.
    """
    field = correlate(texture, stretched, node_spacing=8, half_window=6, backend="numba", grey_model=grey_model)
    pos = field.positions_zyx_px
    leaves = _window_leaves(pos, 6, texture.shape)
    assert 0 < leaves.sum() < field.n_nodes
    np.testing.assert_array_equal(field.status == NodeStatus.OUT_OF_VIEW, leaves)
    assert not field.usable[leaves].any() and field.converged[~leaves].all(), field.status_counts()
    assert field.notes["out_of_view"] == leaves.sum() and field.notes["n_replaced"] == 0
    st = strain_field(field)
    valid = st.valid.ravel()
    assert valid.sum() >= 50 and not (valid & leaves).any()
    ezz = st.strain[..., 0, 0].ravel()[valid]
    assert np.abs(ezz - STRETCH).max() < 0.01
    assert np.abs(st.strain[..., 1, 1].ravel()[valid]).max() < 0.01


def test_backends_agree_on_out_of_view(texture, stretched):
    pytest.importorskip("torch")
    kw = dict(node_spacing=8, half_window=6, replace=False)
    a = correlate(texture, stretched, backend="numba", **kw)
    b = correlate(texture, stretched, backend="torch", device="cpu", **kw)
    assert (a.status == NodeStatus.OUT_OF_VIEW).sum() > 0
    np.testing.assert_array_equal(a.status, b.status)


def test_threshold_is_an_option(texture, stretched):
    """out_of_view_fraction=1: nothing is out of view unless it loses half its window."""
    field = correlate(texture, stretched, node_spacing=8, half_window=6, out_of_view_fraction=1.0)
    assert not (field.status == NodeStatus.OUT_OF_VIEW).any()


def test_a_failed_node_whose_window_would_leave_the_view_is_not_replaced():
    """Replacement is interpolation: a node whose interpolated Phi maps its window out of the volume is
    OUT_OF_VIEW, not INTERPOLATED (it would be an extrapolation feeding the strain)."""
    from tomo4d.dvc import node_grid

    pos, gs = node_grid((40, 40, 40), node_spacing=8, half_window=6)
    phi = np.tile(np.eye(4), (len(pos), 1, 1))
    phi[:, 0, 0] = 1.2
    phi[:, 0, 3] = 0.2 * (pos[:, 0] - 19.5)
    status = np.zeros(len(pos), np.int8)
    bottom, middle = pos[:, 0] == pos[:, 0].min(), pos[:, 0] == np.sort(np.unique(pos[:, 0]))[2]
    status[bottom | middle] = NodeStatus.DIVERGED
    field = DisplacementField(pos, phi, status, grid_shape=gs, node_spacing_px=(8,) * 3, half_window_px=(6,) * 3,
                              notes={"volume_shape_zyx": [40, 40, 40]})
    out = replace_bad_nodes(field)
    assert (out.status[bottom] == NodeStatus.OUT_OF_VIEW).all()
    assert (out.status[middle] == NodeStatus.INTERPOLATED).all()
    assert out.notes["n_replaced"] == middle.sum() and out.notes["not_replaced_out_of_view"] == bottom.sum()
    np.testing.assert_array_equal(out.phi[bottom], field.phi[bottom])
    # without a recorded volume shape there is nothing to check against
    legacy = field.with_(notes={})
    assert (replace_bad_nodes(legacy).status[bottom] == NodeStatus.INTERPOLATED).all()


def test_curvature_correction_ignores_fill_next_to_unusable_nodes():
    """A linear field with one unusable layer: no spurious curvature correction next to it."""
    from tomo4d.dvc import correct_curvature, node_grid

    pos, gs = node_grid((60, 40, 40), node_spacing=8, half_window=6)
    phi = np.tile(np.eye(4), (len(pos), 1, 1))
    phi[:, 0, 3] = 0.2 * (pos[:, 0] - 29.5)
    status = np.where(pos[:, 0] == pos[:, 0].max(), NodeStatus.OUT_OF_VIEW, NodeStatus.CONVERGED).astype(np.int8)
    field = DisplacementField(pos, phi, status, grid_shape=gs, node_spacing_px=(8,) * 3, half_window_px=(6,) * 3)
    out = correct_curvature(field)
    np.testing.assert_allclose(out.displacement_zyx_px[field.usable], field.displacement_zyx_px[field.usable],
                               atol=1e-9)
