"""Global registration: accuracy on the real snow volume and synthetic textures, masks, rigid, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from tomo4d import Volume
from tomo4d.errors import InputError
from tomo4d.register import Registration, apply_phi, compose_phi, decompose_phi, invert_phi, make_phi, register


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


@pytest.mark.parametrize("kw, pattern", [
    ({"binning": [64]}, (r"binning=\[64\]: the finest factor 64 leaves 0 voxels along an axis of the volume \(shape "
                         r"\(48, 52, 56\)\); registration needs at least 8 voxels per axis, so use factors <= 6")),
    ({"binning": (4, 7)}, r"finest factor 7 leaves 6 voxels"),
    ({"binning": (2, 1.5)}, r"binning\[1\]=1.5 is not an integer"),
    ({"binning": ("2",)}, r"binning\[0\]='2' is not an integer"),
    ({"binning": ()}, r"binning is empty"),
    ({"max_iterations": 0}, r"max_iterations=0 is out of range"),
    ({"tolerance_px": np.float64("nan")}, r"tolerance_px=nan is not finite"),
    ({"margin_px": -1}, r"margin_px=-1 is out of range"),
    ({"threads": 0}, r"threads=0 is out of range"),
    ({"threads": 1.5}, r"threads=1.5 is not an integer"),
])
def test_register_refuses_a_binning_or_option_it_would_replace(texture, kw, pattern):
    with pytest.raises(InputError, match=pattern) as err:
        register(texture, texture, **kw)
    assert "np.float64" not in str(err.value)


def test_register_refuses_a_too_coarse_finest_level_but_skips_coarse_ones(texture):
    with pytest.raises(InputError, match=r"finest factor 8 leaves 6 voxels"):
        register(texture, texture, binning=(2, 8))           # was silently registered at binning 2
    reg = register(texture, texture, binning=(8, 2, 1))      # 48 // 8 = 6 voxels: that coarse level is skipped
    assert reg.levels == (2, 1)


@pytest.mark.parametrize("which", ["fixed", "moving"])
def test_register_counts_nan_voxels(texture, which):
    f, m = texture.copy(), texture.copy()
    (f if which == "fixed" else m)[1, 2, 3:5] = np.inf
    with pytest.raises(InputError, match=rf"{which} holds 2 non-finite \(NaN/Inf\) voxels"):
        register(f, m, binning=(1,))


@pytest.mark.parametrize("kw, pattern", [({"search_px": float("nan")}, r"search_px=nan is not finite"),
                                         ({"search_px": -3}, r"search_px=-3 is out of range"),
                                         ({"bins": 2}, r"bins=2 is out of range"),
                                         ({"bins": 32.5}, r"bins=32.5 is not an integer"),
                                         ({"min_overlap": 0}, r"min_overlap=0 is out of range")])
def test_register_multimodal_refuses_bad_options(texture, kw, pattern):
    from tomo4d.register import register_multimodal

    with pytest.raises(InputError, match=pattern):
        register_multimodal(texture, texture, **kw)


def test_cli_register_refuses_a_binning_larger_than_the_volume(tmp_path, texture, capsys):
    import tifffile

    from tomo4d.cli import main

    a = tmp_path / "a.tif"
    tifffile.imwrite(a, texture)
    out = tmp_path / "phi.json"
    assert main(["register", str(a), str(a), "-o", str(out), "--binning", "64"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "finest factor 64 leaves 0 voxels" in err[0] and "(48, 52, 56)" in err[0]
    assert main(["register", str(a), str(a), "-o", str(out), "--multimodal", "--search", "-3"]) == 2
    assert "search_px=-3 is out of range" in capsys.readouterr().err


def test_register_threads_give_the_same_result_and_default_to_the_usable_cpus(texture):
    """Slabs of z slices on 1, 2 or 3 threads: the per-slice sums make the result independent of the split."""
    import os

    from scipy import ndimage as ndi

    from tomo4d._threads import available_cpus

    moved = ndi.shift(texture, (0.6, -0.4, 0.3), order=3, mode="mirror")
    regs = [register(texture, moved, threads=n) for n in (1, 2, 3)]
    for r in regs[1:]:
        np.testing.assert_array_equal(r.phi, regs[0].phi)
    np.testing.assert_allclose(regs[0].translation_px, [0.6, -0.4, 0.3], atol=0.02)
    assert 1 <= available_cpus() <= len(os.sched_getaffinity(0))
