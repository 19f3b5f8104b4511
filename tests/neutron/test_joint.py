"""Joint X-ray/neutron phases: common grid + multimodal registration, histogram, Gaussian mixture (>= 95 %)."""

import numpy as np
import pytest
from neutron_synth import PHASES, joint_phantom
from scipy import stats

from tomo4d import InputError
from tomo4d._array import bin_volume
from tomo4d.neutron import (
    align_modalities,
    joint_histogram,
    resample_to_grid,
    segment_joint_phases,
    segmentation_accuracy,
)
from tomo4d.neutron.plot import joint_histogram_figure


def _majority2(lab):
    z, y, x = (s // 2 for s in lab.shape)
    b = lab.reshape(z, 2, y, 2, x, 2).transpose(0, 2, 4, 1, 3, 5).reshape(z, y, x, 8)
    return stats.mode(b, axis=-1).mode


def test_joint_segmentation_accuracy_at_least_95_percent():
    rng = np.random.default_rng(0)
    xray, neutron, truth = joint_phantom(rng, shift_px=(1, -2, 1))
    # the X-ray volume binned to the neutron voxel size is the fixed grid
    pair = align_modalities(bin_volume(xray, 2), neutron, fixed_voxel_size_nm=2000, moving_voxel_size_nm=2000)
    assert pair.registered
    assert np.allclose(pair.phi[:3, 3], [1, -2, 1], atol=0.25)
    phases = segment_joint_phases(pair.fixed, pair.moving, n_phases=4, seed=0)
    acc = segmentation_accuracy(phases.labels, _majority2(truth))
    assert acc >= 0.95, acc
    # phases sorted by neutron attenuation: pore, NMC, LLZO, Li metal
    expect = sorted(PHASES, key=lambda p: p[2])
    assert np.allclose(phases.means[:, 1], [p[2] for p in expect], atol=0.15)
    assert np.allclose(phases.means[:, 0], [p[1] for p in expect], atol=0.12)  # pores: partial volume
    assert phases.weights.sum() == pytest.approx(1.0)
    hist = joint_histogram(pair.fixed, pair.moving, bins=64)
    assert hist.counts.sum() > 0.99 * pair.fixed.size
    fig = joint_histogram_figure(hist, phases, phase_names=[p[0] for p in expect])
    assert len(fig.axes[0].patches) == 4


def test_without_registration_the_given_transform_is_used():
    rng = np.random.default_rng(1)
    xray, neutron, truth = joint_phantom(rng, shift_px=(0, 2, 0))
    phi = np.eye(4)
    phi[:3, 3] = [0, 2, 0]
    pair = align_modalities(bin_volume(xray, 2), neutron, fixed_voxel_size_nm=2000, moving_voxel_size_nm=2000, phi=phi)
    assert not pair.registered
    none = align_modalities(bin_volume(xray, 2), neutron, fixed_voxel_size_nm=2000, moving_voxel_size_nm=2000,
                            register=False)
    assert pair.nmi > none.nmi


def test_resample_to_grid_scales_and_keeps_the_origin():
    a = np.arange(4 * 6 * 8, dtype=np.float32).reshape(4, 6, 8)
    up = resample_to_grid(a, voxel_size_nm=200, target_voxel_size_nm=100)
    assert up.shape == (8, 12, 16)
    down = resample_to_grid(up, voxel_size_nm=100, target_voxel_size_nm=200)
    assert np.allclose(down[1:-1, 1:-1, 1:-1], a[1:-1, 1:-1, 1:-1], atol=1e-3)


def test_joint_errors():
    a = np.zeros((4, 5, 6))
    with pytest.raises(InputError, match="one grid"):
        joint_histogram(a, np.zeros((4, 5, 7)))
    with pytest.raises(InputError, match="n_phases"):
        segment_joint_phases(a, a, n_phases=0)
    with pytest.raises(InputError, match="3D"):
        align_modalities(np.zeros((4, 5)), a, fixed_voxel_size_nm=1, moving_voxel_size_nm=1)
    with pytest.raises(InputError, match="NaN"):
        align_modalities(a + np.nan, a, fixed_voxel_size_nm=1, moving_voxel_size_nm=1)
    assert segmentation_accuracy(np.array([1, 1, 2, 2]), np.array([5, 5, 7, 7])) == 1.0


def test_layered_cell_labels_layers_and_pores():
    from tomo4d.neutron.synthetic import layered_cell_labels

    lab = layered_cell_labels((20, 32, 32), rng=0, n_pores=4)
    assert lab.dtype == np.int16 and set(np.unique(lab)) == {1, 2, 3, 4}
    assert np.all(lab[8:14] == 3) and np.all(lab[14:18] == 2) and np.all(lab[18:] == 1)
    assert 0 < np.mean(lab[:8] == 1) < 0.5                      # pores cut into the cathode only
    assert np.array_equal(lab, layered_cell_labels((20, 32, 32), rng=0, n_pores=4))
    with pytest.raises(InputError, match="shape"):
        layered_cell_labels((4, 32, 32))


# -- number of phases by BIC -------------------------------------------------------------------------------

_BIC_MEANS = [(0.2, 0.5), (0.8, 0.6), (0.5, 2.0), (0.9, 1.8)]   # (X-ray grey, neutron mu 1/cm) of each phase


def _blob_phases(k, rng, shape=(20, 28, 28)):
    """k phases of equal volume as smooth random blobs, each with its (a, b) mean and Gaussian noise."""
    from scipy import ndimage as ndi

    f = ndi.gaussian_filter(rng.standard_normal(shape), 2.5)
    lab = np.searchsorted(np.quantile(f, np.linspace(0, 1, k + 1)[1:-1]), f).astype(np.int16) + 1
    m = np.asarray(_BIC_MEANS[:k])
    a = m[lab - 1, 0] + rng.normal(0, 0.06, shape)
    b = m[lab - 1, 1] + rng.normal(0, 0.15, shape)
    return a, b, lab


@pytest.mark.parametrize("k", [2, 3, 4])
def test_bic_chooses_the_number_of_phases(k):
    a, b, lab = _blob_phases(k, np.random.default_rng(10 + k))
    ph = segment_joint_phases(a, b, max_phases=6, n_init=1, seed=0)
    assert ph.criterion == "bic" and ph.candidates == (1, 2, 3, 4, 5, 6)
    assert ph.n_phases == k, ph.criterion_values
    assert int(np.argmin(ph.criterion_values)) + 1 == k
    assert segmentation_accuracy(ph.labels, lab) > 0.99
    d = ph.criterion_dict()
    assert d["n_phases"] == k and len(d["criterion_values"]) == 6


def test_given_number_of_phases_overrides_bic():
    a, b, _ = _blob_phases(3, np.random.default_rng(3))
    ph = segment_joint_phases(a, b, n_phases=2, n_init=1)
    assert ph.n_phases == 2 and ph.criterion == "given" and ph.criterion_values == ()
    with pytest.raises(InputError, match="min_phases"):
        segment_joint_phases(a, b, min_phases=5, max_phases=3)
    with pytest.raises(InputError, match="max_phases"):
        segment_joint_phases(a, b, max_phases=0)
