"""Thread setting (issue 20): InDI steps and U-Net training iterations on the default, 1 and 2 threads,
with and without a competing CPU-burning process.

    PYTHONPATH=src .venv/bin/python benchmarks/bench_threads.py [--indi-size 512] [--indi-steps 3]
        [--unet-iterations 20] [--reps 3]

Each setting runs inside ``tomo4d.threads(n)`` (``n = None``: the default, ``tomo4d.available_cpus()``,
the affinity mask capped by the cgroup quota), which sets torch, numba, the BLAS pools and dask together
and restores them after.  The competing process is one ``while True: pass`` Python process at the same
priority, started before and stopped after each "with competitor" block.  Wall seconds (``perf_counter``)
and CPU seconds of this process (``process_time``) are printed separately; medians of ``--reps``.
The machine's load average is printed at the start and end (other users count as competition too).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np


def _indi(size: int, steps: int):
    sys.path.insert(0, os.path.dirname(__file__))
    from bench_enhance import _untrained_model

    from tomo4d.enhance.sample import restore_slices

    model = _untrained_model("small")
    img = np.random.default_rng(0).uniform(-1, 1, (1, size, size)).astype(np.float32)
    restore_slices(model, img[:, :64, :64], steps=1)  # warm-up (allocations, oneDNN kernels)
    return lambda: restore_slices(model, img, steps=steps), steps


def _unet(iterations: int):
    from tomo4d.segment import UNetConfig, train_unet
    from tomo4d.segment.synthetic import spheres

    s = spheres((16, 96, 96), seed=0)
    image, labels = s.image, s.phases
    cfg = UNetConfig.small(iterations=iterations)
    train_unet(image, labels, config=UNetConfig.small(iterations=2))  # warm-up
    return lambda: train_unet(image, labels, config=cfg), iterations


def _measure(fn, per: int, reps: int) -> tuple[float, float]:
    wall, cpu = [], []
    for _ in range(reps):
        w, c = time.perf_counter(), time.process_time()
        fn()
        wall.append((time.perf_counter() - w) / per)
        cpu.append((time.process_time() - c) / per)
    return float(np.median(wall)), float(np.median(cpu))


def main(argv=None) -> None:
    import tomo4d

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--indi-size", type=int, default=512)
    ap.add_argument("--indi-steps", type=int, default=3)
    ap.add_argument("--unet-iterations", type=int, default=20)
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args(argv)
    print(f"available_cpus() = {tomo4d.available_cpus()} (os.cpu_count() = {os.cpu_count()}); load average "
          f"{os.getloadavg()[0]:.1f}", flush=True)
    work = {f"indi step (small preset, {a.indi_size}^2 slice)": _indi(a.indi_size, a.indi_steps),
            "unet iteration (small config)": _unet(a.unet_iterations)}
    rows = []
    for competitor in (False, True):
        burner = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if competitor else None
        try:
            time.sleep(0.5 if competitor else 0)
            for name, (fn, per) in work.items():
                for setting in (None, 1, 2):
                    with tomo4d.threads(setting) as n:
                        wall, cpu = _measure(fn, per, a.reps)
                    row = {"what": name, "competitor": competitor, "setting": "default" if setting is None else setting,
                           "threads": n, "wall_s": wall, "cpu_s": cpu}
                    rows.append(row)
                    print(json.dumps(row), flush=True)
        finally:
            if burner is not None:
                burner.kill()
                burner.wait()
    print(f"load average at the end {os.getloadavg()[0]:.1f}")
    print("\n| what | competing process | setting (threads) | wall s | CPU s (this process) | wall vs 1 thread |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        one = next(x for x in rows if x["what"] == r["what"] and x["competitor"] == r["competitor"]
                   and x["setting"] == 1)
        print(f"| {r['what']} | {'yes' if r['competitor'] else 'no'} | {r['setting']} ({r['threads']}) | "
              f"{r['wall_s']:.3f} | {r['cpu_s']:.3f} | {r['wall_s'] / one['wall_s']:.2f}x |")


if __name__ == "__main__":
    main()
