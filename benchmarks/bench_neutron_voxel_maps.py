"""Benchmark: per-voxel 6Li maps (issue 21: 10^6 spectra x 200 bins in under 10 minutes on 2 cores).

``fit_isotope_map`` (closed-form weighted least squares, one shared design matrix, chunks of 65536 spectra)
on noisy attenuation spectra with a per-spectrum Li concentration map and per-bin sigmas, in blocks of
``--block`` spectra generated on the fly, against ``fit_li6_fraction`` (the per-region public API, also
vectorised) on the same blocks, in the same run.  Wall and CPU (process) time; threads pinned to 1 (BLAS);
accuracy: z-scores of the 6Li fraction against the truth.

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/bench_neutron_voxel_maps.py [--spectra 1000000]
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import time  # noqa: E402

import numpy as np  # noqa: E402


def run(n_total: int, block: int, bins: int, peer_every: int, seed: int = 0):
    from tomo4d.neutron import fit_isotope_map, fit_li6_fraction, li_attenuation_per_cm

    rng = np.random.default_rng(seed)
    w = np.linspace(1.0, 6.0, bins)
    wall = cpu = pw = pc = 0.0
    n_peer, zs = 0, []
    for i, a in enumerate(range(0, n_total, block)):
        n = min(block, n_total - a)
        c = rng.uniform(0.02, 0.08, n)
        f = rng.uniform(0.05, 0.95, n)
        mu = li_attenuation_per_cm(w, li_concentration_mol_per_cm3=c, li6_fraction=f) + 0.3
        sig = rng.uniform(0.05, 0.2, bins)[None, :] * np.ones((n, 1))
        mu += rng.standard_normal(mu.shape) * sig
        t0, c0 = time.perf_counter(), time.process_time()
        r = fit_isotope_map(w, mu, sig, li_concentration_mol_per_cm3=c)
        wall += time.perf_counter() - t0
        cpu += time.process_time() - c0
        zs.append(((r.li6_fraction - f) / r.li6_fraction_sigma)[r.ok])
        if i % peer_every == 0:
            t0, c0 = time.perf_counter(), time.process_time()
            fit_li6_fraction(w, mu, sig, li_concentration_mol_per_cm3=c)
            pw += time.perf_counter() - t0
            pc += time.process_time() - c0
            n_peer += n
    z = np.concatenate(zs)
    return dict(n=n_total, wall=wall, cpu=cpu, peer_n=n_peer, peer_wall=pw, peer_cpu=pc, z_std=float(np.std(z)),
                z_mean=float(np.mean(z)), ok=z.size / n_total)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--spectra", type=int, default=1_000_000)
    ap.add_argument("--block", type=int, default=100_000)
    ap.add_argument("--bins", type=int, default=200)
    ap.add_argument("--peer-every", type=int, default=5, help="run the peer on every k-th block")
    a = ap.parse_args()
    print(f"threads: OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}; load average {os.getloadavg()[0]:.1f}")
    r = run(a.spectra, a.block, a.bins, a.peer_every)
    print(f"fit_isotope_map: {r['n']} spectra x {a.bins} bins: wall {r['wall']:.1f} s, CPU {r['cpu']:.1f} s "
          f"({r['n'] / r['wall']:.0f} spectra/s wall, {r['n'] / r['cpu']:.0f} /s CPU); ok {r['ok']:.4f}; "
          f"z-scores mean {r['z_mean']:+.3f} std {r['z_std']:.3f}")
    print(f"peer fit_li6_fraction: {r['peer_n']} spectra: wall {r['peer_wall']:.1f} s, CPU {r['peer_cpu']:.1f} s "
          f"({r['peer_n'] / r['peer_wall']:.0f} spectra/s wall); ratio (CPU per spectrum, peer / map) "
          f"{(r['peer_cpu'] / r['peer_n']) / (r['cpu'] / r['n']):.2f}")
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
