"""Demo stage ``enhance``: train the small InDI model on the phantom's LQ/HQ pair, enhance the series.

Trains the ``"small"`` preset (shortened to fit the demo's time budget),
evaluates it against HQ on the first in-situ step, enhances every in-situ LQ step and stores them in
``ctx.store["enhanced_series"]`` for later stages.
"""

from __future__ import annotations

import logging
import time

import numpy as np

log = logging.getLogger(__name__)

#: training steps of the demo models (the "small" preset, shortened for the 3-minute budget)
DEMO_TRAIN_STEPS = 200
DEMO_INDI_STEPS = 6


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
    from ..report.html import slice_figure

    t0 = time.perf_counter()
    exp = _experiment(ctx)
    lq, hq = exp.lq.compute(), exp.hq.compute()
    cfg = TrainConfig.preset("small", steps=DEMO_TRAIN_STEPS, crop=48, seed=ctx.seed, val_every=0,
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
    t_train = time.perf_counter() - t0

    # evaluation on the unseen in-situ series (first step), against its HQ scan
    series = list(exp.series)
    series_hq = list(getattr(exp, "series_hq", ()) or ())
    if series_hq:
        ev = evaluate(series[0].compute(), series_hq[0].compute(), models={"InDI": indi},
                      steps=DEMO_INDI_STEPS, slices="all", max_slices=16)
        where = "in-situ step T0 (unseen by training), against its HQ scan"
    else:
        ev = evaluate(lq, hq, models={"InDI": indi}, steps=DEMO_INDI_STEPS, pair=pair)
        where = "held-out slices of the training pair"

    enhanced = []
    for vol in series:
        e = enhance_volume(indi, vol.compute(), steps=DEMO_INDI_STEPS, seed=ctx.seed, tile=256, overlap=32)
        enhanced.append(e.compute())
    ctx.store["enhanced_series"] = tuple(enhanced)

    rep = ctx.report
    rep.section("InDI enhancement",
                f"Small InDI network ({cfg.network.base_filters} filters, depth {cfg.network.depth}, "
                f"dilations {list(cfg.network.dilations)}) trained {res.steps} steps on the LQ/HQ training pair "
                f"({pair.registration}; the CNN/GAN baselines are in 'tomo4d enhance evaluate' and the benchmark). "
                f"Training took {t_train:.0f} s on {res.device}; {DEMO_INDI_STEPS} InDI steps at inference. "
                f"Validation PSNR (held-out slices, [-1, 1] units): InDI {res.val_psnr_db:.2f} dB, "
                f"bicubic {res.val_psnr_lq_db:.2f} dB.")
    rep.table(ev.header(), ev.rows(), caption=f"Quality on the {where}.")
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
    return (f"InDI trained {res.steps} steps in {t_train:.0f} s; edge FWHM LQ {_fmt(fw.get('LQ'))} -> "
            f"InDI {_fmt(fw.get('InDI'))} nm (HQ {_fmt(fw.get('HQ'))}); {len(enhanced)} steps enhanced")


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
