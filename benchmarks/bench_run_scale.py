"""Benchmark (issue 18): a whole experiment through ``tomo4d run`` at real sizes, out of core, on one machine or a
local Dask cluster, with the peak memory of every process.

``generate`` writes a synthetic in-situ series lazily, slab by slab, straight to OME-Zarr (never in memory): the
electrode of ``bench_scale.py`` (collector, porous anode with silicon spheres on a jittered 16-voxel lattice,
separator; uint16 grey per phase + noise), step ``i`` with the anode stretched by ``i * stretch`` along z (collector
fixed, separator carried; linear interpolation between reference slices; fresh noise per step), 100 nm voxels; a T0
label file with 5 fully labelled z planes; and the experiment file::

    align -> segment (forest, 16 trees, slice-wise 2D features sigmas 1 and 2.5, 5 labelled planes)
          -> quantify (thickness, phase volumes) -> particles (distance-watershed split cluster by cluster,
             tracked along the DVC field; ``--no-split`` / ``--no-track``: the runs before session 12)
          -> dvc (local ZNSSD, node spacing 32, half-window 16, each step from its own out-of-core affine start)
          -> strain (finite strain, regional statistics by depth)

``run`` runs ``tomo4d run`` on it (``--workers N``: a LocalCluster of N processes) while a poller samples the resident
memory of every process of the run's tree every 0.5 s; it prints one JSON line per stage (wall s and peak RSS from
the run's provenance) and one for the whole run (wall s, CPU s of the tree, the largest peak RSS of any process).
``compare`` checks that two run folders hold identical tables (CSV, byte for byte), fields (DVC, strain) and
volumes (aligned, labels, particles).

Usage::

    python benchmarks/bench_run_scale.py generate WORK --size 1024 --steps 3 [--stretch 0.01] [--budget-mb 512]
    python benchmarks/bench_run_scale.py run WORK OUT [--workers 2]
    python benchmarks/bench_run_scale.py compare OUT_A OUT_B

Every stage of this experiment streams under ``chunk_budget_mb`` (the split and the tracking since session 12).
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_scale as b  # noqa: E402  (the synthetic electrode's generator)

VS = 100.0


def _image_slab(z0, z1, n, step, stretch):
    """Slices [z0, z1) of step ``step``: the noise-free T0 grey values pulled back along z with *linear*
    interpolation between reference slices (a smooth stretch: nearest-slice pulling repeats one slice in
    1 / stretch, a staircase field), then fresh noise."""
    zr = np.clip(b._reference_zf(np.arange(z0, z1, dtype=np.float64), n, step * stretch), 0, n - 1)
    lo = np.floor(zr).astype(np.int64)
    hi = np.minimum(lo + 1, n - 1)
    a, c = int(lo.min()), int(hi.max()) + 1
    grey = b.GREY[b._labels_slab(a, c, n)]
    f = (zr - lo).astype(np.float32)[:, None, None]
    img = (1 - f) * grey[lo - a] + f * grey[hi - a]
    rng = np.random.default_rng([step, z0])  # each step its own noise
    return np.clip(img + rng.normal(0, 2500, img.shape), 0, 65535).astype(np.uint16)


def _label_planes(n):
    return [int(z) for z in np.linspace(0, n - 1, 5)]


def _training_slab(z0, z1, n):
    """T0's label file: the true phases on 5 z planes (every value a class there), 0 elsewhere (unused)."""
    out = np.zeros((z1 - z0, n, n), np.uint8)
    for z in _label_planes(n):
        if z0 <= z < z1:
            out[z - z0] = b._labels_slab(z, z + 1, n)[0]
    return out


def _save(fn, n, dtype, path):
    import dask

    from tomo4d.io import save_volume
    from tomo4d.volume import Volume

    with dask.config.set(scheduler="synchronous"):
        save_volume(Volume(b._lazy(fn, n, dtype), (VS,) * 3), path, overwrite=True)


def generate(work: Path, n: int, steps: int, stretch: float, budget_mb: float, track: bool = True,
             split: bool = True) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    t0, c0 = time.perf_counter(), time.process_time()
    series = []
    for i in range(steps):
        p = work / f"t{i}.ome.zarr"
        if not p.exists():
            _save(lambda z0, z1, n, i=i: _image_slab(z0, z1, n, i, stretch), n, np.uint16, p)
        series.append(p.name)
    if not (work / "labels_t0.ome.zarr").exists():
        _save(_training_slab, n, np.uint8, work / "labels_t0.ome.zarr")
    exp = {
        "name": f"bench_run_scale {n}^3 x {steps} steps",
        "inputs": {"series": series, "time_s": [3600.0 * i for i in range(steps)], "voxel_size_nm": VS},
        "align": {},
        "segment": {"labels": "labels_t0.ome.zarr", "slices": _label_planes(n), "feature_ndim": 2,
                    "sigmas": [1.0, 2.5], "n_trees": 16, "max_samples_per_class": 5000},
        "quantify": {},
        "particles": {"split": bool(split), "track": bool(track)},
        "dvc": {"node_spacing": 32, "half_window": 16, "grey_model": "znssd", "from_previous": False},
        "chunk_budget_mb": budget_mb,
    }
    import yaml

    (work / "experiment.yaml").write_text(yaml.safe_dump(exp, sort_keys=False))
    return {"what": "generate", "size": n, "steps": steps, "stretch_per_step": stretch,
            "gib_per_step": round(n ** 3 * 2 / 2**30, 3), "wall_s": round(time.perf_counter() - t0, 1),
            "cpu_s": round(time.process_time() - c0, 1)}


