"""Demo stage ``enhance``: train the small InDI model on the phantom's LQ/HQ pair, enhance the series.

Trains the ``"small"`` preset (shortened to fit the demo's time budget),
evaluates it against HQ on the first in-situ step, enhances the part of every in-situ LQ step that
covers the HQ field (plus a margin, cropped before up-sampling: 1/4 of the LQ field's slices' area,
half its slices) and stores the results, on the HQ grid, in ``ctx.store["enhanced_series"]`` for
later stages.  Budget: <= ~150 s on two idle cores (the stage reports its wall and CPU time).
"""

from __future__ import annotations

import logging
import time

import numpy as np

log = logging.getLogger(__name__)

#: training steps of the demo models (the "small" preset, shortened for the 3-minute budget: ~45 s on 2 cores)
DEMO_TRAIN_STEPS = 1000
#: training crop of the demo (pixels of the up-sampled LQ; the preset's 64 is 2.6x dearer per step)
DEMO_CROP = 40
DEMO_INDI_STEPS = 6
#: LQ voxels enhanced around the HQ field on each side (the network's receptive field needs context)
DEMO_MARGIN_LQ = 4


def _experiment(ctx):
    exp = ctx.store.get("experiment")
    if exp is None:
        from ..phantom import make_experiment

        exp = make_experiment(shape=(64, 64, 64), n_steps=5, seed=ctx.seed)
        ctx.store["experiment"] = exp
    return exp


