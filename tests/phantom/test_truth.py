"""Ground truth agrees with the images and with the physics it claims."""

import pickle

import numpy as np
import pytest
from scipy.ndimage import map_coordinates, maximum_filter, minimum_filter
from scipy.optimize import curve_fit
from scipy.special import erf

from tomo4d import InputError
from tomo4d.phantom import LithiationMode, Phase, make_experiment
from tomo4d.register import apply_phi_to_points


def test_t0_is_reference_and_collector_is_fixed(exp):
    pts = exp.truth.hq_grid.positions_nm()[::8, ::8, ::8].reshape(-1, 3)
    assert np.all(exp.truth.displacement(0, pts) == 0)
    coll = pts[pts[:, 0] < exp.truth.z_collector_nm - 1.0]
    assert len(coll) > 0
    assert np.abs(exp.truth.displacement(2, coll)).max() < 1e-9   # rigid reference, nm


@pytest.mark.parametrize("step", [1, 2, 3])
def test_inverse_displacement_inverts_forward(exp, step):
    rng = np.random.default_rng(0)
    g = exp.truth.lq_grid
    pts = rng.uniform(0, np.array(g.shape) * g.voxel_size_nm, size=(4000, 3))
    moved = pts + exp.truth.displacement(step, pts)
    back = moved + exp.truth.inverse_displacement(step, moved)
    assert np.abs(back - pts).max() < 0.01   # nm


@pytest.mark.parametrize("step", [1, 2, 3])
def test_warped_t0_labels_reproduce_later_labels(exp, step):
    """Mapping every T0 voxel through the true field lands on the same phase at T_step (no phase change)."""
    t = exp.truth
    g = t.hq_grid
    lab0 = t.labels(0)
    labt = t.labels(step)
    pts = g.positions_nm().reshape(-1, 3)
    x = pts + np.moveaxis(t.displacement_field(step, grid="hq"), 0, -1).reshape(-1, 3)
    idx = np.rint((x - np.asarray(g.origin_nm)) / g.voxel_size_nm).astype(int)
    inside = np.all((idx >= 0) & (idx < np.asarray(g.shape)), axis=1)
    # interior voxels only (whole 3x3x3 neighbourhood of one phase): nearest-voxel sampling is exact there
    uniform = (minimum_filter(lab0, 3) == maximum_filter(lab0, 3)).ravel()
    unchanged_phase = lab0.ravel() != Phase.SILICON       # silicon may lithiate
    sel = inside & uniform & unchanged_phase
    assert sel.sum() > 20000
    got = labt[tuple(idx[sel].T)]
    agree = np.mean(got == lab0.ravel()[sel])
    assert agree > 0.995
    # silicon becomes silicon or lithiated silicon, never anything else
    si = inside & uniform & ~unchanged_phase
    got_si = labt[tuple(idx[si].T)]
    assert np.mean(np.isin(got_si, [Phase.SILICON, Phase.LITHIATED_SILICON])) > 0.995


def _measured_thickness_nm(lab, voxel_nm):
    n_coll = np.mean(np.sum(lab == Phase.COLLECTOR, axis=0))          # collector slices per column
    anode = np.isin(lab, [Phase.MATRIX, Phase.SILICON, Phase.LITHIATED_SILICON]).mean(axis=(1, 2))
    plateau = np.median(anode[anode > 0.2])
    below = np.flatnonzero(anode > 0.5 * plateau)
    last = below.max()
    # sub-voxel: linear interpolation of the half-plateau crossing
    a0, a1 = anode[last], anode[last + 1]
    frac = (a0 - 0.5 * plateau) / max(a0 - a1, 1e-9)
    return (last + 0.5 + frac - n_coll) * voxel_nm


@pytest.mark.parametrize("step", [0, 1, 2, 3])
def test_thickness_from_labels_matches_truth(exp, step):
    t = exp.truth
    v = t.hq_grid.voxel_size_nm
    measured = _measured_thickness_nm(t.labels(step), v)
    # tolerance: 1.5 voxels (interface roughness from swelling particles + sampling)
    assert abs(measured - t.thickness_nm[step]) < 1.5 * v


def test_thickness_follows_reference_expansion(exp):
    th = np.asarray(exp.truth.thickness_nm)
    assert th[1] > th[0] and th[2] > th[1]
    assert th[3] < th[2] and th[3] > th[0]                       # partial delithiation relaxes part
    assert 0.35 < th[2] / th[0] - 1 < 0.6                        # ~44 % at 85 % SoC


