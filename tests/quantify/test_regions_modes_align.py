import numpy as np
import pytest

from tomo4d.errors import InputError
from tomo4d.quantify import (
    align_steps,
    collector_band,
    electrode_thickness,
    lithiation_modes,
    particle_depth,
    particle_properties,
    read_table,
    regional_strain_series,
    write_table,
)


def _interfaces_px(case):
    th = electrode_thickness(case.labels[0], voxel_size_nm=case.vs)
    return float(np.nanmean(th.collector_z_nm)) / case.vs, float(np.nanmean(th.separator_z_nm)) / case.vs


@pytest.fixture(scope="module")
def finite_truth(phantom_case):
    return phantom_case.truth.anode_finite_strain()


@pytest.mark.parametrize("n_layers", [2, 4])
def test_separator_side_strains_more_as_generated(phantom_case, finite_truth, n_layers):
    """Regional finite strain of the truth displacement on a 4 px node grid against the phantom's exact
    per-half means.  Collector side: within 0.01.  Separator side: up to 0.03 below the truth, because
    the nodes next to the separator interface (1/4 of that half) difference across it, and the separator
    above the anode is not stretched."""
    from tomo4d.dvc import strain_field

    zc, zs = _interfaces_px(phantom_case)
    strains = [strain_field(f) for f in phantom_case.fields[1:]]
    reg = regional_strain_series(strains, collector_z_px=zc, separator_z_px=zs, n_layers=n_layers)
    assert reg.components == ("hencky_zz", "volumetric")  # finite strain by default
    zz = reg.mean[:, :, 0]
    vol = reg.mean[:, :, 1]
    top = n_layers - 1  # the layers, then the whole electrode
    assert reg.region_names[-1] == "electrode" and len(reg.region_names) == n_layers + 1
    assert np.all(zz[:, top] > zz[:, 0]) and np.all(vol[:, top] > vol[:, 0])  # separator side above collector
    a = finite_truth
    if n_layers == 2:
        for comp, m in (("hencky_zz", zz), ("volumetric", vol)):
            truth = getattr(a, comp)[1:]
            np.testing.assert_allclose(m[:, 0], truth[:, 0], atol=0.01)
            assert np.all((truth[:, 1] - m[:, 1] > 0) & (truth[:, 1] - m[:, 1] < 0.03)), (comp, m, truth)
        # the truth mean Hencky zz of the whole anode lies between the two sides
        assert np.all((zz[:, 0] < a.hencky_zz[1:, 2]) & (a.hencky_zz[1:, 2] < zz[:, top]))
    else:  # depth bands: strain grows from the collector band towards the separator (but the last band
        assert np.all(np.diff(zz[:, :top], axis=1) > 0)  # is dominated by nodes differencing across the interface)
    if n_layers == 2:  # from the displacement fields: the same node statistics, and the layers' volume means
        by_field = regional_strain_series(phantom_case.fields[1:], collector_z_px=zc, separator_z_px=zs)
        np.testing.assert_array_equal(by_field.mean, reg.mean)
        assert np.all(by_field.volume_covered == 1.0)
        for c, comp in enumerate(("hencky_zz", "volumetric")):
            vm, truth = by_field.volume_mean[:, :, c], getattr(a, comp)[1:, :2]
            # collector side within 0.005 (the node-F route of StrainFields 0.01 below); the separator side
            # within 0.025 below (the segmented interface lies 0.34 px inside the separator, which does not
            # stretch, and a 4 px interpolant rounds the kink there)
            np.testing.assert_allclose(vm[:, 0], truth[:, 0], atol=0.005)
            assert np.all(np.abs(reg.volume_mean[:, 0, c] - truth[:, 0]) > np.abs(vm[:, 0] - truth[:, 0]))
            assert np.all((truth[:, 1] - vm[:, 1] > 0) & (truth[:, 1] - vm[:, 1] < 0.025)), (comp, vm, truth)
            # the whole electrode: the anode's truth (the det F - 1 target), below it by the separator
            # side's rounded kink (measured 0.010-0.016), between the sides
            whole = getattr(a, comp)[1:, 2]
            assert np.all((whole - vm[:, 2] > 0) & (whole - vm[:, 2] < 0.02)), (comp, vm[:, 2], whole)
            assert np.all((vm[:, 0] < vm[:, 2]) & (vm[:, 2] < vm[:, 1]))
    assert reg.hist_component == "hencky_zz"
    assert reg.hist_counts.shape == (3, n_layers + 1, 50)
    assert reg.hist_counts[-1].sum() == reg.n_nodes[-1].sum() == 2 * reg.n_nodes[-1, :top + 1].sum()


