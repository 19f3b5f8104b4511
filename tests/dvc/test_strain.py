"""Strain from displacement fields on grids: exact for affine fields, accurate for smooth ones.

Finite strain: homogeneous fields have closed-form Hencky / Green-Lagrange / volumetric values
(uniaxial 50 % stretch, simple shear, a 30 deg rotation with and without stretch)."""

from __future__ import annotations

import numpy as np
import pytest

from tomo4d.dvc import (
    DisplacementField,
    NodeStatus,
    StrainField,
    hencky,
    node_grid,
    regional_strain,
    slab_volume_mean,
    strain_field,
    strain_histogram,
)
from tomo4d.errors import InputError


def _grid_field(u, shape=(120, 100, 100), spacing=10, F=None):
    pos, gs = node_grid(shape, node_spacing=spacing, half_window=spacing)
    pos = pos.astype(float)
    phi = np.tile(np.eye(4), (len(pos), 1, 1))
    phi[:, :3, 3] = u(pos)
    if F is not None:
        phi[:, :3, :3] = F
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
                            components=("hencky_zz",))
    bottom, top = stats
    assert bottom.region == "bottom" and bottom.mean < 0 < top.mean
    assert bottom.n_nodes + top.n_nodes == s.valid.sum()
    counts, edges = strain_histogram(s, bins=10)
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


def _homogeneous(F):
    return strain_field(_grid_field(lambda p: (p - 50) @ (F - np.eye(3)).T, shape=(60, 60, 60)))


def _rot_zy(deg):
    c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])


def test_uniaxial_50_percent_stretch():
    s = _homogeneous(np.diag([1.5, 1.0, 1.0]))
    np.testing.assert_allclose(s.component("hencky_zz"), np.log(1.5), atol=1e-12)
    np.testing.assert_allclose(s.component("green_zz"), (1.5 ** 2 - 1) / 2, atol=1e-12)
    np.testing.assert_allclose(s.component("volumetric"), 0.5, atol=1e-12)
    np.testing.assert_allclose(s.component("small_zz"), 0.5, atol=1e-12)
    np.testing.assert_allclose(s.component("zz"), 0.5, atol=1e-12)  # bare name: small strain, as before
    for c in ("hencky_yy", "hencky_xx", "hencky_zx", "green_yy"):
        np.testing.assert_allclose(s.component(c), 0.0, atol=1e-12)
    np.testing.assert_allclose(s.component("stretch_1"), 1.5, atol=1e-12)
    np.testing.assert_allclose(s.component("stretch_3"), 1.0, atol=1e-12)
    np.testing.assert_allclose(np.abs(s.stretch_directions[..., :, 0]), np.broadcast_to([1, 0, 0], s.F.shape[:3] + (3,)),
                               atol=1e-12)
    # von Mises equivalent of ln U = diag(l, 0, 0): 2/3 l
    np.testing.assert_allclose(s.deviatoric, 2 / 3 * np.log(1.5), atol=1e-12)
    assert s.valid.all() and s.gradient == "nodes"


@pytest.mark.parametrize("gamma", [0.2, 0.8])
def test_simple_shear(gamma):
    """z displaced by gamma * y: closed forms of E and ln U (stretches gamma/2 +- sqrt(1 + gamma^2/4))."""
    F = np.eye(3)
    F[0, 1] = gamma
    s = _homogeneous(F)
    n = s.F[1, 2, 3]
    np.testing.assert_allclose(n, F, atol=1e-12)
    np.testing.assert_allclose(s.green[1, 2, 3], [[0, gamma / 2, 0], [gamma / 2, gamma ** 2 / 2, 0], [0, 0, 0]],
                               atol=1e-12)
    r = np.sqrt(1 + gamma ** 2 / 4)
    lam = gamma / 2 + r
    # ln U = ln(lam) / r * [[-gamma/2, 1], [1, gamma/2]] in the (z, y) plane
    expect = np.zeros((3, 3))
    expect[:2, :2] = np.log(lam) / r * np.array([[-gamma / 2, 1], [1, gamma / 2]])
    np.testing.assert_allclose(s.hencky[1, 2, 3], expect, atol=1e-12)
    np.testing.assert_allclose(s.stretches[1, 2, 3], [lam, 1.0, 1 / lam], atol=1e-12)
    np.testing.assert_allclose(s.volumetric, 0.0, atol=1e-12)
    np.testing.assert_allclose(np.trace(s.hencky, axis1=-2, axis2=-1), 0.0, atol=1e-12)  # tr ln U = ln det F