def test_expansion_axial_with_gradient_and_small_in_plane(exp):
    t = exp.truth
    g = t.lq_grid
    eps = t.strain_field(2, grid="lq")
    z = np.asarray(g.origin_nm[0]) + g.voxel_size_nm * np.arange(g.shape[0])
    zc, th0 = t.z_collector_nm, t.thickness_nm[0]
    near_cc = (z > zc + 0.1 * th0) & (z < zc + 0.3 * th0)
    near_sep = (z > zc + 0.7 * th0) & (z < zc + 0.9 * th0)
    ezz_cc = eps[0, 0][near_cc].mean()
    ezz_sep = eps[0, 0][near_sep].mean()
    assert ezz_sep > ezz_cc + 0.05                               # more expansion on the separator side
    anode = near_cc | near_sep
    assert abs(eps[1, 1][anode].mean()) < 0.03 and abs(eps[2, 2][anode].mean()) < 0.03   # in-plane < 3 %
    assert eps[0, 0][anode].mean() > 5 * abs(eps[1, 1][anode].mean())


def test_every_mode_present_and_shaped(exp):
    t = exp.truth
    modes = t.particle_mode
    assert set(np.unique(modes)) == {LithiationMode.CORE_SHELL, LithiationMode.NETWORK}
    share = np.mean(modes == LithiationMode.CORE_SHELL)
    assert abs(share - 0.1) < 0.02
    assert t.particle_cracked.any() and not t.particle_cracked.all()
    pl, lab = t.particle_labels(2), t.labels(2)
    assert np.any(lab == Phase.LITHIATED_SILICON) and np.any(lab == Phase.SILICON)
    # core-shell: the lithiated part is outside (farther from the particle centroid) than the core
    cs_ids = [int(i) for i in t.particle_id[modes == LithiationMode.CORE_SHELL]]
    checked = 0
    for pid in cs_ids:
        m = pl == pid
        if m.sum() < 500:
            continue
        zz = np.argwhere(m)
        c = zz.mean(axis=0)
        r = np.linalg.norm(zz - c, axis=1)
        li = lab[m] == Phase.LITHIATED_SILICON
        if li.all() or not li.any():
            continue
        assert r[li].mean() > r[~li].mean() + 1.0
        checked += 1
    assert checked >= 1


def test_lithiated_fraction_matches_labels(exp):
    t = exp.truth
    step = 1
    pl, lab = t.particle_labels(step), t.labels(step)
    ids, counts = np.unique(pl[pl > 0], return_counts=True)
    errs = []
    for pid, cnt in zip(ids, counts):
        if cnt < 2000:     # large, mostly-inside particles only
            continue
        measured = np.mean(lab[pl == pid] == Phase.LITHIATED_SILICON)
        errs.append(abs(measured - t.lithiated_fraction[step, pid - 1]))
    assert len(errs) >= 3
    assert np.median(errs) < 0.08      # deformed-volume share vs reference share


def test_non_lithiated_si_volume_decreases_then_recovers(exp):
    v = np.asarray(exp.truth.non_lithiated_si_volume_nm3)
    assert v[1] < v[0] and v[2] < v[1] and v[3] > v[2]
    assert v[0] == np.count_nonzero(exp.truth.labels(0) == Phase.SILICON) * 50.0 ** 3


def test_ground_truth_is_not_modified_by_what_it_computes():
    """Frozen means frozen: derived numbers are cached by the renderer, not inside the GroundTruth."""
    t = make_experiment(shape=(32, 32, 32), n_steps=2, seed=3).truth

    def state():
        return {k: pickle.dumps(v) for k, v in vars(t).items() if k != "_engine"}

    before = state()
    si, lith = t.non_lithiated_si_volume_nm3, t.lithiated_si_volume_nm3
    assert state() == before
    assert t.non_lithiated_si_volume_nm3 == si and t.lithiated_si_volume_nm3 == lith


def _edge_sigma_nm(img, voxel_nm, z_edge_nm, origin_nm):
    """Gaussian sigma of the collector/anode edge: erf fit of the laterally averaged z profile.

    The anode side is not uniform (no particle centres right at the collector), so the plateau
    below the edge is allowed a linear trend.
    """
    prof = img.mean(axis=(1, 2))
    z = origin_nm + voxel_nm * np.arange(len(prof))
    win = np.abs(z - z_edge_nm) < 6 * voxel_nm

    def model(zz, a, b, c, z0, s):
        return a + (b + c * (zz - z0) / voxel_nm) * 0.5 * (1 + erf((zz - z0) / (np.sqrt(2) * s)))

    p, _ = curve_fit(model, z[win], prof[win], p0=(1.0, -0.7, 0.0, z_edge_nm, 2 * voxel_nm))
    return abs(p[4])


@pytest.mark.parametrize("kind", ["lq", "hq"])
def test_blur_width_matches_reported_resolution(exp, kind):
    t = exp.truth
    if kind == "lq":
        img, g, sigma = exp.series[0].numpy(), t.lq_grid, t.lq_blur_sigma_nm
    else:
        img, g, sigma = exp.series_hq[0].numpy(), t.hq_grid, t.hq_blur_sigma_nm
    measured = _edge_sigma_nm(img, g.voxel_size_nm, t.z_collector_nm, g.origin_nm[0])
    expected = np.hypot(sigma, g.voxel_size_nm / np.sqrt(12))    # PSF + voxel sampling of the edge
    assert abs(measured - expected) < 0.10 * expected   # 10 %: fit bias from the anode texture


