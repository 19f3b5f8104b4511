"""noise_sigma: a scan's white noise from the scan alone, against the known noise of synthetic scans."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
from scipy import ndimage

from tomo4d import InputError, Volume
from tomo4d.quality import noise_sigma, noise_variance_ratio


@pytest.fixture(scope="module")
def textured():
    """Smooth structure (waves and blurred blobs, amplitude ~1) plus white noise of std 0.1."""
    rng = np.random.default_rng(1)
    z, y, x = np.mgrid[:64, :64, :64].astype(np.float32)
    blobs = ndimage.gaussian_filter(rng.standard_normal((64, 64, 64)).astype(np.float32), 3) * 20
    clean = np.sin(z / 5) + np.cos(y / 7) + blobs
    return clean, (clean + rng.standard_normal(clean.shape) * 0.1).astype(np.float32)


def test_white_noise_on_structure(textured):
    clean, noisy = textured
    assert noise_sigma(noisy) == pytest.approx(0.1, rel=0.03)
    assert noise_sigma(clean) < 0.01  # the structure itself reads (almost) nothing


def test_lazy_volume_slab_sampling_and_2d(textured):
    _, noisy = textured
    eager = noise_sigma(noisy)
    assert noise_sigma(da.from_array(noisy, chunks=(8, 64, 64))) == pytest.approx(eager, rel=1e-6)
    assert noise_sigma(Volume(noisy, voxel_size_nm=50.0)) == pytest.approx(eager, rel=1e-6)
    assert noise_sigma(noisy, max_samples=5000) == pytest.approx(0.1, rel=0.06)  # every 8th pair of slices
    assert noise_sigma(noisy[10]) == pytest.approx(0.1, rel=0.06)


def test_mask_selects_the_region(textured):
    clean, _ = textured
    rng = np.random.default_rng(2)
    sigma = np.where(np.arange(64)[:, None, None] < 32, 0.05, 0.3).astype(np.float32)
    img = clean + rng.standard_normal(clean.shape).astype(np.float32) * sigma
    top = np.zeros(img.shape, bool)
    top[:32] = True
    assert noise_sigma(img, mask=top) == pytest.approx(0.05, rel=0.05)
    assert noise_sigma(img, mask=~top) == pytest.approx(0.3, rel=0.05)


def test_correlated_noise_reads_low():
    """Stated limitation: noise smoothed between voxels (reconstruction filter, binning) reads below its std."""
    rng = np.random.default_rng(3)
    n = ndimage.gaussian_filter(rng.standard_normal((48, 48, 48)).astype(np.float32), 0.8)
    assert noise_sigma(n) < 0.6 * float(n.std())


def test_phantom_noise_levels():
    from tomo4d.phantom import make_experiment

    exp = make_experiment(shape=(48, 48, 48), n_steps=2, seed=0)
    assert noise_sigma(exp.series[0]) == pytest.approx(exp.params.lq_noise, rel=0.05)
    assert noise_sigma(exp.series_hq[0]) == pytest.approx(exp.params.hq_noise, rel=0.05)


@pytest.mark.parametrize("image, kw, words", [
    (np.zeros(10), {}, "image has shape (10,)"),
    (np.zeros((1, 8, 8)), {}, "at least 2 voxels"),
    (np.zeros((8, 8), object), {}, "dtype object"),
    (np.full((8, 8), np.nan), {}, "NaN or Inf"),
    (np.zeros((8, 8)), {"mask": np.ones((4, 4), bool)}, "mask has shape (4, 4)"),
    (np.zeros((8, 8)), {"mask": np.eye(8, dtype=bool)}, "no whole 2 x 2"),
    (np.zeros((8, 8)), {"max_samples": 10}, "max_samples"),
])
def test_bad_input(image, kw, words):
    with pytest.raises(InputError, match=None) as err:
        noise_sigma(image, **kw)
    assert words in str(err.value)


def test_noise_variance_ratio_over_the_part_masked():
    """The ratio the global route's Laplacian weight follows: the noise's variance over the image's variance where
    the mask says (a flat half left out raises the variance it is divided by)."""
    rng = np.random.default_rng(4)
    texture = ndimage.gaussian_filter(rng.standard_normal((32, 32, 32)), 2.0).astype(np.float32)
    texture *= 0.3 / texture.std()
    image = texture + rng.standard_normal(texture.shape).astype(np.float32) * 0.1
    flat = image.copy()
    flat[:16] = rng.standard_normal((16, 32, 32)).astype(np.float32) * 0.1  # noise only
    whole = 0.01 / float(image.var())
    assert noise_variance_ratio(image) == pytest.approx(whole, rel=0.08)
    assert noise_variance_ratio(image, noise=0.1) == pytest.approx(whole, rel=1e-5)
    upper = np.zeros(image.shape, bool)
    upper[16:] = True
    assert noise_variance_ratio(flat, mask=upper, noise=0.1) == pytest.approx(0.01 / float(flat[16:].var()), rel=1e-5)
    assert noise_variance_ratio(flat, noise=0.1) > 1.5 * noise_variance_ratio(flat, mask=upper, noise=0.1)


@pytest.mark.parametrize("image, kw, words", [
    (np.ones((8, 8, 8)), {"noise": 0.1}, "constant within the mask"),
    (np.zeros((8, 8, 8)), {"noise": 0.1, "mask": np.zeros((8, 8, 8), bool)}, "mask selects 0 voxels"),
    (np.zeros((8, 8, 8)), {"noise": 0.1, "mask": np.ones((4, 8, 8), bool)}, "mask has shape (4, 8, 8)"),
])
def test_noise_variance_ratio_bad_input(image, kw, words):
    with pytest.raises(InputError) as err:
        noise_variance_ratio(image, **kw)
    assert words in str(err.value)