@pytest.mark.parametrize("stretch", [1.0, 1.5])
def test_rotation_30_deg_is_not_strain(stretch):
    """F = R(30 deg) diag(stretch, 1, 1): finite strains see only the stretch; small strain sees the rotation."""
    F = _rot_zy(30) @ np.diag([stretch, 1.0, 1.0])
    s = _homogeneous(F)
    np.testing.assert_allclose(s.component("hencky_zz"), np.log(stretch), atol=1e-12)
    np.testing.assert_allclose(s.component("green_zz"), (stretch ** 2 - 1) / 2, atol=1e-12)
    for c in ("hencky_yy", "hencky_zy", "green_yy", "green_zy"):
        np.testing.assert_allclose(s.component(c), 0.0, atol=1e-12)
    np.testing.assert_allclose(s.volumetric, stretch - 1, atol=1e-12)
    np.testing.assert_allclose(s.component("stretch_1"), stretch, atol=1e-12)
    assert np.all(np.abs(s.component("small_yy") - (np.cos(np.radians(30)) - 1)) < 1e-12)  # -0.134: not strain


def test_smooth_finite_field_up_to_40_percent():
    """F_zz = 1 + 0.4 cos(pi z / L): Hencky zz = ln F_zz within the central-difference truncation bound."""
    L, a, h = 120.0, 0.4, 10
    amp = a * L / np.pi
    s = strain_field(_grid_field(lambda p: np.stack([amp * np.sin(np.pi * p[:, 0] / L), 0 * p[:, 0],
                                                     0.05 * (p[:, 2] - 20)], axis=1), shape=(121, 40, 40), spacing=h))
    z = s.positions_zyx_px[..., 0]
    fzz = 1 + a * np.cos(np.pi * z / L)
    true = np.log(fzz)  # F = diag(F_zz, 1, 1.05)
    err = np.abs(s.component("hencky_zz") - true)
    # interior nodes (central differences): |dF| <= h^2 (pi/L)^2 a / 6, |d ln F| <= |dF| / min F_zz (0.6)
    bound = h ** 2 * (np.pi / L) ** 2 * a / 6 / 0.6
    inner = np.zeros(z.shape, bool)
    inner[1:-1] = True
    assert err[inner].max() < bound, (err[inner].max(), bound)
    np.testing.assert_allclose(s.component("hencky_xx"), np.log(1.05), atol=1e-12)
    assert np.abs(s.component("small_zz") - true)[inner].max() > 10 * bound  # small strain is wrong here
    np.testing.assert_allclose(s.volumetric[inner], (1.05 * fzz - 1)[inner], atol=1.05 * bound)


def test_affine_gradient_uses_each_nodes_fit():
    F = np.diag([1.5, 1.0, 0.9])
    f = _grid_field(lambda p: np.zeros_like(p), shape=(60, 60, 60), F=F)  # affine F set, displacements zero
    a = strain_field(f, gradient="affine")
    n = strain_field(f)
    np.testing.assert_allclose(a.component("hencky_zz"), np.log(1.5), atol=1e-12)
    np.testing.assert_allclose(a.component("hencky_xx"), np.log(0.9), atol=1e-12)
    np.testing.assert_allclose(n.component("hencky_zz"), 0.0, atol=1e-12)
    assert a.gradient == "affine"
    with pytest.raises(InputError, match="gradient"):
        strain_field(f, gradient="spline")


def test_save_load_vtk(tmp_path):
    s = _homogeneous(_rot_zy(10) @ np.diag([1.3, 1.0, 1.1]))
    s.save(tmp_path / "s.h5")
    r = StrainField.load(tmp_path / "s.h5")
    for k in ("F", "hencky", "green", "strain", "volumetric", "deviatoric", "stretches", "valid", "positions_zyx_px"):
        np.testing.assert_array_equal(getattr(r, k), getattr(s, k))
    with pytest.raises(Exception, match="exists"):
        s.save(tmp_path / "s.h5")
    out = s.to_vtk(tmp_path / "s.vtk", components=("hencky_zz", "volumetric"))
    text = out.read_text()
    assert "SCALARS hencky_zz" in text and "SCALARS volumetric" in text and "VECTORS stretch_1_direction" in text
    assert f"{np.log(1.3):.6g}" in text
    with pytest.raises(InputError, match="component"):
        s.component("hencky_qq")


