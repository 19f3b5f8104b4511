"""Benchmark of tomo4d.phantom: time and peak memory of a full synthetic experiment.

Renders every image (HQ, LQ, repeats, LQ and HQ series, neutron series) and the HQ ground-truth
labels of every step of a 128^3, 7-step experiment, one volume at a time, and reports wall time
and peak resident memory.

    .venv/bin/python benchmarks/bench_phantom.py [--shape 128] [--steps 7] [--supersampling 3] [--workers 2] [--save DIR]
"""

from __future__ import annotations

import argparse
import resource
import time


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", type=int, default=128)
    ap.add_argument("--steps", type=int, default=7)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--supersampling", type=int, default=3,
                    help="sub-samples per axis of interface voxels (1 = point sampling, the pre-2026-11 renderer)")
    ap.add_argument("--workers", type=int, default=2, help="threads rendering the volumes of one step together")
    ap.add_argument("--save", default=None, help="also time exp.save() into this (new) folder")
    a = ap.parse_args(argv)
    from tomo4d.phantom import make_experiment

    t0 = time.perf_counter()
    exp = make_experiment(shape=(a.shape,) * 3, n_steps=a.steps, seed=a.seed, supersampling=a.supersampling)
    t_make = time.perf_counter() - t0
    t0 = time.perf_counter()
    import dask

    n_vol = 0
    # the volumes of one step are rendered concurrently on a.workers threads (the numba kernels
    # release the GIL); steps one after the other, so memory stays that of one step
    groups = [(exp.hq, exp.lq), (exp.repeat, exp.repeat_hq)]
    groups += [(exp.series[s], exp.series_hq[s], exp.neutron_series[s]) for s in range(exp.n_steps)]
    for group in groups:
        dask.compute(*(v.data for v in group), scheduler="threads", num_workers=a.workers)
        n_vol += len(group)
    si = exp.truth.non_lithiated_si_volume_nm3
    t_render = time.perf_counter() - t0
    t_save = None
    if a.save:
        t0 = time.perf_counter()
        exp.save(a.save)
        t_save = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    step_mib = a.shape ** 3 * 4 / 2**20
    print(f"phantom {a.shape}^3 x {a.steps} steps, {len(exp.truth.particle_id)} particles, "
          f"supersampling {a.supersampling}^3 at interfaces")
    print(f"  make_experiment      {t_make:6.1f} s   ({a.workers} render threads)")
    print(f"  render {n_vol} volumes + truth labels {t_render:6.1f} s")
    if t_save is not None:
        print(f"  save (all volumes + truth)    {t_save:6.1f} s")
    print(f"  peak RSS {rss:.0f} MiB (one float32 volume = {step_mib:.0f} MiB; Si volume T0 {si[0]:.3g} nm^3)")


if __name__ == "__main__":
    main()
