"""Benchmark: per-pixel neutron map fitting, spectra per second (issue 21: 1e6 spectra x 200 bins < 10 min).

Bragg edges: ``fit_bragg_edge_map`` (vectorised, shared broadening) on Poisson spectra of an Fe (110) edge
with strains of +-1.5e-3, in blocks of ``--block`` spectra (one call per block: each call also fits its
own reference), against ``fit_bragg_edge`` (one least-squares fit per spectrum, the public per-region API)
on ``--per-spectrum`` spectra of the same data, in the same run.  6Li fraction: ``fit_li6_fraction``
(closed-form weighted least squares) on LLZO attenuation spectra.  Reports wall and CPU (process) time,
single-threaded BLAS (OMP_NUM_THREADS=1), and the accuracy against truth (z-score spread, coverage).

    .venv/bin/python benchmarks/bench_neutron_maps.py [--spectra 200000] [--block 100000] [--bins 200] [--workers 2]
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import time  # noqa: E402

import numpy as np  # noqa: E402

LAM0 = 4.0538


def _bank(bins: int, n_bank: int, rng):
    from tomo4d.neutron import edge_profile

    w = np.linspace(3.7, 4.4, bins)
    strain = rng.uniform(-1.5e-3, 1.5e-3, n_bank)
    outer = np.exp(-(0.8 + 0.03 * w))
    inner = np.exp(-(0.35 + 0.02 * w))
    B = np.stack([edge_profile(w, edge_angstrom=LAM0 * (1 + e), width_angstrom=0.008, tail_angstrom=0.016)
                  for e in strain])
    return w, outer * (inner + (1 - inner) * B), LAM0 * (1 + strain)


def _block(t_bank, edges, n, counts, rng):
    idx = rng.integers(0, t_bank.shape[0], n)
    t_true = t_bank[idx]
    ob = rng.poisson(counts, t_true.shape).astype(np.float64)
    s = rng.poisson(counts * t_true).astype(np.float64)
    t = s / ob
    sig = t * np.sqrt(1 / np.maximum(s, 1) + 1 / ob)
    return t, sig, edges[idx]


def bragg(n_total: int, block: int, bins: int, n_single: int, counts: float, seed: int = 0, workers: int = 1):
    from tomo4d.neutron import fit_bragg_edge, fit_bragg_edge_map

    rng = np.random.default_rng(seed)
    w, bank, edges = _bank(bins, 2000, rng)
    wall = cpu = 0.0
    zs, n_ok = [], 0
    for a in range(0, n_total, block):
        n = min(block, n_total - a)
        t, sig, truth = _block(bank, edges, n, counts, rng)
        t0, c0 = time.perf_counter(), time.process_time()
        fit = fit_bragg_edge_map(w, t, sig, window_angstrom=(w[0], w[-1]), edge_guess_angstrom=4.05,
                                 position="onset", workers=workers)
        wall += time.perf_counter() - t0
        cpu += time.process_time() - c0
        ok = fit.ok
        n_ok += int(ok.sum())
        zs.append((fit.edge_angstrom[ok] - truth[ok]) / fit.edge_sigma_angstrom[ok])
    z = np.concatenate(zs)
    print(f"fit_bragg_edge_map (workers={workers}): {n_total} spectra x {bins} bins: wall {wall:.1f} s ({n_total / wall:.0f} spectra/s), "
          f"CPU {cpu:.1f} s ({n_total / cpu:.0f} spectra/s); ok {n_ok / n_total:.4f}; onset z std {np.std(z):.3f}, "
          f"|z| < 1 in {np.mean(np.abs(z) < 1):.3f}")
    t, sig, truth = _block(bank, edges, n_single, counts, rng)
    t0, c0 = time.perf_counter(), time.process_time()
    fit_bragg_edge(w, t, sig, edge_guess_angstrom=4.05, position="onset")
    w1, c1 = time.perf_counter() - t0, time.process_time() - c0
    print(f"fit_bragg_edge (per spectrum): {n_single} spectra: wall {w1:.1f} s ({n_single / w1:.1f} spectra/s), "
          f"CPU {c1:.1f} s ({n_single / c1:.1f} spectra/s); map / per-spectrum speed (CPU): "
          f"{(n_total / cpu) / (n_single / c1):.0f}x")
    return n_total / wall, n_total / cpu


def li6(n_total: int, block: int, bins: int, seed: int = 1):
    from tomo4d.neutron import (
        fit_li6_fraction,
        li_attenuation_per_cm,
        li_concentration_from_composition,
        non_lithium_attenuation_per_cm,
    )

    rng = np.random.default_rng(seed)
    w = np.linspace(1.0, 5.0, bins)
    c = li_concentration_from_composition("Li7La3Zr2O12", density_g_per_cm3=5.1)
    other = non_lithium_attenuation_per_cm("Li7La3Zr2O12", density_g_per_cm3=5.1, wavelength_angstrom=w)
    wall = cpu = 0.0
    errs = []
    for a in range(0, n_total, block):
        n = min(block, n_total - a)
        f_true = rng.uniform(0.05, 0.95, n)
        mu = li_attenuation_per_cm(w, li_concentration_mol_per_cm3=c, li6_fraction=f_true) + other
        sig = 0.02 * mu
        mu = mu + rng.normal(0, 1, mu.shape) * sig
        t0, c0 = time.perf_counter(), time.process_time()
        fit = fit_li6_fraction(w, mu, sig, li_concentration_mol_per_cm3=c, other_mu_per_cm=other)
        wall += time.perf_counter() - t0
        cpu += time.process_time() - c0
        errs.append((fit.li6_fraction - f_true) / fit.li6_fraction_sigma)
    z = np.concatenate(errs)
    print(f"fit_li6_fraction: {n_total} spectra x {bins} bins: wall {wall:.1f} s ({n_total / wall:.0f} spectra/s), "
          f"CPU {cpu:.1f} s; z std {np.nanstd(z):.3f}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spectra", type=int, default=200000)
    ap.add_argument("--block", type=int, default=100000)
    ap.add_argument("--bins", type=int, default=200)
    ap.add_argument("--per-spectrum", type=int, default=200)
    ap.add_argument("--counts", type=float, default=2e4, help="open-beam counts per bin")
    ap.add_argument("--workers", type=int, default=1, help="threads of fit_bragg_edge_map")
    a = ap.parse_args(argv)
    print(f"load average {os.getloadavg()[0]:.1f}, {os.cpu_count()} CPUs, OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}")
    bragg(a.spectra, a.block, a.bins, a.per_spectrum, a.counts, workers=a.workers)
    li6(a.spectra, a.block, a.bins)


if __name__ == "__main__":
    main()
