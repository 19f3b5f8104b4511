"""Local DVC: accuracy on the real snow volume and on textures, masks, failing nodes, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from tomo4d.dvc import NodeStatus, correlate, correlate_pyramid, node_grid
from tomo4d.errors import InputError
from tomo4d.register import make_phi


def _true_sine(pos):
    return np.stack([2.0 * np.sin(np.pi * pos[:, 0] / 100.0), 0 * pos[:, 0], 0 * pos[:, 0]], axis=1)


@pytest.mark.realdata
def test_snow_sine_field_accuracy(snow_sine):
    """Issue acceptance: spacing 10 / half-window 10, median error <= 0.03 px, all interior nodes converge."""
    ref, dfm = snow_sine
    field = correlate(ref, dfm, node_spacing=10, half_window=10)
    assert field.n_nodes == 512 and field.grid_shape == (8, 8, 8)
    err = np.linalg.norm(field.displacement_zyx_px - _true_sine(field.positions_zyx_px), axis=1)
    assert np.median(err) <= 0.015  # issue target 0.03; measured 0.007 with the curvature correction
    assert np.percentile(err, 95) < 0.03
    assert field.notes["curvature_correction"] is True
    assert field.converged.all(), field.status_counts()
    assert field.notes["n_replaced"] == 0 and field.notes["outliers"] == 0
    assert field.notes["nodes_per_second"] > 0


@pytest.mark.parametrize("order", [1, 3])
def test_texture_affine_field(texture, warp, order):
    """A homogeneous 3 % strain + translation: every node measures the same F and the right displacement."""
    f = np.array([[1.03, 0.01, 0.0], [0.0, 0.98, 0.0], [0.0, 0.0, 1.01]])
    c = np.array([30.0, 30.0, 30.0])
    t = np.array([0.6, -1.2, 0.3])

    def u(x):
        xc = x - c[:, None, None, None]
        return np.einsum("ij,j...->i...", f - np.eye(3), xc) + t[:, None, None, None]

    dfm = warp(texture, u)
    field = correlate(texture, dfm, node_spacing=8, half_window=8, order=order)
    pos = field.positions_zyx_px
    true = (pos - c) @ (f - np.eye(3)).T + t
    err = np.linalg.norm(field.displacement_zyx_px - true, axis=1)
    assert np.median(err) < (0.01 if order == 3 else 0.03)
    assert np.abs(np.median(field.F, axis=0) - f).max() < 2e-3
    assert (field.status == NodeStatus.CONVERGED).mean() > 0.95


def test_phi0_initial_guess_for_large_translation(texture, warp):
    dfm = warp(texture, lambda x: np.zeros_like(x) + np.array([7.0, -6.0, 5.0])[:, None, None, None])
    kw = dict(node_spacing=10, half_window=8, max_iterations=20, replace=False)
    no_guess = correlate(texture, dfm, **kw)
    # nodes whose displaced window stays inside the deformed volume (elsewhere it holds mirrored data)
    pos = no_guess.positions_zyx_px + (7, -6, 5)
    inside = np.all((pos - 8 >= 0) & (pos + 8 <= 59), axis=1)
    assert inside.sum() >= 8
    good = np.linalg.norm(no_guess.displacement_zyx_px - (7, -6, 5), axis=1) < 0.05
    assert (good & no_guess.converged)[inside].mean() < 0.5
    for extra in ({"phi0": make_phi(translation_px=(7, -6, 5))}, {"search_radius_px": 9}):
        field = correlate(texture, dfm, **kw, **extra)
        assert field.converged[inside].all()
        np.testing.assert_allclose(field.displacement_zyx_px[inside], np.tile([7, -6, 5], (inside.sum(), 1)),
                                   atol=0.05)


def test_failing_nodes_flagged_and_replaced(texture, warp):
    """Garbage in part of the deformed volume: those nodes fail or are outliers, are replaced and counted."""
    dfm = warp(texture, lambda x: np.zeros_like(x) + 0.5)
    rng = np.random.default_rng(3)
    dfm[:, :, 40:] = rng.normal(5000, 1000, dfm[:, :, 40:].shape)
    raw = correlate(texture, dfm, node_spacing=8, half_window=6, replace=False)
    bad = raw.positions_zyx_px[:, 2] > 46
    assert (raw.status[bad] != NodeStatus.CONVERGED).mean() > 0.5 or np.abs(
        raw.displacement_zyx_px[bad] - 0.5).max() > 0.5
    fixed = correlate(texture, dfm, node_spacing=8, half_window=6)
    n_rep = fixed.notes["n_replaced"]
    assert n_rep > 0 and (fixed.status == NodeStatus.INTERPOLATED).sum() == n_rep
    assert sum(fixed.notes["replaced"].values()) == n_rep
    good = fixed.positions_zyx_px[:, 2] < 30
    np.testing.assert_allclose(fixed.displacement_zyx_px[good], 0.5, atol=0.05)


def test_mask_and_texture_skip(texture):
    ref = texture.copy()
    ref[:, :, :20] = 5000.0  # flat: no texture
    mask = np.ones(ref.shape, bool)
    mask[:, :12, :] = False
    field = correlate(ref, ref, node_spacing=10, half_window=6, mask=mask)
    st = field.status
    assert (st == NodeStatus.OUTSIDE_MASK).any() and (st == NodeStatus.LOW_TEXTURE).any()
    assert np.abs(field.displacement_zyx_px[field.converged]).max() < 1e-3


def test_the_electrode_mask_removes_the_bias_of_windows_straddling_the_collector(texture, warp):
    """A rigid collector below z = 20 and an electrode stretched 20 % above it (a kink at the interface): the
    windows that straddle the interface average the two sides, so without a mask their nodes read u_z and F_zz
    off; with the mask on the electrode they see only it and read the electrode's own motion."""
    zc, e = 20.0, 0.2

    def kinked(p):
        return np.stack([e * np.maximum(p[0] - zc, 0.0), 0 * p[1], 0 * p[2]])

    dfm = warp(texture, kinked)
    mask = np.zeros(texture.shape, bool)
    mask[int(zc):] = True
    kw = dict(node_spacing=6, half_window=8, mask_fraction=0.3, curvature_correction=False, replace=False)
    plain = correlate(texture, dfm, **kw)
    masked = correlate(texture, dfm, mask=mask, **kw)
    z = plain.positions_zyx_px[:, 0]
    row = z == zc  # the electrode's first node row: its windows reach 8 px into the collector
    errors = {}
    for name, f in (("masked", masked), ("plain", plain)):
        ok = row & f.converged
        assert ok.sum() >= 40
        errors[name] = (np.median(np.abs(f.displacement_zyx_px[ok, 0])), np.median(np.abs(f.phi[ok, 0, 0] - 1 - e)))
    assert errors["masked"][0] < 0.01 and errors["masked"][1] < 0.005  # measured 0.001 px, F_zz 1.200
    assert errors["plain"][0] > 0.3 and errors["plain"][1] > 0.05  # measured 0.43 px, F_zz 1.098 (truth 1.2)


