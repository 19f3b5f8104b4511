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
    from tomo4d.segment import _synthetic as syn

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
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
