"""Benchmark of global affine registration: ``tomo4d.register`` vs SPAM's ``register`` / ``registerMultiscale``.

The 100^3 snow XCT volume is moved by a known affine Phi (translation (1.3, -2.2, 0.7) px, rotation
(1.5, -1.0, 2.0) deg, stretch (1.01, 0.995, 1.0)) resampled with order-5 B-splines (neither code's own
interpolator); both codes register moving onto the snow volume from the identity.  Accuracy is the largest
displacement error over the 8 corners of the volume (px), from the returned Phi against the truth.

The timed calls alternate A/B (tomo4d, SPAM, tomo4d, SPAM ...) ``--repeats`` times; the figures are medians.
Wall is ``time.perf_counter`` around the call; CPU is the process's user+system time around the call
(so CPU > wall when a code runs threads).  tomo4d runs in this process (warmed up once: the first call
loads or compiles its numba kernels); SPAM runs in a fresh interpreter per repeat (one warm-up call, then
the timed calls), since it is *not* a dependency of tomo4d: ``python -m venv /tmp/spamenv &&
/tmp/spamenv/bin/pip install spam``.

    .venv/bin/python benchmarks/bench_register.py [--spam-python /tmp/spamenv/bin/python] [--threads 1,2]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SNOW = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "real" / "snow_xct_100.tif"

_SPAM_SCRIPT = r"""
import json, resource, sys, time
import numpy
import spam.DIC
fixed = numpy.load(sys.argv[1]); moving = numpy.load(sys.argv[2])
def cpu():
    a = resource.getrusage(resource.RUSAGE_SELF)
    return a.ru_utime + a.ru_stime
out = {}
for name, fn, kw in (("register", spam.DIC.register, {}),
                     ("registerMultiscale", spam.DIC.registerMultiscale, {"binStart": 4})):
    fn(fixed, moving, **kw)                                   # warm-up
    c, t = cpu(), time.perf_counter()
    r = fn(fixed, moving, **kw)
    out[name] = {"wall_s": time.perf_counter() - t, "cpu_s": cpu() - c, "iterations": int(r["iterations"]),
                 "status": int(r["returnStatus"]), "phi": numpy.asarray(r["Phi"]).tolist()}
print(json.dumps(out))
"""


def truth_and_moving(fixed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The Phi that ``register(fixed, moving)`` should find, and ``moving``."""
    from scipy import ndimage

    from tomo4d.register import invert_phi, make_phi

    move = make_phi(translation_px=(1.3, -2.2, 0.7), rotation_deg=(1.5, -1.0, 2.0), stretch=(1.01, 0.995, 1.0))
    c = (np.asarray(fixed.shape) - 1.0) / 2.0
    f = move[:3, :3]
    moving = ndimage.affine_transform(fixed.astype(np.float64), f, offset=c + move[:3, 3] - f @ c, order=5,
                                      mode="mirror").astype(np.float32)
    return invert_phi(move), moving


def corner_error(phi: np.ndarray, truth: np.ndarray, shape) -> float:
    """Largest displacement error (px) of ``phi`` against ``truth`` over the 8 corners of the volume."""
    c = (np.asarray(shape) - 1.0) / 2.0
    corners = np.array([[z, y, x] for z in (0, shape[0] - 1) for y in (0, shape[1] - 1)
                        for x in (0, shape[2] - 1)], float) - c
    d = corners @ (phi[:3, :3] - truth[:3, :3]).T + phi[:3, 3] - truth[:3, 3]
    return float(np.abs(d).max())


def _cpu() -> float:
    a = resource.getrusage(resource.RUSAGE_SELF)
    return a.ru_utime + a.ru_stime


def run_tomo4d(fixed, moving, truth, threads: int) -> dict:
    from tomo4d.register import register

    c, t = _cpu(), time.perf_counter()
    r = register(fixed, moving, threads=threads)
    wall, cpu = time.perf_counter() - t, _cpu() - c
    return {"wall_s": wall, "cpu_s": cpu, "iterations": r.iterations, "corner_err_px": corner_error(r.phi, truth,
                                                                                                     fixed.shape)}


def run_spam(python: str, fixed_path: Path, moving_path: Path, script: Path, truth, shape) -> dict:
    proc = subprocess.run([python, str(script), str(fixed_path), str(moving_path)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"SPAM failed: {proc.stderr[-2000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    for d in out.values():
        d["corner_err_px"] = corner_error(np.asarray(d.pop("phi")), truth, shape)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spam-python", default=None, help="Python interpreter of an environment with SPAM.")
    ap.add_argument("--threads", default="1,2", help="tomo4d thread counts to time (comma-separated).")
    ap.add_argument("--repeats", type=int, default=3, help="A/B rounds (medians are quoted).")
    a = ap.parse_args(argv)
    if not SNOW.is_file():
        sys.exit(f"real data not found: {SNOW}")
    import tifffile

    from tomo4d.register import register

    fixed = tifffile.imread(SNOW).astype(np.float32)
    truth, moving = truth_and_moving(fixed)
    threads = [int(t) for t in a.threads.split(",")]
    register(fixed, moving)                                   # warm-up: loads (or compiles) the kernels
    runs: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        np.save(tmp / "fixed.npy", fixed)
        np.save(tmp / "moving.npy", moving)
        (tmp / "run.py").write_text(_SPAM_SCRIPT)
        for _ in range(a.repeats):
            for n in threads:
                runs.setdefault(f"tomo4d register, threads={n}", []).append(run_tomo4d(fixed, moving, truth, n))
            if a.spam_python:
                for name, d in run_spam(a.spam_python, tmp / "fixed.npy", tmp / "moving.npy", tmp / "run.py",
                                        truth, fixed.shape).items():
                    runs.setdefault(f"SPAM 0.9 {name}", []).append(d)
    rows = {k: {f: float(np.median([r[f] for r in v])) for f in v[0]} for k, v in runs.items()}
    ref = rows.get("SPAM 0.9 register")
    print(f"{'code':<30} {'wall s':>7} {'CPU s':>7} {'iter':>5} {'corner err px':>13} "
          f"{'x SPAM reg (wall)':>17} {'x SPAM reg (CPU)':>16}")
    for k, r in rows.items():
        ratio_w = f"{ref['wall_s'] / r['wall_s']:.2f}" if ref else "-"
        ratio_c = f"{ref['cpu_s'] / r['cpu_s']:.2f}" if ref else "-"
        print(f"{k:<30} {r['wall_s']:7.3f} {r['cpu_s']:7.3f} {r['iterations']:5.0f} {r['corner_err_px']:13.2e} "
              f"{ratio_w:>17} {ratio_c:>16}")
    print("(medians of", a.repeats, "A/B rounds; 'x SPAM reg' = SPAM register's time / this row's time: > 1 is faster)")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