def test_small_strain_only_on_request_and_axial_dominates(phantom_case):
    from tomo4d.dvc import strain_field

    zc, zs = _interfaces_px(phantom_case)
    strains = [strain_field(f) for f in phantom_case.fields[1:]]
    reg = regional_strain_series(strains, collector_z_px=zc, separator_z_px=zs,
                                 components=("hencky_zz", "hencky_yy", "small_zz", "zz"))
    hz, hy = reg.value("separator side", "hencky_zz"), reg.value("separator side", "hencky_yy")
    assert np.all(np.abs(hy) < 0.5 * hz)  # expansion mostly axial
    # small strain overstates a 20-50 % stretch: e = lambda - 1 > ln lambda
    assert np.all(reg.value("separator side", "small_zz") > hz + 0.02)
    np.testing.assert_array_equal(reg.value("collector side", "zz"), reg.value("collector side", "small_zz"))
    with pytest.raises(InputError, match="component"):
        regional_strain_series(strains, collector_z_px=zc, separator_z_px=zs, components=("hencky_qq",))


def test_regional_strain_errors(phantom_case):
    from tomo4d.dvc import strain_field

    st = strain_field(phantom_case.fields[1])
    with pytest.raises(InputError, match="separator_z_px"):
        regional_strain_series([st], collector_z_px=5, separator_z_px=2)
    with pytest.raises(InputError, match="StrainField"):
        regional_strain_series([object()], collector_z_px=5, separator_z_px=20)


def test_lithiation_modes_from_truth_change_maps(phantom_case):
    modes = lithiation_modes(phantom_case.particles[0], phantom_case.changes, voxel_size_nm=phantom_case.vs)
    truth = phantom_case.truth.particle_mode[modes.label - 1]
    inner = ~particle_properties(phantom_case.particles[0], voxel_size_nm=phantom_case.vs).touches_border
    assert np.all(modes.mode[~inner] == 0)  # cut by the border: undetermined
    acc = np.mean(modes.mode[inner] == truth[inner])  # undetermined counts as wrong
    assert acc >= 0.9, acc
    assert np.sum(truth[inner] == 1) >= 4 and inner.sum() >= 15  # both classes are represented
    assert np.isnan(modes.shell_score[0]).all() and (modes.changed_fraction[0] == 0).all()
    assert modes.to_columns()["mode"].shape == (modes.label.size * 4,)