def test_repeat_scan_is_pure_noise(exp):
    diff = exp.repeat.numpy() - exp.series[0].numpy()
    assert abs(diff.std() - np.sqrt(2) * exp.truth.lq_noise_std) < 0.05 * exp.truth.lq_noise_std
    assert abs(diff.mean()) < 1e-3


def test_lq_to_hq_phi_maps_fixed_to_moving(exp):
    t = exp.truth
    phi = exp.lq_to_hq_phi
    n = np.asarray(t.hq_grid.shape, float)
    c = (n - 1) / 2
    h, o = t.hq_grid.voxel_size_nm, np.asarray(t.hq_offset_nm)
    x = np.random.default_rng(1).uniform(0, n - 1, size=(100, 3))
    m = apply_phi_to_points(x, phi, centre=c)
    # the moving voxel m is LQ-scan position p; the sample seen there must be the one HQ sees at x
    p = o + (m + 0.5) * h
    A = t.lq_misalignment
    assert np.allclose(p @ A[:3, :3].T + A[:3, 3], o + (x + 0.5) * h, atol=1e-6)
    assert np.abs(phi[:3, 3]).max() > 0.1                      # a real misalignment (HQ voxels)
    # image check on the noise-free labels of the pair: the LQ scan's labels resampled at phi(x)
    # (nearest LQ voxel) agree with the HQ labels better than without the transform
    lq_lab = exp._engine.labels("lq", 0, sample="pair", misaligned=True)[0].astype(np.float32)
    hq_lab = t.pair_labels()[0]
    mov = exp.lq_on_hq_grid(lq_lab, order=0)
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in hq_lab.shape], indexing="ij"), -1).reshape(-1, 3)
    warped = map_coordinates(mov, apply_phi_to_points(grid, phi, centre=c).T, order=0, mode="nearest").reshape(hq_lab.shape)
    inner = (slice(8, -8),) * 3
    agree_phi = np.mean(warped[inner] == hq_lab[inner])
    agree_id = np.mean(mov[inner] == hq_lab[inner])
    assert agree_phi > 0.85                 # limited by the 2x coarser LQ voxels at interfaces
    assert agree_phi > agree_id + 0.02


def test_lithiated_silicon_loses_contrast(exp):
    g = exp.truth.grey_values
    assert abs(g["LITHIATED_SILICON"] - g["MATRIX"]) < 0.5 * abs(g["SILICON"] - g["MATRIX"])


def test_pair_drift_is_off_by_default(exp):
    pts = np.random.default_rng(0).uniform(0, 6400, (50, 3))
    assert not np.any(exp.lq_drift_nm(pts))


@pytest.mark.parametrize("rms_nm", [50.0, 100.0])
def test_pair_drift_moves_only_the_lq_training_scan_by_a_smooth_field_of_the_given_rms(rms_nm):
    kw = dict(shape=(48, 48, 48), n_steps=1, seed=3)
    plain = make_experiment(**kw)
    drifted = make_experiment(pair_drift_nm=rms_nm, pair_drift_length_nm=2500.0, **kw)
    pts = np.random.default_rng(1).uniform(0, 4800, (4000, 3))
    d = drifted.lq_drift_nm(pts)
    assert np.sqrt((d ** 2).sum(-1).mean()) == pytest.approx(rms_nm, rel=0.2)
    # smooth: between points 100 nm apart it changes by far less than its amplitude
    step = drifted.lq_drift_nm(pts + [0.0, 0.0, 100.0]) - d
    assert np.abs(step).max() < 0.35 * np.abs(d).max()
    # the affine part and every other scan are untouched
    assert np.array_equal(drifted.truth.lq_misalignment, plain.truth.lq_misalignment)
    assert np.array_equal(drifted.hq.compute().data, plain.hq.compute().data)
    lq_plain = plain._engine.labels("lq", 0, sample="pair", misaligned=True)[0]
    lq_drift = drifted._engine.labels("lq", 0, sample="pair", misaligned=True)[0]
    changed = np.mean(lq_plain != lq_drift)
    assert 0.02 < changed < 0.5, changed


def test_pair_drift_rejects_bad_values():
    with pytest.raises(InputError, match="pair_drift_nm"):
        make_experiment(shape=(32, 32, 32), n_steps=1, pair_drift_nm=-1.0)
    with pytest.raises(InputError, match="pair_drift_length_nm"):
        make_experiment(shape=(32, 32, 32), n_steps=1, pair_drift_length_nm=0.0)
