"""Open-beam/dark normalisation with dose or background-region correction; Beer-Lambert attenuation."""

import numpy as np
import pytest

from tomo4d import InputError
from tomo4d.neutron import attenuation_coefficient, normalize_transmission, transmission_sigma


def _scene(rng, n=3):
    t_true = np.ones((24, 30))
    t_true[6:18, 8:26] = np.exp(-2.0 * 0.4)  # mu = 2 /cm over 0.4 cm
    dose_s = np.array([1.0, 1.3, 0.8])[:n]
    dark = np.full((24, 30), 100.0)
    ob = 1e6 * np.ones((24, 30))
    sample = dark + ob * t_true[None] * dose_s[:, None, None] * 0.9
    return t_true, dose_s, dark, ob, sample


def test_dose_correction_recovers_transmission(rng):
    t_true, dose_s, dark, ob, sample = _scene(rng)
    t = normalize_transmission(sample, ob + dark, dark, sample_dose=dose_s * 0.9, open_beam_dose=1.0)
    assert t.dtype == np.float32 and t.shape == sample.shape
    assert np.allclose(t, t_true[None], rtol=1e-5)
    mu = attenuation_coefficient(t, thickness_cm=0.4)
    assert np.allclose(mu[:, 10, 10], 2.0, rtol=1e-4) and np.allclose(mu[:, 0, 0], 0.0, atol=1e-5)


def test_background_region_correction(rng):
    t_true, dose_s, dark, ob, sample = _scene(rng)
    t = normalize_transmission(sample, ob + dark, dark, background_region=(slice(0, 4), slice(0, 30)))
    assert np.allclose(t, t_true[None], rtol=1e-5)
    # without a correction the beam fluctuation shows
    raw = normalize_transmission(sample, ob + dark, dark)
    assert not np.allclose(raw, t_true[None], rtol=1e-2)


def test_spectra_broadcast_open_beam_and_sigma(rng):
    ob = rng.uniform(5e3, 1e4, 50)
    s = rng.poisson(ob * 0.5, (4, 50)).astype(float)
    t = normalize_transmission(s, ob)
    assert t.shape == (4, 50) and abs(float(t.mean()) - 0.5) < 0.02
    sig = transmission_sigma(s, ob)
    assert sig.shape == (4, 50) and np.all(sig > 0)
    assert float(np.std((t - 0.5) / sig)) == pytest.approx(1.0, abs=0.2)


def test_zero_open_beam_is_an_error_or_nan():
    ob = np.ones((5, 5))
    ob[2, 2] = 0.0
    with pytest.raises(InputError, match="zero open beam"):
        normalize_transmission(np.ones((5, 5)), ob)
    t = normalize_transmission(np.ones((5, 5)), ob, invalid="nan")
    assert np.isnan(t[2, 2]) and np.isfinite(t[0, 0])


@pytest.mark.parametrize("kw,match", [
    (dict(sample=np.ones((3, 5, 5)), open_beam=np.ones((4, 5))), "does not match"),
    (dict(sample=np.ones((3, 5, 5)), open_beam=np.ones((5, 5)), dark=np.ones((2, 2))), "does not match"),
    (dict(sample=np.ones((3, 5, 5)), open_beam=np.ones((5, 5)), sample_dose=[1, 2]), "both"),
    (dict(sample=np.ones((3, 5, 5)), open_beam=np.ones((5, 5)), sample_dose=[1, 2], open_beam_dose=1), "3 images"),
    (dict(sample=np.ones((3, 5, 5)), open_beam=np.ones((5, 5)), sample_dose=0, open_beam_dose=1), "> 0"),
    (dict(sample=np.ones((3, 5, 5)), open_beam=np.ones((5, 5)), background_region=(slice(9, 9), slice(0, 2))),
     "selects no pixels"),
])
def test_bad_normalisation_input(kw, match):
    with pytest.raises(InputError, match=match):
        normalize_transmission(**kw)


def test_attenuation_rejects_negative_transmission_and_bad_thickness():
    with pytest.raises(InputError, match="negative"):
        attenuation_coefficient(np.array([0.5, -0.1]), thickness_cm=1.0)
    with pytest.raises(InputError, match="thickness_cm"):
        attenuation_coefficient(np.array([0.5]), thickness_cm=0.0)
    mu = attenuation_coefficient(np.array([0.0, 1.0]), thickness_cm=1.0, min_transmission=1e-3)
    assert mu[0] == pytest.approx(-np.log(1e-3)) and mu[1] == 0