def test_modes_on_constructed_shell_and_planes():
    # two balls: one changes in an outer shell, one along a central plane
    n = 41
    g = np.indices((n, n, 2 * n)).astype(float)
    c1, c2 = (20, 20, 20), (20, 20, 61)
    r1 = np.sqrt(sum((g[i] - c1[i]) ** 2 for i in range(3)))
    r2 = np.sqrt(sum((g[i] - c2[i]) ** 2 for i in range(3)))
    lab = np.zeros((n, n, 2 * n), np.int32)
    lab[r1 <= 15] = 1
    lab[r2 <= 15] = 2
    change = np.zeros(lab.shape, np.float32)
    change[(lab == 1) & (r1 > 11)] = 1.0
    change[(lab == 2) & (np.abs(g[0] - 20) < 3)] = 1.0
    noisy = change + np.random.default_rng(0).normal(0, 0.1, change.shape).astype(np.float32)
    m = lithiation_modes(lab, [np.zeros_like(noisy), noisy], voxel_size_nm=50, method="threshold")
    assert list(m.mode) == [1, 2]
    assert m.shell_score[1, 0] > 0.8 and m.shell_score[1, 1] < 0.1
    assert m.mean_depth[1, 0] < m.mean_depth[1, 1]
    assert 0.3 < m.threshold < 0.7
    # profile score (default for float maps): outer half vs innermost fifth of the residual itself
    p = lithiation_modes(lab, [np.zeros_like(noisy), noisy], voxel_size_nm=50)
    assert list(p.mode) == [1, 2] and np.all(p.step_mode[0] == 0)  # T0 (no residual): undecided
    assert p.shell_score[1, 0] > 0.8 and p.shell_score[1, 1] < 0.2
    # a weak shell beside a strong plane: one threshold for both loses the shell, the profile does not
    weak = np.where(lab == 1, 0.3 * change, change) + np.random.default_rng(1).normal(0, 0.03, change.shape)
    weak = weak.astype(np.float32)
    assert lithiation_modes(lab, [weak], voxel_size_nm=50).mode.tolist() == [1, 2]
    assert lithiation_modes(lab, [weak], voxel_size_nm=50, method="threshold").mode[0] != 1
    with pytest.raises(InputError, match="method"):
        lithiation_modes(lab, [weak], voxel_size_nm=50, method="otsu")
    with pytest.raises(InputError, match="min_residual"):
        lithiation_modes(lab, [weak], voxel_size_nm=50, min_residual=-1.0)
    d = particle_depth(lab, voxel_size_nm=50)
    assert d[20, 20, 20] == pytest.approx(15.5 * 50, abs=60)


def test_modes_errors():
    lab = np.zeros((8, 8, 8), np.int32)
    with pytest.raises(InputError, match="shape"):
        lithiation_modes(lab, [np.zeros((4, 4, 4))], voxel_size_nm=50)
    with pytest.raises(InputError, match="max_changed_fraction"):
        lithiation_modes(lab, [np.zeros_like(lab)], voxel_size_nm=50, min_changed_fraction=0.5,
                         max_changed_fraction=0.2)


def test_time_alignment_on_the_collector(phantom_case):
    from tomo4d.register import apply_phi, make_phi

    exp = phantom_case.exp
    zs = slice(0, 24)  # the collector and the electrode next to it are enough (and cheap)
    t0 = exp.series_hq[0].numpy()[zs]
    shift = np.array([1.3, -0.8, 0.6])
    moved = apply_phi(exp.series_hq[2].numpy()[zs], make_phi(translation_px=-shift), order=3)
    mask = collector_band(phantom_case.labels[0][zs], voxel_size_nm=phantom_case.vs)
    al = align_steps([t0, exp.series_hq[1].numpy()[zs], moved], mask=mask, voxel_size_nm=phantom_case.vs)
    assert np.allclose(al.translation_um[0], 0)
    # the collector is featureless: lateral texture comes from the electrode next to it, which
    # deforms a little and is blurred over 2.8 voxels; 0.6 voxel is what this phantom allows
    assert np.abs(al.translation_um[1]).max() < 0.6 * phantom_case.vs / 1e3
    got = al.registrations[2].phi[:3, 3]  # phi maps T0 to the moved step: +shift
    assert np.allclose(got, shift, atol=0.6), got
    assert al.to_columns()["translation_z_um"].shape == (3,)
    with pytest.raises(InputError, match="mask"):
        align_steps([t0, t0], mask=np.zeros(t0.shape, bool), voxel_size_nm=50)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_tables_roundtrip_with_units(tmp_path, phantom_case, suffix):
    from tomo4d.errors import OverwriteError
    from tomo4d.quantify import particle_properties

    t = particle_properties(phantom_case.particles[0], voxel_size_nm=phantom_case.vs)
    p = write_table(t, tmp_path / f"particles{suffix}")
    back = read_table(p)
    assert np.allclose(back["volume_um3"], t.volume_um3)
    assert list(back) == list(t.to_columns())
    if suffix == ".parquet":
        import json

        import pyarrow.parquet as pq

        units = json.loads(pq.read_schema(p).metadata[b"tomo4d.units"])
        assert units["volume_um3"] == "um^3" and units["surface_area_um2"] == "um^2" and units["sphericity"] == ""
    with pytest.raises(OverwriteError):
        write_table(t, p)
    with pytest.raises(InputError, match="suffix"):
        write_table(t, tmp_path / "x.xlsx")
