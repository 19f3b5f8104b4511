"""Benchmark (issue 18, skeleton): out-of-core segment -> thickness/phases -> particles at growing sizes.

A synthetic uint16 electrode (collector, porous anode with silicon spheres, separator; grey values per phase plus
noise) is generated lazily, slab by slab, straight to OME-Zarr (it is never in memory), with its true labels.  Each
stage then runs in its own Python process (so that its peak RSS is its own), reading its input lazily and writing
its output slab by slab under ``--budget-mb``:

* ``train``: the pixel classifier (slice-wise 2D features, sigmas 1 and 2.5; a 3D forest runs at ~50 k voxels/s
  here) on 5 labelled z planes of a 64-slice crop;
* ``segment``: :func:`tomo4d.segment.predict_chunked.predict_to_store`;
* ``quantify``: :func:`tomo4d.quantify.chunked.electrode_thickness_chunked` and ``phase_volumes_chunked``;
* ``particles``: :func:`tomo4d.quantify.particles_chunked.label_particles_chunked` (connected components merged
  across slab faces, geometry from per-slab moments) into a label store.

Usage::

    python benchmarks/bench_scale.py --sizes 128 256 [--budget-mb 256] [--workdir benchmarks/_work_scale]

Prints one JSON line per (size, stage): wall and CPU time (s), peak RSS (MiB); and the segmentation's accuracy
against the true labels (sampled planes).  Then a second step (the anode stretched 10 % along z, fresh noise),
``dvc`` (local ZNSSD, node spacing 32, node batches read from Zarr within the budget) and ``strain`` (mean Hencky
axial strain of the anode's nodes against ln 1.1).  ``generate_reg``, ``register``, ``register_memory``: a smooth
texture pair related by a known affine (REG_PHI), registered out of core from Zarr (``register(...,
chunk_budget_mb=budget)``) and, as the peer, loaded whole (in-memory register; its RSS is the whole pair's).
``--stages`` runs a subset.  The whole experiment (align included) through ``tomo4d run``, on one machine and on
a LocalCluster with the results compared: ``bench_run_scale.py``.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

CHILD = r"""
import json, os, resource, sys, time
os.environ.setdefault("OMP_NUM_THREADS", "1")
import numpy as np
sys.path.insert(0, os.path.dirname(sys.argv[1]))
import bench_scale as b
t0, c0 = time.perf_counter(), time.process_time()
stage, work, size, budget = sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
info = getattr(b, "stage_" + stage)(work, size, budget) or {}
info.update(stage=stage, size=size, budget_mb=budget, wall_s=round(time.perf_counter() - t0, 2),
            cpu_s=round(time.process_time() - c0, 2),
            peak_rss_mib=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1))
