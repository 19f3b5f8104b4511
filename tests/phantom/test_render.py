"""Partial-volume rendering: images are volume averages of the material, labels are point samples."""

import numpy as np
import pytest

from tomo4d.phantom import Phase, _deform, _microstructure, _render, make_experiment


def _setup(exp, grid, step):
    eng = exp._engine
    ref = _deform.deform_inverse(eng.model, step, _microstructure.grid_points(eng.layout, grid))
    phase, pid = _microstructure.material(eng.model, step, ref)
    return eng, ref, phase, pid


def test_one_subsample_reproduces_point_sampling(exp):
    """The compiled kernel at one sub-sample (the voxel centre) makes the same decisions as material()."""
    eng, ref, phase, pid = _setup(exp, "hq", 2)
    table = eng.grey_table()
    img = _render.render_grey(eng.model, 2, ref, phase, pid, table, supersampling=1)
    assert np.array_equal(img, table[phase])


def test_compiled_and_numpy_paths_agree(exp):
    """Kernel (particle shape linearised about the voxel centre, candidates from the 3x3x3 labels)
    against exact sub-samples through material(): one flipped sub-sample changes a voxel by at most
    (grey contrast) / 27 <= 0.027, so 99 % of voxels within 0.03 and a mean difference < 2e-3."""
    eng, ref, phase, pid = _setup(exp, "lq", 2)
    table = eng.grey_table()
    crop, inner = (slice(18, 36),) * 3, (slice(1, -1),) * 3   # crop edges lack neighbours: excluded
    args = (eng.model, 2, ref[crop], phase[crop], pid[crop], table)
    fast = _render.render_grey(*args, supersampling=3)[inner]
    slow = _render.render_grey(*args, supersampling=3, use_numba=False)[inner]
    point = table[phase[crop]][inner]
    assert np.mean(fast != point) > 0.2                 # the supersampling changes many voxels
    d = np.abs(fast - slow)
    assert np.mean(d < 0.03) > 0.99
    assert abs(float(fast.mean() - slow.mean())) < 2e-3


def test_flat_interface_voxel_holds_its_volume_fraction():
    """At T0 the collector/anode interface is the plane z = z_collector: the voxel it cuts takes the
    collector's share of its volume (midpoint rule on 8 sub-samples per axis: exact to 1/8)."""
    e = make_experiment(shape=(32, 32, 32), n_steps=1, seed=1, supersampling=8)
    t, eng = e.truth, e._engine
    g = t.hq_grid
    grey = eng.volume_grey("hq", 0)
    lab = t.labels(0)
    c = (t.z_collector_nm - g.origin_nm[0]) / g.voxel_size_nm       # interface, continuous index
    iz = int(np.floor(c + 0.5))                                      # the voxel containing it
    f_true = c - (iz - 0.5)                                          # collector share of voxel iz
    offs = (np.arange(8) + 0.5) / 8 - 0.5
    f_mid = np.mean(iz + offs < c)
    table = eng.grey_table()
    # columns whose anode side next to the interface is plain matrix (no pore, no particle), also
    # in the 3x3 lateral neighbourhood; the median removes the few with a pore inside voxel iz only
    from scipy.ndimage import minimum_filter

    clean = np.isin(lab[iz], [Phase.COLLECTOR, Phase.MATRIX]) & np.all(lab[iz + 1:iz + 3] == Phase.MATRIX, axis=0)
    clean = minimum_filter(clean.astype(np.uint8), 3, mode="nearest").astype(bool)
    assert clean.sum() > 20
    f = (grey[iz][clean] - table[Phase.MATRIX]) / (table[Phase.COLLECTOR] - table[Phase.MATRIX])
    assert np.median(f) == pytest.approx(f_mid, abs=1e-6)
    assert abs(np.median(f) - f_true) <= 1 / 16 + 1e-9


def test_images_average_labels_at_interfaces_only(exp):
    """Away from interfaces the grey value is the phase's; at interfaces it lies between phases."""
    eng = exp._engine
    grey = eng.volume_grey("hq", 1)
    lab = exp.truth.labels(1)
    table = eng.grey_table()
    uniform = ~_render._mixed_voxels(lab)
    assert uniform.mean() > 0.2
    assert np.array_equal(grey[uniform], table[lab][uniform])
    mixed = ~uniform
    assert np.mean(grey[mixed] != table[lab][mixed]) > 0.25
    assert grey.min() >= table.min() and grey.max() <= table.max()
    # partial volume conserves the material: mean grey within 1 % of the point-sampled estimate
    assert abs(float(grey.mean()) / float(table[lab].mean()) - 1) < 0.01
