"""End-to-end checks with image-based inputs (residual maps, measured DVC fields): slow."""

import numpy as np
import pytest

from tomo4d.quantify import lithiation_modes, residual_series, track_particles


@pytest.mark.slow
@pytest.mark.xfail(reason="64^3 phantom: particles of ~6 voxels radius under a 2.8-voxel PSF; the shells of "
                          "core-shell particles are not resolved in residual maps (0.8 correct measured)", strict=False)
def test_modes_from_residual_maps_with_truth_warp(phantom_case):
    exp = phantom_case.exp
    series = [v.numpy() for v in exp.series_hq]
    res = residual_series(series[0], series, phantom_case.fields, sigma_px=1.0)
    m = lithiation_modes(phantom_case.particles[0], res, voxel_size_nm=phantom_case.vs)
    truth = phantom_case.truth.particle_mode[m.label - 1]
    k = m.mode > 0
    assert k.sum() >= 15
    assert np.mean(m.mode[k] == truth[k]) >= 0.9


@pytest.mark.slow
def test_tracking_with_a_measured_dvc_field(phantom_case):
    from tomo4d.dvc import correlate

    exp = phantom_case.exp
    series = [v.numpy() for v in exp.series_hq]
    fields, prev = [None], None
    for n in range(1, len(series)):
        prev = correlate(series[0], series[n], node_spacing=6, half_window=6, initial=prev,
                         search_radius_px=6 if prev is None else 0, smooth_sigma_px=1.0, max_iterations=30)
        fields.append(prev)
    tr = track_particles(phantom_case.particles, displacement=fields[1:], voxel_size_nm=phantom_case.vs)
    present = set.intersection(*[set(np.unique(p)) - {0} for p in phantom_case.particles])
    t0 = tr.first_step == 0
    ok = {int(r[0]) for r in tr.label[t0] if np.all(r == r[0])}
    # measured: 39/42 (93 %) with this DVC field vs 100 % with the truth field (acceptance test)
    assert len(ok & present) / len(present) >= 0.9
