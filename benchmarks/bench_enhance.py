"""Benchmarks of tomo4d.enhance (not tests).

    .venv/bin/python benchmarks/bench_enhance.py speed [PRESET] [STEPS] [SIZES]
        # per-step cost vs one forward pass (1 torch thread; CPU and wall s), new and old tiling
    .venv/bin/python benchmarks/bench_enhance.py synthetic  # acceptance on the phantom experiment
    .venv/bin/python benchmarks/bench_enhance.py real [TRAIN_STEPS] [CASES] [CONSISTENCY 0/1]
        # issue-19 acceptance at the recommended N: snow_xct_100.tif (3D) and cell_xct_slice_1.tif (2D)
    .venv/bin/python benchmarks/bench_enhance.py memory [SLICES_LIST] [NY]  # peak RSS of streamed apply
    .venv/bin/python benchmarks/bench_enhance.py training [TRAIN_STEPS] [VAL_EVERY] [TIMED_STEPS] [REPS]
        # issue 19, 1 torch thread: small-preset training steps/s fp32 vs bf16 (alternating, same batches) and
        # the cost of one validation; then the validation PSNR/SSIM against the step on the snow pair
    .venv/bin/python benchmarks/bench_enhance.py acceptance [TRAIN_STEPS] [INDI_STEPS] [GAN 0/1] [MODEL_DIR] [DRIFT_NM]
        # issue-6 acceptance on a phantom of realistic particle size (128^3, particle radius 1200 nm,
        # twin sample for the in-situ series): InDI / CNN / GAN trained on the pair, judged on T0.
        # INDI_STEPS may be a comma-separated list (e.g. 6,10,15): every count is judged with one
        # trained model.  With MODEL_DIR the models are kept there (and re-used when already trained)
        # and MODEL_DIR/acceptance_report.html states every table and criterion.  DRIFT_NM (default 0):
        # RMS local misregistration of the LQ training scan (phantom ``pair_drift_nm``).

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


def _untrained_model(preset: str):
    """An untrained network of ``preset`` (seeded), wrapped as a float32 100 nm -> 50 nm model."""
    import torch

    from tomo4d.enhance import ModelInfo, Scaling, TrainConfig
    from tomo4d.enhance.model import EnhanceModel
    from tomo4d.enhance.network import InDINet

    cfg = TrainConfig.preset(preset)
    torch.manual_seed(0)
    net = InDINet(cfg.network).eval().to(memory_format=torch.channels_last)   # as load_model sets it
    return EnhanceModel(net, ModelInfo(cfg, Scaling(-1, 1), Scaling(-1, 1), "float32", (100.0,) * 3, (50.0,) * 3))


def bench_speed(presets=("small",), steps: int = 3, sizes="512,2048", reps: int = 3):
    """Per-InDI-step cost against one forward pass of the same network on the same slice (issue 20).

    One torch thread (stated in the output; restored after).  For each slice size: A/B alternating, ``reps``
    repetitions, medians: one forward pass of the whole slice (``net(x, t)``, channels-last weights as
    :func:`tomo4d.enhance.load_model` sets them), ``restore_slices`` with ``steps`` steps (per step), and
    the tiling before issue 20 (4 px border, fixed-stride 512^2 tiles; the copy kept in
    tests/enhance/test_tiling.py).  CPU seconds (``time.process_time``) and wall seconds, labelled.
    """
    import torch

    from tomo4d.enhance.sample import restore_slices

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "enhance"))
    from test_tiling import _legacy_restore

    presets = presets.split(",") if isinstance(presets, str) else presets
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for name in presets:
            model = _untrained_model(name)
            for n in [int(v) for v in str(sizes).split(",")]:
                _step_cost(model, name, n, steps, reps, restore_slices, _legacy_restore)
    finally:
        torch.set_num_threads(threads)


def _step_cost(model, name, n, steps, reps, restore_slices, legacy):
    import torch

    img = np.random.default_rng(0).uniform(-1, 1, (1, n, n)).astype(np.float32)
    xt = torch.from_numpy(img[:, None]).contiguous(memory_format=torch.channels_last)
    tt = torch.ones(1)
    restore_slices(model, img[:, :64, :64], steps=1)  # warm-up

    def forward():
        with torch.inference_mode():
            model.net(xt, tt)

    runs = {"forward": forward,
            "step_new": lambda: restore_slices(model, img, steps=steps, tile=512, overlap=64),
            "step_old": lambda: legacy(model, img, steps=steps, seed=0, tile=512, overlap=64)}
    cpu = {k: [] for k in runs}
    wall = {k: [] for k in runs}
    for _ in range(reps):
        for k, f in runs.items():
            c0, w0 = time.process_time(), time.perf_counter()
            f()
            div = 1 if k == "forward" else steps
            cpu[k].append((time.process_time() - c0) / div)
            wall[k].append((time.perf_counter() - w0) / div)
    med = {k: float(np.median(v)) for k, v in cpu.items()}
    medw = {k: float(np.median(v)) for k, v in wall.items()}
    _emit(bench="enhance_step_cost", preset=name, slice=f"{n}x{n}", torch_threads=torch.get_num_threads(), reps=reps,
          forward_cpu_s=med["forward"], step_cpu_s=med["step_new"], step_old_cpu_s=med["step_old"],
          forward_wall_s=medw["forward"], step_wall_s=medw["step_new"], step_old_wall_s=medw["step_old"],
          step_over_forward_cpu=med["step_new"] / med["forward"],
          old_step_over_forward_cpu=med["step_old"] / med["forward"],
          params=sum(p.numel() for p in model.net.parameters()))


def _memory_child(n_slices: int, ny: int, workdir: str):
    """One streamed enhancement in this (fresh) process: LQ zarr on disk -> enhanced zarr on disk."""
    import resource

    import dask.array as da

    from tomo4d.enhance import enhance_volume
    from tomo4d.io import open_volume, save_volume
    from tomo4d.volume import Volume

    wd = Path(workdir)
    src = wd / f"lq_{n_slices}.zarr"
    lazy = da.random.RandomState(0).uniform(-1, 1, (n_slices, ny, ny), chunks=(4, ny, ny)).astype(np.float32)
    save_volume(Volume(lazy, 100.0), src, overwrite=True)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    model = _untrained_model("tiny")
    vol = open_volume(src)
    t0 = time.perf_counter()
    out = enhance_volume(model, vol, steps=1, tile=512, overlap=64)
    save_volume(out, wd / f"out_{n_slices}.zarr", overwrite=True)
    dt = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    _emit(bench="enhance_memory", lq_shape=[n_slices, ny, ny], out_shape=list(out.shape),
          lq_mib=n_slices * ny * ny * 4 / 2 ** 20, out_mib=float(np.prod(out.shape)) * 4 / 2 ** 20,
          peak_rss_mib=peak, rss_before_enhance_mib=base, seconds=dt)


def bench_memory(slices="16,64", ny: int = 1024):
    """Peak memory of streamed enhancement (tiny untrained network, 1 step) for growing volumes.

    Each size runs in a fresh process; bounded memory means the peak does not grow with the
    number of slices while the output does (the baseline is the smallest run's peak).
    """
    import subprocess
    import tempfile

    runs = []
    with tempfile.TemporaryDirectory() as wd:
        for n in [int(v) for v in str(slices).split(",")]:
            done = subprocess.run([sys.executable, __file__, "_memory_child", str(n), str(ny), wd], check=True,
                                  capture_output=True, text=True)
            print(done.stdout, end="", flush=True)
            runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    base = runs[0]
    for r in runs[1:]:
        _emit(bench="enhance_memory_ratio", lq_slices=r["lq_shape"][0], baseline_lq_slices=base["lq_shape"][0],
              output_ratio=r["out_mib"] / base["out_mib"], peak_rss_ratio=r["peak_rss_mib"] / base["peak_rss_mib"])


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


def _degrade_real(a: np.ndarray, rng, *, axes: tuple[int, ...]) -> np.ndarray:
    """The existing benchmark's degradation: Gaussian blur sigma 1 px, 2x binning along ``axes``, Gaussian
    noise of 5 % of the original's standard deviation."""
    from scipy import ndimage

    sig = [1.0 if i in axes else 0.0 for i in range(a.ndim)]
    b = ndimage.gaussian_filter(a, sig)
    f = [2 if i in axes else 1 for i in range(a.ndim)]
    s = [d // k for d, k in zip(b.shape, f)]
    b = b[tuple(slice(0, n * k) for n, k in zip(s, f))]
    shp = [v for n, k in zip(s, f) for v in (n, k)]
    b = b.reshape(shp).mean(tuple(range(1, 2 * a.ndim, 2)))
    return (b + rng.normal(0, 0.05 * float(np.std(a)), b.shape)).astype(np.float32)


def _sweep_emit(case, model):
    sw = model.sweep
    nan = (float("nan"),) * len(sw.steps)
    for (n, p, s_, f, c, q), r, d in zip(sw.rows(), sw.fwhm_ratio or nan, sw.detail_power or nan):
        _emit(bench="real_sweep", case=case, steps=n, psnr_db=p, ssim=s_, detail_power=d, fwhm_nm=f, fwhm_ratio=r,
              consistency_rms=c, inconsistent_pct=q)
    _emit(bench="real_sweep_refs", case=case, bicubic=sw.bicubic, hq=sw.hq, lq_noise=sw.lq_noise,
          recommended=sw.recommended, rule=sw.rule)


def _verdict(case, n, psnr_bic, psnr_indi, f_hq, f_bic, f_indi, **extra):
    closer = (None if not all(np.isfinite(v) for v in (f_hq, f_bic, f_indi))
              else abs(f_indi - f_hq) < abs(f_bic - f_hq))
    _emit(bench="real_acceptance", case=case, recommended_steps=n, psnr_bicubic_db=psnr_bic, psnr_indi_db=psnr_indi,
          psnr_gain_db=psnr_indi - psnr_bic, psnr_gain_met=bool(psnr_indi >= psnr_bic + 1.0),
          fwhm_hq_nm=f_hq, fwhm_bicubic_nm=f_bic, fwhm_indi_nm=f_indi, fwhm_closer_than_bicubic=closer, **extra)


def bench_real(train_steps: int = 300, cases: str = "snow,cell", consistency: int = 0):
    """Real-data acceptance of issue 19 at the recommended N, one torch thread (CPU s and wall s labelled).

    snow (snow_xct_100.tif, 3D route): degraded as before (3D blur sigma 1, 2x2x2 binning, 5 % noise),
    trained on z 0-49 (its last 10 % validate and choose N), judged on z 50-99 by
    :func:`tomo4d.enhance.evaluate` (all 8 central slices, automatic edges).  cell (cell_xct_slice_1.tif,
    2D route, one slice): degraded the same way in-plane, trained on the top 75 % of the image (cut into
    strips, the bottom strip of that part validates), judged on the unseen bottom 25 % (PSNR on HQ's
    0.1-99.9 percentile range, automatic edge FWHM of the 2D image).  Pixel sizes: HQ 50 nm, LQ 100 nm.
    """
    import tempfile

    import torch

    from tomo4d import Volume
    from tomo4d.enhance import TrainConfig, load_model, train

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for case in str(cases).split(","):
            p = REAL / {"snow": "snow_xct_100.tif", "cell": "cell_xct_slice_1.tif"}[case]
            if not p.is_file():
                _emit(bench="real", case=case, skipped=f"{p.name} not available")
                continue
            rng = np.random.default_rng(0)
            cfg = TrainConfig.preset("small", steps=train_steps, crop=48, checkpoint_every=0, val_fraction=0.1)
            with tempfile.TemporaryDirectory() as d:
                c0, w0 = time.process_time(), time.perf_counter()
                if case == "snow":
                    from tomo4d.io import open_volume

                    hq = open_volume(p).numpy().astype(np.float32)
                    n = hq.shape[0] // 2 // 2 * 2
                    tr, te = hq[:n], hq[n:2 * n]
                    res = train(Volume(_degrade_real(tr, rng, axes=(0, 1, 2)), 100.0), Volume(tr, 50.0),
                                Path(d) / "m", config=cfg, register=False, fov=False, route="volume")
                    test = (Volume(_degrade_real(te, rng, axes=(0, 1, 2)), 100.0), Volume(te, 50.0))
                else:
                    from tomo4d.io import open_image

                    hq = open_image(p).astype(np.float32)
                    cut = (hq.shape[0] * 3 // 4) // 4 * 4
                    tr, te = hq[:cut], hq[cut:]
                    res = train(Volume(_degrade_real(tr, rng, axes=(0, 1))[None], (50.0, 100.0, 100.0)),
                                Volume(tr[None], 50.0), Path(d) / "m", config=cfg, register=False, fov=False,
                                route="slices")
                    test = (_degrade_real(te, rng, axes=(0, 1)), te)
                _emit(bench="real_train", case=case, steps=res.steps, cpu_s=time.process_time() - c0,
                      wall_s=time.perf_counter() - w0, val_psnr_db=res.val_psnr_db, val_psnr_bicubic_db=res.val_psnr_lq_db,
                      recommended_steps=res.recommended_steps, torch_threads=torch.get_num_threads())
                model = load_model(res.model_dir, device="cpu")
                _sweep_emit(case, model)
                _judge_real(case, model, test, bool(consistency))
    finally:
        torch.set_num_threads(threads)


def _judge_real(case, model, test, consistency):
    from tomo4d.enhance import enhance_image, evaluate, upsample2_xy
    from tomo4d.enhance.sweep_edges import edge_options_for
    from tomo4d.enhance.sweep_edges import slice_fwhm as _fwhm
    from tomo4d.quality import psnr

    n = model.sweep.recommended_steps
    c0, w0 = time.process_time(), time.perf_counter()
    if case == "snow":
        ev = evaluate(*test, models={"InDI": model}, register=False, slices="all", max_slices=8)
        rows = {r.name: r for r in ev.table.rows}
        for r in ev.table.rows:
            _emit(bench="real_eval", case=case, **r.to_dict())
        _verdict(case, n, rows["bicubic"].psnr_db, rows["InDI"].psnr_db, rows["HQ"].fwhm_mean_nm,
                 rows["bicubic"].fwhm_mean_nm, rows["InDI"].fwhm_mean_nm, cpu_s=time.process_time() - c0,
                 wall_s=time.perf_counter() - w0)
        return
    lq, hq = test
    info = model.info
    bic = info.hq_scaling.inverse(info.lq_scaling.forward(upsample2_xy(lq)))
    rng_ = float(np.percentile(hq, 99.9) - np.percentile(hq, 0.1))
    m = np.ones(hq.shape, bool)[None]
    vs = (50.0, 50.0, 50.0)
    opts, note = edge_options_for(hq[None], m, vs)      # the sweep's rule: thin-structure options if HQ needs them
    f_hq, f_bic = _fwhm(hq[None], m, vs, opts), _fwhm(bic[None], m, vs, opts)
    for proj in ((False, True) if consistency else (False,)):
        out = enhance_image(model, lq, consistency=proj)
        _verdict(case, n, psnr(hq, bic, data_range=rng_), psnr(hq, out, data_range=rng_), f_hq, f_bic,
                 _fwhm(out[None], m, vs, opts), consistency_projection=proj, test_region_px=list(hq.shape), edges=note,
                 cpu_s=time.process_time() - c0, wall_s=time.perf_counter() - w0)
    for k in sorted(set(model.sweep.steps)):     # the whole curve on the unseen region, for the record
        out = enhance_image(model, lq, steps=k)
        _emit(bench="real_test_curve", case=case, steps=k, psnr_db=psnr(hq, out, data_range=rng_),
              fwhm_nm=_fwhm(out[None], m, vs, opts))


def bench_acceptance(train_steps: int = 600, indi_steps="6", gan: int = 1, model_dir: str | None = None,
                     pair_drift_nm: float = 0.0, shape=(128, 128, 128), particle_radius_nm: float = 1200.0,
                     max_slices: int = 24):
    """Issue-6 synthetic acceptance: train on the registered training pair, judge the unseen in-situ T0.

    The series sample is the "twin" (same statistics, different particles).  Edge resolution is given
    twice: automatic profiles (``tomo4d.quality.edge_resolution``) and label-guided profiles
    perpendicular to the true Si-particle boundaries (truth labels of T0 on the HQ grid), the same
    lines for every image.  CPU and wall times are reported (the machine is shared).
    """
    import tempfile

    from tomo4d.enhance import TrainConfig, baseline_config, evaluate, load_model
    from tomo4d.enhance.data import prepare_pair
    from tomo4d.enhance.training import train_on_pair
    from tomo4d.phantom import Phase, make_experiment
    from tomo4d.register.phi import polar_decomposition, rotation_vector_deg

    exp = make_experiment(shape=shape, n_steps=2, seed=0, particle_radius_nm=particle_radius_nm,
                          series_sample="twin", pair_drift_nm=float(pair_drift_nm))
    lq, hq = exp.lq.compute(), exp.hq.compute()
    t0, c0 = time.perf_counter(), time.process_time()
    pair = prepare_pair(lq, hq, register=True)
    off = np.asarray(exp.truth.hq_offset_nm) / float(hq.voxel_size_nm[0])
    ph = np.asarray(exp.lq_to_hq_phi)
    c = (np.asarray(hq.shape, float) - 1) / 2
    pts = np.stack(np.meshgrid(*[np.linspace(0, n - 1, 5) for n in hq.shape], indexing="ij"), -1).reshape(-1, 3)
    err = np.linalg.norm((pts - c) @ ph[:3, :3].T + c + ph[:3, 3] + off - (pts @ pair.phi[:3, :3].T + pair.phi[:3, 3]),
                         axis=1)
    rot, _ = polar_decomposition(np.linalg.solve(ph[:3, :3], pair.phi[:3, :3]))
    _emit(bench="acceptance_registration", registration=pair.registration, wall_s=time.perf_counter() - t0,
          cpu_s=time.process_time() - c0, max_error_px=float(err.max()), mean_error_px=float(err.mean()),
          rotation_error_deg=float(np.linalg.norm(rotation_vector_deg(rot))))
    n_list = [int(v) for v in str(indi_steps).split(",")]
    cfg = TrainConfig.preset("small", steps=train_steps, crop=48, checkpoint_every=0, val_steps=n_list[0])
    kinds = [("InDI", cfg), ("CNN", baseline_config(cfg, "regression"))]
    if gan:
        kinds.append(("GAN", baseline_config(cfg, "gan")))
    models = {}
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(model_dir) if model_dir else Path(tmp)
        for name, cf in kinds:
            where = d / name
            if (where / "config.json").exists():
                _emit(bench="acceptance_train", model=name, reused=str(where))
            else:
                t0, c0 = time.perf_counter(), time.process_time()
                r = train_on_pair(pair, where, config=cf, input_dtype=str(lq.dtype))
                _emit(bench="acceptance_train", model=name, steps=r.steps, wall_s=time.perf_counter() - t0,
                      cpu_s=time.process_time() - c0, val_psnr_db=r.val_psnr_db,
                      val_psnr_bicubic_db=r.val_psnr_lq_db)
            models[name] = load_model(where, device="cpu")
    # the in-situ series is aligned with the sample frame: its HQ field sits at the known offset
    phi0 = np.eye(4)
    phi0[:3, 3] = off
    s_lq, s_hq = exp.series[0].compute(), exp.series_hq[0].compute()
    labels = exp.truth.labels(0, grid="hq")
    # centre the evaluated block on the slices with the most silicon (the anode, not the separator)
    si = np.convolve((labels == int(Phase.SILICON)).sum((1, 2)), np.ones(max_slices), mode="same")
    zc = int(np.argmax(si))
    _emit(bench="acceptance_slices", z_centre=zc, max_slices=max_slices)
    res, evs = {}, {}
    for n in n_list:
        for how, kw in (("automatic", {}), ("label-guided", {"edge_labels": labels,
                                                              "edge_foreground": [int(Phase.SILICON)]})):
            t0, c0 = time.perf_counter(), time.process_time()
            ev = evaluate(s_lq, s_hq, models=models, steps=n, register=False, phi0=phi0, slices="all",
                          max_slices=max_slices, z_centre=zc, **kw)
            rows = {r.name: r for r in ev.table.rows}
            res[(n, how)] = rows
            evs[(n, how)] = ev
            for r in ev.table.rows:
                _emit(bench="acceptance_eval", edges=how, indi_steps=n, **r.to_dict())
            _emit(bench="acceptance_eval_time", edges=how, wall_s=time.perf_counter() - t0,
                  cpu_s=time.process_time() - c0,
                  edge_errors={k: str(v) for k, v in dict(getattr(ev.table, "edge_errors", {}) or {}).items()})
    verdicts = {}
    for (n, how), rows in res.items():
        lq_r, hq_r, indi, cnn = rows["LQ"], rows["HQ"], rows["InDI"], rows["CNN"]

        def ratio(a, b):
            return None if a is None or b is None else a / b

        verdicts[(n, how)] = [
            ("edge FWHM <= 0.6 x LQ", ratio(indi.fwhm_mean_nm, lq_r.fwhm_mean_nm), "<= 0.6"),
            ("edge FWHM within 25 % of HQ", ratio(indi.fwhm_mean_nm, hq_r.fwhm_mean_nm), "0.75-1.25"),
            ("CNR above LQ", ratio(indi.cnr, lq_r.cnr), "> 1"),
            ("SIFT congruent features >= 1.5 x LQ", ratio(indi.sift_matches, max(lq_r.sift_matches or 0, 1)),
             ">= 1.5"),
            ("edge FWHM below the regression CNN's", ratio(indi.fwhm_mean_nm, cnn.fwhm_mean_nm), "< 1")]
        _emit(bench="acceptance", edges=how, train_steps=train_steps, indi_steps=n,
              fwhm_nm={k: v.fwhm_mean_nm for k, v in rows.items()},
              indi_over_lq_fwhm=ratio(indi.fwhm_mean_nm, lq_r.fwhm_mean_nm),
              indi_over_hq_fwhm=ratio(indi.fwhm_mean_nm, hq_r.fwhm_mean_nm),
              cnr={k: v.cnr for k, v in rows.items()},
              sift={k: v.sift_matches for k, v in rows.items()},
              sift_indi_over_lq=ratio(indi.sift_matches, max(lq_r.sift_matches or 0, 1)),
              indi_better_than_cnn=(None if indi.fwhm_mean_nm is None or cnn.fwhm_mean_nm is None
                                    else indi.fwhm_mean_nm < cnn.fwhm_mean_nm))
    if model_dir:
        out = _acceptance_report(Path(model_dir) / "acceptance_report.html", evs, verdicts,
                                 train_steps=train_steps, pair_drift_nm=float(pair_drift_nm), z_centre=zc)
        _emit(bench="acceptance_report", path=str(out))


def _acceptance_report(path, evs, verdicts, *, train_steps, pair_drift_nm, z_centre):
    """HTML report of the acceptance run: every evaluation table, the criteria and a slice figure."""
    from tomo4d.enhance import evaluation_figure
    from tomo4d.report.html import Report, slice_figure

    limits = {"<= 0.6": lambda v: v <= 0.6, "0.75-1.25": lambda v: 0.75 <= v <= 1.25, "> 1": lambda v: v > 1,
              ">= 1.5": lambda v: v >= 1.5, "< 1": lambda v: v < 1}
    rep = Report("tomo4d InDI acceptance (issue 6)")
    rep.section("Set-up", f"Phantom 128^3 (LQ 100 nm, HQ 50 nm), particle radius 1200 nm, twin sample for the "
                          f"in-situ series; LQ training scan misregistered by a smooth field of {pair_drift_nm:g} nm "
                          f"RMS after its affine part. InDI and the regression CNN (same network, one step): "
                          f"'small' preset, {train_steps} training steps each, on the registered training pair. "
                          f"Judged on the unseen in-situ step T0, 24 slices centred on z = {z_centre}.")
    for (n, how), ev in evs.items():
        rep.section(f"InDI {n} steps, {how} edges")
        rep.table(ev.header(), ev.rows())
        rep.table(["criterion", "InDI ratio", "required", "met"],
                  [(c, v, lim, bool(v is not None and limits[lim](v))) for c, v, lim in verdicts[(n, how)]])
    n, how = (6, "label-guided") if (6, "label-guided") in evs else next(iter(evs))
    ev = evs[(n, how)]
    k = len(ev.slices) // 2
    names = [m for m in ("LQ", "bicubic", "CNN", "InDI", "HQ") if m in ev.images]
    rep.section("Images")
    rep.figure(slice_figure([ev.images[m][k] for m in names], names), f"Middle evaluated slice (InDI {n} steps).")
    rep.figure(evaluation_figure(ev), "Matched regions of interest and profiles across one HQ edge.")
    return rep.save(path)


def _snow_pair(rng):
    """The snow pair of :func:`bench_real`: HQ z 0-49 of snow_xct_100.tif (50 nm), LQ degraded (100 nm)."""
    from tomo4d import Volume
    from tomo4d.io import open_volume

    hq = open_volume(REAL / "snow_xct_100.tif").numpy().astype(np.float32)
    n = hq.shape[0] // 2 // 2 * 2
    tr = hq[:n]
    return Volume(_degrade_real(tr, rng, axes=(0, 1, 2)), 100.0), Volume(tr, 50.0)


def bench_training(train_steps: int = 300, val_every: int = 25, timed_steps: int = 20, reps: int = 3):
    """Issue 19 on this CPU, one torch thread (stated; restored after): (1) training steps/s of the small preset
    (crop 64, batch 4) in fp32 and bf16 on the snow pair, ``reps`` alternating timings of ``timed_steps``
    steps after 2 warm-up steps, medians, wall and CPU s labelled; one validation's cost; (2) the small preset
    (crop 48, as :func:`bench_real`) trained ``train_steps`` steps with ``val_every``: the validation curve,
    the under-training verdict, wall and CPU s.  ``timed_steps=0`` skips (1), ``train_steps=0`` skips (2) (they
    can run as two processes).  bf16 on a CPU without bf16 instructions (AVX2 only) is emulated: slow."""
    import tempfile

    import torch

    from tomo4d.enhance import TrainConfig, train
    from tomo4d.enhance.validation_curve import load_curve

    if not (REAL / "snow_xct_100.tif").is_file():
        _emit(bench="training", skipped="snow_xct_100.tif not available")
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        lq, hq = _snow_pair(np.random.default_rng(0))
        if timed_steps:
            _bench_train_speed(lq, hq, timed_steps, reps)
        if not train_steps:
            return
        cfg = TrainConfig.preset("small", steps=train_steps, crop=48, checkpoint_every=0, val_fraction=0.1,
                                 val_every=val_every)
        with tempfile.TemporaryDirectory() as d:
            c0, w0 = time.process_time(), time.perf_counter()
            res = train(lq, hq, Path(d) / "m", config=cfg, register=False, fov=False, route="volume")
            wall_s, cpu_s = time.perf_counter() - w0, time.process_time() - c0
            curve = load_curve(res.model_dir)
        for s_, p_, q_ in zip(curve.steps, curve.psnr_db, curve.ssim):
            _emit(bench="val_curve", case="snow", step=s_, val_psnr_db=p_, val_ssim=q_)
        _emit(bench="val_curve_summary", case="snow", steps=res.steps, wall_s=wall_s, cpu_s=cpu_s,
              torch_threads=torch.get_num_threads(), bicubic_psnr_db=curve.psnr_lq_db, bicubic_ssim=curve.ssim_lq,
              late_rise_db=curve.late_rise_db, undertrained=curve.undertrained, summary=curve.summary,
              recommended_steps=res.recommended_steps)
    finally:
        torch.set_num_threads(threads)


def _bench_train_speed(lq, hq, timed_steps, reps):
    """Part (1) of :func:`bench_training`."""
    import torch

    from tomo4d.enhance import Scaling, TrainConfig, prepare_pair
    from tomo4d.enhance.training import Trainer

    pair = prepare_pair(lq, hq, register=False, fov=False, val_fraction=0.1, route="volume")
    tr_ = list(pair.train_slices)
    sl, sh = (Scaling.from_data(a[tr_], percentiles=(0.1, 99.9)) for a in (pair.lq, pair.hq))
    trainers = {p: Trainer(sl.forward(pair.lq), sh.forward(pair.hq), pair.mask, pair.train_slices,
                           pair.val_slices, TrainConfig.preset("small", precision=p), device="cpu")
                for p in ("fp32", "bf16")}
    for t in trainers.values():
        t.train_step(), t.train_step()
    wall: dict[str, list] = {}
    cpu: dict[str, list] = {}
    for _ in range(reps):
        for p, t in trainers.items():
            c0, w0 = time.process_time(), time.perf_counter()
            for _ in range(timed_steps):
                t.train_step()
            wall.setdefault(p, []).append(timed_steps / (time.perf_counter() - w0))
            cpu.setdefault(p, []).append(timed_steps / (time.process_time() - c0))
    val_s = {}
    for p, t in trainers.items():
        w0 = time.perf_counter()
        t.validate()
        val_s[p] = time.perf_counter() - w0
    med = {p: float(np.median(v)) for p, v in wall.items()}
    _emit(bench="train_speed", preset="small", crop=64, batch=4, torch_threads=torch.get_num_threads(),
          steps_per_wall_s=med, steps_per_cpu_s={p: float(np.median(v)) for p, v in cpu.items()},
          bf16_over_fp32_wall=med["bf16"] / med["fp32"], validation_wall_s=val_s,
          val_slices=min(4, len(pair.val_slices)), val_steps=8)


if __name__ == "__main__":
    what = sys.argv[1:2] or ["speed"]
    extra = [a if ("," in a or not a.lstrip("-").isdigit()) else int(a) for a in sys.argv[2:]]
    for w in what:
        {"speed": bench_speed, "synthetic": bench_synthetic, "real": bench_real,
         "acceptance": bench_acceptance, "memory": bench_memory, "_memory_child": _memory_child,
         "training": bench_training}[w](*extra)
