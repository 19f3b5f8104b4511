"""Benchmark: CPU prediction speed (voxels/s) and peak memory of the segmenters on an N^3 volume.

The models (pixel classifier with slice-wise and 3D features, small U-Net) are
trained quickly on a 64x128x128 synthetic sphere volume and saved.  Each
prediction then runs in its own Python process (so that ``ru_maxrss`` is its
own peak): a lazy N^3 float32 input (the sphere volume tiled, generated slab by
slab, never held whole) is segmented with :func:`tomo4d.segment.predict_lazy`
and streamed to a Zarr label volume by :func:`tomo4d.segment.save_labels`.

Usage::

    python benchmarks/bench_segment.py [--size 512] [--what rf2d,rf3d,unet] [--threads 1]

Prints one JSON line per model: wall seconds, voxels/s, peak RSS in MiB.

``--mode inputs`` instead measures whether InDI-enhanced LQ data segment better
than bicubic-upsampled LQ data of the same region (issue 7): on the synthetic
experiment with realistic particles (``--phantom 128 --radius-nm 800``) InDI is
trained on the LQ/HQ training pair (``--indi-preset``, ``--indi-steps``), the
in-situ LQ scan T0 is enhanced x2 and, separately, bicubic-upsampled x2; both
are cropped to the HQ field of view and segmented by
:func:`tomo4d.segment.compare_inputs` with the same 4 labelled xz planes as the
HQ scan (the reference).  Prints one JSON line per input (silicon Dice,
particle F1).  Training InDI on CPU takes minutes::

    python benchmarks/bench_segment.py --mode inputs [--phantom 128] [--indi-preset small] [--indi-model DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
import numpy as np, dask.array as da
model_path, out, size, base_path, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
from tomo4d.segment import load_model, predict_lazy, save_labels, torch_threads
from tomo4d import Volume
base = np.load(base_path)
bz, by, bx = base.shape
def block(block_info=None):
    (z0, z1), (y0, y1), (x0, x1) = block_info[None]["array-location"]
    zz = np.arange(z0, z1) % bz
    yy = np.arange(y0, y1) % by
    xx = np.arange(x0, x1) % bx
    return base[np.ix_(zz, yy, xx)]
vol = da.map_blocks(block, chunks=((16,) * (size // 16), (size,), (size,)), dtype=np.float32)
model = load_model(model_path)
t0 = time.perf_counter()
with torch_threads(int(threads) if model.kind == "unet" else None):
    save_labels(Volume(predict_lazy(model, vol), 50.0), out)
wall = time.perf_counter() - t0
print(json.dumps({"model": model_path, "size": size, "wall_s": round(wall, 1),
                  "voxels_per_s": round(size ** 3 / wall), "halo": list(model.halo),
                  "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}))
"""


def train_models(work: Path, what: list[str], threads: int) -> dict[str, Path]:
    import numpy as np

    from tomo4d.segment import FeatureSpec, UNetConfig, torch_threads, train_pixel_classifier, train_unet
    from tomo4d.segment import synthetic as syn

    s = syn.spheres((64, 128, 128), n_particles=120, radius=(4.0, 9.0), seed=0)
    np.save(work / "base.npy", s.image)
    scribbles = syn.scribbles(s.phases, fraction=0.05, slices=[8, 24, 40, 56], seed=0)
    paths = {}
    for name in what:
        t0 = time.perf_counter()
        if name == "rf2d":
            m = train_pixel_classifier(s.image, scribbles, features=FeatureSpec(ndim=2), n_trees=32)
        elif name == "rf3d":
            m = train_pixel_classifier(s.image, scribbles, features=FeatureSpec(ndim=3), n_trees=32)
        elif name == "unet":
            full = np.zeros_like(s.phases)
            full[[8, 24, 40, 56]] = s.phases[[8, 24, 40, 56]]
            with torch_threads(threads):
                m = train_unet(s.image, full, config=UNetConfig.small(iterations=100))
        else:
            raise SystemExit(f"unknown model {name!r}; use rf2d, rf3d, unet")
        paths[name] = m.save(work / (f"{name}.safetensors" if name == "unet" else f"{name}.npz"))
        print(json.dumps({"trained": name, "seconds": round(time.perf_counter() - t0, 1), "model": repr(m)}),
              flush=True)
    return paths


#: Forest features and options for the realistic phantom (particles of radius ~16 HQ voxels); the same
#: as tests/segment/test_acceptance_phantom.py.
REALISTIC_TRAIN = {"n_trees": 16, "max_samples_per_class": 5000}
REALISTIC_SIGMAS = (1.0, 3.0, 6.0)
REALISTIC_KINDS = ("intensity", "gradient", "hessian")