class _Poller:
    """Peak RSS of every process in the tree under ``pid``, sampled every ``interval`` s."""

    def __init__(self, pid: int, interval: float = 0.5):
        import psutil

        self.root, self.interval = psutil.Process(pid), interval
        self.peak: dict[int, tuple[float, str]] = {}
        self.cpu: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self):
        import psutil

        while not self._stop.is_set():
            try:
                procs = [self.root, *self.root.children(recursive=True)]
            except psutil.Error:
                break
            for p in procs:
                try:
                    rss = p.memory_info().rss / 2**20
                    t = p.cpu_times()
                    name = " ".join(p.cmdline()[:4])[-80:]
                except psutil.Error:
                    continue
                self.cpu[p.pid] = t.user + t.system  # not children_*: the tree's children are sampled themselves
                if rss > self.peak.get(p.pid, (0.0, ""))[0]:
                    self.peak[p.pid] = (rss, name)
            self._stop.wait(self.interval)

    def stop(self):
        self._stop.set()
        self._thread.join()


def run(work: Path, out: Path, workers: int | None, experiment: str = "experiment.yaml") -> dict:
    cmd = [str(Path(sys.executable).with_name("tomo4d")), "run", str(work / experiment), "-o", str(out),
           "--quiet"]
    if workers:
        cmd += ["--workers", str(workers)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    poll = _Poller(proc.pid)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))   # a killed benchmark stops its run too
    try:
        text, _ = proc.communicate()
    finally:
        if proc.poll() is None:   # interrupted: the run stops (it resumes from its checkpoints when rerun)
            proc.terminate()
            proc.wait(60)
        poll.stop()
    wall = time.perf_counter() - t0
    if proc.returncode:
        sys.exit(f"tomo4d run failed ({proc.returncode}):\n{text[-4000:]}")
    prov = json.loads((out / "provenance.json").read_text())
    for name, s in prov["stages"].items():
        print(json.dumps({"stage": name, "status": s["status"], "wall_s": s["wall_s_this_run"],
                          "peak_rss_mib_runner": s["peak_rss_mib"]}), flush=True)
    peaks = sorted(poll.peak.values(), reverse=True)
    return {"what": "run", "workers": workers or 0, "executor": prov.get("executor"), "wall_s": round(wall, 1),
            "cpu_s_tree": round(sum(poll.cpu.values()), 1), "n_processes": len(poll.peak),
            "peak_rss_mib_max": round(peaks[0][0], 1), "largest": [[round(r, 1), c] for r, c in peaks[:4]]}


def _same_volume(a: Path, c: Path) -> bool:
    import dask.array as da

    from tomo4d.io import open_volume

    x, y = open_volume(a).data, open_volume(c).data
    return x.shape == y.shape and bool(da.all(da.asarray(x) == da.asarray(y)).compute(scheduler="synchronous"))


def _same_h5(a: Path, c: Path) -> bool:
    """Every dataset of the two HDF5 files (DVC and strain fields) equal, NaN where NaN."""
    import h5py

    if not c.exists():
        return False
    with h5py.File(a, "r") as fa, h5py.File(c, "r") as fc:
        names = []
        fa.visititems(lambda k, v: names.append(k) if isinstance(v, h5py.Dataset) else None)
        return all(k in fc and np.array_equal(fa[k][()], fc[k][()], equal_nan=fa[k].dtype.kind == "f")
                   for k in names)


def compare(a: Path, c: Path) -> dict:
    diff = []
    tables = sorted(p.relative_to(a) for p in (a / "tables").glob("*.csv"))
    for t in tables:
        if not (c / t).exists() or (a / t).read_bytes() != (c / t).read_bytes():
            diff.append(str(t))
    fields = sorted(p.relative_to(a) for p in (a / "fields").glob("*.h5"))
    for f in fields:
        if not _same_h5(a / f, c / f):
            diff.append(str(f))
    vols = sorted(p.relative_to(a) for p in (a / "volumes").glob("*.ome.zarr"))
    for v in vols:
        if not _same_volume(a / v, c / v):
            diff.append(str(v))
    return {"what": "compare", "tables": len(tables), "fields": len(fields), "volumes": len(vols),
            "identical": not diff, "differ": diff}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("generate")
    g.add_argument("work", type=Path)
    g.add_argument("--size", type=int, default=256)
    g.add_argument("--steps", type=int, default=3)
    g.add_argument("--stretch", type=float, default=0.01, help="anode stretch added per step (fraction)")
    g.add_argument("--budget-mb", type=float, default=512.0)
    g.add_argument("--no-track", action="store_true", help="particles not tracked (the runs before session 12)")
    g.add_argument("--no-split", action="store_true", help="touching particles not split (before session 12)")
    r = sub.add_parser("run")
    r.add_argument("work", type=Path)
    r.add_argument("out", type=Path)
    r.add_argument("--workers", type=int, default=None)
    r.add_argument("--experiment", default="experiment.yaml", help="experiment file in WORK (e.g. a 2-step copy)")
    c = sub.add_parser("compare")
    c.add_argument("a", type=Path)
    c.add_argument("b", type=Path)
    a = ap.parse_args(argv)
    if a.cmd == "generate":
        res = generate(a.work, a.size, a.steps, a.stretch, a.budget_mb, track=not a.no_track, split=not a.no_split)
    elif a.cmd == "run":
        res = run(a.work, a.out, a.workers, a.experiment)
    else:
        res = compare(a.a, a.b)
    print(json.dumps(res), flush=True)


if __name__ == "__main__":
    main()