def stage_enhance(ctx) -> str:
    """Train, evaluate and apply InDI on the demo experiment; add a report section."""
    from ..enhance import TrainConfig, enhance_volume, evaluate, evaluation_figure, load_model
    from ..enhance.data import prepare_pair
    from ..enhance.training import TrainResult  # noqa: F401  (documentation of what train returns)
    from ..phantom import Phase
    from ..report.html import slice_figure

    t0, c0 = time.perf_counter(), time.process_time()
    exp = _experiment(ctx)
    lq, hq = exp.lq.compute(), exp.hq.compute()
    cfg = TrainConfig.preset("small", steps=DEMO_TRAIN_STEPS, crop=DEMO_CROP, seed=ctx.seed, val_every=0,
                             checkpoint_every=100, val_steps=DEMO_INDI_STEPS)
    # the phantom knows its LQ->HQ registration (the registration stage demonstrates measuring it):
    # use it to keep the demo within its time budget
    pair = prepare_pair(lq, hq, register=False, phi0=_truth_phi0(exp), val_fraction=cfg.val_fraction)
    from ..enhance.training import train_on_pair

    prov = {"lq": lq.metadata.name, "hq": hq.metadata.name, "registration": pair.registration,
            "phi_hq_to_lq_up": pair.phi.tolist()}
    res = train_on_pair(pair, ctx.path("enhance", "model_indi"), config=cfg, input_dtype=str(lq.dtype),
                        provenance=prov)
    indi = load_model(res.model_dir)
    t_train, c_train = time.perf_counter() - t0, time.process_time() - c0

    # evaluation on the unseen in-situ series (first step), against its HQ scan
    series = list(exp.series)
    series_hq = list(getattr(exp, "series_hq", ()) or ())
    if series_hq:
        labels0 = exp.truth.labels(0, grid="hq")
        # centre the evaluated block on the slices richest in silicon (edges to measure)
        z_si = int(np.argmax((labels0 == int(Phase.SILICON)).mean(axis=(1, 2))))
        ev = evaluate(series[0].compute(), series_hq[0].compute(), models={"InDI": indi},
                      steps=DEMO_INDI_STEPS, slices="all", max_slices=24, z_centre=z_si,
                      edge_labels=labels0, edge_foreground=[int(Phase.SILICON)])
        where = "in-situ step T0 (unseen by training), against its HQ scan"
    else:
        ev = evaluate(lq, hq, models={"InDI": indi}, steps=DEMO_INDI_STEPS, pair=pair)
        where = "held-out slices of the training pair"

    # enhance only the LQ region over the HQ field (+ margin), then crop the output onto the HQ grid
    lo, hi, out_sl = _hq_field_crop(exp, DEMO_MARGIN_LQ)
    enhanced = []
    for vol in series:
        sub = vol.compute().crop(*_lo_hi(lo, hi))
        e = enhance_volume(indi, sub, steps=DEMO_INDI_STEPS, seed=ctx.seed, tile=256, overlap=32).compute()
        enhanced.append(e.crop(*out_sl))
    ctx.store["enhanced_series"] = tuple(enhanced)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0

    rep = ctx.report
    rep.section("InDI enhancement",
                f"Small InDI network ({cfg.network.base_filters} filters, depth {cfg.network.depth}, "
                f"dilations {list(cfg.network.dilations)}) trained {res.steps} steps on the LQ/HQ training pair "
                f"({pair.registration}; the CNN/GAN baselines are in 'tomo4d enhance evaluate' and the benchmark). "
                f"Training took {t_train:.0f} s wall / {c_train:.0f} s CPU on {res.device}; {DEMO_INDI_STEPS} InDI steps at inference. "
                f"Validation PSNR (held-out slices, [-1, 1] units): InDI {res.val_psnr_db:.2f} dB, "
                f"bicubic {res.val_psnr_lq_db:.2f} dB. The in-situ steps are enhanced over the HQ field "
                f"(+{DEMO_MARGIN_LQ} LQ voxels of context, cropped before up-sampling). "
                f"Stage time: {wall:.0f} s wall, {cpu:.0f} s CPU.")
    rep.table(ev.header(), ev.rows(),
              caption=f"Quality on the {where}. Edge FWHM from label-guided profiles across the true silicon "
                      f"boundaries (same lines for every image). {_edge_note(ev)}")
    k = len(ev.slices) // 2
    lq_img = ev.images["LQ"][k]
    rep.figure(slice_figure([lq_img, ev.images["bicubic"][k], ev.images["InDI"][k], ev.images["HQ"][k]],
                            ["LQ", "bicubic", f"InDI ({DEMO_INDI_STEPS} steps)", "HQ"]),
               "LQ / bicubic / InDI / HQ, same slice of the in-situ step T0.")
    rep.figure(evaluation_figure(ev), "Matched regions of interest and profiles across one HQ edge.")
    if len(enhanced) > 1:
        mids = [e.numpy()[e.shape[0] // 2] for e in enhanced]
        rep.figure(slice_figure(mids, [e.metadata.time_step or f"T{i}" for i, e in enumerate(enhanced)]),
                   "InDI-enhanced in-situ series (middle slice of every step).")
    row = {r[0].split(" ")[0]: r for r in ev.rows()}
    fw = {n: row[n][4] for n in ("LQ", "InDI", "HQ") if n in row}
    return (f"stage {wall:.0f} s wall / {cpu:.0f} s CPU; InDI trained {res.steps} steps in {t_train:.0f} s; edge FWHM LQ {_fmt(fw.get('LQ'))} -> "
            f"InDI {_fmt(fw.get('InDI'))} nm (HQ {_fmt(fw.get('HQ'))}); {len(enhanced)} steps enhanced")


def _edge_note(ev) -> str:
    errs = dict(getattr(ev.table, "edge_errors", {}) or {})
    if not errs:
        return ""
    return ("No FWHM for " + ", ".join(errs) + ": too few clear, isolated edge profiles at this phantom size "
            "(the LQ blur, FWHM ~740 nm = 15 HQ px, needs ~2.5 sigma of clear label on both sides of an edge, "
            "more than the gap between the small particles of the 64^3 demo phantom; "
            + "; ".join(f"{k}: {str(v).split(';')[0]}" for k, v in errs.items()) + ").")


def _hq_field_crop(exp, margin: int):
    """LQ-grid bounds (lo, hi) of the HQ field plus ``margin`` LQ voxels, and the slices that cut the
    enhanced (x2) crop back onto the HQ grid exactly."""
    lq_vs = float(exp.params.lq_voxel_nm)
    off = np.rint(np.asarray(exp.truth.hq_offset_nm, float) / lq_vs).astype(int)
    n_hq = np.asarray(exp.hq.shape)
    ext = np.ceil(n_hq * float(exp.params.hq_voxel_nm) / lq_vs).astype(int)
    n_lq = np.asarray(exp.series[0].shape)
    lo = np.maximum(off - margin, 0)
    hi = np.minimum(off + ext + margin, n_lq)
    # enhanced voxel j of the crop is LQ coordinate lo + j/2 - 0.25; HQ voxel k is off + k/2 - 0.25
    start = 2 * (off - lo)
    out = tuple(slice(int(a), int(a + n)) for a, n in zip(start, n_hq))
    return lo, hi, out


def _lo_hi(lo, hi):
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))


def _truth_phi0(exp) -> np.ndarray:
    """The phantom's ``lq_to_hq_phi`` (about the HQ centre, moving = LQ x2 cropped at ``shape // 2``)
    as a corner-origin transform HQ voxel -> voxel of the x2 up-sampled LQ."""
    shape = np.asarray(exp.hq.shape, float)
    c = (shape - 1) / 2
    to_c, from_c, crop = np.eye(4), np.eye(4), np.eye(4)
    to_c[:3, 3], from_c[:3, 3], crop[:3, 3] = -c, c, np.asarray(exp.hq.shape) // 2
    return crop @ from_c @ np.asarray(exp.lq_to_hq_phi, float) @ to_c


def _fmt(v) -> str:
    return f"{v:.0f}" if isinstance(v, (float, np.floating)) else str(v)
