"""Demo stage ``io``: write a volume in every format, read it back, compare."""

from __future__ import annotations

import time

import numpy as np


def demo_volume(ctx) -> "object":
    """The volume the io stage exercises: the phantom's HQ scan when there is one."""
    from ..volume import Volume, VolumeMetadata

    vol = ctx.store.get("hq")
    if vol is not None:
        return vol
    rng = np.random.default_rng(ctx.seed)
    z, y, x = np.mgrid[:48, :64, :64]
    img = np.zeros((48, 64, 64), np.float32)
    for c in rng.uniform(8, 56, size=(12, 3)):
        r = rng.uniform(4, 9)
        img[(z - c[0] * 0.75) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2 < r * r] = 1.0
    img = (img * 30000 + 10000 + rng.normal(0, 800, img.shape)).clip(0, 65535).astype(np.uint16)
    return Volume(img, (50.0, 50.0, 50.0), VolumeMetadata(name="demo spheres", modality="synthetic"))


def stage_io(ctx) -> str:
    from ..io import open_volume, save_volume

    vol = demo_volume(ctx)
    ref = vol.numpy()
    rows = []
    targets = [("tiff", "volume.tif"), ("slices", "volume_slices"), ("hdf5", "volume.h5"),
               ("zarr", "volume.ome.zarr"), ("vol", "volume.vol"), ("raw", "volume.raw")]
    all_ok = True
    for fmt, name in targets:
        path = ctx.path("io", name)
        t0 = time.perf_counter()
        save_volume(vol, path, levels=2 if fmt == "zarr" else 1)
        t_write = time.perf_counter() - t0
        t0 = time.perf_counter()
        back = open_volume(path)
        arr = back.numpy()
        t_read = time.perf_counter() - t0
        same = bool(np.array_equal(arr, ref.astype(arr.dtype)))
        vs_ok = bool(np.allclose(back.voxel_size_nm, vol.voxel_size_nm, rtol=1e-6))
        all_ok &= same and vs_ok
        size = sum(f.stat().st_size for f in (path.rglob("*") if path.is_dir() else [path]) if f.is_file())
        rows.append((fmt, name, back.dtype.name, size / 2**20, t_write, t_read,
                     "yes" if same else "NO", "yes" if vs_ok else "NO"))
    ctx.report.section("Volume I/O", f"{vol!r} written in every supported format and read back.")
    ctx.report.table(["format", "file", "dtype read", "size (MiB)", "write (s)", "read (s)",
                      "values identical", "voxel size kept"], rows)
    return f"{len(targets)} formats round-tripped, {'all identical' if all_ok else 'MISMATCH'}"
