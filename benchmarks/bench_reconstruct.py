"""Choose the reconstruction engine by measurement (issue 22): FBP speed and accuracy, ring removal, centre.

Candidates installed in a throw-away environment (not tomo4d's):

    python3 -m venv /tmp/reconenv && /tmp/reconenv/bin/pip install algotom astra-toolbox scikit-image
    OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1 /tmp/reconenv/bin/python benchmarks/bench_reconstruct.py

The same data for every engine: a Shepp-Logan slice (``--size`` px), forward-projected at twice the
resolution (no inverse crime) with skimage's radon over 180 degrees (``--angles``, no end point), then
binned to the detector.  Accuracy is the PSNR against the phantom inside the reconstruction circle
(peak = phantom range); speed is wall and CPU time, medians of ``--repeat`` runs, engines alternating.
Engines missing from the environment are reported as such.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def make_data(size: int, n_angles: int, seed: int = 0, photons: float = 2e4, kind: str = "cells",
              blur: float = 0.0):
    """Truth (size^2), clean and striped+noisy sinograms (angles, size), angles (rad).

    The Shepp-Logan phantom fills the central 70 % of the field (air margins on the detector, as in a
    real scan); projected at twice the resolution; peak attenuation 3 (5 % transmission); the noisy
    sinogram has Poisson noise for ``photons`` per pixel in the flat and 12 detector columns with a
    +-3 % gain error (stripes -> rings)."""
    from scipy.ndimage import gaussian_filter
    from skimage.data import shepp_logan_phantom
    from skimage.transform import radon, resize

    inner = int(round(0.7 * size)) * 2
    fine = np.zeros((2 * size, 2 * size))
    o = (2 * size - inner) // 2
    if kind == "shepp":
        fine[o:o + inner, o:o + inner] = resize(shepp_logan_phantom(), (inner, inner), order=1, anti_aliasing=True)
    else:  # an electrode-like cylinder: matrix 0.3, 80 particles 1.0 and pores 0.0, radius 1-4 % of the field
        rng = np.random.default_rng(seed + 1)
        y, x = np.mgrid[:2 * size, :2 * size] - (2 * size - 1) / 2.0
        fine[np.hypot(y, x) < inner / 2] = 0.3
        for _ in range(80):
            rr = rng.uniform(0.01, 0.04) * 2 * size
            ang, dist = rng.uniform(0, 2 * np.pi), rng.uniform(0, inner / 2 - rr)
            fine[np.hypot(y - dist * np.sin(ang), x - dist * np.cos(ang)) < rr] = rng.choice([1.0, 0.0], p=[0.8, 0.2])
        fine = gaussian_filter(fine, blur)
    truth = fine.reshape(size, 2, size, 2).mean(axis=(1, 3))
    theta = np.linspace(0.0, 180.0, n_angles, endpoint=False)
    sino_fine = radon(fine, theta=theta, circle=True)  # (2*size, n_angles), line integrals in fine px
    sino = sino_fine.reshape(size, 2, n_angles).mean(axis=1) / 2.0  # in detector px units
    sino = np.ascontiguousarray(sino.T)  # (angles, detector)
    scale = 3.0 / max(float(sino.max()), 1e-9)
    rng = np.random.default_rng(seed)
    cols = rng.choice(np.arange(size // 4, size - size // 4), 12, replace=False)
    gain = np.ones(size)
    gain[cols] = 1.0 + rng.choice([-1, 1], 12) * 0.03
    counts = rng.poisson(photons * gain * np.exp(-sino * scale)).astype(float)
    striped = -np.log(np.maximum(counts, 1.0) / photons) / scale
    return truth.astype(np.float32), sino.astype(np.float32), striped.astype(np.float32), np.deg2rad(theta), cols


def circle(size):
    y, x = np.mgrid[:size, :size] - (size - 1) / 2.0
    return np.hypot(y, x) < 0.45 * size


def psnr(rec, truth):
    m = circle(truth.shape[0])
    mse = float(np.mean((rec[m] - truth[m]) ** 2))
    return 10 * np.log10(float(np.ptp(truth)) ** 2 / mse)


def ring_metric(rec, ref, cols):
    """RMS, over the radii of the bad detector columns ``cols``, of the azimuthal mean of ``rec - ref``.

    A stripe in detector column c becomes a ring of radius |c - centre|: the metric reads the rings
    where they must be, so the phantom's own (near-circular) edges do not enter it."""
    from scipy.ndimage import median_filter

    n = rec.shape[0]
    y, x = np.mgrid[:n, :n] - (n - 1) / 2.0
    r = np.rint(np.hypot(y, x)).astype(int)
    d = (rec - ref).ravel()
    prof = np.bincount(r.ravel(), d) / np.maximum(np.bincount(r.ravel()), 1)
    prof = prof - median_filter(prof, 7)  # rings are 1-2 px wide; a smooth bias is no ring
    radii = np.rint(np.abs(np.asarray(cols) - (n - 1) / 2.0)).astype(int)
    return float(np.sqrt(np.mean(prof[radii] ** 2)))


