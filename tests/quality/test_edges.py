import numpy as np
import pytest
from quality_synth import FWHM, erf_disc
from scipy.special import erf

from tomo4d import InputError, Volume
from tomo4d.quality import FWHM_PER_SIGMA, edge_resolution


def test_fwhm_constant():
    assert FWHM_PER_SIGMA == pytest.approx(2.35482, abs=1e-5)


@pytest.mark.parametrize("noise", [0.0, 0.1], ids=["clean", "snr10"])
@pytest.mark.parametrize("sigma", [1.0, 2.0, 4.0, 8.0])
def test_recovers_gaussian_blur(sigma, noise):
    # requirement: FWHM = 2.355 sigma within 5 % for sigma 1..8 px, clean and at SNR 10
    res = edge_resolution(erf_disc(sigma, noise=noise), voxel_size_nm=50.0)
    truth = FWHM * sigma * 50.0
    assert res.fwhm_mean_nm == pytest.approx(truth, rel=0.05)
    assert res.n_edges >= 20
    assert res.fwhm_std_nm < (0.01 if noise == 0 else 0.2) * truth
    assert len(res.profiles) == res.n_edges == len(res.fwhm_nm)


@pytest.mark.parametrize("sigma", [1.0, 3.0, 6.0])
def test_derivative_method_clean(sigma):
    res = edge_resolution(erf_disc(sigma), voxel_size_nm=1.0, method="derivative")
    assert res.fwhm_mean_nm == pytest.approx(FWHM * sigma, rel=0.05)
    assert res.method == "derivative"


@pytest.mark.parametrize("angle", [0.0, 0.4, 1.1])
def test_straight_edge_any_direction(angle):
    yy, xx = np.mgrid[:160, :160].astype(float)
    d = (yy - 80) * np.sin(angle) + (xx - 80) * np.cos(angle)
    img = 0.5 * (1 + erf(d / (np.sqrt(2) * 3.0)))
    res = edge_resolution(img, voxel_size_nm=10.0)
    assert res.fwhm_mean_nm == pytest.approx(FWHM * 30.0, rel=0.02)
    n = np.array([p.normal for p in res.profiles]).mean(axis=0)
    assert abs(np.arctan2(n[0], n[1]) - angle) < 0.02  # normal points dark -> bright


def test_given_lines_and_anisotropic_pixels():
    sigma = 2.0
    img = erf_disc(sigma)
    c = np.array([128.3, 127.8])
    ang = np.linspace(0, 2 * np.pi, 12, endpoint=False)
    u = np.stack([np.sin(ang), np.cos(ang)], 1)
    lines = np.stack([c + 60 * u, c + 80 * u], 1)  # inside -> outside: bright -> dark, flipped internally
    res = edge_resolution(img, voxel_size_nm=(1.0, 20.0, 20.0), edges=lines)
    assert res.n_edges == 12 and res.n_candidates == 12
    assert res.fwhm_mean_nm == pytest.approx(FWHM * sigma * 20.0, rel=0.02)
    # y pixels twice as long as x pixels: horizontal-normal profiles keep 20 nm/px, vertical ones 40 nm/px
    res2 = edge_resolution(img, voxel_size_nm=(1.0, 40.0, 20.0), edges=lines[[0, 3]])
    by_dir = {round(abs(p.normal[0])): p.fwhm_nm for p in res2.profiles}
    assert by_dir[0] == pytest.approx(FWHM * sigma * 20.0, rel=0.02)
    assert by_dir[1] == pytest.approx(FWHM * sigma * 40.0, rel=0.02)


def test_volume_voxel_size_and_slices():
    img = erf_disc(2.0, n=160, radius=50)
    vol = Volume(np.stack([img] * 6), (100.0, 100.0, 100.0))
    res = edge_resolution(vol, slices=[1, 4])
    assert {p.z for p in res.profiles} == {1, 4}
    assert res.fwhm_mean_nm == pytest.approx(FWHM * 200.0, rel=0.02)
    with pytest.raises(InputError, match="voxel_size_nm"):
        edge_resolution(np.asarray(vol))


def test_monotonic_in_blur():
    vals = [edge_resolution(erf_disc(s, noise=0.05), voxel_size_nm=1).fwhm_mean_nm for s in (1, 1.5, 2.5, 4, 6)]
    assert all(a < b for a, b in zip(vals, vals[1:]))


def test_mask_restricts_edges():
    img = erf_disc(2.0)
    mask = np.zeros(img.shape, bool)
    mask[:, :128] = True
    res = edge_resolution(img, voxel_size_nm=1, mask=mask)
    assert all(p.center_px[1] < 128 for p in res.profiles)


def test_bad_inputs():
    with pytest.raises(InputError, match="constant"):
        edge_resolution(np.ones((64, 64)), voxel_size_nm=1)
    bad = erf_disc(2.0)
    bad[3, 3] = np.nan
    with pytest.raises(InputError, match="NaN"):
        edge_resolution(bad, voxel_size_nm=1)
    with pytest.raises(InputError, match="edges has shape"):
        edge_resolution(erf_disc(2.0), voxel_size_nm=1, edges=np.zeros((3, 2, 3)))
    with pytest.raises(InputError, match="method"):
        edge_resolution(erf_disc(2.0), voxel_size_nm=1, method="quadratic")
    with pytest.raises(InputError, match="no edge profile"):  # pure noise has no edges worth measuring
        edge_resolution(np.random.default_rng(0).normal(size=(96, 96)), voxel_size_nm=1)
    with pytest.raises(InputError, match="mask"):
        edge_resolution(erf_disc(2.0), voxel_size_nm=1, mask=np.zeros((10, 10), bool))
