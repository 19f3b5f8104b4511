"""flag_low_texture: nodes whose window is noise only are LOW_TEXTURE, textured ones stay measured."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from tomo4d.dvc import DisplacementField, NodeStatus, flag_low_texture, node_grid
from tomo4d.errors import InputError


def _scan(noise=0.06, seed=3):
    """Blurred texture (std ~0.05, about the noise: the LQ anode's SNR ~1) in z < 24, nothing above; white noise."""
    rng = np.random.default_rng(seed)
    a = ndimage.gaussian_filter(rng.normal(size=(48, 32, 32)), 2.0)
    a = a / a.std() * 0.05
    a[24:] = 0.0
    return (a + rng.normal(scale=noise, size=a.shape)).astype(np.float32)


def _field(shape=(48, 32, 32)):
    pos, gs = node_grid(shape, node_spacing=4, half_window=4)
    n = len(pos)
    return DisplacementField(pos.astype(float), np.tile(np.eye(4), (n, 1, 1)), np.zeros(n, np.int8), grid_shape=gs,
                             node_spacing_px=(4, 4, 4), half_window_px=(4, 4, 4))


def test_noise_only_windows_flagged():
    f = _field()
    g = flag_low_texture(f, _scan(), noise_sigma=0.06)
    z = f.positions_zyx_px[:, 0]
    flagged = g.status == NodeStatus.LOW_TEXTURE
    assert flagged[z >= 29].mean() > 0.95     # windows wholly in the noise (3 standard errors: a few stay)
    assert flagged[z <= 18].mean() < 0.05     # windows wholly in the texture (SNR ~0.7; measured 2 of 108)
    assert g.notes["low_texture"] == int(flagged.sum())
    assert not g.usable[flagged].any() and np.array_equal(f.status, np.zeros(f.n_nodes, np.int8))  # a new field
    # an explicit threshold; a mask that keeps only the textured half: the noise windows have no voxel left
    assert (flag_low_texture(f, _scan(), noise_sigma=0.06, min_snr=0.0).status[z <= 18] == 4).mean() < 0.01
    keep = np.zeros((48, 32, 32), bool)
    keep[:20] = True
    h = flag_low_texture(f, _scan(), noise_sigma=0.06, mask=keep)
    assert not (h.status == NodeStatus.LOW_TEXTURE)[z >= 29].any()


def test_only_usable_nodes_and_bad_input():
    f = _field()
    st = f.status.copy()
    st[:] = NodeStatus.OUTSIDE_MASK
    g = flag_low_texture(f.with_(status=st), _scan(), noise_sigma=0.06)
    assert (g.status == NodeStatus.OUTSIDE_MASK).all() and g.notes["low_texture"] == 0
    # a field that already has LOW_TEXTURE nodes (a composed increment inherits its first pair's): all are counted
    st[:] = NodeStatus.CONVERGED
    st[:5] = NodeStatus.LOW_TEXTURE
    z = f.positions_zyx_px[:, 0]
    h = flag_low_texture(f.with_(status=st), _scan(), noise_sigma=0.06)
    assert h.notes["low_texture"] == int((h.status == NodeStatus.LOW_TEXTURE).sum()) > int((z >= 29).sum()) * 0.9
    again = flag_low_texture(h, _scan(), noise_sigma=0.06)
    assert again.notes["low_texture"] == h.notes["low_texture"] and np.array_equal(again.status, h.status)
    with pytest.raises(InputError, match="noise_sigma"):
        flag_low_texture(f, _scan(), noise_sigma=0.0)
    with pytest.raises(InputError, match="min_snr"):
        flag_low_texture(f, _scan(), noise_sigma=0.06, min_snr=-1)
