"""Compile every numba kernel of tomo4d once, into numba's on-disk cache: ``python -m tomo4d._warmup``.

``make install`` runs it after installing the package, so that the first registration, correlation,
segmentation or phantom of a new install loads compiled code (about 1-2 s) instead of compiling it
(~50 s of CPU, issue 20).  Each kernel is compiled for the one signature the library calls it with: the
entry points hand the kernels C-contiguous float32 arrays (``tests/test_kernel_signatures.py``), so a
tiny run of each stage compiles what every later call, of any size, view or dtype, loads.

Where the cache goes is numba's choice: next to the installed modules (``__pycache__``) when that folder
is writable, else numba's user-wide cache (``$XDG_CACHE_HOME/numba`` or ``~/.cache/numba``), or
``NUMBA_CACHE_DIR`` when it is set; the same rule finds it again at run time.  Nothing else is written.
"""

from __future__ import annotations

import time

import numpy as np

__all__ = ["STAGES", "warm_up"]


def _volumes():
    from scipy import ndimage

    rng = np.random.default_rng(0)
    vol = ndimage.gaussian_filter(rng.normal(size=(24, 24, 24)), 1.5)
    vol = ((vol - vol.mean()) / vol.std()).astype(np.float32)
    moved = ndimage.shift(vol, (0.4, -0.3, 0.2), order=3, mode="mirror").astype(np.float32)
    return vol, moved


def _register():
    from .register import register

    vol, moved = _volumes()
    register(vol, moved, binning=(1,), threads=1)


def _dvc():
    from .dvc import correlate

    vol, moved = _volumes()
    correlate(vol, moved, node_spacing=12, half_window=6, backend="numba", threads=1)


def _dvc_global():
    from .dvc import correlate_global

    vol, moved = _volumes()
    correlate_global(vol, moved, node_spacing=8, levels=1, max_iterations=1, solver="gauss-newton", threads=1)


def _segment():
    from .segment import FeatureSpec, predict_proba, train_pixel_classifier

    vol, _ = _volumes()
    labels = np.zeros(vol.shape, np.uint8)
    labels[vol > 0.5] = 1
    labels[vol < -0.5] = 2
    model = train_pixel_classifier(vol, labels, n_trees=2, features=FeatureSpec(sigmas=(1.0,), ndim=3))
    predict_proba(model, vol)


def _phantom():
    from .phantom import make_experiment

    make_experiment(shape=(24, 24, 24), n_steps=2, seed=1)


#: name -> a tiny run of the stage that compiles its kernels
STAGES = {"register": _register, "dvc": _dvc, "dvc_global": _dvc_global, "segment": _segment, "phantom": _phantom}


def warm_up(stages=None, *, progress=None) -> dict[str, float]:
    """Compile (or load) the numba kernels of ``stages`` (default all of :data:`STAGES`).

    Returns ``{stage: CPU seconds}``; ``progress(name, seconds)`` is called after each stage.
    """
    from ._threads import compute_threads

    out = {}
    with compute_threads(1):
        for name in stages or STAGES:
            t = time.process_time()
            STAGES[name]()
            out[name] = time.process_time() - t
            if progress is not None:
                progress(name, out[name])
    return out


if __name__ == "__main__":  # pragma: no cover - exercised by `make install` and bench_cold_start.py
    import sys

    def _say(name, seconds):
        sys.stderr.write(f"tomo4d warm-up: {name} kernels compiled/loaded in {seconds:.1f} s CPU\n")

    warm_up(progress=_say)
