"""The local DVC pyramid (tomo4d.dvc.pyramid): the study's default (100, 70, 35) on a large volume at 40-60 % axial
stretch from a registered start, skipped levels, and how one level hands its field to the next."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from tomo4d.dvc import DisplacementField, NodeStatus, correlate_pyramid, strain_field


def _graded_stretch(shape, seed=7):
    """A textured volume and its copy stretched along z by a graded map: local stretch 1.35 at the bottom, 1.55 at
    the top (mean 1.45) about the centre, with the grey levels scaled and offset (lithiation-like change); returns
    the pair and the map's u_z(z) and its dz-derivative at reference z."""
    rng = np.random.default_rng(seed)
    ref = ndimage.gaussian_filter(rng.normal(size=shape), 2.0).astype(np.float32)
    c = (shape[0] - 1) / 2.0
    a, b = 0.45, 0.1 / (2 * (shape[0] - 1))  # du_z/dz = a + 2 b (z - c): 0.35 .. 0.55 over the volume

    def uz(z):
        return a * (z - c) + b * (z - c) ** 2

    zd = np.arange(shape[0], dtype=np.float64)  # deformed z -> reference z: invert z + u_z(z) by Newton
    zr = c + (zd - c) / (1 + a)
    for _ in range(30):
        zr -= (zr + uz(zr) - zd) / (1 + a + 2 * b * (zr - c))
    coords = np.meshgrid(zr, np.arange(shape[1]), np.arange(shape[2]), indexing="ij")
    dfm = ndimage.map_coordinates(ref, coords, order=3, mode="mirror") * 0.8 + 0.05 * ref.std()
    dfm += rng.normal(scale=0.02 * ref.std(), size=shape)
    return ref, dfm.astype(np.float32), uz, lambda z: a + 2 * b * (z - c)


@pytest.mark.slow
def test_the_studys_pyramid_from_a_registered_start_reads_a_graded_45_percent_stretch():
    """A 320 x 208 x 208 volume (about 30 s): ``register``'s affine, then the default (100, 70, 35) pyramid. The
    coarse levels' few windows leave the view of the stretched sample; the 35 px level still starts right (each
    level hands on its field carried by the nodes' own F) and reads the graded stretch; nodes whose windows leave the
    view are flagged, not reported."""
    from tomo4d.register import register

    ref, dfm, uz, duz = _graded_stretch((320, 208, 208))
    phi0 = register(ref, dfm).phi
    assert phi0[0, 0] == pytest.approx(1.45, abs=0.03)
    field = correlate_pyramid(ref, dfm, phi0=phi0)
    assert [lv["node_spacing_px"] for lv in field.notes["levels"]] == [100, 70, 35]
    assert field.node_spacing_px == (35, 35, 35) and field.half_window_px == (35, 35, 35)
    ok = field.usable
    # every node in view converged and none is taken for an outlier: the edge rows' one-sided predictions use the
    # neighbours' F (two-node extrapolation saw the curvature and flagged 24 sound nodes, session 32)
    assert (field.status == NodeStatus.CONVERGED).sum() >= 64 and field.notes["outliers"] == 0
    assert set(np.unique(field.status[~ok])) <= {NodeStatus.OUT_OF_VIEW}
    z = field.positions_zyx_px[:, 0]
    err = np.abs(field.displacement_zyx_px[ok, 0] - uz(z[ok]))
    # affine windows read a curved u_z about b h^2 / 3 = 0.064 px high
    assert np.median(err) < 0.08 and err.max() < 0.1 and np.abs(field.displacement_zyx_px[ok, 1:]).max() < 0.05
    strain = strain_field(field)
    hz = strain.component("hencky_zz")
    zg = strain.positions_zyx_px[..., 0]
    v = strain.valid
    assert v.sum() >= 16 and not v[field.grid(field.status == NodeStatus.OUT_OF_VIEW)].any()
    assert np.abs(hz[v] - np.log1p(duz(zg[v]))).max() < 0.01  # the graded stretch, node by node


def test_coarse_levels_that_do_not_fit_are_skipped_with_a_warning():
    ref, dfm, _, _ = _graded_stretch((48, 40, 40))
    phi0 = np.eye(4)
    phi0[0, 0] = 1.45
    with pytest.warns(RuntimeWarning, match=r"level\(s\) of node spacing 100, 70 skipped: their windows do not fit "
                                            r"in the volume of shape \(48, 40, 40\); the pyramid starts at node "
                                            r"spacing 12"):
        field = correlate_pyramid(ref, dfm, pyramid=(100, 70, 12), half_windows=(100, 70, 8), phi0=phi0)
    assert field.notes["skipped_levels"] == [{"node_spacing_px": 100, "half_window_px": 100},
                                             {"node_spacing_px": 70, "half_window_px": 70}]
    assert [lv["started_from"] for lv in field.notes["levels"]] == ["phi0"]


def test_a_field_of_one_node_carries_its_stretch_to_far_points():
    """Interpolating a field with one node along an axis (a coarse level) continues the node's own F: the start a
    finer level gets 35 px away from it is the stretch's, not the node's displacement unchanged."""
    F = np.diag([1.45, 1.0, 1.0])
    phi = np.eye(4)[None].copy()
    phi[0, :3, :3] = F
    phi[0, 0, 3] = 2.0
    field = DisplacementField(np.array([[100.0, 50.0, 50.0]]), phi, np.zeros(1, np.int8), grid_shape=(1, 1, 1),
                              node_spacing_px=(70, 70, 70))
    pts = np.array([[135.0, 50.0, 50.0], [65.0, 80.0, 20.0]])
    u, f = field.interpolate(pts)
    assert np.allclose(u[:, 0], 2.0 + 0.45 * (pts[:, 0] - 100.0)) and np.allclose(u[:, 1:], 0.0)
    assert np.allclose(f, F)


def test_failed_nodes_are_replaced_by_their_neighbours_carried_by_their_f():
    """A 45 % stretch measured everywhere but at an edge row: the replaced nodes continue the stretch (the
    neighbours' displacements unchanged would put them 0.45 x 10 = 4.5 px off)."""
    from tomo4d.dvc import replace_bad_nodes

    axes = [np.arange(10.0, 61.0, 10.0)] * 3
    pos = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    phi = np.tile(np.eye(4), (len(pos), 1, 1))
    phi[:, 0, 0] = 1.45
    phi[:, 0, 3] = 0.45 * (pos[:, 0] - 35.0)
    status = np.where(pos[:, 0] == 60.0, NodeStatus.NOT_CONVERGED, NodeStatus.CONVERGED).astype(np.int8)
    field = DisplacementField(pos, phi, status, grid_shape=(6, 6, 6), node_spacing_px=(10, 10, 10))
    out = replace_bad_nodes(field)
    top = pos[:, 0] == 60.0
    assert (out.status[top] == NodeStatus.INTERPOLATED).all()
    assert np.allclose(out.displacement_zyx_px[top, 0], 0.45 * 25.0) and np.allclose(out.phi[top, 0, 0], 1.45)
