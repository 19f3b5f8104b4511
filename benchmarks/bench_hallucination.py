"""Hallucination control of InDI on the phantom (issue 19): false particles, size error, spread vs error.

    OMP_NUM_THREADS=1 PYTHONPATH=src nice -n 10 .venv/bin/python benchmarks/bench_hallucination.py \
        train MODEL_DIR KIND [TRAIN_STEPS]        # KIND InDI or CNN; kept in MODEL_DIR/KIND (re-used)
    OMP_NUM_THREADS=1 PYTHONPATH=src nice -n 10 .venv/bin/python benchmarks/bench_hallucination.py \
        judge MODEL_DIR [N_SAMPLES]               # the issue-6 criteria + hallucination at the recommended N

The phantom and training pair are the issue-6 acceptance's (``bench_enhance.py acceptance``): 128^3,
particle radius 1200 nm, twin sample for the in-situ series, LQ training scan misregistered by a smooth
100 nm RMS field after its affine part.  ``train`` trains one model on the registered pair (InDI with its
validation sweep, which recommends N; the regression CNN for the fifth criterion), one torch thread.  The
two kinds can train in parallel processes.  ``judge`` evaluates the unseen in-situ T0 of the twin sample at
the InDI model's recommended N: the five issue-6 criteria (``bench_enhance.py``), then the hallucination
report (:func:`tomo4d.enhance.hallucination.hallucination_report`) of InDI vs bicubic vs CNN vs HQ against
the true Si particles, and the spread/error rank correlation of ``n_samples`` InDI samples.

Prints one JSON object per measurement; CPU s (process) and wall s labelled.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

SHAPE = (128, 128, 128)
RADIUS_NM = 1200.0
DRIFT_NM = 100.0


def _emit(**kw):
    print(json.dumps(kw, default=float), flush=True)


def _experiment():
    from tomo4d.phantom import make_experiment

    return make_experiment(shape=SHAPE, n_steps=2, seed=0, particle_radius_nm=RADIUS_NM, series_sample="twin",
                           pair_drift_nm=DRIFT_NM)


def _pair(exp):
    from tomo4d.enhance.data import prepare_pair

    t0, c0 = time.perf_counter(), time.process_time()
    lq, hq = exp.lq.compute(), exp.hq.compute()
    pair = prepare_pair(lq, hq, register=True)
    _emit(bench="halluc_pair", registration=pair.registration, wall_s=time.perf_counter() - t0,
          cpu_s=time.process_time() - c0)
    return pair, str(lq.dtype)


def bench_train(model_dir: str, kind: str = "InDI", train_steps: int = 3000):
    """Train ``kind`` (InDI or CNN, ``small`` preset, crop 48) on the registered pair, 1 torch thread."""
    import torch

    from tomo4d.enhance import TrainConfig, baseline_config
    from tomo4d.enhance.training import train_on_pair

    where = Path(model_dir) / kind
    if (where / "config.json").exists():
        _emit(bench="halluc_train", model=kind, reused=str(where))
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        exp = _experiment()
        pair, dtype = _pair(exp)
        cfg = TrainConfig.preset("small", steps=int(train_steps), crop=48, checkpoint_every=250)
        if kind == "CNN":
            cfg = baseline_config(cfg, "regression")
        t0, c0 = time.perf_counter(), time.process_time()
        r = train_on_pair(pair, where, config=cfg, input_dtype=dtype)
        _emit(bench="halluc_train", model=kind, steps=r.steps, resumed_from=r.resumed_from_step,
              wall_s=time.perf_counter() - t0, cpu_s=time.process_time() - c0, val_psnr_db=r.val_psnr_db,
              val_psnr_bicubic_db=r.val_psnr_lq_db, recommended_steps=r.recommended_steps, rule=r.step_rule,
              torch_threads=torch.get_num_threads())
    finally:
        torch.set_num_threads(threads)


if __name__ == "__main__":
    what = sys.argv[1:2] or ["judge"]
    extra = [a if ("," in a or not a.lstrip("-").isdigit()) else int(a) for a in sys.argv[2:]]
    {"train": bench_train}[what[0]](*extra)
