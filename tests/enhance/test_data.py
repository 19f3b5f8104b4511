"""Up-sampling, scaling, masks and pair preparation."""

from __future__ import annotations

import numpy as np
import pytest

from tomo4d import InputError, Volume
from tomo4d.enhance.data import (
    Scaling,
    check_voxel_sizes,
    fov_mask,
    prepare_pair,
    upsample2_axis,
    upsample2_xy,
    upsample2_z_window,
)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_upsample_reproduces_linear_ramps_away_from_edges(axis):
    shape = [6, 7, 8]
    ramp = np.arange(shape[axis], dtype=np.float32) * 3.0 + 1.0
    a = np.broadcast_to(ramp.reshape([-1 if i == axis else 1 for i in range(3)]), shape)
    up = upsample2_axis(a, axis)
    j = np.arange(2 * shape[axis])
    expect = (j / 2 - 0.25) * 3.0 + 1.0  # output voxel j sits at input coordinate j/2 - 0.25
    got = np.moveaxis(up, axis, 0)[:, 0, 0] if axis == 0 else np.moveaxis(up, axis, 0)[:, 0, 0]
    inner = slice(4, -4)
    np.testing.assert_allclose(got[inner], expect[inner], atol=1e-4)
    assert up.dtype == np.float32


def test_upsample_then_bin_is_close_to_identity_for_smooth_images():
    yy, xx = np.mgrid[:32, :32]
    a = np.sin(yy / 5.0) + np.cos(xx / 7.0)
    up = upsample2_xy(a)
    back = up.reshape(32, 2, 32, 2).mean((1, 3))
    assert np.abs(back - a)[2:-2, 2:-2].max() < 0.01


def test_z_window_matches_axis_upsampling():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(7, 5, 4)).astype(np.float32)
    up = upsample2_axis(a, 0)
    n = a.shape[0]
    for k in range(n):
        ks = [min(max(k + d, 0), n - 1) for d in (-2, -1, 0, 1, 2)]
        even, odd = upsample2_z_window([a[i] for i in ks], k, n)
        np.testing.assert_allclose(even, up[2 * k], atol=1e-5)
        np.testing.assert_allclose(odd, up[2 * k + 1], atol=1e-5)


def test_scaling_round_trip_and_percentiles():
    rng = np.random.default_rng(1)
    a = rng.normal(1000, 50, size=(4, 30, 30)).astype(np.float32)
    s = Scaling.from_data(a, percentiles=(1, 99))
    f = s.forward(a)
    assert abs(np.percentile(f, 1) + 1) < 0.01 and abs(np.percentile(f, 99) - 1) < 0.01
    np.testing.assert_allclose(s.inverse(f), a, rtol=1e-5)


def test_fov_mask_is_inscribed_disc():
    m = fov_mask((20, 30))
    assert m[10, 15] and not m[0, 0] and not m[10, 0]
    assert abs(m.sum() - np.pi * 10 ** 2) / (np.pi * 100) < 0.1


@pytest.mark.parametrize("lq_vs,hq_vs", [((100, 100, 100), (100, 100, 100)), ((100, 100, 100), (50, 50, 40)),
                                         ((50, 50, 50), (100, 100, 100))])
def test_mismatched_voxel_sizes_are_rejected(lq_vs, hq_vs):
    with pytest.raises(InputError, match="voxel sizes do not match"):
        check_voxel_sizes(lq_vs, hq_vs)


def test_prepare_pair_aligned(synth_pair):
    lq, hq = synth_pair
    pr = prepare_pair(lq, hq, register=False)
    assert pr.lq.shape == pr.hq.shape == pr.mask.shape
    np.testing.assert_allclose(pr.phi[:3, 3], 0, atol=1e-9)
    assert len(pr.val_slices) == 2 and set(pr.train_slices).isdisjoint(pr.val_slices)
    # the aligned LQ correlates with HQ
    m = pr.mask
    assert np.corrcoef(pr.lq[m], pr.hq[m])[0, 1] > 0.8


def test_prepare_pair_finds_hq_inside_larger_lq():
    from _synth import degrade, spheres

    big = spheres((32, 128, 128), seed=3)
    lq = degrade(big, sigma=1.2, noise=0.01)  # (16, 64, 64) at 100 nm covers 2x the HQ field per axis
    off = (8, 40, 24)
    hq = big[off[0]:off[0] + 16, off[1]:off[1] + 64, off[2]:off[2] + 64]
    pr = prepare_pair(Volume(lq, 100.0), Volume(hq, 50.0), register=False, fov=False)
    # coarse search (binned) finds the corner within 2 voxels
    assert np.abs(pr.phi[:3, 3] - np.asarray(off)).max() <= 2


def test_non_overlapping_pair_is_rejected(synth_pair):
    lq, hq = synth_pair
    noise = np.random.default_rng(5).integers(0, 65535, lq.shape).astype(np.uint16)
    with pytest.raises(InputError, match="do not overlap"):
        prepare_pair(Volume(noise, 100.0), hq, register=False)


@pytest.fixture(scope="module")
def phantom64():
    from tomo4d.phantom import make_experiment

    return make_experiment(shape=(64, 64, 64), n_steps=2, seed=0)


def test_prepare_pair_registers_phantom_pair_to_subpixel(phantom64):
    """The phantom's LQ (x2 up-sampled) is registered onto HQ within 1 px and 0.5 deg of the known transform.

    Measured (64^3 phantom, seed 0): max error over the HQ volume 0.71 px (mean 0.61 px), rotation
    error 0.24 deg; before the fix the registration did not converge (affine z scale 0.87) and the
    coarse translation was kept (1.34 px).  The 64^3 pair holds few, small particles (LQ blur ~6 HQ px),
    so the rigid solution is kept (the affine one stretches 3 %).
    """
    from tomo4d.register.phi import polar_decomposition, rotation_vector_deg

    exp = phantom64
    lq, hq = exp.lq.compute(), exp.hq.compute()
    pr = prepare_pair(lq, hq)
    assert pr.registration.startswith("tomo4d.register")
    off = np.asarray(exp.truth.hq_offset_nm) / 50.0  # HQ corner in up-sampled LQ voxels (50 nm)
    ph = np.asarray(exp.lq_to_hq_phi)
    c = (np.asarray(hq.shape, float) - 1) / 2
    pts = np.stack(np.meshgrid(*[np.linspace(0, n - 1, 5) for n in hq.shape], indexing="ij"), -1).reshape(-1, 3)
    true = (pts - c) @ ph[:3, :3].T + c + ph[:3, 3] + off
    est = pts @ pr.phi[:3, :3].T + pr.phi[:3, 3]
    err = np.linalg.norm(true - est, axis=1)
    rot, _ = polar_decomposition(np.linalg.solve(ph[:3, :3], pr.phi[:3, :3]))
    assert err.max() < 1.0, err.max()
    assert np.linalg.norm(rotation_vector_deg(rot)) < 0.5