def test_pyramid_levels(texture, warp):
    dfm = warp(texture, lambda x: np.stack([1.5 * np.sin(np.pi * x[0] / 60), 0 * x[1] + 0.4, 0 * x[2]]))
    field = correlate_pyramid(texture, dfm, pyramid=(20, 14, 7))
    assert [lv["node_spacing_px"] for lv in field.notes["levels"]] == [20, 14, 7]
    assert field.node_spacing_px == (7, 7, 7)
    pos = field.positions_zyx_px
    true = np.stack([1.5 * np.sin(np.pi * pos[:, 0] / 60), 0 * pos[:, 0] + 0.4, 0 * pos[:, 0]], axis=1)
    err = np.linalg.norm(field.displacement_zyx_px - true, axis=1)
    assert np.median(err) < 0.05


def test_curvature_correction_removes_quadratic_bias():
    from tomo4d.dvc import DisplacementField, correct_curvature

    pos, gs = node_grid((80, 80, 80), node_spacing=10, half_window=10)
    pos = pos.astype(float)
    true = np.stack([0.001 * (pos[:, 0] - 40) ** 2, 0.002 * pos[:, 1] * pos[:, 2] / 10, 0 * pos[:, 0]], axis=1)
    biased = true.copy()
    biased[:, 0] += 0.5 * (10 * 11 / 3) * 0.002  # affine-window bias of u_z = 0.001 (z - 40)^2
    phi = np.tile(np.eye(4), (len(pos), 1, 1))
    phi[:, :3, 3] = biased
    field = DisplacementField(pos, phi, np.zeros(len(pos), np.int8), grid_shape=gs, node_spacing_px=(10,) * 3,
                              half_window_px=(10,) * 3)
    np.testing.assert_allclose(correct_curvature(field).displacement_zyx_px, true, atol=1e-9)


def test_node_grid_inside_volume():
    pos, gs = node_grid((100, 60, 41), node_spacing=(10, 10, 5), half_window=(10, 5, 5))
    assert gs == (8, 5, 7) and pos.shape == (8 * 5 * 7, 3)
    assert (pos - (10, 5, 5) >= 0).all() and (pos + (10, 5, 5) <= (99, 59, 40)).all()


@pytest.mark.parametrize("case, match", [
    ("shape", "same"), ("window", "half_window"), ("mask", "excludes every voxel"), ("nan", "NaN"),
    ("spacing", "node_spacing"), ("masked_out", "no node can be correlated"),
])
def test_bad_input(texture, case, match):
    ref, dfm, kw = texture, texture.copy(), {"node_spacing": 10, "half_window": 8}
    if case == "shape":
        dfm = texture[:, :-1]
    elif case == "window":
        kw["half_window"] = 40
    elif case == "mask":
        kw["mask"] = np.zeros(texture.shape, bool)
    elif case == "nan":
        dfm[0, 0, 0] = np.nan
    elif case == "spacing":
        kw["node_spacing"] = 0
    elif case == "masked_out":
        m = np.zeros(texture.shape, bool)
        m[0, 0, 0] = True
        kw["mask"] = m
    with pytest.raises(InputError, match=match):
        correlate(ref, dfm, **kw)
