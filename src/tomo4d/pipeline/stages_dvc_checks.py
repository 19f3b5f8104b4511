"""What the dvc stage's global route takes from the run besides the two scans: the interfaces quantify measured
(``dvc.interfaces``) and the noise of T0 (``dvc.flag_textureless``, the Laplacian's weight on deconvolved scans)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from .series import analysis_enhanced, analysis_voxel_size_nm, read_repeat, read_series

log = logging.getLogger(__name__)


def interface_motions(ctx, ref_step: int, step: int) -> list:
    """The :class:`tomo4d.dvc.InterfaceMotion` of the pair ``ref_step -> step``: the collector and separator
    interfaces where the quantify stage found them in ``ref_step`` (px), each moved to where it found them in
    ``step``; an interface quantify could not place in either (no valid column) is left out.

    Each pair's planes are the measured interfaces of its own reference, so a composed field's interface
    displacement is the telescoping sum of the measured motions.  Until session 24 an incremental pair took the T0
    interfaces moved into its reference by the composed field with the material one node spacing outside them
    (:func:`tomo4d.dvc.moved_band`): below the collector the mask leaves that material unmeasured, the field there
    continued the anode's slope (-0.16 .. -0.83 px by T5 on the LQ phantom), and the plane it placed drifted step by
    step: the collector side read up to 0.048 high by T6, 0.021 with the measured planes (RESULTS.md)."""
    from ..dvc import InterfaceMotion

    t = ctx.load("quantify")
    vs = analysis_voxel_size_nm(ctx)[0]
    out = []
    for name in ("collector_z_um", "separator_z_um"):
        at, to = (float(t[name][s]) * 1e3 / vs for s in (ref_step, step))
        if np.isfinite(to) and np.isfinite(at):
            out.append(InterfaceMotion(z_px=at, displacement_px=to - at))
        else:
            log.warning("dvc: the %s interface of step %d or %d is not measured; not tied", name.split("_")[0],
                        ref_step, step)
    return out


@dataclass(frozen=True)
class T0Noise:
    """T0's noise std and where that came from, and the noise ratio the route's weight follows (:func:`t0_noise`);
    ``sigma`` None: no noise to estimate; ``ratio`` None: the weight does not follow it.  T0 itself is not held: the
    global pair's solve holds two volumes already, and :func:`flag_textureless` reads it again after the solve."""

    sigma: float | None
    source: str
    ratio: float | None = None


def t0_noise(ctx, band=None) -> T0Noise:
    """T0's noise, estimated once per dvc step from one read of T0, for both :func:`flag_textureless` and the converged
    route's Laplacian weight.  The noise: from T0 and its repeat (``inputs.repeat``: std(repeat - T0) / sqrt(2));
    without a repeat scan, from T0 alone (:func:`tomo4d.quality.noise_sigma`, the finest wavelet band: white noise
    assumed, correlated noise reads low and flags fewer nodes); on the enhanced series without a repeat scan none
    (InDI's output has no white noise to estimate).

    ``ratio``: T0's noise variance over its grey-level variance (:func:`tomo4d.quality.noise_variance_ratio`) within
    the z ``band`` (px, ``lo <= z < hi``; None: the whole scan), which sets the weight on deconvolved scans
    (:func:`tomo4d.pipeline.sections.route_regularisation`); None where the weight does not follow it
    (:func:`weight_follows_noise` false) or there is no noise (then the full weight)."""
    rep = read_repeat(ctx)
    if rep is None and analysis_enhanced(ctx.experiment):
        log.info("dvc: no repeat scan of the enhanced series; textureless nodes are not flagged")
        return T0Noise(None, "")
    t0 = read_series(ctx, 0).numpy()
    if rep is not None:
        sigma, source = float(np.std(np.asarray(rep.numpy(), np.float64) - t0) / np.sqrt(2.0)), "repeat scan"
    else:
        from ..quality import noise_sigma

        sigma, source = noise_sigma(t0), "T0's finest wavelet band (white noise assumed)"
    if not (sigma > 0 and weight_follows_noise(ctx.experiment.dvc)):
        return T0Noise(sigma, source)
    from ..quality import noise_variance_ratio

    n = t0.shape[0]
    z0, z1 = (0, n) if band is None else (max(0, int(np.ceil(band[0]))), int(np.ceil(min(band[1], n))))
    ratio = noise_variance_ratio(t0[z0:z1], noise=sigma)
    log.info("dvc: T0's noise variance over its grey-level variance in z %d..%d: %.4g (noise from %s)", z0, z1,
             ratio, source)
    return T0Noise(sigma, source, ratio)


def flag_textureless(ctx, field, noise: T0Noise):
    """``field`` (T0 -> step) with the nodes whose window in T0 as scanned holds nothing above the noise
    (:func:`t0_noise`) marked LOW_TEXTURE (:func:`tomo4d.dvc.flag_low_texture`); unflagged without a noise
    estimate.  ``notes["low_texture_noise"]`` records the value and its source.  T0, not each pair's reference: a
    region without structure (a separator whose fibres the blur wiped out), not the anode whose contrast lithiation
    lowers (each pair's reference flagged 60 % of the demo's mid-anode nodes by T3, where the field reads within
    0.2 px)."""
    from ..dvc import flag_low_texture

    if noise.sigma is None or not noise.sigma > 0:
        return field
    out = flag_low_texture(field, read_series(ctx, 0).numpy(), noise_sigma=noise.sigma)
    return out.with_(notes={**out.notes, "low_texture_noise": {"sigma": round(noise.sigma, 6),
                                                               "source": noise.source}})


def weight_follows_noise(sec) -> bool:
    """Whether the converged route's Laplacian weight follows T0's noise: deconvolved scans, and no
    ``regularisation`` the experiment file gives."""
    return bool(sec.deconvolve_iterations) and "regularisation" not in (sec.global_options or {})