def test_hencky_of_inverted_material_is_nan_and_invalid():
    F = np.tile(np.eye(3), (2, 2, 2, 1, 1))
    F[0, 0, 0] = np.diag([-1.0, 1, 1])
    s = StrainField.from_deformation_gradient(F, valid=np.ones((2, 2, 2), bool),
                                              positions_zyx_px=np.zeros((2, 2, 2, 3)))
    assert np.isnan(s.hencky[0, 0, 0]).all() and not s.valid[0, 0, 0] and s.valid.sum() == 7
    np.testing.assert_allclose(hencky(F[1, 1, 1]), 0.0, atol=1e-15)


@pytest.mark.parametrize("stretch, flagged", [(0.05, False), (0.10, False), (0.20, True), (-0.20, True)])
def test_strain_beyond_the_validated_range_is_flagged(stretch, flagged):
    """A uniform axial stretch of ln(1 + s) beyond VALIDATED_AXIAL_HENCKY (0.12) is flagged: 0.05, 0.10 -> ln
    0.049, 0.095 are inside; 0.20 -> 0.182 and a 20 % compression (|ln 0.8| = 0.223) are not."""
    from tomo4d.dvc import VALIDATED_AXIAL_HENCKY, beyond_validated_range

    assert VALIDATED_AXIAL_HENCKY == pytest.approx(0.12)
    s = strain_field(_grid_field(lambda p: np.stack([stretch * (p[:, 0] - 50), 0 * p[:, 0], 0 * p[:, 0]], 1)))
    assert beyond_validated_range(s) is flagged


def _graded(a=0.01, origin=(2.0, 1.0, 3.0), spacing=4.0, shape=(11, 5, 6)):
    """A StrainField with F_zz = 1 + a z on a regular grid (every other component identity): linear in z, so the
    trilinear interpolation between nodes is exact and the slab mean is the integral of ln(1 + a z)."""
    pos = np.stack(np.meshgrid(*[o + spacing * np.arange(n) for o, n in zip(origin, shape)], indexing="ij"), -1)
    F = np.broadcast_to(np.eye(3), shape + (3, 3)).copy()
    F[..., 0, 0] = 1 + a * pos[..., 0]
    return StrainField.from_deformation_gradient(F, valid=np.ones(shape, bool), positions_zyx_px=pos)


def _exact_mean(a, lo, hi):
    z = np.linspace(lo, hi, 200_001)
    return float(np.mean(np.log1p(a * z)))


@pytest.mark.parametrize("lo, hi", [(10.0, 13.0), (7.3, 30.9), (0.0, 60.0)])
def test_slab_volume_mean_is_the_integral_over_the_slab(lo, hi):
    st = _graded()
    r = slab_volume_mean(st, lo, hi, components=("hencky_zz", "volumetric", "hencky_yy"))
    z0, z1 = max(lo, 2.0), min(hi, 42.0)   # the slab inside the node grid (z 2 .. 42)
    assert r.value("hencky_zz") == pytest.approx(_exact_mean(0.01, z0, z1), abs=2e-5)
    assert r.value("volumetric") == pytest.approx(0.01 * (z0 + z1) / 2, abs=1e-6)
    assert r.value("hencky_yy") == pytest.approx(0.0, abs=1e-9)
    assert r.covered == 1.0 and r.n_points > 0


def test_slab_volume_mean_differs_from_the_node_mean_between_nodes():
    # the slab 10..13 holds one node (z 10): its node mean reads ln(1.10); the material averages ln(1 + 0.115)
    st = _graded()
    r = slab_volume_mean(st, 10.0, 13.0, components=("F_zz",))
    assert r.value("F_zz") == pytest.approx(1.115, abs=1e-6)


def test_slab_volume_mean_leaves_out_points_next_to_invalid_nodes():
    st = _graded()
    valid = st.valid.copy()
    valid[5] = False                                    # the node plane z = 22
    bad = StrainField.from_deformation_gradient(st.F, valid=valid, positions_zyx_px=st.positions_zyx_px)
    r = slab_volume_mean(bad, 10.0, 30.0)
    assert r.covered == pytest.approx(0.6, abs=0.01)    # 18..26 px of the 10..30 slab left out
    exact = (_exact_mean(0.01, 10, 18) * 8 + _exact_mean(0.01, 26, 30) * 4) / 12
    assert r.value("hencky_zz") == pytest.approx(exact, abs=2e-5)
    none = StrainField.from_deformation_gradient(st.F, valid=np.zeros_like(valid), positions_zyx_px=st.positions_zyx_px)
    assert np.isnan(slab_volume_mean(none, 10.0, 30.0).value("hencky_zz"))
    assert np.isnan(slab_volume_mean(st, 50.0, 60.0).value("hencky_zz"))  # above the grid: nothing to average


