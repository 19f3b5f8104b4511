"""Wavelength-resolved tomography on the 5D phantom: ToF projections -> bands -> FBP per band -> 6Li map.

Prints the cost of :func:`tomo4d.neutron.reconstruct_bands` against its peer measured in the same run (plain
:func:`tomo4d.reconstruct.reconstruct` of each band, no sigma propagation), and the accuracy against the
phantom's truth: mu z-scores on resolved voxels, 6Li z-scores (resolved voxels, and every Li voxel against the
noise-free route), errors where the predicted sigma <= 0.2 pp, and the resolution bias of the noise-free route.

    OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONPATH=src python benchmarks/bench_neutron_bands.py
"""

from __future__ import annotations

import argparse
import dataclasses
import time
import warnings

import numpy as np
from scipy.ndimage import maximum_filter, minimum_filter


def timed(fn):
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w, time.process_time() - c


def main():
    from tomo4d.neutron import fit_isotope_map
    from tomo4d.neutron.tomography import BandOptions, reconstruct_bands
    from tomo4d.phantom import Phase, make_experiment
    from tomo4d.phantom.neutron5d import neutron_5d
    from tomo4d.reconstruct import Projections, ReconstructOptions, reconstruct

    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", type=int, default=64)
    ap.add_argument("--neutron-bin", type=int, default=4)
    ap.add_argument("--angles", type=int, default=48)
    ap.add_argument("--bands", type=int, default=16)
    ap.add_argument("--counts-scale", type=float, default=10.0)
    a = ap.parse_args()
    exp = make_experiment(shape=(a.shape,) * 3, n_steps=2, seed=0, neutron_bin=a.neutron_bin)
    d = neutron_5d(exp, steps=[1], n_bands=100, first_bin=20, bin_width_us=0.05 * 10 / 3956.034 * 1e6)
    tp = d.tof_projections(0, n_angles=a.angles, counts_scale=a.counts_scale)
    opts = BandOptions(n_bands=a.bands, open_beam_exposure=tp["open_beam_exposure"],
                       reconstruct=ReconstructOptions(center=tp["center"]))
    kw = dict(wavelength_angstrom=tp["wavelength_angstrom"], angles_deg=tp["angles_deg"],
              pixel_size_nm=tp["voxel_size_nm"])
    reconstruct_bands(tp["counts"][:, :2], tp["open_beam"][:2], **{**kw, "wavelength_angstrom": kw[
        "wavelength_angstrom"][:2]}, options=dataclasses.replace(opts, n_bands=1))      # warm-up (imports, numba)
    bv, wall, cpu = timed(lambda: reconstruct_bands(tp["counts"], tp["open_beam"], **kw, options=opts))
    ropts = dataclasses.replace(opts.reconstruct, pixel_size_nm=tp["voxel_size_nm"])

    def peer():
        for s, e in bv.bins:
            p = Projections(tp["counts"][:, s:e].sum(axis=1), None, tp["open_beam"][s:e].sum(axis=0) / 4.0,
                            np.zeros(tp["open_beam"].shape[1:], np.float32), tp["angles_deg"], tp["voxel_size_nm"])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                reconstruct(p, options=ropts)

    _, pwall, pcpu = timed(peer)
    n_ang, n_bins, rows, cols = tp["counts"].shape
    print(f"projections (angle, bin, row, column) = {tp['counts'].shape}, {len(bv.bins)} bands")
    print(f"reconstruct_bands: wall {wall:.2f} s, CPU {cpu:.2f} s; peer (plain FBP per band): wall {pwall:.2f} s, "
          f"CPU {pcpu:.2f} s; ratio CPU {cpu / pcpu:.2f}")
    m, w = tp["margin"], cols - 2 * tp["margin"]
    crop = (slice(None), slice(None), slice(m, m + w), slice(m, m + w))
    truth = bv.average(d._mu_true(0))
    mu, sig = bv.mu_per_cm[crop], bv.sigma_per_cm[crop]
    t = truth.mean(0)
    res = (maximum_filter(t, (1, 3, 3), mode="nearest") - minimum_filter(t, (1, 3, 3), mode="nearest")) \
        < 0.02 * np.abs(t).max()
    res[:, [0, -1], :] = False
    res[:, :, [0, -1]] = False
    z = ((mu - truth) / sig)[:, res]
    print(f"mu z-scores on {res.sum()} resolved voxels x {len(bv.bins)} bands: mean {z.mean():+.3f}, std {z.std():.3f}")
    conc = np.zeros(len(Phase))
    conc[Phase.LITHIATED_SILICON], conc[Phase.PORE] = 81.9e-3, 1.0e-3
    c = np.tensordot(conc, d.phase_fractions[0], axes=(0, 0))
    other = np.moveaxis(bv.average(d.other_mu_per_cm[0].astype(np.float64)), 0, -1)
    s_last = np.moveaxis(sig, 0, -1)
    r, fw, fc = timed(lambda: fit_isotope_map(bv.wavelength_angstrom, np.moveaxis(mu, 0, -1), s_last,
                                              li_concentration_mol_per_cm3=c, other_mu_per_cm=other))
    f_true = d.li6_fraction[0]
    has = (c > 0) & r.ok
    rr = has & res
    zf = (r.li6_fraction - f_true)[rr] / r.li6_fraction_sigma[rr]
    print(f"6Li map: {has.sum()} of {np.count_nonzero(c > 0)} Li voxels ok ({fw:.2f} s wall); resolved: {rr.sum()}, "
          f"z mean {zf.mean():+.3f}, std {zf.std():.3f}, median sigma {100 * np.median(r.li6_fraction_sigma[rr]):.2f} pp")
    ob = np.broadcast_to(d.open_beam_per_band[:, None, None] * tp["open_beam_exposure"] * a.counts_scale,
                         tp["open_beam"].shape)
    ref = reconstruct_bands(d.open_beam_per_band[None, :, None, None] * a.counts_scale * np.exp(-tp["attenuation"]),
                            ob, **kw, options=dataclasses.replace(opts, noise_rows=0))
    r0 = fit_isotope_map(ref.wavelength_angstrom, np.moveaxis(ref.mu_per_cm[crop], 0, -1), s_last,
                         li_concentration_mol_per_cm3=c, other_mu_per_cm=other)
    both = has & r0.ok
    z0 = (r.li6_fraction - r0.li6_fraction)[both] / r.li6_fraction_sigma[both]
    allow = both & (r.li6_fraction_sigma <= 0.002)
    e0 = np.abs(r.li6_fraction - r0.li6_fraction)[allow]
    print(f"against the noise-free route ({both.sum()} voxels): z mean {z0.mean():+.3f}, std {z0.std():.3f}; "
          f"sigma <= 0.2 pp: {allow.sum()} voxels, max |error| {100 * e0.max() if e0.size else float('nan'):.2f} pp")
    bias = np.abs(r0.li6_fraction - f_true)
    for name, sel in (("every Li voxel", both), ("resolved", both & res)):
        b = 100 * bias[sel]
        print(f"resolution bias (noise-free route - truth), {name} ({sel.sum()}): median {np.median(b):.2f} pp, "
              f"90th percentile {np.percentile(b, 90):.2f} pp")


if __name__ == "__main__":
    main()
