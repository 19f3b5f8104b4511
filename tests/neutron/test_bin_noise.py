"""bin_to_grid (X-ray onto the neutron grid), estimate_noise_per_cm, JointPhases.to_columns."""

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from tomo4d import InputError
from tomo4d.neutron import bin_to_grid, estimate_noise_per_cm, segment_joint_phases


def test_bin_to_grid_is_the_block_mean_per_axis():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(9, 8, 13)).astype(np.float32)
    b = bin_to_grid(a, (3, 2, 4))
    assert b.shape == (3, 4, 3) and b.dtype == np.float32
    assert b[1, 2, 0] == pytest.approx(a[3:6, 4:6, 0:4].mean(), rel=1e-6)  # trailing x voxel dropped
    np.testing.assert_allclose(bin_to_grid(a[:8, :8, :8], 2), a[:8, :8, :8].reshape(4, 2, 4, 2, 4, 2).mean((1, 3, 5), dtype=float),
                               atol=1e-6)
    for bad in (0, (2, 2), 2.5, 20):
        with pytest.raises(InputError, match="bin_factor"):
            bin_to_grid(a, bad)


@pytest.mark.parametrize("sigma", [0.02, 0.1])
def test_noise_estimate_of_a_blurred_layered_volume(sigma):
    # layers of 0.1 .. 1.0 1/cm (a cell), blurred by 1.2 voxels, plus white noise: within 10 %
    rng = np.random.default_rng(1)
    z = np.repeat([0.1, 0.3, 1.0, 0.45, 0.12], 8)
    mu = gaussian_filter(np.broadcast_to(z[:, None, None], (40, 32, 32)).astype(float), 1.2)
    got = estimate_noise_per_cm(mu + rng.normal(0, sigma, mu.shape))
    assert got == pytest.approx(sigma, rel=0.10)
    assert estimate_noise_per_cm(mu) < 0.01  # structure alone: well below these noise levels
    with pytest.raises(InputError, match="NaN"):
        estimate_noise_per_cm(np.full((4, 4, 4), np.nan))
    with pytest.raises(InputError, match="shape"):
        estimate_noise_per_cm(np.zeros((4, 4)))


def test_joint_phase_columns():
    rng = np.random.default_rng(2)
    lab = rng.integers(0, 2, (16, 16, 16))
    a = np.where(lab, 1.0, 0.2) + rng.normal(0, 0.02, lab.shape)
    b = np.where(lab, 0.3, 2.0) + rng.normal(0, 0.05, lab.shape)
    cols = segment_joint_phases(a, b, n_phases=2, seed=0).to_columns()
    assert list(cols["phase"]) == [1, 2]
    np.testing.assert_allclose(cols["mean_b"], [0.3, 2.0], atol=0.01)  # sorted by the second (neutron) value
    np.testing.assert_allclose(cols["mean_a"], [1.0, 0.2], atol=0.01)
    np.testing.assert_allclose(cols["voxel_fraction"], [lab.mean(), 1 - lab.mean()], atol=1e-9)
    assert cols["weight"].sum() == pytest.approx(1.0)
