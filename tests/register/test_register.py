"""Global registration: accuracy on the real snow volume and synthetic textures, masks, rigid, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from tomo4d import Volume
from tomo4d.errors import InputError
from tomo4d.register import (Registration, apply_phi, compose_phi, decompose_phi, invert_phi, make_phi,
                             register)


def _deformed(fixed, phi):
    """The moving volume for which ``phi`` (fixed -> moving) is the exact answer."""
    return apply_phi(fixed, invert_phi(phi), order=3)


def _errors(found, true):
    d = decompose_phi(compose_phi(found, invert_phi(true)))
    return np.abs(found[:3, 3] - true[:3, 3]).max(), d.rotation_angle_deg, np.abs(found[:3, :3] - true[:3, :3]).max()


@pytest.mark.realdata
def test_snow_affine_accuracy(snow):
    """DESIGN target: translation < 0.005 px, rotation < 0.01 degrees (few px, 2 degrees, 1 % strain)."""
    axis = np.array([0.3, 0.5, 0.81])
    true = make_phi(translation_px=(2.7, -1.3, 3.4), rotation_deg=2.0 * axis / np.linalg.norm(axis),
                    strain=(0.01, -0.005, 0.008))
    reg = register(snow, _deformed(snow, true))
    t_err, r_err, f_err = _errors(reg.phi, true)
    assert reg.converged
    assert t_err < 0.005
    assert r_err < 0.01
    assert f_err < 1e-4
    assert reg.residual < 0.2
    # the documented convention: apply_phi(moving, reg.phi) reproduces fixed
    moving = _deformed(snow, true)
    core = (slice(15, -15),) * 3

    def mismatch(phi):
        return float(np.abs(apply_phi(moving, phi)[core] - snow[core]).mean())

    assert mismatch(reg.phi) < 1.01 * mismatch(true)
    assert mismatch(reg.phi) < 0.2 * mismatch(invert_phi(reg.phi))


@pytest.mark.slow
@pytest.mark.realdata
def test_snow_rigid(snow):
    true = make_phi(translation_px=(-1.2, 2.6, 0.7), rotation_deg=(2.0, 0.0, 0.0))
    reg = register(snow, _deformed(snow, true), rigid=True)
    t_err, r_err, _ = _errors(reg.phi, true)
    assert t_err < 0.005 and r_err < 0.01
    # rigid: F stays a rotation
    np.testing.assert_allclose(reg.phi[:3, :3] @ reg.phi[:3, :3].T, np.eye(3), atol=1e-10)


@pytest.mark.parametrize("binning", [(1,), (2, 1)])
def test_texture_translation_and_photometric(texture, binning):
    true = make_phi(translation_px=(0.7, -0.4, 1.3), strain=(0.02, 0.0, -0.01))
    moving = 3.0 * _deformed(texture, true) + 10.0  # other gain and offset
    reg = register(texture, moving, binning=binning)
    assert isinstance(reg, Registration) and reg.converged
    t_err, r_err, f_err = _errors(reg.phi, true)
    assert t_err < 0.01 and f_err < 1e-3
    np.testing.assert_allclose(reg.translation_px, reg.phi[:3, 3])
    assert reg.centre_zyx_px == pytest.approx(tuple((np.asarray(texture.shape) - 1) / 2))


def test_texture_rigid(texture):
    true = make_phi(translation_px=(0.4, -1.1, 0.8), rotation_deg=(3.0, -1.0, 0.5))
    reg = register(texture, _deformed(texture, true), rigid=True, binning=(2, 1))
    t_err, r_err, _ = _errors(reg.phi, true)
    assert t_err < 0.01 and r_err < 0.02
    np.testing.assert_allclose(reg.phi[:3, :3] @ reg.phi[:3, :3].T, np.eye(3), atol=1e-10)


def test_mask_ignores_corrupted_region(texture):
    true = make_phi(translation_px=(0.5, 0.5, -0.5))
    moving = _deformed(texture, true)
    moving[:, :, :20] = 0.0  # garbage in part of the field of view
    mask = np.zeros(texture.shape, bool)
    mask[:, :, 26:] = True
    good = register(texture, moving, mask=mask, binning=(1,))
    assert np.abs(good.translation_px - true[:3, 3]).max() < 0.02


def test_phi0_and_volume_inputs(texture):
    true = make_phi(translation_px=(6.0, -5.0, 4.0))
    moving = Volume(_deformed(texture, true), (100.0, 100.0, 100.0))
    reg = register(Volume(texture), moving, phi0=make_phi(translation_px=(5.5, -4.5, 4.5)), binning=(1,))
    assert np.abs(reg.translation_px - true[:3, 3]).max() < 0.01


def test_registration_json_roundtrip(tmp_path, texture):
    reg = register(texture, _deformed(texture, make_phi(translation_px=(0.3, 0, 0))), binning=(1,))
    reg.save(tmp_path / "phi.json")
    back = Registration.load(tmp_path / "phi.json")
    np.testing.assert_allclose(back.phi, reg.phi)
    assert back.converged == reg.converged and back.centre_zyx_px == reg.centre_zyx_px


@pytest.mark.parametrize("case, match", [
    ("shape", "same"), ("nan", "NaN"), ("mask", "excludes every voxel"), ("binning", "binning"),
    ("small", "too small"),
])
def test_bad_input(texture, case, match):
    f, m, kw = texture, texture.copy(), {}
    if case == "shape":
        m = texture[:-2]
    elif case == "nan":
        m[3, 3, 3] = np.nan
    elif case == "mask":
        kw["mask"] = np.zeros(texture.shape, bool)
    elif case == "binning":
        kw["binning"] = (0,)
    elif case == "small":
        f, m = texture[:5], texture[:5]
    with pytest.raises(InputError, match=match):
        register(f, m, **kw)
