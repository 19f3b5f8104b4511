"""PSF compensation: the covariance algebra, the anisotropic blur, and its effect on a blurred stretch."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from tomo4d.dvc import correlate
from tomo4d.dvc.psf import blur_covariance, compensating_blurs, psf_covariance
from tomo4d.errors import InputError


def _rot(t):
    c, s = np.cos(t), np.sin(t)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def test_compensating_blurs_closed_forms():
    s2 = 2.8 ** 2
    cov = psf_covariance(2.8)
    bd, br = compensating_blurs(np.diag([1.1, 1.0, 0.9]), cov)
    # stretch along z: the deformed scan gets sigma^2 ((1+e)^2 - 1); compression along x: the reference
    # gets sigma^2 (1/(1-e)^2 - 1)
    np.testing.assert_allclose(np.diag(bd[0]), [s2 * (1.1 ** 2 - 1), 0, 0], atol=1e-9)
    np.testing.assert_allclose(np.diag(br[0]), [0, 0, s2 * (1 / 0.81 - 1)], atol=1e-9)
    # a rotation changes no blur
    bd, br = compensating_blurs(_rot(0.4), cov)
    assert np.abs(bd).max() < 1e-9 and np.abs(br).max() < 1e-9


def test_compensated_blurs_are_equal_in_the_reference_frame():
    """C0 + Br == F^-1 (S + Bd) F^-T for general F and an anisotropic PSF (the defining identity)."""
    rng = np.random.default_rng(0)
    f = np.eye(3) + rng.normal(0, 0.08, (20, 3, 3))
    cov = psf_covariance((2.0, 1.5, 1.0), 0.7)
    bd, br = compensating_blurs(f, cov)
    finv = np.linalg.inv(f)
    lhs = cov + br
    rhs = finv @ (cov + bd) @ np.swapaxes(finv, 1, 2)
    np.testing.assert_allclose(lhs, rhs, atol=1e-9)
    assert (np.linalg.eigvalsh(bd) > -1e-9).all() and (np.linalg.eigvalsh(br) > -1e-9).all()
    np.testing.assert_allclose(np.diag(psf_covariance((2.0, 1.5, 1.0), 0.7)), [4.49, 2.74, 1.49])


def test_blur_covariance_matches_separable_gaussian():
    rng = np.random.default_rng(1)
    # band-limited input: the sampled kernel of gaussian_filter and the exact Gaussian transfer function
    # differ near Nyquist (1 % on white noise at sigma 0.8)
    img = ndimage.gaussian_filter(rng.normal(size=(40, 36, 32)), 1.0).astype(np.float32)
    out = blur_covariance(img, np.diag([1.5 ** 2, 0.8 ** 2, 1.1 ** 2]))
    ref = ndimage.gaussian_filter(img, (1.5, 0.8, 1.1), mode="mirror", truncate=6)
    assert out.dtype == np.float32
    inner = (slice(8, -8),) * 3
    assert np.abs(out - ref)[inner].max() < 2e-3 * np.abs(ref).max()
    # a rotated covariance equals blurring the rotated image: compare second moments of a point source
    delta = np.zeros((41, 41, 41), np.float32)
    delta[20, 20, 20] = 1
    c = _rot(0.5) @ np.diag([4.0, 2.0, 1.0]) @ _rot(0.5).T
    k = blur_covariance(delta, c)
    x = np.stack(np.meshgrid(*[np.arange(41) - 20.0] * 3, indexing="ij")).reshape(3, -1)
    m2 = (x * k.ravel()) @ x.T / k.sum()
    np.testing.assert_allclose(m2, c, atol=5e-3)  # measured 2e-3 (sampling); a wrong orientation: 0.4


def test_psf_option_removes_stretch_blur_bias(texture):
    """A sample stretched 10 % along z imaged with a scanner-frame PSF (sigma 2.5 px) after the stretch.

    Without compensation the stretched scan looks sharper along z than the reference and the node
    displacements are biased; with ``psf_sigma_px`` much less.  Measured: 0.033 px -> 0.0022 px, F_zz 1.0990 -> 1.1000
    (before the bottom node layer, whose windows leave the stretched volume, became OUT_OF_VIEW and stopped
    feeding the curvature correction of its neighbours: 0.037 -> 0.0135 px)."""
    rng = np.random.default_rng(4)
    obj = ndimage.gaussian_filter(rng.normal(size=(72, 48, 48)), 0.7).astype(np.float32)
    c = 35.5

    def u(x):
        return np.stack([0.1 * (x[0] - c), 0 * x[1], 0 * x[2]])

    grid = np.stack(np.meshgrid(*[np.arange(n, dtype=float) for n in obj.shape], indexing="ij"))
    deformed_obj = ndimage.map_coordinates(obj, np.stack([(grid[0] - c) / 1.1 + c, grid[1], grid[2]]), order=3,
                                           mode="mirror")
    s0 = ndimage.gaussian_filter(obj, 2.5).astype(np.float32)
    s1 = ndimage.gaussian_filter(deformed_obj, 2.5).astype(np.float32)
    kw = dict(node_spacing=8, half_window=8, tolerance_px=0.005)
    plain = correlate(s0, s1, **kw)
    comp = correlate(s0, s1, psf_sigma_px=2.5, **kw)
    true = u(plain.positions_zyx_px.T).T
    inner = np.abs(plain.positions_zyx_px[:, 0] - c) < 20
    e_plain = np.linalg.norm(plain.displacement_zyx_px - true, axis=1)[inner]
    e_comp = np.linalg.norm(comp.displacement_zyx_px - true, axis=1)[inner]
    assert np.median(e_comp) < 0.5 * np.median(e_plain)
    assert np.median(e_comp) < 0.02
    assert np.abs(np.median(comp.F[inner, 0, 0]) - 1.1) < 2e-3
    assert comp.notes["psf_groups"] >= 1 and "psf_groups" not in plain.notes


@pytest.mark.parametrize("kw, match", [
    ({"psf_sigma_px": (1, 2)}, "psf_sigma_px"), ({"psf_sigma_px": -1}, "psf_sigma_px"),
    ({"psf_sigma_px": 1.0, "psf_passes": 0}, "psf_passes"),
    ({"psf_sigma_px": 1.0, "psf_tolerance_px2": 0}, "psf_tolerance_px2"),
])
def test_psf_bad_input(texture, kw, match):
    with pytest.raises(InputError, match=match):
        correlate(texture, texture, node_spacing=12, half_window=6, **kw)