def timed(fn, repeat):
    walls, cpus, out = [], [], None
    for _ in range(repeat):
        w, c = time.perf_counter(), time.process_time()
        out = fn()
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    return out, float(np.median(walls)), float(np.median(cpus))


def fshift(s, d):
    """Sinogram columns moved by ``d`` px (Fourier shift: exact for band-limited data)."""
    f = np.fft.fftfreq(s.shape[1])
    return np.real(np.fft.ifft(np.fft.fft(s, axis=1) * np.exp(-2j * np.pi * f * d)[None], axis=1)).astype(np.float32)


def engines(size, angles):
    """Each engine with the data's axis moved to where the engine expects it.

    The data's axis is column ``size / 2 - 0.25`` (radon's axis, fine pixel ``size`` of the twice finer grid);
    skimage expects ``size // 2``, astra ``(size - 1) / 2``, algotom takes the axis as a parameter.  Each
    engine's image grid is centred on the axis; the truth grid (2x2-binned fine pixels) sits a quarter
    pixel off it for every engine alike."""
    axis = size / 2 - 0.25
    out = {}
    try:
        from skimage.transform import iradon

        theta = np.rad2deg(angles)
        out["skimage iradon (ramp)"] = lambda s: iradon(fshift(s, size // 2 - axis).T, theta=theta,
                                                        filter_name="ramp", circle=True)
    except ImportError:
        pass
    try:
        from algotom.rec import reconstruction as arec

        corr = (len(angles) - 1) / len(angles)  # algotom weights by pi/(n-1); angles have no end point
        out["algotom fbp (numba CPU, ramp)"] = lambda s: arec.fbp_reconstruction(
            s, axis, angles=angles, filter_name=None, apply_log=False, gpu=False, ratio=None)[::-1] * corr
        out["algotom dfi (direct Fourier)"] = lambda s: arec.dfi_reconstruction(
            s, axis, angles=angles, filter_name=None, apply_log=False, ratio=None)[::-1]
    except ImportError:
        pass
    try:
        import astra

        def astra_fbp(s):
            s = fshift(s, (size - 1) / 2 - axis)
            vg = astra.create_vol_geom(size, size)
            pg = astra.create_proj_geom("parallel", 1.0, size, -angles)
            pid = astra.create_projector("linear", pg, vg)
            sid = astra.data2d.create("-sino", pg, s)
            rid = astra.data2d.create("-vol", vg, 0)
            cfg = astra.astra_dict("FBP")
            cfg.update(ReconstructionDataId=rid, ProjectionDataId=sid, ProjectorId=pid)
            cfg["option"] = {"FilterType": "ram-lak"}
            aid = astra.algorithm.create(cfg)
            astra.algorithm.run(aid)
            rec = astra.data2d.get(rid)
            for f, i in ((astra.algorithm.delete, aid), (astra.data2d.delete, sid), (astra.data2d.delete, rid),
                         (astra.projector.delete, pid)):
                f(i)
            return rec

        out["astra FBP (CPU, linear, ram-lak)"] = astra_fbp
    except ImportError:
        pass
    return out


def orient(rec, truth):
    """The engines differ in image orientation; compare in the one that fits the truth best."""
    cands = [rec, rec[::-1], rec[:, ::-1], rec[::-1, ::-1], rec.T, rec.T[::-1], rec.T[:, ::-1], rec.T[::-1, ::-1]]
    return max(cands, key=lambda r: np.corrcoef(r[circle(len(r))], truth[circle(len(r))])[0, 1])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--angles", type=int, default=360)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", default=None)
    ap.add_argument("--phantom", choices=("cells", "shepp"), default="cells")
    ap.add_argument("--blur", type=float, default=0.0, help="cells: Gaussian blur of the phantom, fine px")
    ap.add_argument("--fbp-only", action="store_true", help="skip the ring-removal and centre comparisons")
    a = ap.parse_args(argv)
    truth, sino, striped, angles, cols = make_data(a.size, a.angles, kind=a.phantom, blur=a.blur)
    eng = engines(a.size, angles)
    rows = {name: {"wall": [], "cpu": []} for name in eng}
    recs = {}
    for _ in range(a.repeat):  # alternate engines, one run each per round
        for name, fn in eng.items():
            rec, w, c = timed(lambda fn=fn: fn(sino), 1)
            rows[name]["wall"].append(w)
            rows[name]["cpu"].append(c)
            recs[name] = orient(np.asarray(rec, np.float32), truth)
    result = {}
    for name in eng:
        result[name] = {"psnr_db": round(psnr(recs[name], truth), 2),
                        "wall_s": round(float(np.median(rows[name]["wall"])), 4),
                        "cpu_s": round(float(np.median(rows[name]["cpu"])), 4)}
    extra = {}
    try:
        if a.fbp_only:  # no algotom extras requested: the same path as without algotom
            raise ImportError
        from algotom.prep import calculation as acalc
        from algotom.prep import removal as arem
        from algotom.rec import reconstruction as arec

        corr = (len(angles) - 1) / len(angles)
        c = a.size / 2 - 0.25  # the data's axis (see engines)

        def fbp(s):
            return orient(arec.fbp_reconstruction(s, c, angles=angles, filter_name=None, apply_log=False,
                                                  gpu=False, ratio=None) * corr, truth)
        ref = fbp(sino)
        scale = 3.0 / float(sino.max())  # algotom removes stripes on transmissions (its documented order)

        def on_transmission(method):
            return lambda g: -np.log(np.clip(method(np.exp(-g * scale)), 1e-6, None)) / scale

        rings = {"none": {"ring_metric": round(ring_metric(fbp(striped), ref, cols), 5),
                          "psnr_db": round(psnr(fbp(striped), truth), 2)}}
        for label, method in (("remove_stripe_based_sorting(size=21)", lambda s: arem.remove_stripe_based_sorting(s, 21)),
                              ("remove_stripe_based_normalization(sigma=15)",
                               lambda s: arem.remove_stripe_based_normalization(s, 15)),
                              ("remove_stripe_based_wavelet_fft(level=4, db9)",
                               lambda s: arem.remove_stripe_based_wavelet_fft(s, 4, 1, "db9")),
                              ("remove_all_stripe(snr=3, 51, 21)", lambda s: arem.remove_all_stripe(s, 3.0, 51, 21))):
            method = on_transmission(method)
            cleaned, w, cpu = timed(lambda method=method: method(striped), 3)
            rings[label] = {"ring_metric": round(ring_metric(fbp(cleaned), ref, cols), 5),
                            "ring_metric_on_stripe_free_data": round(ring_metric(fbp(method(sino)), ref, cols), 5),
                            "psnr_db": round(psnr(fbp(cleaned), truth), 2), "wall_s": round(w, 4), "cpu_s": round(cpu, 4)}
        extra["rings_algotom"] = rings
        found = {}
        for shift in (-20, -7.3, 0.0, 4.5, 20):
            from scipy.ndimage import shift as nd_shift

            s = nd_shift(sino, (0, shift), order=3, mode="nearest")
            t0 = time.perf_counter()
            cor = acalc.find_center_vo(s, start=a.size // 2 - 30, stop=a.size // 2 + 30)
            found[str(shift)] = {"error_px": round(float(cor - (c + shift)), 3),
                                 "wall_s": round(time.perf_counter() - t0, 3)}
        extra["centre_find_center_vo"] = found
    except ImportError:
        pass
    report = {"phantom": a.phantom, "blur": a.blur, "size": a.size, "angles": a.angles, "repeat": a.repeat, "fbp": result, **extra}
    text = json.dumps(report, indent=1)
    if a.json:
        with open(a.json, "w") as fh:
            fh.write(text)
    print(text)


if __name__ == "__main__":
    main()
