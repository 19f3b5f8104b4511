"""Benchmarks of tomo4d.enhance (not tests).

    .venv/bin/python benchmarks/bench_enhance.py speed      # CPU time per 512^2 slice at 10 steps
    .venv/bin/python benchmarks/bench_enhance.py synthetic  # acceptance on the phantom experiment
    .venv/bin/python benchmarks/bench_enhance.py real       # acceptance on snow_xct_100.tif

Prints one JSON object per measurement.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

REAL = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "real"


def _emit(**kw):
    print(json.dumps(kw, default=float), flush=True)


def bench_speed(presets=("small", "reference"), steps: int = 10):
    """Seconds per 512 x 512 up-sampled slice (256^2 LQ) with an untrained network of each preset."""
    import torch

    from tomo4d.enhance import ModelInfo, Scaling, TrainConfig
    from tomo4d.enhance.model import EnhanceModel
    from tomo4d.enhance.network import InDINet
    from tomo4d.enhance.sample import restore_slices

    for name in presets:
        cfg = TrainConfig.preset(name)
        torch.manual_seed(0)
        model = EnhanceModel(InDINet(cfg.network).eval(),
                             ModelInfo(cfg, Scaling(-1, 1), Scaling(-1, 1), "float32", (100.0,) * 3, (50.0,) * 3))
        img = np.random.default_rng(0).uniform(-1, 1, (1, 512, 512)).astype(np.float32)
        restore_slices(model, img[:, :64, :64], steps=1)  # warm-up
        t0 = time.perf_counter()
        restore_slices(model, img, steps=steps, tile=512, overlap=64)
        dt = time.perf_counter() - t0
        _emit(bench="enhance_slice_cpu", preset=name, slice="512x512", steps=steps, seconds=dt,
              threads=torch.get_num_threads(), params=sum(p.numel() for p in model.net.parameters()))


def bench_synthetic(train_steps: int = 300, indi_steps: int = 6, shape=(64, 64, 64)):
    """Train InDI + CNN (+ GAN) on the phantom's pair, evaluate on the unseen in-situ step T0."""
    import tempfile

    from tomo4d.enhance import TrainConfig, baseline_config, evaluate, load_model
    from tomo4d.enhance.data import prepare_pair
    from tomo4d.enhance.training import train_on_pair
    from tomo4d.phantom import make_experiment

    exp = make_experiment(shape=shape, n_steps=3, seed=0)
    lq, hq = exp.lq.compute(), exp.hq.compute()
    t0 = time.perf_counter()
    pair = prepare_pair(lq, hq, register=True)
    _emit(bench="prepare_pair", seconds=time.perf_counter() - t0, registration=pair.registration)
    cfg = TrainConfig.preset("small", steps=train_steps, crop=48, checkpoint_every=0, val_steps=indi_steps)
    models = {}
    with tempfile.TemporaryDirectory() as d:
        for name, c in (("CNN", baseline_config(cfg, "regression")), ("GAN", baseline_config(cfg, "gan")),
                        ("InDI", cfg)):
            t0 = time.perf_counter()
            r = train_on_pair(pair, Path(d) / name, config=c, input_dtype=str(lq.dtype))
            _emit(bench="train", model=name, steps=r.steps, seconds=time.perf_counter() - t0,
                  val_psnr_db=r.val_psnr_db, val_psnr_bicubic_db=r.val_psnr_lq_db)
            models[name] = load_model(r.model_dir, device="cpu")
        ev = evaluate(exp.series[0].compute(), exp.series_hq[0].compute(), models=models, steps=indi_steps,
                      slices="all")
    rows = {r.name: r for r in ev.table.rows}
    for r in ev.table.rows:
        _emit(bench="synthetic_eval", **r.to_dict())
    lq_r, hq_r, indi, cnn = rows["LQ"], rows["HQ"], rows["InDI"], rows["CNN"]
    _emit(bench="synthetic_acceptance",
          indi_over_lq_fwhm=indi.fwhm_mean_nm / lq_r.fwhm_mean_nm,
          indi_vs_hq_fwhm=indi.fwhm_mean_nm / hq_r.fwhm_mean_nm,
          cnr_indi=indi.cnr, cnr_lq=lq_r.cnr, sift_indi_over_lq=indi.sift_matches / max(lq_r.sift_matches, 1),
          fwhm_indi_nm=indi.fwhm_mean_nm, fwhm_cnn_nm=cnn.fwhm_mean_nm)


def bench_real(train_steps: int = 300, indi_steps: int = 6):
    """snow_xct_100.tif: degrade (2x binning, blur, noise), train on one half, evaluate on the other."""
    import tempfile

    from scipy import ndimage

    from tomo4d import Volume
    from tomo4d.enhance import TrainConfig, baseline_config, evaluate, load_model, train
    from tomo4d.io import open_volume

    p = REAL / "snow_xct_100.tif"
    if not p.is_file():
        _emit(bench="real", skipped="snow_xct_100.tif not available")
        return
    hq = open_volume(p).numpy().astype(np.float32)
    n = hq.shape[0] // 2 // 2 * 2
    rng = np.random.default_rng(0)

    def degrade(a):
        b = ndimage.gaussian_filter(a, 1.0)
        s = [d // 2 for d in b.shape]
        b = b[: 2 * s[0], : 2 * s[1], : 2 * s[2]].reshape(s[0], 2, s[1], 2, s[2], 2).mean((1, 3, 5))
        return (b + rng.normal(0, 0.05 * float(np.std(a)), b.shape)).astype(np.float32)

    halves = {"train": hq[:n], "test": hq[n:2 * n]}
    vols = {k: (Volume(degrade(v), 100.0), Volume(v, 50.0)) for k, v in halves.items()}
    cfg = TrainConfig.preset("small", steps=train_steps, crop=48, checkpoint_every=0, val_steps=indi_steps,
                             val_fraction=0.1)
    with tempfile.TemporaryDirectory() as d:
        models = {}
        for name, c in (("CNN", baseline_config(cfg, "regression")), ("InDI", cfg)):
            r = train(*vols["train"], Path(d) / name, config=c, register=False, fov=False)
            models[name] = load_model(r.model_dir, device="cpu")
        ev = evaluate(*vols["test"], models=models, steps=indi_steps, register=False, slices="all", max_slices=8)
    rows = {r.name: r for r in ev.table.rows}
    for r in ev.table.rows:
        _emit(bench="real_eval", **r.to_dict())
    _emit(bench="real_acceptance", psnr_gain_db=rows["InDI"].psnr_db - rows["bicubic"].psnr_db,
          fwhm_hq_nm=rows["HQ"].fwhm_mean_nm, fwhm_indi_nm=rows["InDI"].fwhm_mean_nm,
          fwhm_bicubic_nm=rows["bicubic"].fwhm_mean_nm)


if __name__ == "__main__":
    what = sys.argv[1:] or ["speed"]
    for w in what:
        {"speed": bench_speed, "synthetic": bench_synthetic, "real": bench_real}[w]()