def compare_enhanced(work: Path, *, size: int, radius_nm: float, preset: str, indi_train_steps: int | None,
                     indi_steps: int | None, seed: int, threads: int, indi_model: str | None = None) -> None:
    """Segment HQ, bicubic-upsampled LQ and InDI-enhanced LQ of one region with the same labels."""
    import numpy as np

    from tomo4d import Volume, phantom
    from tomo4d.enhance import TrainConfig, bicubic_volume, enhance_volume, load_model, train
    from tomo4d.segment import FeatureSpec, compare_inputs, remove_small_objects, torch_threads

    t0 = time.perf_counter()
    exp = phantom.make_experiment(shape=(size,) * 3, n_steps=1, particle_radius_nm=radius_nm, seed=seed)
    overrides = {} if indi_train_steps is None else {"steps": int(indi_train_steps)}
    cfg = TrainConfig.preset(preset, **overrides)
    where = Path(indi_model) if indi_model else work / "indi"
    with torch_threads(threads):
        if (where / "config.json").exists():
            print(json.dumps({"indi_reused": str(where)}), flush=True)
        else:
            res = train(exp.lq, exp.hq, where, config=cfg, overwrite=True)
            print(json.dumps({"indi_trained": preset, "train_steps": cfg.steps,
                              "seconds": round(time.perf_counter() - t0, 1),
                              "val_psnr_db": round(float(res.val_psnr_db), 2),
                              "val_psnr_lq_db": round(float(res.val_psnr_lq_db), 2)}), flush=True)
        model = load_model(where)
        # the HQ field is the central half of the LQ field: enhance only it plus a margin of 4 LQ voxels
        lq = exp.series[0]
        lq_arr = np.asarray(lq.numpy())
        c0 = size // 4 - 4
        c1 = size - c0
        lq_crop = Volume(np.ascontiguousarray(lq_arr[c0:c1, c0:c1, c0:c1]), lq.voxel_size_nm)
        t1 = time.perf_counter()
        enhanced = np.asarray(enhance_volume(model, lq_crop, steps=indi_steps, tile=256, overlap=32).numpy(),
                              np.float32)
        print(json.dumps({"indi_enhanced_s": round(time.perf_counter() - t1, 1), "steps": indi_steps}), flush=True)
    bicubic = bicubic_volume(lq_crop).numpy()
    k = slice(8, 8 + size)  # enhanced voxel 8 + j is HQ voxel j (cell-centred x2 grids)
    images = {"HQ": np.asarray(exp.series_hq[0].numpy(), np.float32), "LQ bicubic": bicubic[k, k, k],
              "InDI": enhanced[k, k, k]}
    truth = exp.truth.labels(0, grid="hq").astype(np.uint8) + 1
    si = int(phantom.Phase.SILICON) + 1
    labels = np.zeros_like(truth)
    planes = [size // 8, 3 * size // 8, 5 * size // 8, 7 * size // 8]
    labels[:, planes, :] = truth[:, planes, :]
    parts, _ = remove_small_objects(exp.truth.particle_labels(0, grid="hq"), min_voxels=27)
    spec = FeatureSpec(sigmas=REALISTIC_SIGMAS, kinds=REALISTIC_KINDS, ndim=3)
    cmp = compare_inputs(images, labels, truth, focus_class=si, true_particles=parts, particle_class=si,
                         voxel_size_nm=exp.params.hq_voxel_nm, seed=seed,
                         train_options={"features": spec, **REALISTIC_TRAIN},
                         particle_options={"min_volume_nm3": 27 * exp.params.hq_voxel_nm ** 3})
    for r in cmp.inputs:
        print(json.dumps({"input": r.name, "silicon_dice": round(r.scores.of(si).dice, 4),
                          "silicon_boundary_f1": round(r.scores.of(si).boundary_f1, 4),
                          "mean_dice": round(r.scores.mean_dice, 4), "particle_f1": round(r.particles.f1, 3),
                          "particles_true": r.particles.n_true, "particles_found": r.particles.n_predicted}),
              flush=True)
    print(json.dumps({"ranking": cmp.ranking(), "phantom": size, "radius_nm": radius_nm,
                      "total_s": round(time.perf_counter() - t0, 1)}), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mode", choices=("speed", "inputs"), default="speed")
    ap.add_argument("--phantom", type=int, default=128, help="phantom edge (voxels) for --mode inputs")
    ap.add_argument("--radius-nm", type=float, default=800.0, help="median particle radius for --mode inputs")
    ap.add_argument("--indi-preset", default="small")
    ap.add_argument("--indi-train-steps", type=int, default=None, help="override the preset's training steps")
    ap.add_argument("--indi-steps", type=int, default=None, help="InDI sampling steps (default: the model's)")
    ap.add_argument("--indi-model", default=None,
                    help="keep the trained InDI model in this folder (re-used when it already holds one)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--what", default="rf2d,rf3d,unet")
    ap.add_argument("--threads", type=int, default=1, help="torch threads for the U-Net")
    ap.add_argument("--workdir", default="benchmarks/_work/segment")
    args = ap.parse_args()
    if args.size % 16:
        raise SystemExit("--size must be a multiple of 16")
    work = Path(args.workdir)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    if args.mode == "inputs":
        compare_enhanced(work, size=args.phantom, radius_nm=args.radius_nm, preset=args.indi_preset,
                         indi_train_steps=args.indi_train_steps, indi_steps=args.indi_steps, seed=args.seed,
                         threads=args.threads, indi_model=args.indi_model)
        return
    models = train_models(work, args.what.split(","), args.threads)
    for name, path in models.items():
        out = work / f"seg_{name}.zarr"
        res = subprocess.run([sys.executable, "-c", CHILD, str(path), str(out), str(args.size),
                              str(work / "base.npy"), str(args.threads)], capture_output=True, text=True)
        if res.returncode:
            print(res.stderr, file=sys.stderr)
            raise SystemExit(res.returncode)
        print(json.dumps({"name": name, **json.loads(res.stdout.strip().splitlines()[-1])}), flush=True)
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
