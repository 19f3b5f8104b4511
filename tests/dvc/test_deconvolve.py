"""Richardson-Lucy deconvolution before correlation: sharper edges that re-blur into the data."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from tomo4d.dvc import boundary_margin_px, correlate_global, deconvolve, slab_volume_mean
from tomo4d.errors import InputError


def _cube(noise: float, seed: int = 0):
    x = np.zeros((40, 40, 40), np.float32)
    x[10:30, 10:30, 10:30] = 1000.0
    rng = np.random.default_rng(seed)
    return x, (ndimage.gaussian_filter(x, 2.0) + 200.0 + rng.normal(0, noise, x.shape)).astype(np.float32)


def test_deconvolve_sharpens_and_reblurs_into_the_data():
    truth, blurred = _cube(noise=10.0)
    d = deconvolve(blurred, psf_sigma_px=2.0, iterations=15)
    assert d.dtype == np.float32 and d.shape == blurred.shape
    # the forward model: the deconvolved scan blurred by the PSF is the data (noise 10), far closer than the
    # blurred scan blurred again (no deconvolution), faces of the volume included (reflected margins)
    rms = lambda a: float(np.sqrt(np.mean((ndimage.gaussian_filter(a, 2.0) - blurred) ** 2)))  # noqa: E731
    assert rms(d) < 15.0 and rms(d) < 0.5 * rms(blurred)
    # the edge is steeper: the largest grey step across the cube face grows by >= 1.5x (truth: a step)
    step = lambda a: float(np.max(np.abs(np.diff(a[20, 20, 4:16]))))  # noqa: E731
    assert step(d) > 1.5 * step(blurred)
    # grey levels kept: the mean inside and outside
    assert float(d[14:26, 14:26, 14:26].mean()) == pytest.approx(1200.0, rel=0.05)
    assert float(d[:4].mean()) == pytest.approx(200.0, abs=30.0)


def test_deconvolve_refuses_bad_options():
    _, blurred = _cube(noise=0.0)
    with pytest.raises(InputError, match="psf_sigma_px"):
        deconvolve(blurred, psf_sigma_px=0.0)
    with pytest.raises(InputError, match="iterations"):
        deconvolve(blurred, psf_sigma_px=2.0, iterations=0)
    bad = blurred.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(InputError, match="volume"):
        deconvolve(bad, psf_sigma_px=2.0)


def test_interior_axes_leave_the_faces_out_but_keep_the_electrode():
    """boundary_margin_px at every face (at most a quarter of an axis); at z only outside the band."""
    from tomo4d.dvc import interior_axes

    kz, ky, kx = interior_axes((80, 60, 12), 2.0)           # margin 6; x capped at 12 // 4
    assert np.flatnonzero(kz)[[0, -1]].tolist() == [6, 73] and np.flatnonzero(ky)[[0, -1]].tolist() == [6, 53]
    assert np.flatnonzero(kx)[[0, -1]].tolist() == [3, 8]
    kz = interior_axes((80, 60, 12), 2.0, band=(4, 75))[0]  # an electrode 4 px from the bottom face
    assert np.flatnonzero(kz)[[0, -1]].tolist() == [4, 74]
    with pytest.raises(InputError, match="shape"):
        interior_axes((80, 60), 2.0)


def test_boundary_margin_is_the_psf_half_width():
    """ceil(3 sigma), at least 1 (sessions 35-36: with the deconvolution's reflection the iterations' reach, 20 px on
    the LQ phantom, read det F - 1 down to 0.052 low; the half-width, the weakly supported nodes held, within 0.018)."""
    assert boundary_margin_px(2.8) == 9 and boundary_margin_px(3.13) == 10 and boundary_margin_px(0.1) == 1
    assert boundary_margin_px(1.5) == 5
    with pytest.raises(InputError, match="psf_sigma_px"):
        boundary_margin_px(0.0)


@pytest.mark.slow
def test_deconvolved_faces_pin_the_field_unless_left_out():
    """A crop of a larger textured sample expanded 2 % in-plane, blurred (the scanner's FOV: nearest at the faces),
    noisy, both scans deconvolved: the faces are the same in both and hold the global DVC's lateral field still
    (in-plane strain ~0.014 of 0.0198); leaving boundary_margin_px at the lateral faces out of the mask measures it (~0.019)."""
    rng = np.random.default_rng(0)
    n, pad = 40, 10
    base = ndimage.gaussian_filter(rng.standard_normal((n + 2 * pad,) * 3), 1.2)
    g = np.indices((n, n, n), dtype=float)
    c = (n - 1) / 2

    def scan(scale):
        v = ndimage.map_coordinates(base, [g[0] + pad, c + (g[1] - c) / scale + pad, c + (g[2] - c) / scale + pad],
                                    order=3, mode="nearest")
        v = ndimage.gaussian_filter(v / base.std(), 2.0, mode="nearest") + rng.standard_normal(v.shape) * 0.01
        return deconvolve(v, psf_sigma_px=2.0, iterations=10)

    ref, dfm = scan(1.0), scan(1.02)
    m = boundary_margin_px(2.0)
    inner = np.zeros(ref.shape, bool)
    inner[:, m:-m, m:-m] = True  # the lateral faces, as the runner
    truth = np.log(1.02)
    for mask, lo, hi in ((None, -1.0, truth - 0.004), (inner, truth - 0.0015, truth + 0.0015)):
        f = correlate_global(ref, dfm, node_spacing=4, levels=1, mask=mask, threads=1)
        r = slab_volume_mean(f, 0, n, components=("hencky_yy", "hencky_xx"))
        assert all(lo < v < hi for v in r.values), (mask is None, r.values)
