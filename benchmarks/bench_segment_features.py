"""Pixel-classifier segmentation end to end against the plain scikit-image + scikit-learn recipe.

Data: the synthetic spheres of ``tomo4d.segment.synthetic`` (3 classes, noisy), scribbles on every 4th
slice (8 % of the voxels of those slices, away from class borders).  Four timed rows, alternated A/B/C/D
``--repeats`` times (medians quoted; wall = ``time.perf_counter``, CPU = process user+system time, both
around the call only):

* ``features tomo4d``: :func:`tomo4d.segment.compute_features` of the whole volume (``--ndim`` 2: slice-wise,
  the default ``FeatureSpec``; 3: 3D).
* ``features skimage``: ``skimage.feature.multiscale_basic_features`` (intensity, edges, texture) at 4 scales
  from 0.7 to 5 px, 3D, ``workers=1``.
* ``end to end tomo4d, two passes``: :func:`train_pixel_classifier` then :func:`predict_labels` (features
  of the labelled slabs, then of every slab again).
* ``end to end tomo4d, train_and_predict``: :func:`tomo4d.segment.train_and_predict` (features once).
* ``end to end skimage+sklearn``: ``multiscale_basic_features`` once, ``RandomForestClassifier`` (same
  trees, ``n_jobs=1``) fit on the scribbles and ``predict`` on every voxel.

Accuracy is the mean Dice over the classes against the truth, on the voxels not used for training.
Everything runs on one thread (BLAS/OpenMP limited to 1 by threadpoolctl, numba kernels called serially).

    .venv/bin/python benchmarks/bench_segment_features.py [--shape 48,128,128] [--ndim 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import numpy as np


def _cpu() -> float:
    a = resource.getrusage(resource.RUSAGE_SELF)
    return a.ru_utime + a.ru_stime


def timed(fn):
    c, t = _cpu(), time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t, _cpu() - c


def dice(pred: np.ndarray, truth: np.ndarray, region: np.ndarray) -> float:
    p, t = pred[region], truth[region]
    scores = [2.0 * np.sum((p == c) & (t == c)) / max(1, np.sum(p == c) + np.sum(t == c)) for c in np.unique(t)]
    return float(np.mean(scores))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="48,128,128")
    ap.add_argument("--ndim", type=int, default=2, help="tomo4d FeatureSpec.ndim (2 slice-wise, 3 3D)")
    ap.add_argument("--trees", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args(argv)
    from skimage.feature import multiscale_basic_features
    from sklearn.ensemble import RandomForestClassifier
    from threadpoolctl import threadpool_limits

    from tomo4d.segment import (
        FeatureSpec,
        compute_features,
        predict_labels,
        synthetic,
        train_and_predict,
        train_pixel_classifier,
    )

    shape = tuple(int(v) for v in a.shape.split(","))
    syn = synthetic.spheres(shape, n_particles=max(8, int(np.prod(shape) / 12000)), radius=(4.0, 9.0), seed=3)
    image, truth = syn.image.astype(np.float32), syn.phases
    scrib = synthetic.scribbles(truth, fraction=0.08, slices=list(range(2, shape[0], 4)), seed=4)
    region = scrib == 0
    spec = FeatureSpec(ndim=a.ndim)

    def sk_features():
        return multiscale_basic_features(image, sigma_min=0.7, sigma_max=5.0, num_sigma=4, workers=1)

    def sk_end_to_end():
        f = sk_features()
        sel = scrib > 0
        rf = RandomForestClassifier(n_estimators=a.trees, max_features="sqrt", class_weight="balanced",
                                    random_state=0, n_jobs=1).fit(f[sel], scrib[sel])
        return rf.predict(f.reshape(-1, f.shape[-1])).reshape(shape)

    def two_pass():
        m = train_pixel_classifier(image, scrib, features=spec, n_trees=a.trees)
        return predict_labels(m, image)

    rows = {
        "features tomo4d": lambda: compute_features(image, spec),
        "features skimage": sk_features,
        "end to end tomo4d, two passes": two_pass,
        "end to end tomo4d, train_and_predict": lambda: train_and_predict(image, scrib, features=spec,
                                                                          n_trees=a.trees)[1],
        "end to end skimage+sklearn": sk_end_to_end,
    }
    runs: dict[str, list] = {k: [] for k in rows}
    n_feat = {}
    with threadpool_limits(1):
        for fn in rows.values():                     # warm-up (numba kernels loaded or compiled)
            fn()
        for _ in range(a.repeats):
            for k, fn in rows.items():
                out, wall, cpu = timed(fn)
                runs[k].append((wall, cpu))
                if k.startswith("features"):
                    n_feat[k] = int(out.shape[-1])
                else:
                    n_feat[k] = dice(out, truth, region)
    peer = {"features": "features skimage", "end": "end to end skimage+sklearn"}
    med = {k: np.median(np.asarray(v), axis=0) for k, v in runs.items()}
    print(f"volume {shape}, {int(np.sum(scrib > 0))} scribbled voxels, tomo4d FeatureSpec(ndim={a.ndim}), "
          f"{a.trees} trees, 1 thread, medians of {a.repeats}")
    print(f"{'row':<38} {'wall s':>7} {'CPU s':>7} {'peer/this (wall)':>16} {'peer/this (CPU)':>15} "
          f"{'features or Dice':>16}")
    for k, (w, c) in med.items():
        pw, pc = med[peer[k.split()[0]]]
        extra = f"{n_feat[k]:d}" if k.startswith("features") else f"{n_feat[k]:.4f}"
        print(f"{k:<38} {w:7.2f} {c:7.2f} {pw / w:16.2f} {pc / c:15.2f} {extra:>16}")
    print(json.dumps({k: {"wall_s": float(v[0]), "cpu_s": float(v[1]), "features_or_dice": n_feat[k]}
                      for k, v in med.items()}))


if __name__ == "__main__":
    main()