print(json.dumps(info))
"""

VS = (100.0, 100.0, 100.0)
CELL = 16  # sphere lattice cell, voxels

def _gen_slab(n):
    return max(1, 2**22 // (n * n))  # slices of ~4 M voxels per generated slab


def _hash(*a):
    h = np.uint64(1469598103934665603)
    for v in a:
        h = (h ^ np.asarray(v, np.uint64)) * np.uint64(1099511628211)
    return h


#: axial stretch of the anode at the second step (the collector is fixed, the separator carried as a block)
STRETCH = 0.10


def _reference_zf(z, n, stretch):
    """The reference z (float) of deformed slice z: the inverse of the anode's axial stretch (collector fixed,
    separator carried as a block)."""
    zc, zs = int(0.1 * n), int(0.8 * n)
    return np.where(z < zc, z, np.where(z < zc + (zs - zc) * (1 + stretch), zc + (z - zc) / (1 + stretch),
                                        z - (zs - zc) * stretch))


def _reference_z(z, n, stretch):
    """The reference z of deformed slice z, nearest voxel."""
    return np.rint(_reference_zf(z, n, stretch)).astype(np.int64)


def _labels_slab(z0, z1, n, stretch=0.0):
    """True phase labels of slices [z0, z1) of the size-n synthetic electrode (codes of tomo4d.phantom.Phase);
    ``stretch`` > 0: the second step, the anode stretched along z (nearest-voxel pull-back)."""
    z, y, x = np.ogrid[z0:z1, 0:n, 0:n]
    if stretch:
        z = _reference_z(z, n, stretch)
    zc, zs = int(0.1 * n), int(0.8 * n)
    cz, cy, cx = z // CELL, y // CELL, x // CELL
    h = _hash(cz, cy, cx)
    r = 3.0 + (h % np.uint64(5)).astype(np.float32)
    off = ((h >> np.uint64(8)) % np.uint64(5)).astype(np.float32) - 2.0
    d2 = (z - cz * CELL - CELL / 2 + off) ** 2 + (y - cy * CELL - CELL / 2) ** 2 + (x - cx * CELL - CELL / 2 - off) ** 2
    pore = (_hash(z, y, x) % np.uint64(100)) < np.uint64(30)
    lab = np.where(pore, 0, 1).astype(np.uint8)
    lab[np.broadcast_to(d2 < r * r, lab.shape)] = 2
    zz = np.broadcast_to(z, lab.shape)
    lab[zz < zc] = 4
    lab[(zz >= zs) & ~pore] = 5
    lab[(zz >= zs) & pore] = 0
    return lab


GREY = np.array([8000, 20000, 32000, 26000, 52000, 14000], np.float32)


def _image_slab(z0, z1, n, stretch=0.0):
    lab = _labels_slab(z0, z1, n, stretch)
    rng = np.random.default_rng(z0 + (10**6 if stretch else 0))   # the second step has its own noise
    return np.clip(GREY[lab] + rng.normal(0, 2500, lab.shape), 0, 65535).astype(np.uint16)


def _lazy(fn, n, dtype):
    import dask
    import dask.array as da

    g = _gen_slab(n)
    parts = [da.from_delayed(dask.delayed(fn)(z0, min(z0 + g, n), n), shape=(min(g, n - z0), n, n),
                             dtype=dtype) for z0 in range(0, n, g)]
    return da.concatenate(parts)


def _p(work, name):
    return Path(work) / name


def stage_generate(work, n, budget):
    import dask

    from tomo4d.io import save_volume
    from tomo4d.volume import Volume

    with dask.config.set(scheduler="synchronous"):
        save_volume(Volume(_lazy(_image_slab, n, np.uint16), VS), _p(work, "image.ome.zarr"), overwrite=True)
    return {"gib": round(n ** 3 * 2 / 2**30, 3)}


def stage_generate_t1(work, n, budget):
    import dask

    from tomo4d.io import save_volume
    from tomo4d.volume import Volume

    def slab(z0, z1, n):
        return _image_slab(z0, z1, n, STRETCH)

    with dask.config.set(scheduler="synchronous"):
        save_volume(Volume(_lazy(slab, n, np.uint16), VS), _p(work, "image_t1.ome.zarr"), overwrite=True)
    return {"gib": round(n ** 3 * 2 / 2**30, 3), "anode_stretch": STRETCH}


def _axial_start(shape, spacing, hw):
    """The known axial map (collector fixed, anode stretched by STRETCH, separator carried) on the node grid, as
    the initial field: a start that a registration would give if whole volumes fitted the memory target (they do
    not yet at 1024^3); the mean-stretch affine is not enough here, the sphere lattice (16 px) aliases it."""
    from tomo4d.dvc import DisplacementField
    from tomo4d.dvc.field import node_grid

    n = shape[0]
    zc, zs = int(0.1 * n), int(0.8 * n)
    pos, gs = node_grid(shape, node_spacing=spacing, half_window=hw)
    z = pos[:, 0].astype(float)
    phi = np.tile(np.eye(4), (len(pos), 1, 1))
    phi[:, 0, 3] = STRETCH * (np.clip(z, zc, zs) - zc)
    phi[:, 0, 0] = np.where((z > zc) & (z < zs), 1 + STRETCH, 1.0)
    return DisplacementField(pos.astype(float), phi, np.zeros(len(pos), np.int8), grid_shape=gs,
                             node_spacing_px=(spacing,) * 3, half_window_px=(hw,) * 3,
                             notes={"volume_shape_zyx": list(shape)})


def stage_dvc(work, n, budget):
    """Local DVC T0 -> T1, node spacing 32, node batches read from the two Zarr volumes within the budget, from the
    known axial map (:func:`_axial_start`)."""
    from tomo4d.dvc import correlate
    from tomo4d.io import open_volume

    ref, dfm = open_volume(_p(work, "image.ome.zarr")).data, open_volume(_p(work, "image_t1.ome.zarr")).data
    field = correlate(ref, dfm, node_spacing=32, half_window=16, initial=_axial_start(ref.shape, 32, 16),
                      chunk_budget_mb=budget, threads=1, grey_model="znssd")
    field.save(_p(work, "dvc.h5"), overwrite=True)
    return {"nodes": field.n_nodes, "batches": field.notes["batches"], "usable": round(float(field.usable.mean()), 3)}


def stage_strain(work, n, budget):
    from tomo4d.dvc import DisplacementField, strain_field

    f = DisplacementField.load(_p(work, "dvc.h5"))
    st = strain_field(f)
    z = f.positions_zyx_px[:, 0]
    zc, zs = int(0.1 * n), int(0.8 * n)
    inside = (z - 16 >= zc) & (z + 16 < zs) & st.valid.ravel()
    hz = st.component("hencky_zz").ravel()[inside]
    return {"anode_nodes": int(inside.sum()), "hencky_zz_anode_mean": round(float(hz.mean()), 4),
            "hencky_zz_truth": round(float(np.log1p(STRETCH)), 4)}


def stage_train(work, n, budget):
    from tomo4d.segment import FeatureSpec, train_pixel_classifier

    m = min(n, 128)  # 5 labelled z planes (collector, anode, separator) of m x m
    zs = np.linspace(0, n - 1, 5).astype(int)
    img = np.stack([_image_slab(z, z + 1, n)[0, :m, :m] for z in zs])
    lab = np.stack([_labels_slab(z, z + 1, n)[0, :m, :m] for z in zs]).astype(np.int32) + 1
    model = train_pixel_classifier(img, lab, features=FeatureSpec(sigmas=(1.0, 2.5), ndim=2), n_trees=16,
                                   max_samples_per_class=5000, seed=0)
    model.save(_p(work, "model.npz"), overwrite=True)
    return {"classes": [int(c) for c in model.classes]}


def stage_segment(work, n, budget):
    from tomo4d.io import open_volume
    from tomo4d.segment import PixelClassifier
    from tomo4d.segment.predict_chunked import predict_to_store

    model = PixelClassifier.load(_p(work, "model.npz"))
    res = predict_to_store(model, open_volume(_p(work, "image.ome.zarr")), _p(work, "seg.ome.zarr"),
                           voxel_size_nm=VS, chunk_budget_mb=budget, offset=1)
    seg = open_volume(res.path)
    zs = np.linspace(0, n - 1, 9).astype(int)
    acc = np.mean([np.mean(np.asarray(seg.data[z]) == _labels_slab(z, z + 1, n)[0]) for z in zs])
    return {"n_slabs": res.n_slabs, "accuracy_sampled": round(float(acc), 4)}


def stage_quantify(work, n, budget):
    from tomo4d.io import open_volume
    from tomo4d.quantify.chunked import electrode_thickness_chunked, phase_volumes_chunked

    seg = open_volume(_p(work, "seg.ome.zarr"))
    th = electrode_thickness_chunked(seg, chunk_budget_mb=budget)
    ph = phase_volumes_chunked(seg, chunk_budget_mb=budget)
    return {"thickness_mean_um": round(th.mean_um, 3), "true_thickness_um": round((int(0.8 * n) - int(0.1 * n)) * 0.1, 3),
            "silicon_fraction": round(float(ph.fraction[2]), 4)}


def stage_particles(work, n, budget):
    from tomo4d._chunks import SlabStore, plan_slabs
    from tomo4d.io import open_volume
    from tomo4d.quantify.particles_chunked import BYTES_PER_VOXEL, label_particles_chunked

    seg = open_volume(_p(work, "seg.ome.zarr"))
    plan = plan_slabs(seg.shape, bytes_per_voxel=BYTES_PER_VOXEL, chunk_budget_mb=budget)
    store = SlabStore(_p(work, "particles.ome.zarr"), shape=seg.shape, dtype=np.int32, slabs=plan, voxel_size_nm=VS,
                      key="bench")
    res = label_particles_chunked(seg, particle_class=2, min_voxels=8, out=store)
    return {"n_particles": res.n_particles, "n_slabs": res.n_slabs}


#: the known affine of the registration pair (fixed -> moving voxel coordinates about the centre)
REG_PHI = dict(translation_px=(1.7, -2.3, 1.1), rotation_deg=(0.6, -0.4, 0.8), strain=(0.006, -0.003, 0.004))


def _waves(n_waves=12, seed=3):
    rng = np.random.default_rng(seed)
    k = rng.normal(size=(n_waves, 3))
    k *= (2 * np.pi / rng.uniform(7.0, 30.0, n_waves) / np.linalg.norm(k, axis=1))[:, None]
    return k, rng.uniform(0, 2 * np.pi, n_waves)


def _texture_slab(z0, z1, n, moved=False):
    """A smooth quasi-random texture (12 plane waves, wavelengths 7-30 px) as uint16 plus noise; ``moved``: the
    moving volume, ``texture(phi^-1(x))`` (so that REG_PHI is the exact fixed -> moving answer)."""
    from tomo4d.register import invert_phi, make_phi

    k, ph = _waves()
    z, y, x = np.meshgrid(np.arange(z0, z1, dtype=np.float64), np.arange(n, dtype=np.float64),
                          np.arange(n, dtype=np.float64), indexing="ij")
    if moved:
        inv = invert_phi(make_phi(**REG_PHI))
        c = (n - 1) / 2.0
        u = np.stack([z - c, y - c, x - c])
        p = np.tensordot(inv[:3, :3], u, axes=1) + c + inv[:3, 3][:, None, None, None]
        z, y, x = p
    acc = np.zeros(z.shape, np.float32)
    for (kz, ky, kx), f in zip(k, ph):
        acc += np.cos(kz * z + ky * y + kx * x + f).astype(np.float32)
    rng = np.random.default_rng(z0 + (7 if moved else 0))
    return np.clip(30000 + 4000 * acc + rng.normal(0, 1000, acc.shape), 0, 65535).astype(np.uint16)


def stage_generate_reg(work, n, budget):
    import dask

    from tomo4d.io import save_volume
    from tomo4d.volume import Volume

    def moved(z0, z1, n):
        return _texture_slab(z0, z1, n, moved=True)

    with dask.config.set(scheduler="synchronous"):
        for name, fn in (("reg_fixed", _texture_slab), ("reg_moving", moved)):
            save_volume(Volume(_lazy(fn, n, np.uint16), VS), _p(work, f"{name}.ome.zarr"), overwrite=True)
    return {"gib_pair_float32": round(2 * n ** 3 * 4 / 2**30, 3)}


def _corner_error(p, q, n):
    c = (n - 1) / 2.0
    cs = np.array([[a, b, d] for a in (0, n - 1) for b in (0, n - 1) for d in (0, n - 1)], float) - c
    return float(np.abs((cs @ p[:3, :3].T + p[:3, 3]) - (cs @ q[:3, :3].T + q[:3, 3])).max())


def stage_register(work, n, budget):
    """register() of the Zarr pair out of core (chunk_budget_mb = budget), read lazily."""
    import json

    from tomo4d.io import open_volume
    from tomo4d.register import make_phi, register

    f, m = open_volume(_p(work, "reg_fixed.ome.zarr")).data, open_volume(_p(work, "reg_moving.ome.zarr")).data
    reg = register(f, m, chunk_budget_mb=budget, threads=1)
    _p(work, "reg_ooc.json").write_text(json.dumps(reg.phi.tolist()))
    return {"levels": [f"{d['binning']}:{d['route']}" + (f"({d['boxes']} boxes)" if "boxes" in d else "")
                       for d in reg.extra.get("out_of_core", {}).get("levels", [])],
            "iterations": reg.iterations, "corner_error_vs_truth_px": round(_corner_error(reg.phi, make_phi(**REG_PHI), n), 4)}


def stage_register_memory(work, n, budget):
    """The peer: register() of the same pair loaded whole (numpy), and the out-of-core Phi against it."""
    import json

    from tomo4d.io import open_volume
    from tomo4d.register import make_phi, register

    f, m = open_volume(_p(work, "reg_fixed.ome.zarr")).numpy(), open_volume(_p(work, "reg_moving.ome.zarr")).numpy()
    reg = register(f, m, threads=1)
    ooc = np.asarray(json.loads(_p(work, "reg_ooc.json").read_text()))
    return {"iterations": reg.iterations, "corner_error_vs_truth_px": round(_corner_error(reg.phi, make_phi(**REG_PHI), n), 4),
            "out_of_core_vs_in_memory_px": round(_corner_error(ooc, reg.phi, n), 4)}


STAGES = ("generate", "train", "segment", "quantify", "particles", "generate_t1", "dvc", "strain", "generate_reg",
          "register", "register_memory")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    ap.add_argument("--budget-mb", type=float, default=256.0)
    ap.add_argument("--workdir", default="benchmarks/_work_scale")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES),
                    help="stages to run, in this order (default: all); register_memory loads the pair whole")
    a = ap.parse_args(argv)
    for n in a.sizes:
        work = Path(a.workdir) / str(n)
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        for stage in a.stages:
            r = subprocess.run([sys.executable, "-c", CHILD, str(Path(__file__).resolve()), stage, str(work), str(n),
                                str(a.budget_mb)], capture_output=True, text=True)
            if r.returncode:
                sys.exit(f"{stage} at {n}^3 failed:\n{r.stderr[-3000:]}")
            print(r.stdout.strip().splitlines()[-1], flush=True)
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
