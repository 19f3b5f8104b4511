"""DVC against the phantom's ground truth (issue acceptance: median |u error| < 0.05 px, strain < 2e-3).

Findings (seed 0, 64^3 HQ, ``expansion=0.1`` -> anode e_zz 6.9-10 %, no swelling, no contrast loss,
``anode_thickness_nm=2400`` so that windows fit inside the anode; node spacing 8, half-window 10,
errors on anode nodes whose window lies inside the anode, strain against the *small-strain* truth):

- frames agree: T0 warped by the truth (``inverse_displacement``) reproduces T1 to 0.0046 rms grey
  against a T0->T1 change of 0.024; DVC of T0 against that exact warp: 0.016 px / 6.8e-4 (below).
- ``series_hq`` as rendered: 0.11 px / 4.4e-3 without noise.  The cause is the imaging model, not a
  convention: the PSF (sigma 140 nm = 2.8 px) acts in the scanner frame, so pulled back to the
  reference a 10 % stretched sample is blurred 10 % less along z; T1 is not a warp of T0.  Rendering
  T1 with the blur stretched with the material gives 0.012 px (same texture, same strain).
  Blurring T1 by the missing sigma*sqrt((1+e)^2-1) along z recovers half (0.05-0.065 px with noise).
- the phantom renders partial-volume images (voxel-averaged material, 3^3 sub-samples at interfaces)
  since point-sampled labels made the 2 px pore texture alias differently in every frame: noise-free
  ``series_hq`` with ``psf_sigma_px`` went from 0.057 px / 2.1e-3 (point sampled) to 0.021 px / 1.1e-3.
  With the default noise (0.02) it gives 0.058-0.061 px / 2.4-2.5e-3 at half-window 10 (was 0.084-0.093 px):
  the rest is noise, and half-window 12 meets the target (test_phantom_smooth_field_accuracy).
- the anode's expansion pushes the windows of the top node layer (36 nodes at half-window 10) out of
  the scanned region: they are OUT_OF_VIEW (before: "converged" on partial windows); the errors on the
  anode nodes barely move (exact warp 0.0166 -> 0.0181 px, noise-free + PSF 0.0209 -> 0.0197 px).
- the old version of this test also compared DVC's small strain with Green-Lagrange strain (E - e =
  e^2/2 = 5e-3 at 10 %, above the 2e-3 target) and counted collector/separator/interface nodes.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

phantom = pytest.importorskip("tomo4d.phantom")

SMOOTH = dict(expansion=0.1, particle_swelling=0.0, lithiated_contrast_loss=0.0, anode_thickness_nm=2400.0)


def _errors(exp, field, step):
    """(|u error| px, |strain error| of the 6 components) on anode nodes whose window is inside the anode."""
    from tomo4d.dvc import strain_field

    g, t = exp.truth.hq_grid, exp.truth
    pos_nm = np.asarray(g.origin_nm) + field.positions_zyx_px * g.voxel_size_nm
    err = np.linalg.norm(field.displacement_zyx_px - t.displacement(step, pos_nm) / g.voxel_size_nm, axis=1)
    st = strain_field(field)
    H = t.deformation_gradient(step, pos_nm) - np.eye(3)
    small = (0.5 * (H + np.swapaxes(H, 1, 2))).reshape(st.strain.shape)
    hw_nm = field.half_window_px[0] * g.voxel_size_nm
    z = pos_nm[:, 0]
    inner = (z - hw_nm >= t.z_collector_nm) & (z + hw_nm <= t.z_collector_nm + t.thickness_nm[0])
    ok = inner.reshape(st.valid.shape) & st.valid
    comp = np.abs(st.strain - small)[ok][:, [0, 1, 2, 1, 2, 2], [0, 1, 2, 0, 0, 1]]
    return err[inner], comp, float(small[..., 0, 0][ok].max())


def test_phantom_frames_and_correlator_meet_target_on_exact_warp():
    """T0 warped by the phantom's truth field (sample frame nm -> HQ px): DVC meets the acceptance.

    Isolates the correlator and the frame conventions from the imaging model (see module docstring).
    Measured 0.016 px and 6.8e-4; a sign or half-voxel origin slip would give >= 0.5 px.
    """
    from tomo4d.dvc import correlate

    exp = phantom.make_experiment(shape=(64, 64, 64), n_steps=2, seed=0, hq_noise=0.0, **SMOOTH)
    g = exp.truth.hq_grid
    s0 = exp.series_hq[0].numpy()
    pos = g.positions_nm().reshape(-1, 3)
    ref_px = (pos + exp.truth.inverse_displacement(1, pos) - np.asarray(g.origin_nm)) / g.voxel_size_nm
    s1 = ndimage.map_coordinates(s0, ref_px.T.reshape((3,) + s0.shape), order=3, mode="nearest").astype(np.float32)
    field = correlate(s0, s1, node_spacing=8, half_window=10, smooth_sigma_px=1.0, tolerance_px=0.01,
                      max_iterations=30)
    err, serr, max_ezz = _errors(exp, field, 1)
    assert max_ezz > 0.085                      # interior nodes reach ~9 % (anode top 10 %)
    assert len(err) >= 50
    assert np.median(err) < 0.05                # px
    assert np.median(serr) < 2e-3


@pytest.mark.slow
def test_phantom_psf_compensation_reduces_error():
    """``psf_sigma_px`` (the phantom's known HQ blur) removes most of the error of the noise-free series.

    Partial-volume renderer: measured 0.088 -> 0.020 px and 4.3e-3 -> 1.0e-3 (0.096 -> 0.021 px before the
    top node layer became OUT_OF_VIEW; point-sampled labels,
    before: 0.109 -> 0.057 px and 4.6e-3 -> 2.1e-3, the rest being aliasing of the 2 px pore texture).
    """
    from tomo4d.dvc import correlate

    exp = phantom.make_experiment(shape=(64, 64, 64), n_steps=2, seed=0, hq_noise=0.0, **SMOOTH)
    s0, s1 = exp.series_hq[0].numpy(), exp.series_hq[1].numpy()
    sigma = exp.truth.hq_blur_sigma_nm / exp.truth.hq_grid.voxel_size_nm
    kw = dict(node_spacing=8, half_window=10, smooth_sigma_px=1.0, tolerance_px=0.01, max_iterations=30)
    e_plain, s_plain, _ = _errors(exp, correlate(s0, s1, **kw), 1)
    e_psf, s_psf, _ = _errors(exp, correlate(s0, s1, psf_sigma_px=sigma, **kw), 1)
    assert np.median(e_plain) > 0.08           # 0.088 (0.096 while the top layer, out of view, counted)
    assert np.median(e_psf) < 0.4 * np.median(e_plain)
    assert np.median(s_psf) < 2e-3


def test_phantom_noise_free_series_meets_target_with_psf():
    """Rendered (partial-volume) noise-free ``series_hq`` + ``psf_sigma_px``: the acceptance is met.

    Measured 0.021 px and 1.1e-3 (point-sampled renderer: 0.057 px and 2.1e-3); aliasing or a
    frame slip in the renderer would give >= 0.05 px.
    """
    from tomo4d.dvc import correlate

    exp = phantom.make_experiment(shape=(64, 64, 64), n_steps=2, seed=0, hq_noise=0.0, **SMOOTH)
    s0, s1 = exp.series_hq[0].numpy(), exp.series_hq[1].numpy()
    sigma = exp.truth.hq_blur_sigma_nm / exp.truth.hq_grid.voxel_size_nm
    field = correlate(s0, s1, node_spacing=8, half_window=10, smooth_sigma_px=1.0, tolerance_px=0.01,
                      max_iterations=30, psf_sigma_px=sigma)
    err, serr, _ = _errors(exp, field, 1)
    assert len(err) >= 50
    assert np.median(err) < 0.05               # px (issue 5 acceptance)
    assert np.median(serr) < 2e-3


@pytest.mark.parametrize("seed", [0, 1])
def test_phantom_smooth_field_accuracy(seed):
    """Issue acceptance on the rendered, noisy HQ series: < 0.05 px and strain < 2e-3 (median).

    With the default noise (0.02) a half-window of 10 px leaves 0.058-0.061 px of noise error; 12 px
    (25^3-voxel windows, 1.25 um; the literature's final windows are 70^3) brings it under target:
    0.040 px / 1.6e-3 for seed 0.
    """
    from tomo4d.dvc import correlate

    exp = phantom.make_experiment(shape=(64, 64, 64), n_steps=2, seed=seed, **SMOOTH)
    s0, s1 = exp.series_hq[0].numpy(), exp.series_hq[1].numpy()
    sigma = exp.truth.hq_blur_sigma_nm / exp.truth.hq_grid.voxel_size_nm
    field = correlate(s0, s1, node_spacing=8, half_window=12, smooth_sigma_px=1.0, tolerance_px=0.01,
                      max_iterations=30, psf_sigma_px=sigma)
    err, serr, max_strain = _errors(exp, field, 1)
    assert len(err) >= 50
    assert max_strain > 0.085  # the field really reaches ~10 % strain where it is measured
    assert np.median(err) < 0.05
    assert np.median(serr) < 2e-3
