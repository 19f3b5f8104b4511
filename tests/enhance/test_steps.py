"""The InDI step count chosen by validation (issue 19): the sweep stored by training, the rules, the
data-consistency guard, the fallback of model folders without a sweep, and the refused ranges."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import warnings

import numpy as np
import pytest

from tomo4d.errors import InputError


def _sweep(psnr, fwhm, frac, *, hq_fwhm=100.0):
    from tomo4d.enhance.steps import StepSweep

    n = len(psnr)
    steps = tuple(range(1, n + 1))
    return StepSweep(steps, tuple(psnr), (0.5,) * n, tuple(fwhm), (1.0,) * n, tuple(frac),
                     bicubic={"psnr_db": 20.0, "fwhm_nm": 200.0, "inconsistent_fraction": 0.05},
                     hq={"fwhm_nm": hq_fwhm, "inconsistent_fraction": 0.01}, lq_noise=1.0, slices=(0,),
                     rule="balanced", recommended_steps=1, recommended={})


def test_rules_pick_by_their_documented_criteria():
    from tomo4d.enhance.steps import recommend

    #        N:   1     2     3     4     5
    psnr = [24.0, 24.3, 24.0, 23.5, 22.0]
    fwhm = [150., 130., 110., 101., 100.]
    frac = [0.01, 0.01, 0.015, 0.05, 0.08]
    sw = _sweep(psnr, fwhm, frac)
    assert recommend(sw, "distortion") == 2                 # highest PSNR
    assert recommend(sw, "sharpness") == 4                  # within 1 dB of 24.3 (N 1-4): FWHM closest to 100
    assert recommend(sw, "balanced") == 3                   # within 0.5 dB (N 1-3), consistent (N 1-3): closest
    # no FWHM measurable: both fall back to the PSNR optimum
    sw2 = _sweep(psnr, [math.nan] * 5, frac)
    assert recommend(sw2, "sharpness") == recommend(sw2, "balanced") == 2
    with pytest.raises(InputError, match="rule"):
        recommend(sw, "fastest")


def test_rules_use_the_paired_ratio_when_stored():
    import dataclasses

    from tomo4d.enhance.steps import recommend

    psnr = [24.0, 24.3, 24.0, 23.5, 22.0]
    frac = [0.01, 0.01, 0.015, 0.05, 0.08]
    # the unpaired means say N = 4 is closest to HQ; edge for edge N = 1 is (ratio 0.98), the rest over-sharpen
    sw = dataclasses.replace(_sweep(psnr, [150., 130., 110., 101., 100.], frac),
                             fwhm_ratio=(0.98, 0.90, 0.86, 0.85, 0.84))
    assert recommend(sw, "balanced") == recommend(sw, "sharpness") == 1
    sw = dataclasses.replace(sw, fwhm_ratio=(1.3, 1.1, 1.02, 0.9, 0.8))
    assert recommend(sw, "balanced") == 3 and recommend(sw, "sharpness") == 3


def test_rules_use_the_detail_power_first_when_stored():
    """Session 16: the paired edges say N = 1 (collector edges where N = 1 matches HQ's width); the detail power
    over the whole held-out slices says N = 4 is the first as rich in fine structure as HQ."""
    from tomo4d.enhance.steps import recommend

    psnr = [24.0, 24.3, 24.0, 23.9, 22.0]
    frac = [0.01, 0.01, 0.015, 0.01, 0.08]
    sw = dataclasses.replace(_sweep(psnr, [150., 130., 110., 101., 100.], frac),
                             fwhm_ratio=(0.98, 0.90, 0.86, 0.85, 0.84), detail_power=(0.2, 0.45, 0.7, 0.97, 1.5))
    assert recommend(sw, "balanced") == recommend(sw, "sharpness") == 4
    assert recommend(sw, "distortion") == 2
    # over-detailed beyond HQ counts as far as under-detailed (log distance): 1.5 is farther than 0.7
    sw = dataclasses.replace(sw, detail_power=(0.2, 0.45, 0.7, 1.5, 1.9))
    assert recommend(sw, "balanced") == 3
    # unmeasurable detail power: the paired edges decide, as in older sweeps
    sw = dataclasses.replace(sw, detail_power=(math.nan,) * 5)
    assert recommend(sw, "balanced") == 1


def test_detail_power_is_the_fine_structure_beyond_lqs_nyquist():
    """Against its definition: power at in-plane frequencies between 1/4 and 1/2 cycle per pixel.  A smooth image
    (blurred, or band-limited to LQ's grid) holds almost none of HQ's; HQ's own texture plus equal-power
    independent detail (a sample of the same distribution) holds as much; doubling the amplitude quadruples it;
    the valid mask's border adds none."""
    from scipy import ndimage

    from tomo4d.enhance.steps import detail_power, detail_taper

    rng = np.random.default_rng(3)
    hq = ndimage.gaussian_filter(rng.normal(size=(3, 96, 96)), (0, 0.7, 0.7))
    mask = np.ones(hq.shape, bool)
    mask[:, :, 80:] = False
    t = detail_taper(mask)
    p_hq = detail_power(hq, t)
    assert detail_power(ndimage.gaussian_filter(hq, (0, 2.0, 2.0)), t) < 0.02 * p_hq
    f = np.fft.fft2(hq)
    r = np.hypot(np.fft.fftfreq(96)[:, None], np.fft.fftfreq(96)[None, :])
    low = np.real(np.fft.ifft2(f * (r < 0.2)))            # band-limited below LQ's Nyquist
    assert detail_power(low, t) < 0.05 * p_hq
    other = ndimage.gaussian_filter(rng.normal(size=hq.shape), (0, 0.7, 0.7))
    assert detail_power(other, t) / p_hq == pytest.approx(1.0, abs=0.15)
    assert detail_power(2 * hq + 7.0, t) / p_hq == pytest.approx(4.0, rel=1e-9)
    # a smooth ramp cut by the mask's border (x = 80, inside the Hann window): the smoothed taper hides the cut
    ramp = np.broadcast_to(np.linspace(0.0, 3.0 * 96 / 80, 96)[None, None, :], hq.shape)
    assert detail_power(ramp, t) < 1e-3 * p_hq      # a hard cut: 8e-3


def _discs(shape, centres, radius, sigma, value=1000.0):
    from scipy import ndimage

    yy, xx = np.indices(shape)
    a = np.zeros(shape)
    for cy, cx in centres:
        a[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius ** 2] = value
    return ndimage.gaussian_filter(a, sigma)


def test_paired_fwhm_measures_the_output_on_hqs_edges():
    """Edges detected in HQ only; extra sharp structure elsewhere in the output does not enter the figure."""
    from tomo4d.enhance.sweep_edges import hq_edge_lines, paired_fwhm, slice_fwhm

    shape, vs = (160, 160), (50.0, 50.0, 50.0)
    big = [(40, 40), (40, 120), (120, 40)]
    hq = _discs(shape, big, 22, 2.0)[None].astype(np.float32)
    out = _discs(shape, big, 22, 3.0)
    # strong, sharper structure where HQ has none (what a model may add): detected on its own it dominates
    out += _discs(shape, [(100 + 28 * i, 100 + 28 * j) for i in range(3) for j in range(3)], 10, 1.2, 3000.0)
    out = out[None].astype(np.float32)
    m = np.ones_like(hq, bool)
    lines, note = hq_edge_lines(hq, m, vs)
    assert note == "default" and sum(len(v) for v in lines.values()) >= 10
    h, o = paired_fwhm(hq, m, lines, vs), paired_fwhm(out, m, lines, vs)
    ok = np.isfinite(h) & np.isfinite(o)
    assert ok.sum() >= 10
    assert np.median(h[ok]) == pytest.approx(2.3548 * 2.0 * 50, rel=0.08)
    assert np.median(o[ok] / h[ok]) == pytest.approx(1.5, abs=0.1)     # sigma 3 vs 2 on the same edges
    assert slice_fwhm(out, m, vs) < 0.5 * np.mean(o[ok])   # unpaired: the added structure's edges (measured 146 nm)


def test_training_stores_the_sweep_and_apply_uses_its_recommendation(model, trained, synth_pair):
    from tomo4d.enhance import enhance_volume, load_model
    from tomo4d.enhance.steps import RULES, SWEEP_FILE, recommend

    d, _ = trained
    sw = model.sweep
    assert (d / SWEEP_FILE).is_file() and (d / "step_sweep.png").is_file()
    assert sw.steps == tuple(model.info.config.sweep_steps)
    assert {r: recommend(sw, r) for r in RULES} == sw.recommended
    assert model.info.recommended_steps == sw.recommended_steps == sw.recommended[sw.rule]
    assert json.loads((d / "metrics.json").read_text())["recommended_steps"] == sw.recommended_steps
    lq, _ = synth_pair
    with warnings.catch_warnings():
        warnings.simplefilter("error")            # a model with its sweep never warns
        out = enhance_volume(model, lq, z_interp=False)
    e = out.metadata.extra["enhance"]
    assert e["steps"] == sw.recommended_steps and e["steps_from"].startswith("validation sweep")
    for rule in RULES:
        assert enhance_volume(model, lq, rule=rule).metadata.extra["enhance"]["steps"] == sw.recommended[rule]
    assert enhance_volume(model, lq, steps=5).metadata.extra["enhance"]["steps"] == 5
    # the file round-trips
    assert load_model(d, device="cpu").sweep == sw


def test_sweep_figures_are_the_truth_measured_independently(model, trained, synth_pair):
    """PSNR of the stored curve = PSNR of the model's output against the HQ truth computed here; the best InDI
    N beats bicubic; HQ itself is consistent with its LQ (few pixels beyond 3 sigma_n) while the output of a
    model that invents structure is not."""
    from scipy import ndimage

    from tomo4d.enhance import prepare_pair
    from tomo4d.enhance.sample import restore_slices
    from tomo4d.enhance.steps import _Judge
    from tomo4d.quality import psnr

    lq, hq = synth_pair
    sw = model.sweep
    pair = prepare_pair(lq, hq, register=False, val_fraction=model.info.config.val_fraction)
    zs = list(sw.slices)
    info = model.info
    ref, up, m = pair.hq[zs], pair.lq[zs], pair.mask[zs]
    rng = float(np.percentile(ref[m], 99.9) - np.percentile(ref[m], 0.1))
    n = sw.steps[1]
    out = info.hq_scaling.inverse(restore_slices(model, info.lq_scaling.forward(up), steps=n, seed=12345,
                                                 slice_ids=zs))
    assert psnr(ref, out, data_range=rng, mask=m) == pytest.approx(sw.psnr_db[1], abs=1e-3)
    # the detail power: the output's power beyond LQ's Nyquist over HQ's, computed here from its definition
    d = np.stack([ndimage.distance_transform_edt(k) if not k.all() else np.full(k.shape, 8.0) for k in m])
    w = (0.5 - 0.5 * np.cos(np.pi * np.minimum(d / 8, 1))) * np.outer(np.hanning(m.shape[1]),
                                                                     np.hanning(m.shape[2]))[None]
    band = np.hypot(np.fft.fftfreq(m.shape[1])[:, None], np.fft.rfftfreq(m.shape[2])[None, :])
    band = (band >= 0.25) & (band < 0.5)

    def power(a):
        a = a.astype(float)
        c = [(a[k] - (a[k] * w[k]).sum() / w[k].sum()) * w[k] for k in range(len(a))]
        return sum(float((np.abs(np.fft.rfft2(x))[band] ** 2).sum()) for x in c)

    assert sw.detail_power[1] == pytest.approx(power(out) / power(ref), rel=1e-6)
    assert max(sw.psnr_db) > sw.bicubic["psnr_db"] + 1.0
    # the truth degraded back agrees with the LQ input: ~Gaussian-tail fraction beyond 3 sigma_n
    assert sw.hq["inconsistent_fraction"] < 0.1 and sw.lq_noise > 0
    # a hallucination: bright 6x6 px squares added where HQ has none -> flagged by the guard
    judge = _Judge(model, ref, up, m, pair.hq_voxel_size_nm)
    fake = ref.copy()
    span = float(np.percentile(ref[m], 99) - np.percentile(ref[m], 1))
    for y0 in range(30, 70, 12):
        fake[:, y0:y0 + 6, 40:46] += span
    rms_fake, frac_fake = judge.consistency(fake)
    rms_hq, frac_hq = judge.consistency(ref)
    assert frac_fake > frac_hq + 0.01 and rms_fake > 1.5 * rms_hq


def test_consistency_projection_pulls_the_output_onto_the_lq(model, synth_pair):
    from tomo4d.enhance import enhance_slices
    from tomo4d.enhance.steps import degrade_slices

    lq, _ = synth_pair
    a = lq.numpy()[3:5].astype(np.float32)
    free = enhance_slices(model, a, steps=4)
    proj = enhance_slices(model, a, steps=4, consistency=True)

    def resid(x):
        return float(np.sqrt(np.mean((degrade_slices(x, model) - a) ** 2)))

    assert resid(proj) < 0.5 * resid(free)


def test_a_model_folder_without_a_sweep_falls_back_and_says_so(trained, synth_pair, tmp_path):
    from tomo4d.enhance import enhance_volume, load_model
    from tomo4d.enhance.steps import SWEEP_FILE

    old = tmp_path / "old_model"
    shutil.copytree(trained[0], old)
    (old / SWEEP_FILE).unlink()
    cfg = json.loads((old / "config.json").read_text())
    cfg["recommended_steps"] = 8                      # what older versions stored (val_steps, default 8)
    (old / "config.json").write_text(json.dumps(cfg))
    m = load_model(old, device="cpu")
    assert m.sweep is None
    lq, _ = synth_pair
    with pytest.warns(UserWarning, match="no step sweep.*stored default of 8 InDI steps"):
        out = enhance_volume(m, lq, z_interp=False)
    assert out.metadata.extra["enhance"]["steps"] == 8
    assert out.metadata.extra["enhance"]["steps_from"].startswith("stored default")


@pytest.mark.parametrize("steps, pattern", [((0, 2), r"sweep_steps"), ((1, 51), r"sweep_steps"), ((), r"sweep_steps")])
def test_config_refuses_a_sweep_outside_1_to_50(steps, pattern):
    from tomo4d.enhance import TrainConfig

    with pytest.raises(InputError, match=pattern):
        TrainConfig.preset("tiny", sweep_steps=steps)


def test_sweep_refuses_a_range_outside_1_to_50(model, synth_pair):
    from tomo4d.enhance import sweep_steps

    lq, hq = synth_pair
    with pytest.raises(InputError, match=r"steps reaches 51 steps, outside 1\.\.50"):
        sweep_steps(model, lq, hq, steps=[1, 51], register=False)
    with pytest.raises(InputError, match="rule"):
        sweep_steps(model, lq, hq, steps=[1, 2], register=False, rule="best")


def test_stored_sweep_that_is_damaged_is_named(trained, tmp_path):
    from tomo4d.enhance import load_model
    from tomo4d.enhance.steps import SWEEP_FILE
    from tomo4d.errors import FormatError

    bad = tmp_path / "bad"
    shutil.copytree(trained[0], bad)
    d = json.loads((bad / SWEEP_FILE).read_text())
    d["psnr_db"] = d["psnr_db"][:-1]
    (bad / SWEEP_FILE).write_text(json.dumps(d))
    with pytest.raises(FormatError, match="step_sweep.json.*one value per step count"):
        load_model(bad, device="cpu")


def test_step_sweep_round_trips_through_json():
    from tomo4d.enhance.steps import StepSweep

    sw = _sweep([20.0, 21.0], [math.nan, 90.0], [0.0, 0.1])
    back = StepSweep.from_dict(json.loads(json.dumps(sw.to_dict())))
    assert back.steps == sw.steps and back.psnr_db == sw.psnr_db and math.isnan(back.fwhm_nm[0])
    assert dataclasses.replace(back, fwhm_nm=sw.fwhm_nm).fwhm_nm[1] == 90.0
