import numpy as np
import pytest

from tomo4d.errors import InputError
from tomo4d.quantify import (
    PhaseCodes,
    axial_profile,
    electrode_mask,
    electrode_thickness,
    phase_series,
    phase_volumes,
    thickness_series,
)


def _slab(shape, z_c, z_s, vs, seed=0):
    """Collector below z_c (index), porous anode to z_s, porous separator above (Phase codes)."""
    rng = np.random.default_rng(seed)
    lab = np.zeros(shape, np.uint8)
    z = np.arange(shape[0])[:, None, None]
    r = rng.random(shape)
    lab[:] = np.where(r < 0.45, 5, 0)
    anode = (z >= z_c) & (z < z_s)
    lab[np.broadcast_to(anode, shape)] = np.where(r < 0.7, 1, 0)[np.broadcast_to(anode, shape)]
    lab[:z_c] = 4
    return lab


@pytest.mark.parametrize("vs", [(50.0, 50.0, 50.0), (100.0, 50.0, 40.0)])
def test_thickness_of_a_known_slab(vs):
    lab = _slab((40, 24, 24), 5, 27, vs)
    th = electrode_thickness(lab, voxel_size_nm=vs)
    # interfaces lie between voxels 4|5 and 26|27: 22 voxels
    assert th.mean_um == pytest.approx(22 * vs[0] / 1e3, abs=0.5 * vs[0] / 1e3)
    assert th.valid_fraction == 1.0
    assert np.nanmean(th.collector_z_nm) == pytest.approx(4.5 * vs[0], abs=1e-6)
    m = electrode_mask(th, lab.shape)
    assert m[5:27].mean() > 0.95 and not m[:5].any() and m[28:].mean() < 0.05


@pytest.mark.parametrize("grid", ["hq", "lq"])
def test_thickness_within_one_voxel_of_truth_every_step(phantom_case, grid):
    t = phantom_case.truth
    if grid == "hq":
        labs, vs = phantom_case.labels, phantom_case.vs
    else:
        labs, vs = [t.labels(s, grid="lq") for s in range(t.n_steps)], t.lq_grid.voxel_size_nm
    ser = thickness_series(labs, voxel_size_nm=vs)
    err_vox = np.abs(ser.mean_um * 1e3 - np.asarray(t.thickness_nm)) / vs
    assert np.all(err_vox < 1.0), err_vox
    true_exp = np.asarray(t.thickness_nm) / t.thickness_nm[0] - 1
    assert np.allclose(ser.expansion, true_exp, atol=0.05)
    assert ser.to_columns()["thickness_mean_um"].shape == (t.n_steps,)


def test_axial_profile_fractions(phantom_case):
    prof = axial_profile(phantom_case.labels[0], voxel_size_nm=phantom_case.vs)
    assert np.allclose(prof.fraction.sum(axis=0), 1.0)
    assert prof.fraction[prof.phase_names.index("collector"), 0] == 1.0
    assert prof.porosity.shape == (64,)


def test_rnl_within_two_percent_of_truth(phantom_case):
    t = phantom_case.truth
    ser = phase_series(phantom_case.labels, voxel_size_nm=phantom_case.vs)
    truth = np.asarray(t.non_lithiated_si_volume_nm3) / t.non_lithiated_si_volume_nm3[0]
    assert np.all(np.abs(ser.rnl - truth) <= 0.02), (ser.rnl, truth)
    assert ser.rnl[0] == 1.0 and ser.rnl[-2] < 0.8  # lithiation consumed silicon
    assert np.allclose(ser.fraction.sum(axis=1), 1.0)
    si = ser.volume_um3[:, ser.phase_names.index("silicon")] * 1e9
    assert np.allclose(si, t.non_lithiated_si_volume_nm3, rtol=1e-9)


def test_phase_volumes_in_the_electrode_only(phantom_case):
    pv = phase_volumes(phantom_case.labels[0], voxel_size_nm=phantom_case.vs, region="electrode")
    assert pv.of("collector") == 0.0 and pv.of("separator") < 0.01 * pv.region_volume_um3
    assert 0.1 < pv.of("silicon") / pv.region_volume_um3 < 0.6


def test_custom_phase_codes():
    lab = _slab((30, 10, 10), 4, 20, 50) + 10
    codes = PhaseCodes(pore=10, matrix=11, silicon=12, lithiated=13, collector=14, separator=15)
    th = electrode_thickness(lab, voxel_size_nm=50, phases=codes)
    assert th.mean_um == pytest.approx(0.8, abs=0.03)


@pytest.mark.parametrize("bad, match", [
    (dict(voxel_size_nm=None), "voxel_size_nm"),
    (dict(voxel_size_nm=-1), "voxel_size_nm"),
    (dict(voxel_size_nm=50, smooth_nm=-3), "smooth_nm"),
])
def test_thickness_input_errors(bad, match):
    with pytest.raises(InputError, match=match):
        electrode_thickness(np.zeros((8, 8, 8), np.uint8), **bad)


def test_phase_errors():
    with pytest.raises(InputError, match="label_series is empty"):
        phase_series([], voxel_size_nm=50)
    with pytest.raises(InputError, match="region"):
        phase_volumes(np.zeros((4, 4, 4), np.uint8), voxel_size_nm=50, region="anode")
    with pytest.raises(InputError, match="integer labels"):
        phase_volumes(np.full((4, 4, 4), 0.5), voxel_size_nm=50)
