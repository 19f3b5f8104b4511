"""Composition of increment fields into cumulative fields at large strain."""

from __future__ import annotations

import numpy as np
import pytest

from tomo4d.dvc import DisplacementField, NodeStatus, compose_fields, node_grid


def _field(u, grad, *, shape=(1000, 1000, 1000), spacing=50):
    """An exact field on a regular grid of a ``shape`` volume for displacement ``u(points (N,3))``."""
    pos, gs = node_grid(shape, node_spacing=spacing, half_window=spacing)
    pos = pos.astype(float)
    phi = np.tile(np.eye(4), (len(pos), 1, 1))
    phi[:, :3, 3] = u(pos)
    phi[:, :3, :3] += grad(pos)
    return DisplacementField(pos, phi, np.zeros(len(pos), np.int8), grid_shape=gs, node_spacing_px=(spacing,) * 3,
                             half_window_px=(spacing,) * 3)


def _step(k):
    """5 % axial strain per step about z = 500 plus a smooth shear wave, large displacements (25+ px)."""
    def u(p):
        return np.stack([0.05 * (p[:, 0] - 500) + 3.0 * np.sin(2 * np.pi * p[:, 1] / 1000 + k),
                         0.01 * (p[:, 1] - 500), 0 * p[:, 2]], axis=1)

    def grad(p):
        g = np.zeros((len(p), 3, 3))
        g[:, 0, 0] = 0.05
        g[:, 0, 1] = 3.0 * 2 * np.pi / 1000 * np.cos(2 * np.pi * p[:, 1] / 1000 + k)
        g[:, 1, 1] = 0.01
        return g

    return u, grad


def test_cumulative_composition_stays_exact_at_large_strain():
    steps = [_step(k) for k in range(3)]
    fields = [_field(u, g) for u, g in steps]
    cum = fields[0]
    for f in fields[1:]:
        cum = compose_fields(cum, f)
    # analytic cumulative position of every node of the first grid
    x = fields[0].positions_zyx_px.copy()
    for u, _ in steps:
        x = x + u(x)
    true_u = x - fields[0].positions_zyx_px
    err = np.linalg.norm(cum.displacement_zyx_px - true_u, axis=1)
    inside = np.all((x > 100) & (x < 900), axis=1)  # away from the extrapolated border
    assert np.median(err[inside]) < 0.01 and err[inside].max() < 0.05
    assert err.max() < 0.5
    # naive composition (second field read at the reference position p instead of q = p + u1) drifts
    naive = fields[0].displacement_zyx_px.copy()
    for f in fields[1:]:
        naive += f.interpolate(fields[0].positions_zyx_px)[0]
    assert np.median(np.linalg.norm(naive - true_u, axis=1)[inside]) > 1.0
    # F composes multiplicatively: F = F3 F2 F1 at the node path
    assert cum.F[:, 0, 0] == pytest.approx(1.05 ** 3, abs=1e-6)


def test_outside_second_field_flagged():
    a = _field(lambda p: np.zeros_like(p) + 400.0, lambda p: np.zeros((len(p), 3, 3)), shape=(400, 400, 400))
    b = _field(lambda p: np.zeros_like(p), lambda p: np.zeros((len(p), 3, 3)), shape=(400, 400, 400))
    out = compose_fields(a, b)
    assert (out.status == NodeStatus.OUTSIDE_FIELD).sum() > 0


