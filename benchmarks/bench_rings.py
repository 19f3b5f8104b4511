"""Ring removal: every stripe-removal method of the engine (algotom) on synthetic scans WITH stripes (issue 22).

    OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1 PYTHONPATH=src python benchmarks/bench_rings.py [--size 256 --angles 360]

Data: benchmarks/bench_reconstruct.py's ``make_data`` (forward-projected at twice the resolution, Poisson noise
for 2e4 photons, 12 detector columns with a +-3 % gain error), on three phantoms: electrode-like cells (sharp),
the same blurred (sigma 2 px), Shepp-Logan.  Each method works on the transmission sinogram (as tomo4d's glue
does), then algotom's FBP (1 thread).  Figures per method and phantom: the ring metric (RMS, at the radii of
the bad columns, of the radially high-passed azimuthal mean of reconstruction minus the noise-free FBP;
bench_reconstruct.ring_metric), the PSNR against the phantom, and its change against no removal (the peer,
measured in the same run on the same data).  A method qualifies as a default when it lowers the ring metric
on every phantom and costs at most 0.1 dB of PSNR on every phantom.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from bench_reconstruct import make_data, orient, psnr, ring_metric


def methods():
    from algotom.prep import removal as r

    return {
        "sorting(size=21) [tomo4d 'sorting']": lambda s: r.remove_stripe_based_sorting(s, 21),
        "sorting(size=11)": lambda s: r.remove_stripe_based_sorting(s, 11),
        "sorting(size=5)": lambda s: r.remove_stripe_based_sorting(s, 5),
        "filtering(sigma=3, size=21) [tomo4d 'filtering']": lambda s: r.remove_stripe_based_filtering(s, 3, 21),
        "filtering(sigma=3, size=21, sort=False)": lambda s: r.remove_stripe_based_filtering(s, 3, 21, sort=False),
        "fitting(order=2, sigma=10)": lambda s: r.remove_stripe_based_fitting(s, 2, 10),
        "fitting(order=1, sigma=5)": lambda s: r.remove_stripe_based_fitting(s, 1, 5),
        "normalization(sigma=10) [tomo4d 'normalization']": lambda s: r.remove_stripe_based_normalization(s, 10),
        "normalization(sigma=15, sort=False)": lambda s: r.remove_stripe_based_normalization(s, 15, sort=False),
        "regularization(alpha=5e-4)": lambda s: r.remove_stripe_based_regularization(s, 5e-4, apply_log=True),
        "wavelet_fft(level=4, size=1, db9) [tomo4d 'wavelet']": lambda s: r.remove_stripe_based_wavelet_fft(s, 4, 1),
        "fft(u=20, n=8, v=1)": lambda s: r.remove_stripe_based_fft(s, 20, 8, 1),
        "2d_filtering_sorting(sigma=3, size=21)": lambda s: r.remove_stripe_based_2d_filtering_sorting(s, 3, 21),
        "large_stripe(snr=3, size=51)": lambda s: r.remove_large_stripe(s, 3.0, 51),
        "dead_stripe(snr=3, size=51)": lambda s: r.remove_dead_stripe(s, 3.0, 51),
        "interpolation(snr=3, size=51)": lambda s: r.remove_stripe_based_interpolation(s, 3.0, 51),
        "all(snr=3, 51, 21) [tomo4d 'all']": lambda s: r.remove_all_stripe(s, 3.0, 51, 21),
        "all(snr=3, 51, 11)": lambda s: r.remove_all_stripe(s, 3.0, 51, 11),
    }


def one_phantom(kind: str, blur: float, size: int, angles: int) -> dict:
    from algotom.rec import reconstruction as arec

    truth, sino, striped, theta, cols = make_data(size, angles, kind=kind, blur=blur)
    corr = (len(theta) - 1) / len(theta)
    c = size / 2 - 0.25  # the data's axis (bench_reconstruct.engines)

    def fbp(s):
        return orient(arec.fbp_reconstruction(np.ascontiguousarray(s, np.float32), c, angles=theta, filter_name=None,
                                              apply_log=False, gpu=False, ratio=None, ncore=1) * corr, truth)

    ref = fbp(sino)
    scale = 3.0 / float(sino.max())

    def on_transmission(method, g):
        return -np.log(np.clip(method(np.exp(-g * scale)), 1e-6, None)) / scale

    base = fbp(striped)
    rows = {"none": {"ring_metric": ring_metric(base, ref, cols), "psnr_db": psnr(base, truth), "cpu_s": 0.0}}
    for name, m in methods().items():
        c0 = time.process_time()
        try:
            cleaned = on_transmission(m, striped)
        except Exception as exc:  # noqa: BLE001 - a method failing on this data is a result
            rows[name] = {"error": f"{type(exc).__name__}: {exc}"}
            continue
        cpu = time.process_time() - c0
        rec = fbp(cleaned)
        rows[name] = {"ring_metric": ring_metric(rec, ref, cols), "psnr_db": psnr(rec, truth), "cpu_s": cpu,
                      "ring_metric_stripe_free": ring_metric(fbp(on_transmission(m, sino)), ref, cols)}
    for r in rows.values():
        if "psnr_db" in r:
            r["dpsnr_db"] = r["psnr_db"] - rows["none"]["psnr_db"]
            r["ring_ratio"] = r["ring_metric"] / rows["none"]["ring_metric"]
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--angles", type=int, default=360)
    a = ap.parse_args()
    import numba

    numba.set_num_threads(1)  # algotom 1.7's back-projector races with > 1 thread (RESULTS.md)
    phantoms = {"cells": ("cells", 0.0), "cells_blurred": ("cells", 2.0), "shepp": ("shepp", 0.0)}
    res = {k: one_phantom(kind, blur, a.size, a.angles) for k, (kind, blur) in phantoms.items()}
    names = list(res["cells"])
    print(f"| method | {' | '.join(f'{k}: ring metric (x none) / PSNR dB (change)' for k in res)} | CPU s |")
    print("|---|" + "---|" * (len(res) + 1))
    verdict = {}
    for n in names:
        cells = []
        for k in res:
            r = res[k][n]
            cells.append(r.get("error", f"{r['ring_metric']:.4f} ({r['ring_ratio']:.2f}x) / {r['psnr_db']:.2f} "
                                        f"({r['dpsnr_db']:+.2f})"))
        cpu = np.mean([res[k][n].get("cpu_s", np.nan) for k in res])
        print(f"| {n} | {' | '.join(cells)} | {cpu:.3f} |")
        ok = all("error" not in res[k][n] and res[k][n]["ring_ratio"] < 1.0 and res[k][n]["dpsnr_db"] >= -0.1
                 for k in res)
        verdict[n] = ok
    qualified = [n for n, ok in verdict.items() if ok and n != "none"]
    print(f"\nqualifies as default (ring metric lower and PSNR loss <= 0.1 dB on every phantom): {qualified or 'none'}")
    print(json.dumps({"size": a.size, "angles": a.angles, "results": res, "qualified": qualified}, default=float))


if __name__ == "__main__":
    main()
