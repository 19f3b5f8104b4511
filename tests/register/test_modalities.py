"""Rigid registration between modalities of different resolution (issue 21): resolution + intensity model.

The coarse modality is predicted from the sharp one (grey-level mapping or phase fractions, the coarse
voxel's box, the extra PSF); errors are in coarse (neutron) voxels and degrees, against known rigid
misalignments applied to the sharp image.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from tomo4d.errors import InputError
from tomo4d.register.modalities import ModalityRegistration, register_modalities
from tomo4d.register.phi import rotation_matrix

VM, VF = 100.0, 400.0   # sharp (X-ray) and coarse (neutron) voxels, nm


def _misalign(a, rot_deg, t_nm, coarse_shape, order):
    """``a`` seen through ``X_m = A (X_f - C) + C + t`` (C the coarse field's centre): returns the moved volume and
    the mask of its voxels that come from inside the original field."""
    A = rotation_matrix(rot_deg)
    C = np.asarray(coarse_shape) * VF / 2
    idx = np.indices(a.shape).reshape(3, -1).astype(float)
    fine = (A.T @ ((idx + 0.5) * VM - C[:, None] - np.asarray(t_nm, float)[:, None]) + C[:, None]) / VM - 0.5
    ok = np.all((fine >= 0) & (fine <= (np.asarray(a.shape) - 1)[:, None]), 0).reshape(a.shape)
    return ndi.map_coordinates(a, fine, order=order, mode="nearest").reshape(a.shape), ok


def _coarse(labels, values, *, psf_nm=500.0, noise=0.05, rng):
    """The coarse modality of a label volume: 4^3 block mean of the phase values, Gaussian PSF, noise."""
    mu = np.asarray(values, np.float32)[labels]
    n = tuple(s // 4 for s in mu.shape)
    mu = mu[: n[0] * 4, : n[1] * 4, : n[2] * 4].reshape(n[0], 4, n[1], 4, n[2], 4).mean(axis=(1, 3, 5))
    mu = ndi.gaussian_filter(mu, psf_nm / VF, mode="nearest")
    return (mu + rng.normal(0, noise, mu.shape)).astype(np.float32)


def _blobs(rng, shape=(96, 96, 96), k=4):
    f = ndi.gaussian_filter(rng.standard_normal(shape), 6.0)
    return np.searchsorted(np.quantile(f, np.linspace(0, 1, k + 1)[1:-1]), f).astype(np.int16)


@pytest.fixture(scope="module")
def blob_pair():
    rng = np.random.default_rng(5)
    lab = _blobs(rng)
    # X-ray greys in the order of the blobs' contacts (0-1-2-3): a partial-volume grey is never a third phase's
    # (the grey-level model's condition, see register_modalities); the neutron's order differs (non-monotonic)
    grey = np.array([0.1, 0.3, 0.6, 1.0], np.float32)
    sharp = ndi.gaussian_filter(grey[lab], 1.5) + rng.normal(0, 0.03, lab.shape).astype(np.float32)
    return lab, sharp.astype(np.float32)


def test_grey_level_model_recovers_a_rigid_misalignment(blob_pair):
    lab, sharp = blob_pair
    coarse = _coarse(lab, [0.2, 1.5, 0.9, 0.4], rng=np.random.default_rng(0))
    rot, t = (1.0, -2.0, 1.5), (600.0, -900.0, 1400.0)
    moved, ok = _misalign(sharp, rot, t, coarse.shape, 3)
    reg = register_modalities(coarse, moved, fixed_voxel_size_nm=VF, moving_voxel_size_nm=VM, fixed_psf_sigma_nm=500.0,
                              moving_psf_sigma_nm=150.0, moving_mask=ok)
    assert reg.converged and reg.transform == "rigid"
    err_px = (reg.translation_nm - np.asarray(t)) / VF
    err_deg = reg.rotation_deg - np.asarray(rot)
    assert np.abs(err_px).max() < 0.1, err_px
    assert np.abs(err_deg).max() < 0.5, err_deg
    # errors within 4 reported standard deviations
    assert np.all(np.abs(err_px) < 4 * reg.translation_sigma_px + 0.01), (err_px, reg.translation_sigma_px)
    assert np.all(np.abs(err_deg) < 4 * reg.rotation_sigma_deg + 0.01), (err_deg, reg.rotation_sigma_deg)


@pytest.mark.slow
def test_uncertainty_is_calibrated_on_noise_repeats(blob_pair):
    """Translation errors over independent noise realisations of the coarse image, divided by the reported
    sigma: their RMS is about 1 (0.5-2 allowed with 6 repeats x 3 axes)."""
    lab, sharp = blob_pair
    z = []
    for seed in range(6):
        coarse = _coarse(lab, [0.2, 1.5, 0.9, 0.4], noise=0.15, rng=np.random.default_rng(100 + seed))
        reg = register_modalities(coarse, sharp, fixed_voxel_size_nm=VF, moving_voxel_size_nm=VM, moving_labels=lab,
                                  fixed_psf_sigma_nm=500.0, transform="translation", search_px=2)
        z.append(reg.translation_nm / reg.translation_sigma_nm)
    rms = float(np.sqrt(np.mean(np.square(z))))
    assert 0.5 < rms < 2.0, (rms, z)


def test_affine_translation_options_and_roundtrip(blob_pair, tmp_path):
    lab, sharp = blob_pair
    coarse = _coarse(lab, [0.2, 1.5, 0.9, 0.4], rng=np.random.default_rng(1))
    reg = register_modalities(coarse, sharp, fixed_voxel_size_nm=VF, moving_voxel_size_nm=VM, transform="affine",
                              moving_labels=lab, fixed_psf_sigma_nm=500.0, search_px=2)
    assert np.abs(reg.matrix - np.eye(3)).max() < 0.01 and np.abs(reg.translation_px).max() < 0.05
    assert reg.mapping == pytest.approx([0.2, 1.5, 0.9, 0.4], abs=0.05)
    p = tmp_path / "reg.json"
    reg.save(p)
    back = ModalityRegistration.load(p)
    assert np.allclose(back.phi(), reg.phi()) and back.transform == "affine"
    # phi: fixed voxel centre (c) -> moving voxel of the same physical point
    c = (np.asarray(coarse.shape) - 1) / 2
    assert np.allclose(reg.phi()[:3, 3] + c, (c + 0.5) * VF / VM - 0.5 + reg.phi()[:3, :3] @ np.zeros(3)
                       + reg.translation_nm / VM, atol=1e-9)


@pytest.mark.slow
def test_blur_is_estimated_when_not_given(blob_pair):
    lab, sharp = blob_pair
    coarse = _coarse(lab, [0.2, 1.5, 0.9, 0.4], psf_nm=600.0, noise=0.02, rng=np.random.default_rng(2))
    reg = register_modalities(coarse, sharp, fixed_voxel_size_nm=VF, moving_voxel_size_nm=VM, moving_labels=lab,
                              transform="translation", search_px=2)
    assert reg.blur_estimated
    assert reg.blur_sigma_nm == pytest.approx(np.sqrt(600.0 ** 2 - VM ** 2 / 12), rel=0.1)
    assert np.abs(reg.translation_px).max() < 0.05


@pytest.mark.parametrize("kw, match", [({"transform": "shear"}, "transform"), ({"n_knots": 2}, "n_knots"),
                                       ({"fixed_voxel_size_nm": -1}, "fixed_voxel_size_nm"),
                                       ({"moving_labels": np.zeros((3, 3, 3), np.int16)}, "moving_labels"),
                                       ({"phi0": "x"}, "phi0")])
def test_bad_inputs_are_refused(blob_pair, kw, match):
    lab, sharp = blob_pair
    coarse = np.zeros((20, 20, 20), np.float32)
    args = dict(fixed_voxel_size_nm=VF, moving_voxel_size_nm=VM) | kw
    with pytest.raises(InputError, match=match):
        register_modalities(coarse, sharp, **args)


# -- acceptance on the phantom's X-ray/neutron pair ---------------------------------------------------------

@pytest.fixture(scope="module")
def phantom_pair():
    from tomo4d.phantom import make_experiment

    exp = make_experiment(shape=(128, 128, 128), n_steps=2, seed=0)
    return (exp.series[1].compute().data, exp.truth.labels(1, grid="lq"), exp.neutron_series[1].compute().data,
            exp.params)


CASES = [((0.0, 0.0, 0.0), (0.0, 0.0, 0.0)), ((1.5, -2.0, 3.0), (800.0, -1200.0, 2000.0)),
         ((3.0, 0.0, 0.0), (-2000.0, 1000.0, 400.0)), ((0.0, 2.0, -2.0), (300.0, 1900.0, -1500.0))]


@pytest.mark.slow
@pytest.mark.parametrize("rot, t", CASES)
def test_phantom_xray_neutron_rigid_within_a_quarter_pixel_and_a_tenth_degree(phantom_pair, rot, t):
    """Lithiated step T1 of the 128^3 phantom: X-ray LQ (100 nm, 313 nm PSF) with its phase map, neutron
    (400 nm voxels, 500 nm PSF, noise 0.05 1/cm), the X-ray side moved by shifts up to 5 neutron voxels
    and rotations up to 3 degrees.  Acceptance: 0.25 neutron px and 0.1 degree."""
    xray, labels, neutron, p = phantom_pair
    moved, ok = _misalign(xray, rot, t, neutron.shape, 3)
    lab, _ = _misalign(labels, rot, t, neutron.shape, 0)
    reg = register_modalities(neutron, moved.astype(np.float32), fixed_voxel_size_nm=VF, moving_voxel_size_nm=VM,
                              moving_labels=lab.astype(np.int16), moving_mask=ok,
                              fixed_psf_sigma_nm=p.neutron_blur_sigma_nm)
    err_px = (reg.translation_nm - np.asarray(t)) / VF
    err_deg = reg.rotation_deg - np.asarray(rot)
    assert np.abs(err_px).max() < 0.25 and np.abs(err_deg).max() < 0.1, (err_px, err_deg)
    assert np.all(np.abs(err_deg) < 4 * reg.rotation_sigma_deg + 0.005), (err_deg, reg.rotation_sigma_deg)


def test_cli_multimodal_reports_rotation_translation_and_sigmas(blob_pair, tmp_path, capsys):
    import json

    from tomo4d.cli import main
    from tomo4d.io import save_volume
    from tomo4d.volume import Volume

    lab, sharp = blob_pair
    coarse = _coarse(lab, [0.2, 1.5, 0.9, 0.4], rng=np.random.default_rng(3))
    f = save_volume(Volume(coarse, voxel_size_nm=VF), tmp_path / "neutron.tif")
    m = save_volume(Volume(sharp, voxel_size_nm=VM), tmp_path / "xray.tif")
    labels = save_volume(Volume(lab, voxel_size_nm=VM), tmp_path / "labels.tif")
    out = tmp_path / "reg.json"
    assert main(["register", str(f), str(m), "--multimodal", "--moving-labels", str(labels), "--fixed-psf-nm", "500",
                 "--transform", "translation", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "+-" in text and "rotation" in text and "extra blur" in text
    d = json.loads(out.read_text())
    assert d["method"] == "resolution-model" and d["transform"] == "translation"
    assert np.abs(d["translation_px"]).max() < 0.05 and len(d["translation_sigma_px"]) == 3
    assert ModalityRegistration.load(out).n_voxels == d["n_voxels"]


def test_align_modalities_rigid_uses_the_resolution_model(blob_pair):
    from tomo4d.neutron import align_modalities

    lab, sharp = blob_pair
    coarse = _coarse(lab, [0.2, 1.5, 0.9, 0.4], rng=np.random.default_rng(4))
    pair = align_modalities(sharp, coarse, fixed_voxel_size_nm=VM, moving_voxel_size_nm=VF, transform="rigid",
                            moving_psf_sigma_nm=500.0, fixed_labels=lab, search_px=2)
    assert pair.registered and isinstance(pair.registration, ModalityRegistration)
    # truth: identity (the coarse volume was rendered from the same field, first corners together)
    assert np.abs(pair.phi[:3, 3]).max() < 0.2 and np.abs(pair.phi[:3, :3] - np.eye(3)).max() < 0.005
    assert pair.moving.shape == sharp.shape
    with pytest.raises(InputError, match="transform"):
        align_modalities(sharp, coarse, fixed_voxel_size_nm=VM, moving_voxel_size_nm=VF, transform="shear")