def test_second_fields_statuses_passed_on():
    """A node of the first field that lands next to an OUT_OF_VIEW (or other failed) node of the second is no
    measurement of the composition: it takes that status; next to an INTERPOLATED one it is INTERPOLATED;
    OUTSIDE_MASK too; the first field's own failed nodes keep theirs."""
    shift = 30.0  # every node moves 30 px along z: node p lands between second's nodes, nearest p + 50 (rounded)
    a = _field(lambda p: np.zeros_like(p) + [shift, 0.0, 0.0], lambda p: np.zeros((len(p), 3, 3)), shape=(400, 400, 400))
    b = _field(lambda p: np.zeros_like(p), lambda p: np.zeros((len(p), 3, 3)), shape=(400, 400, 400))
    zb = b.positions_zyx_px[:, 0]
    status = np.zeros(b.n_nodes, np.int8)
    top = zb.max()
    status[zb == top] = NodeStatus.OUT_OF_VIEW
    status[zb == top - 100] = NodeStatus.INTERPOLATED
    status[zb == top - 200] = NodeStatus.OUTSIDE_MASK  # the second correlation did not match there
    b = b.with_(status=status)
    a_status = a.status.copy()
    a_status[0] = NodeStatus.DIVERGED
    a = a.with_(status=a_status)
    out = compose_fields(a, b)
    za = a.positions_zyx_px[:, 0]
    lands = np.minimum(np.rint((za + shift - b.grid_origin_px[0]) / 50) * 50 + b.grid_origin_px[0], top)  # b's row
    assert out.status[0] == NodeStatus.DIVERGED
    sel = np.arange(a.n_nodes) > 0
    np.testing.assert_array_equal(out.status[sel & (lands == top)], NodeStatus.OUT_OF_VIEW)
    np.testing.assert_array_equal(out.status[sel & (lands == top - 100)], NodeStatus.INTERPOLATED)
    np.testing.assert_array_equal(out.status[sel & (lands == top - 200)], NodeStatus.OUTSIDE_MASK)
    failed = (lands == top) | (lands == top - 100) | (lands == top - 200)
    assert (out.status[sel & ~failed] == NodeStatus.CONVERGED).all()
    assert out.notes["status_from_second"] == int((sel & failed).sum())


def test_moved_planes_follow_the_mean_axial_displacement():
    from tomo4d.dvc import moved_planes
    from tomo4d.errors import InputError

    u, grad = _step(0)  # u_z = 0.05 (z - 500) + a lateral sine whose mean over the lattice is ~0
    field = _field(u, grad)
    got = moved_planes(field, (300.0, 600.0, np.inf), (1000, 1000), samples=21)
    want_sine = np.mean(3.0 * np.sin(2 * np.pi * np.linspace(0, 999, 21) / 1000))
    assert got[:2] == pytest.approx([300 - 10 + want_sine, 600 + 5 + want_sine], abs=0.05)
    assert got[2] == np.inf  # an open band edge stays open
    with pytest.raises(InputError, match="yx_shape"):
        moved_planes(field, (300.0,), (1000,))


def test_moved_band_edges_move_with_the_material_outside_the_kinks():
    """A rigid collector below z = 349, an electrode stretching 20 % up to z = 649, a separator carried rigidly
    above: both kinks lie halfway between nodes (z = 324, 374, ..., spacing 50), where a trilinear field is smeared
    across the edge."""
    from tomo4d.dvc import moved_band, moved_planes

    def u(p):
        z = np.clip(p[:, 0], 349, 649)
        return np.stack([0.2 * (z - 349), 0 * z, 0 * z], axis=1)

    def grad(p):
        g = np.zeros((len(p), 3, 3))
        g[(p[:, 0] > 349) & (p[:, 0] < 649), 0, 0] = 0.2
        return g

    field = _field(u, grad)
    smeared = moved_planes(field, (349.0, 649.0), (1000, 1000))
    assert smeared[0] == pytest.approx(351.5, abs=0.01) and smeared[1] == pytest.approx(706.5, abs=0.01)
    assert moved_band(field, 349.0, 649.0, (1000, 1000)) == pytest.approx((349.0, 709.0), abs=0.01)
    lo, hi = moved_band(field, 349.0, np.inf, (1000, 1000))  # dvc.mask: above_collector
    assert lo == pytest.approx(349.0, abs=0.01) and hi == np.inf
    assert moved_band(field, 10.0, 990.0, (1000, 1000)) == pytest.approx((10.0, 990.0 + 60.0), abs=0.01)  # border
