"""What the dvc stage's global route takes from the run besides the two scans: the interfaces quantify measured
(``dvc.interfaces``) and the noise of a repeated scan (``dvc.flag_textureless``)."""

from __future__ import annotations

import logging

import numpy as np

from .series import analysis_voxel_size_nm, read_repeat, read_series

log = logging.getLogger(__name__)


def interface_motions(ctx, band, step: int) -> list:
    """The :class:`tomo4d.dvc.InterfaceMotion` of the pair's reference band ``band`` (the T0 collector and separator
    interfaces moved into it, px) to where the quantify stage found them at ``step``; an interface quantify could
    not place (no valid column) is left out."""
    from ..dvc import InterfaceMotion

    t = ctx.load("quantify")
    vs = analysis_voxel_size_nm(ctx)[0]
    out = []
    for at, name in zip(band, ("collector_z_um", "separator_z_um")):
        to = float(t[name][step]) * 1e3 / vs
        if np.isfinite(to) and np.isfinite(at):
            out.append(InterfaceMotion(z_px=at, displacement_px=to - at))
        else:
            log.warning("dvc: the %s interface of step %d is not measured; not tied", name.split("_")[0], step)
    return out


def flag_textureless(ctx, field):
    """``field`` (T0 -> step) with the nodes whose window in T0 as scanned holds nothing above the noise marked
    LOW_TEXTURE (:func:`tomo4d.dvc.flag_low_texture`), the noise from T0 and its repeat (``inputs.repeat``:
    std(repeat - T0) / sqrt(2)); without a repeat scan unchanged.  T0, not each pair's reference: a region without
    structure (a separator whose fibres the blur wiped out), not the anode whose contrast lithiation lowers (each
    pair's reference flagged 60 % of the demo's mid-anode nodes by T3, where the field reads within 0.2 px)."""
    from ..dvc import flag_low_texture

    rep = read_repeat(ctx)
    if rep is None:
        return field
    rep = rep.numpy()
    t0 = read_series(ctx, 0).numpy()
    sigma = float(np.std(np.asarray(rep, np.float64) - t0) / np.sqrt(2.0))
    if not sigma > 0:
        return field
    return flag_low_texture(field, t0, noise_sigma=sigma)