def test_slab_volume_mean_thins_laterally_within_the_budget():
    st = _graded()
    r = slab_volume_mean(st, 2.0, 42.0, max_points=2000)
    assert r.n_points <= 2600 and r.value("hencky_zz") == pytest.approx(_exact_mean(0.01, 2, 42), abs=2e-5)


def test_slab_volume_mean_bad_input():
    st = _graded()
    with pytest.raises(InputError, match="upper_z_px=10.*above lower_z_px=20"):
        slab_volume_mean(st, 20.0, 10.0)
    with pytest.raises(InputError, match="lower_z_px"):
        slab_volume_mean(st, float("nan"), 10.0)
    with pytest.raises(InputError, match="max_points"):
        slab_volume_mean(st, 10.0, 20.0, max_points=0)
    with pytest.raises(InputError, match="component 'hencky_zz' was not computed"):
        slab_volume_mean(st, 10.0, 20.0, components=("volumetric",)).value("hencky_zz")


def _kinked_field(e=0.2, kink=22.0, top=42.0, shape=(13, 4, 5), spacing=4, origin=2.0):
    """u_z = e (z - kink) between ``kink`` and ``top`` (0 below, rigid above), on a node grid from ``origin``."""
    ax = [origin + spacing * np.arange(n) for n in shape]
    pos = np.stack(np.meshgrid(*ax, indexing="ij"), -1).reshape(-1, 3)
    phi = np.tile(np.eye(4), (len(pos), 1, 1))
    phi[:, 0, 3] = e * (np.clip(pos[:, 0], kink, top) - kink)
    return DisplacementField(pos, phi, np.zeros(len(pos), np.int8), grid_shape=shape,
                             node_spacing_px=(spacing,) * 3, half_window_px=(spacing,) * 3)


def test_slab_volume_mean_of_a_displacement_field_is_its_faces_motion():
    """From a DisplacementField the slab's F is that of the field's trilinear interpolant: with the kinks on nodes
    the layer's Hencky strain is exact (ln 1.2) and the rigid and fixed parts read 0; the node-F route
    (StrainField) smears each kink over two spacings and reads the layer low."""
    f = _kinked_field()
    layer = slab_volume_mean(f, 22.0, 42.0, components=("hencky_zz", "volumetric"))
    assert layer.value("hencky_zz") == pytest.approx(np.log(1.2), abs=1e-9)
    assert layer.value("volumetric") == pytest.approx(0.2, abs=1e-9) and layer.covered == 1.0
    assert slab_volume_mean(f, 2.0, 22.0).value("hencky_zz") == pytest.approx(0.0, abs=1e-12)
    assert slab_volume_mean(f, 42.0, 50.0).value("hencky_zz") == pytest.approx(0.0, abs=1e-12)
    smeared = slab_volume_mean(strain_field(f), 22.0, 42.0).value("hencky_zz")
    assert np.log(1.2) - smeared > 0.01
    # a cell whose face lies inside it: its mean stretch is that of the faces' interpolated motion
    half = slab_volume_mean(f, 24.0, 42.0, components=("F_zz",)).value("F_zz")
    assert half == pytest.approx(1 + (0.2 * 20 - 0.2 * 2) / 18, abs=1e-9)


def test_slab_volume_mean_of_a_displacement_field_leaves_out_unusable_nodes():
    f = _kinked_field()
    st = f.status.copy()
    st[f.positions_zyx_px[:, 0] == 30.0] = NodeStatus.NOT_CONVERGED       # a node plane inside the layer
    r = slab_volume_mean(f.with_(status=st), 22.0, 42.0)
    assert r.covered == pytest.approx(0.6, abs=1e-9)                       # cells 26..30 and 30..34 out
    assert r.value("hencky_zz") == pytest.approx(np.log(1.2), abs=1e-9)
    with pytest.raises(InputError, match="DisplacementField or StrainField"):
        slab_volume_mean(np.zeros((3, 3)), 0.0, 1.0)
