"""Residual maps and the noise floor."""

from __future__ import annotations

import numpy as np
import pytest

from tomo4d.dvc import correlate, noise_floor, residual_map
from tomo4d.errors import InputError


def test_residual_reveals_local_change_only(texture, warp):
    shift = np.array([0.8, -0.5, 0.3])[:, None, None, None]
    dfm = warp(texture, lambda x: np.zeros_like(x) + shift)
    rng = np.random.default_rng(0)
    noisy_ref = texture + rng.normal(0, 20, texture.shape).astype(np.float32)
    changed = dfm + rng.normal(0, 20, texture.shape).astype(np.float32)
    changed[28:34, 28:34, 28:34] += 3000.0  # grey-level change not due to motion ("lithiation")
    field = correlate(noisy_ref, changed, node_spacing=8, half_window=8)
    floor = noise_floor(texture + rng.normal(0, 20, texture.shape).astype(np.float32),
                        texture + rng.normal(0, 20, texture.shape).astype(np.float32))
    assert 0 < floor < 20
    res = residual_map(noisy_ref, changed, field, noise=floor)
    spot = res.residual[27:34, 27:34, 27:34].mean()
    far = np.median(res.residual[5:20, 5:20, 40:55])
    assert spot > 500 and far < 60, (spot, far)
    ident = residual_map(noisy_ref, changed, field.with_(phi=np.tile(np.eye(4), (field.n_nodes, 1, 1))))
    assert ident.mean_before_floor > 3 * res.mean_before_floor
    assert 0 < res.fraction_above_floor < 1 and res.noise_floor == pytest.approx(floor)


def test_residual_bad_input(texture):
    with pytest.raises(InputError, match="DisplacementField"):
        residual_map(texture, texture, object())
    with pytest.raises(InputError, match="statistic"):
        noise_floor(texture, texture, statistic="max")


def test_residual_of_a_field_without_usable_node_is_a_clear_error():
    from tomo4d.dvc import DisplacementField, NodeStatus, node_grid, residual_map
    from tomo4d.errors import InputError

    vol = np.random.default_rng(0).normal(size=(24, 24, 24)).astype(np.float32)
    pos, gs = node_grid(vol.shape, node_spacing=8, half_window=4)
    failed = DisplacementField(pos.astype(float), np.tile(np.eye(4), (len(pos), 1, 1)),
                               np.full(len(pos), NodeStatus.DIVERGED, np.int8), grid_shape=gs,
                               node_spacing_px=(8,) * 3, half_window_px=(4,) * 3)
    with pytest.raises(InputError, match="no usable node"):
        residual_map(vol, vol, failed)
