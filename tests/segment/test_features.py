"""Multiscale features: known values on analytic images, exact chunking with the halo."""

from __future__ import annotations

import numpy as np
import pytest

from tomo4d.errors import InputError
from tomo4d.segment import FeatureSpec, compute_features, feature_halo, feature_names, features_of_slab


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("kinds", [("intensity",), ("hessian", "texture"), ("intensity", "gradient", "laplacian",
                                                                           "hessian", "texture")])
def test_names_match_channels(ndim, kinds):
    spec = FeatureSpec(sigmas=(1.0, 2.0), kinds=kinds, ndim=ndim)
    f = compute_features(np.random.default_rng(0).normal(size=(9, 12, 13)), spec)
    assert f.shape == (9, 12, 13, spec.n_features)
    assert len(feature_names(spec)) == spec.n_features
    per_sigma = sum(ndim if k in ("hessian", "texture") else 1 for k in kinds)
    assert spec.n_features == 1 + 2 * per_sigma
    assert f.dtype == np.float32


def _quadratic(shape=(24, 40, 40)):
    z, y, x = np.meshgrid(*[np.arange(s, dtype=np.float64) - s // 2 for s in shape], indexing="ij")
    return 0.5 * (1.0 * x**2 + 2.0 * y**2 + 3.0 * z**2), (z, y, x)


@pytest.mark.parametrize("sigma", [1.0, 2.0])
def test_analytic_values_3d(sigma):
    """A quadratic form has a constant Hessian diag(3, 2, 1): eigenvalues 1, 2, 3; Laplacian 6."""
    img, (z, y, x) = _quadratic()
    spec = FeatureSpec(sigmas=(sigma,), kinds=("gradient", "laplacian", "hessian"), ndim=3, truncate=4.0,
                       include_raw=False)
    f = compute_features(img, spec)
    c = (slice(10, 14), slice(16, 24), slice(16, 24))  # far from the borders
    grad_true = np.sqrt((1.0 * x) ** 2 + (2.0 * y) ** 2 + (3.0 * z) ** 2)
    np.testing.assert_allclose(f[c + (0,)], grad_true[c], rtol=2e-3, atol=2e-3)
    np.testing.assert_allclose(f[c + (1,)], 6.0, rtol=1e-2)
    for k, ev in enumerate((1.0, 2.0, 3.0)):
        np.testing.assert_allclose(f[c + (2 + k,)], ev, rtol=1e-2)


def test_slicewise_ignores_z_and_matches_2d():
    img, _ = _quadratic((6, 40, 40))
    spec = FeatureSpec(sigmas=(1.5,), kinds=("laplacian", "hessian"), ndim=2, truncate=4.0, include_raw=False)
    f3 = compute_features(img, spec)
    c = (slice(None), slice(12, 28), slice(12, 28))
    np.testing.assert_allclose(f3[c + (0,)], 3.0, rtol=2e-2)  # in-plane Laplacian 1 + 2
    np.testing.assert_allclose(f3[c + (1,)], 1.0, rtol=2e-2)
    np.testing.assert_allclose(f3[c + (2,)], 2.0, rtol=2e-2)
    f2 = compute_features(img[4], spec)
    np.testing.assert_array_equal(f2, f3[4])


def test_texture_of_stripes():
    """Structure tensor of stripes along x: one zero and one positive eigenvalue (2D)."""
    y = np.arange(64, dtype=np.float32)
    img = np.tile(np.sin(2 * np.pi * y / 8.0)[:, None], (1, 64))
    f = compute_features(img, FeatureSpec(sigmas=(2.0,), kinds=("texture",), include_raw=False))
    c = (slice(16, 48), slice(16, 48))
    assert np.abs(f[c + (0,)]).max() < 1e-4
    assert f[c + (1,)].min() > 0.05


def test_anisotropic_voxels_scale_sigma():
    """With voxels twice as long along z, the z kernel is half as wide (in voxels)."""
    spec = FeatureSpec.for_voxel_size((100.0, 50.0, 50.0), sigmas=(2.0,), kinds=("intensity",), ndim=3,
                                      truncate=3.0)
    assert spec.voxel_ratio == (2.0, 1.0, 1.0)
    assert feature_halo(spec)[0] == 3 and feature_halo(spec)[1] == 6
    impulse = np.zeros((21, 21, 21), np.float32)
    impulse[10, 10, 10] = 1.0
    g = compute_features(impulse, spec)[..., 1]
    prof_z, prof_x = g[:, 10, 10], g[10, 10, :]
    var = lambda p: float(np.sum(p * (np.arange(21) - 10) ** 2) / np.sum(p))  # noqa: E731
    assert var(prof_z) == pytest.approx(1.0, rel=0.05)
    assert var(prof_x) == pytest.approx(4.0, rel=0.05)


@pytest.mark.parametrize("bounds", [(0, 5), (7, 13), (20, 28), (27, 28)])
def test_slab_with_halo_is_exact(bounds):
    rng = np.random.default_rng(1)
    vol = rng.normal(size=(28, 24, 20)).astype(np.float32)
    spec = FeatureSpec.for_voxel_size((80.0, 50.0, 50.0), sigmas=(0.7, 2.0), ndim=3)
    full = compute_features(vol, spec)
    z0, z1 = bounds
    np.testing.assert_allclose(features_of_slab(vol, z0, z1, spec), full[z0:z1], atol=1e-5, rtol=1e-5)


def test_slab_without_enough_halo_differs():
    """The control: cutting the context short changes interior features (so the halo matters)."""
    rng = np.random.default_rng(2)
    vol = rng.normal(size=(28, 24, 20)).astype(np.float32)
    spec = FeatureSpec(sigmas=(2.0,), ndim=3)
    full = compute_features(vol, spec)
    hz = feature_halo(spec)[0]
    short = compute_features(vol[10 - hz // 2: 16 + hz // 2], spec)[hz // 2: hz // 2 + 6]
    assert np.abs(short - full[10:16]).max() > 1e-3


def test_slab_reads_lazy_input():
    import dask.array as da

    rng = np.random.default_rng(3)
    vol = rng.normal(size=(12, 16, 16)).astype(np.float32)
    spec = FeatureSpec(sigmas=(1.0,), ndim=3)
    lazy = da.from_array(vol, chunks=(2, 16, 16))
    np.testing.assert_allclose(features_of_slab(lazy, 4, 8, spec), compute_features(vol, spec)[4:8], atol=1e-5)


@pytest.mark.parametrize("kwargs, word", [
    ({"sigmas": ()}, "sigmas"), ({"sigmas": (-1.0,)}, "sigmas"), ({"kinds": ("colour",)}, "kinds"),
    ({"ndim": 4}, "ndim"), ({"truncate": 0.5}, "truncate"), ({"voxel_ratio": (1, 1)}, "voxel_ratio"),
])
def test_bad_spec(kwargs, word):
    with pytest.raises(InputError, match=word):
        FeatureSpec(**kwargs)


def test_3d_features_need_volume():
    with pytest.raises(InputError, match="ndim=2"):
        compute_features(np.zeros((8, 8)), FeatureSpec(ndim=3))


def test_closed_form_3x3_eigenvalues_match_lapack():
    """The numba closed-form solver agrees with numpy.linalg.eigvalsh (float64) to 1e-6 of the
    largest eigenvalue magnitude, also on diagonal, degenerate (all equal) and tiny matrices."""
    from tomo4d.segment._eig import eigvalsh3

    rng = np.random.default_rng(0)
    a = rng.normal(size=(20000, 6)).astype(np.float32)
    a[:500, 3:] = 0.0             # diagonal
    a[500:1000, :3] = 2.0         # 2 I: triple eigenvalue
    a[500:1000, 3:] = 0.0
    a[1000:1500] *= 1e-6          # tiny
    m = np.zeros((a.shape[0], 3, 3))
    for k, (i, j) in enumerate([(0, 0), (1, 1), (2, 2), (0, 1), (0, 2), (1, 2)]):
        m[:, i, j] = m[:, j, i] = a[:, k]
    ref = np.linalg.eigvalsh(m)
    got = np.stack(eigvalsh3(*a.T), axis=-1)
    assert got.dtype == np.float32 and got.shape == ref.shape
    scale = np.maximum(np.abs(ref).max(axis=-1, keepdims=True), 1e-30)
    assert np.max(np.abs(got - ref) / scale) < 1e-6
    assert np.all(np.diff(got, axis=-1) >= 0)


@pytest.mark.parametrize("spec", [FeatureSpec(), FeatureSpec(ndim=2), FeatureSpec(sigmas=(0.7, 3.0), ndim=3)])
@pytest.mark.parametrize("threads", [1, 2, 3, 7])
def test_slab_features_in_parts_are_the_whole_volumes_bits(spec, threads):
    """A slab cut into parts computed side by side (each with its own halo) holds exactly the whole
    volume's features, stored channel by channel."""
    vol = np.random.default_rng(0).normal(size=(40, 33, 29)).astype(np.float32)
    got = features_of_slab(vol, 5, 31, spec, threads=threads)
    np.testing.assert_array_equal(got, compute_features(vol, spec)[5:31])
    assert all(got[..., k].flags.c_contiguous for k in range(spec.n_features))
