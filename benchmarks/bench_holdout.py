"""Validation slices spread through z vs one end block, on the demo's training pair (issue 19, session 10).

    OMP_NUM_THREADS=1 PYTHONPATH=src nice -n 10 .venv/bin/python benchmarks/bench_holdout.py [TRAIN_STEPS]

The demo phantom (96 x 64 x 64 HQ voxels, seed 0) and its LQ/HQ training pair, registered as the demo's
``register_pair`` stage does.  For each split (``end``: the last 10 % of z, no guard, the split before this
session; ``spread``: three blocks with 6 guard slices, :func:`tomo4d.enhance.holdout.holdout_split`):

- which phases of the phantom's truth the validation slices hold (fraction of voxels per phase),
- InDI (small preset, the demo's crop 48 and seed 0, ``TRAIN_STEPS`` steps, default 200 as the demo) trained
  with ``val_every`` 0 and with the demo's new ``val_every`` = steps // 4 (spread split only): wall and CPU
  seconds of the training (the cost of the validation curve), the sweep's recommended N per rule and the
  validation PSNR.

One torch thread (``tomo4d.threads(1)``).  Prints one JSON object per measurement; wall and CPU s labelled.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _emit(**kw):
    print(json.dumps(kw, default=float), flush=True)


def main(train_steps: int = 200) -> None:
    import tomo4d
    from tomo4d.enhance import TrainConfig, prepare_pair, train_on_pair
    from tomo4d.phantom import Phase, make_experiment

    exp = make_experiment(shape=(96, 64, 64), n_steps=2, seed=0)
    lq, hq = exp.lq.compute(), exp.hq.compute()
    t0 = time.perf_counter()
    reg = prepare_pair(lq, hq, register=True)
    _emit(bench="holdout_register", wall_s=time.perf_counter() - t0, registration=reg.registration)
    phases = np.asarray(exp.truth.labels(0, grid="hq"))
    names = {int(p): p.name for p in Phase}
    pairs = {}
    for holdout in ("end", "spread"):
        pr = prepare_pair(lq, hq, register=False, phi0=reg.phi, holdout=holdout)
        pairs[holdout] = pr
        lab = phases[list(pr.val_slices)]
        ids, counts = np.unique(lab, return_counts=True)
        _emit(bench="holdout_split", holdout=holdout, val_slices=list(pr.val_slices), n_train=len(pr.train_slices),
              blocks=[list(b) for b in pr.split.blocks], guard=pr.split.guard,
              val_phase_fraction={names.get(int(i), str(i)): round(float(c) / lab.size, 3)
                                  for i, c in zip(ids, counts)})
    crop = 48
    runs = [("end", 0), ("spread", 0), ("spread", max(1, train_steps // 4))]
    with tempfile.TemporaryDirectory() as tmp, tomo4d.threads(1):
        for holdout, every in runs:
            cfg = TrainConfig.preset("small", steps=train_steps, crop=crop, val_every=every, checkpoint_every=0,
                                     seed=0)
            d = Path(tmp) / f"{holdout}_{every}"
            t0, c0 = time.perf_counter(), time.process_time()
            res = train_on_pair(pairs[holdout], d, config=cfg, input_dtype="float32", resume=False)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            sweep = json.loads((d / "step_sweep.json").read_text())
            _emit(bench="holdout_train", holdout=holdout, val_every=every, train_steps=train_steps,
                  wall_s=wall, cpu_s=cpu, threads=1, val_psnr_db=res.val_psnr_db, val_psnr_lq_db=res.val_psnr_lq_db,
                  recommended=sweep.get("recommended"), sweep_slices=sweep.get("slices"),
                  sweep_psnr_db=sweep.get("psnr_db"), sweep_steps=sweep.get("steps"),
                  bicubic_psnr_db=(sweep.get("bicubic") or {}).get("psnr_db"))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 200)
