"""Hallucination control (issue 19): false / missed particles, size error and spread-error rank correlation,
checked against volumes whose particles and errors are known by construction."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from tomo4d.errors import InputError

VS = (50.0, 50.0, 50.0)
SHAPE = (40, 64, 64)
# well separated spheres: (centre z, y, x, radius) in voxels
CENTRES = [(10, 12, 12, 5), (10, 12, 40, 6), (10, 40, 14, 4), (10, 44, 44, 7), (28, 14, 26, 5), (28, 40, 30, 6),
           (28, 50, 52, 5), (30, 26, 52, 4)]
FAKES = [(20, 28, 10, 4), (20, 52, 28, 4)]      # in empty space, away from every true sphere


def _balls(spheres, shape=SHAPE) -> np.ndarray:
    z, y, x = np.indices(shape)
    lab = np.zeros(shape, np.int32)
    for i, (cz, cy, cx, r) in enumerate(spheres, start=1):
        lab[(z - cz) ** 2 + (y - cy) ** 2 + (x - cx) ** 2 <= r * r] = i
    return lab


def _image(mask, rng, *, noise=0.05) -> np.ndarray:
    """Particles at 1, matrix at 0.3, a bright third phase (a 'collector') at 2 in the top slices."""
    img = np.where(mask, 1.0, 0.3)
    img[:2] = 2.0
    return (img + rng.normal(0, noise, mask.shape)).astype(np.float32)


def test_audit_counts_two_added_fake_particles_exactly():
    from tomo4d.enhance.hallucination import audit_particles

    true = _balls(CENTRES)
    out = _balls(CENTRES + FAKES) * 7          # other label values than the truth's
    a = audit_particles(out, true, voxel_size_nm=VS)
    n = len(CENTRES) + 2
    assert (a.n_particles, a.n_false, a.n_true, a.n_missed) == (n, 2, len(CENTRES), 0)
    assert a.false_rate == pytest.approx(2 / n, abs=0)
    assert a.missed_rate == 0.0
    assert a.n_pairs == len(CENTRES)
    assert a.diameter_mae_nm == pytest.approx(0.0, abs=1e-9)        # identical particles


def test_audit_missed_particle_and_diameter_error_of_grown_particles():
    from tomo4d.enhance.hallucination import audit_particles

    true = _balls(CENTRES)
    grown = _balls([(cz, cy, cx, r + 1) for cz, cy, cx, r in CENTRES[1:]])     # first one missing, others +1 voxel
    a = audit_particles(grown, true, voxel_size_nm=VS)
    assert (a.n_false, a.n_missed, a.missed_rate) == (0, 1, pytest.approx(1 / len(CENTRES)))
    # equivalent diameters of digital balls of radius r+1 vs r: about 2 voxels = 100 nm larger
    d = lambda r: np.cbrt(6 * np.count_nonzero(_balls([(20, 32, 32, r)])) / math.pi) * 50.0  # noqa: E731
    expected = np.mean([d(r + 1) - d(r) for *_, r in CENTRES[1:]])
    assert a.diameter_bias_nm == pytest.approx(expected, rel=1e-6)
    assert 80.0 < a.diameter_bias_nm < 120.0
    assert a.diameter_mae_nm == pytest.approx(a.diameter_bias_nm)


def test_audit_a_split_true_particle_is_neither_false_nor_missed():
    from tomo4d.enhance.hallucination import audit_particles

    true = _balls(CENTRES)
    out = true.copy()
    big = out == 4                                   # radius 7: cut in two halves
    out[big & (np.indices(SHAPE)[2] >= 44)] = 99
    a = audit_particles(out, true, voxel_size_nm=VS)
    assert (a.n_particles, a.n_false, a.n_missed) == (len(CENTRES) + 1, 0, 0)


def test_report_finds_the_fakes_in_indi_and_none_in_hq():
    from tomo4d.enhance.hallucination import HallucinationOptions, hallucination_report

    rng = np.random.default_rng(0)
    true = _balls(CENTRES)
    hq = _image(true > 0, rng)
    indi = _image(_balls(CENTRES + FAKES) > 0, rng)
    bic = ndimage.gaussian_filter(hq, 1.0)
    rep = hallucination_report({"InDI": indi, "bicubic": bic, "HQ": hq}, true, voxel_size_nm=VS,
                               options=HallucinationOptions(split=False))
    lo, hi = rep.band
    assert 0.3 < lo < 1.0 < hi < 2.0                 # between matrix and particles, below the bright phase
    hq_a, indi_a, bic_a = rep.audit("HQ"), rep.audit("InDI"), rep.audit("bicubic")
    assert (hq_a.n_false, hq_a.n_missed, hq_a.n_particles) == (0, 0, len(CENTRES))
    assert hq_a.diameter_mae_nm < 15.0               # noise of 0.05 against a contrast of 0.7: exact masks
    assert (indi_a.n_false, indi_a.n_particles) == (2, len(CENTRES) + 2)
    assert indi_a.false_rate == pytest.approx(2 / (len(CENTRES) + 2))
    assert (bic_a.n_false, bic_a.n_missed) == (0, 0)
    assert hq_a.dice > 0.97 and indi_a.dice < hq_a.dice


def test_report_from_phase_labels_and_a_region():
    from tomo4d.enhance.hallucination import hallucination_report

    rng = np.random.default_rng(1)
    true = _balls(CENTRES)
    phases = np.where(true > 0, 3, 1).astype(np.uint8)
    hq = _image(true > 0, rng)
    indi = _image(_balls(CENTRES + FAKES) > 0, rng)
    region = np.zeros(SHAPE, bool)
    region[:, :, :32] = True                         # holds one fake (x = 10), not the other (x = 28 is inside too)
    region[:, :, 20:] = False
    rep = hallucination_report({"InDI": indi, "HQ": hq}, phases, particle_class=3, voxel_size_nm=VS, region=region)
    assert rep.audit("InDI").n_false == 1            # the fake at x = 10 only
    assert rep.audit("HQ").n_false == 0


def test_report_and_correlation_save_and_load(tmp_path):
    from tomo4d.enhance.hallucination import (
        HallucinationReport,
        SpreadErrorCorrelation,
        hallucination_report,
        spread_error_correlation,
    )

    rng = np.random.default_rng(2)
    true = _balls(CENTRES)
    hq = _image(true > 0, rng)
    rep = hallucination_report({"HQ": hq, "X": hq + 0.01}, true, voxel_size_nm=VS)
    back = HallucinationReport.load(rep.save(tmp_path / "h.json"))
    assert back == rep
    assert back.rows()[0][0] == "HQ" and len(back.header()) == len(back.rows()[0])
    c = spread_error_correlation(rng.random(SHAPE), hq, hq + 0.1, block=4)
    back = SpreadErrorCorrelation.load(c.save(tmp_path / "c.json"))
    assert back.summary() == c.summary()
    np.testing.assert_array_equal(back.block_error, c.block_error)


def _smooth_field(rng, shape, sigma):
    f = ndimage.gaussian_filter(rng.normal(size=shape), sigma)
    return (f - f.min()) / (f.max() - f.min())


def test_spread_correlated_with_error_by_construction_gives_positive_rho():
    from tomo4d.enhance.hallucination import spread_error_correlation

    rng = np.random.default_rng(3)
    shape = (32, 64, 64)
    sigma = 0.02 + _smooth_field(rng, shape, 4)                     # the local error scale
    ref = rng.normal(size=shape).astype(np.float32)
    out = ref + sigma * rng.normal(size=shape)                      # errors drawn with that scale
    spread = sigma * (1 + 0.1 * rng.normal(size=shape)) ** 2        # a noisy estimate of it
    c = spread_error_correlation(spread, out, ref, block=4)
    assert c.n_blocks == 8 * 16 * 16
    assert c.rho > 0.8 and c.p_value < 1e-10
    assert 0.05 < c.rho_voxels < c.rho          # voxel-wise: one |error| draw per voxel, weak but positive
    assert c.decile_ratio > 1.5
    assert list(c.error_by_spread_decile) == sorted(c.error_by_spread_decile)


def test_uncorrelated_spread_gives_rho_near_zero_and_anticorrelated_negative():
    from tomo4d.enhance.hallucination import spread_error_correlation

    rng = np.random.default_rng(4)
    shape = (32, 64, 64)
    sigma = 0.02 + _smooth_field(rng, shape, 4)
    ref = rng.normal(size=shape).astype(np.float32)
    out = ref + sigma * rng.normal(size=shape)
    other = 0.02 + _smooth_field(np.random.default_rng(99), shape, 4)
    c = spread_error_correlation(other, out, ref, block=4)
    # blocks of a field smoothed over 4 voxels are not independent: about 2048 / 8 effective samples
    assert abs(c.rho) < 0.2
    assert spread_error_correlation(1.1 - sigma, out, ref, block=4).rho < -0.8


def test_correlation_mask_drops_blocks_outside():
    from tomo4d.enhance.hallucination import spread_error_correlation

    rng = np.random.default_rng(5)
    shape = (16, 32, 32)
    ref = rng.normal(size=shape)
    mask = np.zeros(shape, bool)
    mask[:, :16] = True
    mask[:, 16:17] = True                                           # a sliver: blocks a quarter full
    c = spread_error_correlation(rng.random(shape), ref + 1, ref, block=4, mask=mask)
    assert c.n_blocks == 4 * 4 * 8
    assert c.error_mean == pytest.approx(1.0, rel=1e-5)


def test_figure_draws():
    from tomo4d.enhance.hallucination import spread_error_correlation, spread_error_figure

    rng = np.random.default_rng(6)
    shape = (16, 32, 32)
    ref = rng.normal(size=shape)
    s = rng.random(shape)
    c = spread_error_correlation(s, ref + s * rng.normal(size=shape), ref, block=4)
    fig = spread_error_figure(c, s, np.abs(s), z=3)
    assert len(fig.axes) >= 3
    assert len(spread_error_figure(c).axes) == 1


@pytest.mark.parametrize("call, match", [
    (lambda m, a, t: m.hallucination_report({"InDI": a}, t, voxel_size_nm=VS), "reference='HQ'"),
    (lambda m, a, t: m.hallucination_report({}, t, voxel_size_nm=VS), "images is empty"),
    (lambda m, a, t: m.hallucination_report({"HQ": a, "X": a[:-1]}, t, voxel_size_nm=VS), "shape"),
    (lambda m, a, t: m.hallucination_report({"HQ": a}, np.zeros_like(t), voxel_size_nm=VS), "no particle"),
    (lambda m, a, t: m.hallucination_report({"HQ": a}, t, voxel_size_nm=VS,
                                            options=m.HallucinationOptions(min_overlap=0)), "min_overlap"),
    (lambda m, a, t: m.hallucination_report({"HQ": a}, t), "voxel_size_nm"),
    (lambda m, a, t: m.spread_error_correlation(-a, a, a, block=4), "negative"),
    (lambda m, a, t: m.spread_error_correlation(a, a, a, block=32), "blocks"),
    (lambda m, a, t: m.spread_error_correlation(a, a, a[:, :8]), "shape"),
])
def test_bad_inputs_are_refused_with_their_name(call, match):
    from tomo4d.enhance import hallucination as m

    true = _balls(CENTRES)
    a = _image(true > 0, np.random.default_rng(7))
    with pytest.raises(InputError, match=match):
        call(m, a, true)
