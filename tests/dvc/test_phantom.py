"""DVC against the phantom's ground truth (issue acceptance: median |u error| < 0.05 px, strain < 2e-3).

Not met yet: on the phantom's in-situ series (strongly blurred LQ/HQ scans, layer-wise and
particle-scale strains, grey-level changes from lithiation) local DVC is at ~0.25-1 px.  The test
encodes the target and is expected to fail until that is resolved (strict xfail: it alerts when fixed).
"""

from __future__ import annotations

import numpy as np
import pytest

phantom = pytest.importorskip("tomo4d.phantom")


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="phantom DVC accuracy ~0.25 px, target 0.05 px (see module docstring)")
def test_phantom_smooth_field_accuracy():
    from tomo4d.dvc import correlate, strain_field

    exp = phantom.make_experiment(shape=(64, 64, 64), n_steps=2, seed=0, particle_swelling=0.0,
                                  lithiated_contrast_loss=0.0, expansion=0.2)
    g = exp.truth.hq_grid
    s0, s1 = exp.series_hq[0].numpy(), exp.series_hq[1].numpy()
    field = correlate(s0, s1, node_spacing=8, half_window=10, search_radius_px=4, smooth_sigma_px=1.0,
                      tolerance_px=0.01, max_iterations=30)
    pos_nm = np.asarray(g.origin_nm) + field.positions_zyx_px * g.voxel_size_nm
    err = np.linalg.norm(field.displacement_zyx_px - exp.truth.displacement(1, pos_nm) / g.voxel_size_nm, axis=1)
    st = strain_field(field)
    true = exp.truth.strain(1, pos_nm).reshape(st.strain.shape)
    assert np.median(err) < 0.05
    assert np.median(np.abs(st.strain - true)[st.valid]) < 2e-3
