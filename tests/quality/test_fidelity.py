import numpy as np
import pytest
from quality_synth import texture
from scipy import ndimage
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from tomo4d import InputError, Volume
from tomo4d.quality import fov_mask, psnr, psnr_slices, ssim, ssim_map, ssim_slices


def _pair(shape=(96, 96), noise=0.05, seed=1):
    rng = np.random.default_rng(seed)
    ref = (texture(max(shape), seed=seed)[: shape[-2], : shape[-1]] * 4000 + 1000)
    if len(shape) == 3:
        ref = np.stack([np.roll(ref, k, axis=1) for k in range(shape[0])])
    img = ref + rng.normal(0, noise * 4000, ref.shape)
    return ref.astype(np.float32), img.astype(np.float32)


@pytest.mark.parametrize("shape", [(96, 96), (12, 40, 48)])
def test_psnr_matches_skimage(shape):
    ref, img = _pair(shape)
    dr = float(ref.max() - ref.min())
    expect = peak_signal_noise_ratio(ref.astype(np.float64), img.astype(np.float64), data_range=dr)
    assert psnr(ref, img) == pytest.approx(expect, abs=1e-4)  # default data range = reference max - min
    assert psnr(ref, img, data_range=5000) == pytest.approx(
        peak_signal_noise_ratio(ref.astype(np.float64), img.astype(np.float64), data_range=5000), abs=1e-4)


@pytest.mark.parametrize("kw", [{}, {"gaussian_weights": True, "sigma": 1.5, "use_sample_covariance": False},
                                {"win_size": 11}])
@pytest.mark.parametrize("shape", [(96, 96), (16, 40, 48)])
def test_ssim_matches_skimage(shape, kw):
    ref, img = _pair(shape)
    expect = structural_similarity(ref.astype(np.float64), img.astype(np.float64),
                                   data_range=float(ref.max() - ref.min()), **kw)
    assert ssim(ref, img, **kw) == pytest.approx(expect, abs=2e-5)


def test_ssim_map_matches_skimage_full():
    ref, img = _pair()
    dr = float(ref.max() - ref.min())
    _, full = structural_similarity(ref.astype(np.float64), img.astype(np.float64), data_range=dr, full=True)
    np.testing.assert_allclose(ssim_map(ref, img), full, atol=5e-5)


def test_uint16_input_large_offset_is_accurate():
    # float32 sums of squares of uint16 values would cancel; the offset trick keeps 1e-5 accuracy
    ref, img = _pair()
    ref16 = (ref + 60000 - ref.max()).clip(0, 65535).astype(np.uint16)
    img16 = (img + 60000 - ref.max()).clip(0, 65535).astype(np.uint16)
    expect = structural_similarity(ref16.astype(np.float64), img16.astype(np.float64),
                                   data_range=float(ref16.max()) - float(ref16.min()))
    assert ssim(ref16, img16) == pytest.approx(expect, abs=2e-5)


def test_masks():
    ref, img = _pair()
    m = fov_mask(ref.shape, margin_px=5)
    dr = float(ref[m].max() - ref[m].min())
    mse = np.mean((ref[m].astype(np.float64) - img[m]) ** 2)
    assert psnr(ref, img, mask=m) == pytest.approx(10 * np.log10(dr * dr / mse), abs=1e-4)
    _, full = structural_similarity(ref.astype(np.float64), img.astype(np.float64), data_range=dr, full=True)
    inner = np.zeros_like(m)
    inner[3:-3, 3:-3] = True
    assert ssim(ref, img, mask=m) == pytest.approx(full[m & inner].mean(), abs=5e-5)
    # outside the mask nothing counts: garbage there changes nothing
    img2 = img.copy()
    img2[~fov_mask(ref.shape, margin_px=0)] = 0
    assert psnr(ref, img2, mask=m) == pytest.approx(psnr(ref, img, mask=m))


def test_fov_mask_geometry():
    m = fov_mask((101, 101))
    assert m[50, 50] and m[50, 0] and not m[0, 0]
    assert m.sum() == pytest.approx(np.pi * 50.5 ** 2, rel=0.02)
    m3 = fov_mask((4, 64, 80), radius_px=20, margin_px=2)
    assert m3.shape == (4, 64, 80) and m3.sum() == pytest.approx(4 * np.pi * 18 ** 2, rel=0.03)
    with pytest.raises(InputError):
        fov_mask((10, 10), radius_px=2, margin_px=3)


def test_identical_and_monotonic():
    ref, _ = _pair()
    assert psnr(ref, ref) == float("inf")
    assert ssim(ref, ref) == pytest.approx(1.0, abs=1e-6)
    rng = np.random.default_rng(0)
    noisy = [ref + rng.normal(0, s, ref.shape).astype(np.float32) for s in (20, 80, 320, 1280)]
    p = [psnr(ref, n) for n in noisy]
    s = [ssim(ref, n) for n in noisy]
    assert all(a > b for a, b in zip(p, p[1:])) and all(a > b for a, b in zip(s, s[1:]))
    blurred = [ndimage.gaussian_filter(ref, b) for b in (0.5, 1, 2, 4)]
    s = [ssim(ref, b) for b in blurred]
    assert all(a > b for a, b in zip(s, s[1:]))


def test_per_slice_statistics():
    ref, img = _pair((6, 40, 48))
    dr = float(ref.max() - ref.min())
    st = ssim_slices(ref, img)
    assert st.n_slices == 6 and st.slices == tuple(range(6))
    assert st.values[2] == pytest.approx(ssim(ref[2], img[2], data_range=dr), abs=1e-6)
    assert st.mean == pytest.approx(np.mean(st.values)) and st.min <= st.mean <= st.max
    ps = psnr_slices(Volume(ref), Volume(img), slices=[0, 5])
    assert ps.values[1] == pytest.approx(psnr(ref[5], img[5], data_range=dr), abs=1e-4)
    with pytest.raises(InputError, match="3D"):
        ssim_slices(ref[0], img[0])


def test_bad_inputs():
    ref, img = _pair()
    with pytest.raises(InputError, match="shape"):
        psnr(ref, img[:-1])
    with pytest.raises(InputError, match="constant"):
        psnr(np.ones((32, 32)), img[:32, :32])
    with pytest.raises(InputError, match="constant"):
        ssim(np.ones((32, 32)), img[:32, :32])
    nan = img.copy()
    nan[5, 5] = np.nan
    with pytest.raises(InputError, match="NaN"):
        ssim(ref, nan)
    with pytest.raises(InputError, match="no pixel"):
        psnr(ref, img, mask=np.zeros(ref.shape, bool))
    with pytest.raises(InputError, match="mask has shape"):
        ssim(ref, img, mask=np.ones((5, 5), bool))
    with pytest.raises(InputError, match="win_size"):
        ssim(ref, img, win_size=4)
    with pytest.raises(InputError, match="smaller than the SSIM window"):
        ssim(ref[:5, :5], img[:5, :5])
    with pytest.raises(InputError, match="data_range"):
        psnr(ref, img, data_range=0)
