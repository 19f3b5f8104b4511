"""X-ray/neutron rigid registration on the phantom (issue 21): ``register_modalities`` against the former
translation-only mutual-information search (``register_multimodal``), the peer measured in the same run.

Pair: step T1 (lithiated) of the 128^3 phantom (seed 0): X-ray LQ (100 nm voxels, 313 nm PSF, noise 0.06) and
its neutron tomogram (400 nm voxels, 500 nm PSF, noise 0.05 1/cm).  The X-ray side (image and phase map) is
moved by known rigid transforms (cubic / nearest resampling; voxels from outside the field are masked),
shifts up to 5 neutron voxels and rotations up to 3 degrees.  Rows per method:

* ``labels``: the phase-fraction model with the X-ray phase map (the phantom's LQ labels, as the user's
  segmentation of the X-ray scan);
* ``segmented``: the phase-fraction model with a crude segmentation of the X-ray (nearest phase grey after a
  1 px Gaussian; lithiated Si and matrix are 0.07 apart in grey, about the noise);
* ``grey``: the grey-level (tent) mapping of the X-ray grey values alone;
* ``nmi-translation``: the former method, the X-ray binned 4x onto the neutron grid, translation only.

Errors: translation in neutron voxels at the field centre, rotation in degrees (rotation-vector components);
``z_max``: the largest |error| / reported sigma.  A calibration block repeats one case with extra Gaussian
noise (0.1 1/cm) on the neutron volume and reports the RMS of error / sigma per parameter (1 = calibrated).
CPU = process time (user+sys) of the registration call; threads: 1 (OMP/NUMBA/MKL set before the run).

    OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python \\
        benchmarks/bench_modalities.py [--repeats 8]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy import ndimage as ndi

VM, VF = 100.0, 400.0
CASES = [((0.0, 0.0, 0.0), (0.0, 0.0, 0.0)), ((1.5, -2.0, 3.0), (800.0, -1200.0, 2000.0)),
         ((3.0, 0.0, 0.0), (-2000.0, 1000.0, 400.0)), ((0.0, 2.0, -2.0), (300.0, 1900.0, -1500.0))]


def misalign(a, rot_deg, t_nm, coarse_shape, order):
    from tomo4d.register.phi import rotation_matrix

    A = rotation_matrix(rot_deg)
    C = np.asarray(coarse_shape) * VF / 2
    idx = np.indices(a.shape).reshape(3, -1).astype(float)
    fine = (A.T @ ((idx + 0.5) * VM - C[:, None] - np.asarray(t_nm, float)[:, None]) + C[:, None]) / VM - 0.5
    ok = np.all((fine >= 0) & (fine <= (np.asarray(a.shape) - 1)[:, None]), 0).reshape(a.shape)
    return ndi.map_coordinates(a, fine, order=order, mode="nearest").reshape(a.shape), ok


def crude_segmentation(img, greys):
    g = np.asarray(sorted(set(greys)))
    return np.argmin(np.abs(ndi.gaussian_filter(img, 1.0)[..., None] - g), -1).astype(np.int16)


def run_new(neutron, moved, ok, labels, psf):
    from tomo4d.register.modalities import register_modalities

    t0 = time.process_time()
    reg = register_modalities(neutron, moved.astype(np.float32), fixed_voxel_size_nm=VF, moving_voxel_size_nm=VM,
                              fixed_psf_sigma_nm=psf, moving_psf_sigma_nm=313.0 if labels is None else 0.0,
                              moving_mask=ok, moving_labels=labels)
    return reg, time.process_time() - t0


def run_nmi(neutron, moved):
    from tomo4d._array import bin_volume
    from tomo4d.register import register_multimodal

    t0 = time.process_time()
    reg = register_multimodal(neutron, bin_volume(moved.astype(np.float32), 4), search_px=8)
    # phi: neutron voxel -> binned X-ray voxel (same grid): translation of the centre in neutron voxels
    return reg.translation_px, time.process_time() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=8)
    args = ap.parse_args()
    from tomo4d.phantom import make_experiment

    exp = make_experiment(shape=(128, 128, 128), n_steps=2, seed=0)
    xray = exp.series[1].compute().data
    labels = exp.truth.labels(1, grid="lq")
    neutron = exp.neutron_series[1].compute().data
    greys = list(exp.truth.grey_values.values())
    psf = exp.params.neutron_blur_sigma_nm
    print("| case (rot deg; shift nm) | method | translation error (neutron px) | rotation error (deg) | "
          "sigma t (px) | sigma rot (deg) | z_max | CPU s |")
    print("|---|---|---|---|---|---|---:|---:|")
    for rot, t in CASES:
        moved, ok = misalign(xray, rot, t, neutron.shape, 3)
        lab, _ = misalign(labels, rot, t, neutron.shape, 0)
        name = f"{rot}; {t}"
        for method, lb in (("labels", lab.astype(np.int16)), ("segmented", crude_segmentation(moved, greys)),
                           ("grey", None)):
            reg, cpu = run_new(neutron, moved, ok, lb, psf)
            et = (reg.translation_nm - np.asarray(t)) / VF
            er = reg.rotation_deg - np.asarray(rot)
            z = max(np.max(np.abs(et) / reg.translation_sigma_px), np.max(np.abs(er) / reg.rotation_sigma_deg))
            print(f"| {name} | {method} | {np.array2string(et, precision=3)} | {np.array2string(er, precision=3)} | "
                  f"{np.array2string(reg.translation_sigma_px, precision=3)} | "
                  f"{np.array2string(reg.rotation_sigma_deg, precision=3)} | {z:.1f} | {cpu:.1f} |", flush=True)
        tr, cpu = run_nmi(neutron, moved)
        # the former method's translation of the neutron centre (rotation ignored): X_m = C + t at the centre
        et = tr - np.asarray(t) / VF
        print(f"| {name} | nmi-translation | {np.array2string(et, precision=3)} | (not estimated) | - | - | - | "
              f"{cpu:.1f} |", flush=True)
    rot, t = CASES[1]
    moved, ok = misalign(xray, rot, t, neutron.shape, 3)
    lab, _ = misalign(labels, rot, t, neutron.shape, 0)
    zs = []
    rng = np.random.default_rng(0)
    for _ in range(args.repeats):
        noisy = (neutron + rng.normal(0, 0.1, neutron.shape)).astype(np.float32)
        reg, _ = run_new(noisy, moved, ok, lab.astype(np.int16), psf)
        zs.append(np.concatenate([(reg.rotation_deg - np.asarray(rot)) / reg.rotation_sigma_deg,
                                  (reg.translation_nm - np.asarray(t)) / reg.translation_sigma_nm]))
    zs = np.asarray(zs)
    print(f"\ncalibration ({args.repeats} repeats, case {CASES[1]}, labels, extra noise 0.1 1/cm): RMS(error/sigma) "
          f"rot z,y,x {np.array2string(np.sqrt((zs[:, :3] ** 2).mean(0)), precision=2)}, "
          f"t z,y,x {np.array2string(np.sqrt((zs[:, 3:] ** 2).mean(0)), precision=2)}; "
          f"all {np.sqrt((zs ** 2).mean()):.2f}")


if __name__ == "__main__":
    main()
