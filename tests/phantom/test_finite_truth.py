"""The phantom's truth in finite-strain measures (Hencky, det F - 1) against closed forms of its map.

Electrode-scale map (see :mod:`tomo4d.phantom._finite`): axial stretch ``lam(s) = 1 + e (1 + g (2 s - 1))``
(``s`` depth fraction from the collector), in-plane stretch ``1 + p s``.  Without particle swelling the
anode's mean Hencky zz is ``int ln lam ds`` and ``ln(thickness ratio) = ln(1 + e)``; their difference is
the Jensen gap of the through-thickness gradient, ``<= (e g)^2 / (6 lam_min^2)`` (< 1e-3 here).
"""

import numpy as np
import pytest

from tomo4d import InputError
from tomo4d.phantom import make_experiment

G = 0.19  # default expansion_gradient


def _mean_ln_lam(e, a, b):
    """Mean over s in [a, b] of ln(1 + e (1 + G (2 s - 1))) (fine midpoint rule)."""
    s = a + (np.arange(20000) + 0.5) / 20000 * (b - a)
    return np.log(1 + e * (1 + G * (2 * s - 1))).mean()


@pytest.fixture(scope="module")
def smooth():
    """Electrode-scale map only (no particle swelling): closed forms hold."""
    exp = make_experiment(shape=(64, 64, 64), n_steps=4, seed=3, particle_swelling=0.0)
    return exp.truth, exp.truth.anode_finite_strain()


def test_hencky_of_the_electrode_map_matches_closed_forms(smooth):
    t, a = smooth
    ratio = np.asarray(t.thickness_nm) / t.thickness_nm[0]
    for k, e in enumerate(t.mean_axial_strain):
        # tolerance 1e-3: in-plane shear F_yz = p (y - y_axis) / t0 <= 0.03 in the HQ field adds ~F_yz^2 / 2
        assert abs(a.hencky_zz[k, 2] - _mean_ln_lam(e, 0, 1)) < 1e-3
        assert abs(a.hencky_zz[k, 0] - _mean_ln_lam(e, 0, 0.5)) < 1e-3
        assert abs(a.hencky_zz[k, 1] - _mean_ln_lam(e, 0.5, 1)) < 1e-3
        np.testing.assert_allclose(ratio[k], 1 + e, atol=1e-9)  # e is the mean axial engineering strain
        gap = np.log(ratio[k]) - a.hencky_zz[k, 2]
        lam_min = 1 + e * (1 - G)
        assert -1e-3 < gap < (e * G) ** 2 / (6 * lam_min ** 2) + 1e-3
        # volumetric: mean of lam(s) (1 + p s)^2 over each half
        p = t.in_plane_strain[k]
        s = (np.arange(20000) + 0.5) / 20000
        j = (1 + e * (1 + G * (2 * s - 1))) * (1 + p * s) ** 2 - 1
        np.testing.assert_allclose(a.volumetric[k], [j[:10000].mean(), j[10000:].mean(), j.mean()], atol=1e-3)
    assert np.all(a.hencky_zz[1:, 1] > a.hencky_zz[1:, 0])


def test_hencky_at_points_on_the_axis(smooth):
    """On the rotation axis (no in-plane shear): ln U = diag(ln lam(s), ln(1 + p s), ln(1 + p s))."""
    t, _ = smooth
    g = t.hq_grid
    yc = t.lq_grid.shape[1] * t.lq_grid.voxel_size_nm / 2
    t0 = t.thickness_nm[0]
    s = np.array([0.1, 0.4, 0.75, 0.95])
    pts = np.stack([t.z_collector_nm + s * t0, np.full(4, yc), np.full(4, yc)], 1)
    h = t.hencky_strain(2, pts)
    e, p = t.mean_axial_strain[2], t.in_plane_strain[2]
    np.testing.assert_allclose(h[:, 0, 0], np.log(1 + e * (1 + G * (2 * s - 1))), atol=1e-8)
    np.testing.assert_allclose(h[:, 1, 1], np.log(1 + p * s), atol=1e-8)
    np.testing.assert_allclose(h[:, 0, 1], 0.0, atol=1e-8)
    assert g.voxel_size_nm > 0


@pytest.mark.slow
def test_default_phantom_truth(exp):
    """With swelling particles: separator side above collector side, and the whole anode's mean Hencky zz
    below ln(thickness ratio) by the Jensen gap of the particles' local stretches (Jensen: a mean of logs is
    below the log of the mean; measured 0-4.5 % of the strain for seeds 0 and 3, tolerance 6 %)."""
    from tomo4d.dvc import hencky

    t = exp.truth
    a = t.anode_finite_strain()
    lr = np.log(a.thickness_ratio)
    for k in range(1, t.n_steps):
        assert a.hencky_zz[k, 1] > a.hencky_zz[k, 0] + 0.02
        assert a.volumetric[k, 1] > a.volumetric[k, 0] + 0.02
        assert -1e-3 < lr[k] - a.hencky_zz[k, 2] < 0.06 * lr[k]
        # mean det F - 1 of the anode = its relative volume change: thickness ratio x lateral area ratio
        p = t.in_plane_strain[k]
        assert abs(1 + a.volumetric[k, 2] - a.thickness_ratio[k] * (1 + p / 2) ** 2) < 0.02
        # in-plane strains stay small (the study: < 3 %)
        assert abs(a.hencky_yy[k, 2]) < 0.03 and abs(a.hencky_xx[k, 2]) < 0.03
    assert np.all(a.hencky_zz[0] == 0) and np.all(a.volumetric[0] == 0)
    # node-by-node truth: the phantom's own ln U agrees with tomo4d.dvc's (independent code)
    rng = np.random.default_rng(0)
    pts = t.z_collector_nm + rng.random((200, 3)) * [t.thickness_nm[0], 0, 0]
    pts[:, 1:] = np.asarray(t.hq_offset_nm[1:]) + rng.random((200, 2)) * 3200
    np.testing.assert_allclose(t.hencky_strain(2, pts), hencky(t.deformation_gradient(2, pts)), atol=1e-10)
    assert a.value("separator side", "volumetric")[2] == a.volumetric[2, 1]
    assert set(a.to_dict()) >= {"hencky_zz", "volumetric", "thickness_ratio"}


def test_anode_finite_strain_refuses_odd_or_bad_grids(exp):
    with pytest.raises(InputError, match="even"):
        exp.truth.anode_finite_strain(n_z=5)
    with pytest.raises(InputError, match="n_yx"):
        exp.truth.anode_finite_strain(n_yx=0)
