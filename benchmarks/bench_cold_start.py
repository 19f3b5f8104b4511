"""numba cold start: first-use time of every compiled stage in a fresh environment, then with the cache.

Builds a fresh virtual environment whose dependencies come from this interpreter's site-packages (a
``.pth`` line) and installs tomo4d into it as a wheel (a regular, non-editable install, so numba caches
next to the installed modules, or in its user-wide cache directory when that is not writable), with
``HOME`` pointing at an empty folder.  Then runs the same child script ``--runs`` times, each a new
process: run 1 compiles (fresh install), the later ones load the cache.  Each stage is timed twice in
its process: ``first`` (import + cache load or compilation + run) and ``again`` (the run alone); the
"extra" of a stage is first - again.  Wall and CPU seconds are printed separately.

``--warmup`` runs ``python -m tomo4d._warmup`` (what ``make install`` runs) once after the install, timed,
before the runs: run 1 then shows the first use of a warmed-up install.  ``--as-nobody`` runs the warm-up
and the runs as user ``nobody`` (``setpriv``), for whom the installed package is read-only: numba then caches
in its user-wide folder under the (writable) empty ``HOME``, the case of a system-wide install.

    .venv/bin/python benchmarks/bench_cold_start.py [--runs 3] [--workdir /tmp/tomo4d_cold] [--warmup]
        [--as-nobody]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import site
import subprocess
import sys
import time
from pathlib import Path

CHILD = r'''
import json, time
import numpy as np
from scipy import ndimage
rng = np.random.default_rng(0)
big = ndimage.gaussian_filter(rng.normal(size=(40, 40, 44)), 1.5)
big = ((big - big.mean()) / big.std()).astype(np.float32)
vol = np.ascontiguousarray(big[:, :, :40])
shifted = ndimage.shift(vol, (0.4, -0.3, 0.2), order=3, mode="mirror").astype(np.float32)

def stage_register():
    from tomo4d.register import register
    register(vol, shifted, binning=(2, 1))
    register(big[:, :, :40], shifted.astype(np.float64), binning=(1,))          # a view, float64

def stage_dvc():
    from tomo4d.dvc import correlate
    correlate(vol, shifted, node_spacing=10, half_window=8, backend="numba")
    correlate(big[:, :, :40], shifted, node_spacing=10, half_window=8, backend="numba", order=1)

def stage_segment():
    from tomo4d.segment import FeatureSpec, predict_proba, train_pixel_classifier
    labels = np.zeros(vol.shape, np.uint8); labels[vol > 0.5] = 1; labels[vol < -0.5] = 2
    m = train_pixel_classifier(vol, labels, n_trees=4, features=FeatureSpec(ndim=3))
    predict_proba(m, big[:, :, :40])

def stage_phantom():
    from tomo4d.phantom import make_experiment
    make_experiment(shape=(24, 24, 24), n_steps=2, seed=1)

out = {}
for name, fn in [("register", stage_register), ("dvc", stage_dvc), ("segment", stage_segment),
                 ("phantom", stage_phantom)]:
    for rep in ("first", "again"):
        w, c = time.perf_counter(), time.process_time()
        fn()
        out[f"{name} {rep}"] = [time.perf_counter() - w, time.process_time() - c]
print(json.dumps(out))
'''


def build(work: Path) -> Path:
    repo = Path(__file__).resolve().parents[1]
    env = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    py = env / "bin" / "python"
    sp = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip())
    (sp / "zz_deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    wheels = work / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", str(repo),
                    "-w", str(wheels)], check=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(sp),
                    *map(str, wheels.glob("*.whl"))], check=True)
    return py


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--workdir", default="/tmp/tomo4d_cold")
    ap.add_argument("--warmup", action="store_true", help="run python -m tomo4d._warmup once before the runs")
    ap.add_argument("--as-nobody", action="store_true", help="warm-up and runs as user nobody (read-only install)")
    a = ap.parse_args(argv)
    work = Path(a.workdir)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    py = build(work)
    (work / "child.py").write_text(CHILD)
    (work / "home").mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NUMBA_", "PYTHONPATH"))}
    env.update(HOME=str(work / "home"), OMP_NUM_THREADS="1")
    user = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] if a.as_nobody else []
    if a.as_nobody:
        os.chown(work / "home", 65534, 65534)
        os.chmod(work, 0o755)
    if a.warmup:
        w, c = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run([*user, str(py), "-m", "tomo4d._warmup"], env=env, check=True, cwd=str(work))
        c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        print(f"warm-up (python -m tomo4d._warmup{', as nobody' if user else ''}): "
              f"{time.perf_counter() - w:.1f} s wall, {c1.ru_utime + c1.ru_stime - c.ru_utime - c.ru_stime:.1f} s CPU",
              flush=True)
    where = sorted({str(p.parent.relative_to(work)) for p in work.rglob("*.nbi")})
    print(f"numba cache index folders: {', '.join(where[:6]) or 'none yet'}", flush=True)
    for i in range(a.runs):
        proc = subprocess.run([*user, str(py), str(work / "child.py")], env=env, capture_output=True, text=True,
                              cwd=str(work))
        if proc.returncode != 0:
            sys.exit(proc.stderr[-3000:])
        d = json.loads(proc.stdout.strip().splitlines()[-1])
        print(json.dumps(d), flush=True)
        stages = list(dict.fromkeys(k.split()[0] for k in d))
        label = ("after warm-up" if a.warmup else "fresh install (compiles)") if i == 0 else "cached"
        extra_w = sum(d[f"{s} first"][0] - d[f"{s} again"][0] for s in stages)
        extra_c = sum(d[f"{s} first"][1] - d[f"{s} again"][1] for s in stages)
        cells = "  ".join(f"{s} {d[f'{s} first'][0] - d[f'{s} again'][0]:.1f}/{d[f'{s} first'][1] - d[f'{s} again'][1]:.1f}"
                          for s in stages)
        print(f"run {i + 1} ({label}): extra wall/CPU s per stage: {cells}; total {extra_w:.1f} wall, "
              f"{extra_c:.1f} CPU", flush=True)


if __name__ == "__main__":
    main()
