"""Projections -> a volume file, slab by slab: bounded memory, slabs in parallel worker processes (dask).

The engine's CPU back-projector must run on one thread (:func:`.engine.one_numba_thread`), so the parallelism
is over sinogram slabs: each slab is one dask task that opens the projections itself (:func:`.readers.reopen`),
reads only its detector rows, reconstructs them and writes its slab into an OME-Zarr
:class:`tomo4d._chunks.SlabStore` (whole storage chunks: concurrent slabs never share one) and marks it done.
Only counts travel back.  The store lives under the output's hidden progress name and is published atomically
when every slab is there (an OME-Zarr output), or streamed from it into the output's format
(:func:`tomo4d.io.save_volume`, slab by slab); nothing half-written ever carries the final name, and a rerun
after a crash resumes from the slabs marked done.

Peak memory per worker: one slab of projections (``slab_rows`` plus the Paganin margin, float32 and the
detector's dtype) and its slices, independent of the detector height; the parent holds the flats, darks and
the centre-search rows.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from pathlib import Path

import numpy as np

from .._validate import show
from ..errors import InputError
from .core import Plan, finish, plan, reconstruct_slab
from .options import Reconstruction, ReconstructOptions
from .readers import Projections, portable, reopen

__all__ = ["reconstruct_to"]


def _store(path: Path, shape, dtype, slabs, voxel_size_nm, key: str, name: str):
    from .._chunks import SlabStore

    return SlabStore(path, shape=shape, dtype=dtype, slabs=slabs, voxel_size_nm=voxel_size_nm, name=name, key=key,
                     modality="xray")


def slab_task(args: tuple, i: int) -> tuple[int, int]:
    """Slab ``i``: open the projections, reconstruct the slab's rows, write it; ``(n_clipped, n_out_of_range)``.

    ``args`` is ``(spec, store_args, first_row, center, options, paganin_ratio)``; ``spec`` from
    :func:`.readers.portable` (or the projections themselves in this process).
    """
    spec, store_args, r0, center, opts, ratio = args
    store = _store(**store_args).open()
    z0, z1 = store.slabs[i]
    proj = reopen(spec)
    try:
        block, n_bad, n_range = reconstruct_slab(proj, r0 + z0, r0 + z1, center, opts, ratio)
    finally:
        if proj is not spec:
            _close(proj)
    _write_counts(store, i, (n_bad, n_range, os.getpid()))  # before the done-marker: a done slab has its counts
    store.write(i, block)
    return n_bad, n_range


def _close(proj: Projections) -> None:
    f = getattr(getattr(proj.data, "file", None), "close", None)  # an h5py dataset's file
    if f is not None:
        f()


def _key(proj: Projections, opts: ReconstructOptions, pl: Plan) -> str:
    """Identifies the computation (a progress store of another one is discarded, never resumed)."""
    if proj.opener is None:  # in-memory projections: nothing identifies them cheaply, so never resume
        return uuid.uuid4().hex[:16]
    src = proj.opener
    stamp = []
    for k in ("path", "flats", "darks", "angles"):
        v = src.get(k)
        if isinstance(v, str) and Path(v).exists():
            st = Path(v).stat()
            stamp.append([v, st.st_size, st.st_mtime_ns])
    from .engine import engine_version

    text = json.dumps([src, stamp, opts.to_dict(), pl.center, list(pl.rows), engine_version()], sort_keys=True,
                      default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _compute(args: tuple, todo: list[int], *, workers: int, client, progress, total: int,
             sizes: list[int]) -> list[tuple[int, int]]:
    """Slab tasks ``todo``: here in order (1 worker), on a local dask process pool, or on a distributed client."""
    import dask

    if workers == 1 and client is None:
        out, done = [], total - sum(sizes)
        for i, n in zip(todo, sizes):
            out.append(slab_task(args, i))
            done += n
            if progress is not None:
                progress(done, total)
        return out
    shared = dask.delayed(args, traverse=False)  # opaque: dask must not walk into the projections or options
    tasks = [dask.delayed(slab_task, pure=False)(shared, i) for i in todo]
    if client is not None:
        from distributed import as_completed

        futures = client.compute(tasks)
        order = {f.key: j for j, f in enumerate(futures)}
        results: list = [None] * len(futures)
        done = total - sum(sizes)
        for fut in as_completed(futures, loop=client.loop):  # this client (it need not be the default one)
            j = order[fut.key]
            results[j] = fut.result()
            done += sizes[j]
            if progress is not None:
                progress(done, total)
        return results
    from dask.callbacks import Callback

    rows = {t.key: n for t, n in zip(tasks, sizes)}
    state = {"done": total - sum(sizes)}

    class _Progress(Callback):
        def _posttask(self, key, result, dsk, st, worker_id):
            if key in rows:
                state["done"] += rows[key]
                if progress is not None:
                    progress(state["done"], total)

    with _Progress():  # chunksize 1: dask's default (6) would hand a batch of up to 6 slabs to one process
        return list(dask.compute(*tasks, scheduler="processes", num_workers=workers, chunksize=1))


def reconstruct_to(proj: Projections, output, *, options: ReconstructOptions | None = None, workers: int = 1,
                   client=None, overwrite: bool = False, progress=None, name: str = "",
                   compression: str | None = None) -> Reconstruction:
    """Reconstruct ``proj`` into the file ``output`` (any :func:`tomo4d.io.save_volume` format), slab by slab.

    Parameters
    ----------
    proj : Projections
        From :func:`~tomo4d.reconstruct.open_projections` (worker processes reopen the files), or in memory.
    output : path-like
        The volume; ``.ome.zarr``/``.zarr`` is written in place (published when complete), other formats are
        streamed from a temporary OME-Zarr next to it.  Never an input.
    options : ReconstructOptions
        As for :func:`~tomo4d.reconstruct.reconstruct`; ``slab_rows`` sets the memory of each task.
    workers : int
        Slabs reconstructed at once by a local dask process pool (1: here, in order).  Each worker runs the
        engine on one thread.
    client : distributed.Client, optional
        Run the slab tasks on this Dask cluster instead (its workers must see ``output``'s folder; give them
        one thread each).
    overwrite : bool
        Replace an existing ``output``.
    progress : callable(done_rows, total_rows), optional
    compression : str, optional
        Of the output format (:func:`tomo4d.io.save_volume`).

    Returns
    -------
    Reconstruction
        Its ``volume`` is the written file, opened lazily.  The results equal :func:`reconstruct`'s, whatever
        ``workers`` (each slab is computed alone, the same way).
    """
    from ..io import detect_format, open_volume, save_volume
    from ..io._atomic import check_outputs

    opts = options or ReconstructOptions()
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise InputError(f"workers={show(workers)} must be an integer >= 1 (worker processes)")
    out = Path(output)
    fmt = detect_format(out, for_writing=True)
    inputs = [v for k, v in (proj.opener or {}).items() if k in ("path", "flats", "darks", "angles")
              and isinstance(v, str)]
    check_outputs({"output": out}, inputs=inputs, overwrite=overwrite)
    t0 = time.perf_counter()
    pl = plan(proj, opts)
    r0, r1 = pl.rows
    width = proj.shape[2]
    slabs = [(s - r0, e - r0) for s, e in pl.slabs(opts.slab_rows)]
    dtype = np.float32 if opts.uint16_range is None else np.uint16
    store_path = out if fmt == "zarr" else out.parent / f".{out.name}.reconstruct.ome.zarr"
    store_args = {"path": str(store_path), "shape": (r1 - r0, width, width), "dtype": np.dtype(dtype).str,
                  "slabs": slabs, "voxel_size_nm": (pl.pixel_size_nm or 1.0,) * 3, "key": _key(proj, opts, pl),
                  "name": name or out.name}
    store = _store(**store_args).open()
    todo = [i for i in range(len(slabs)) if not store.is_done(i)]  # an interrupted run's slabs are kept
    spec = portable(proj) if (workers > 1 or client is not None) else proj
    args = (spec, store_args, r0, pl.center, opts, pl.ratio)
    _compute(args, todo, workers=workers, client=client, progress=progress, total=r1 - r0,
             sizes=[slabs[i][1] - slabs[i][0] for i in todo])
    counts = [_read_counts(store, i) for i in range(len(slabs))]
    n_clipped, n_range = (int(sum(c[k] for c in counts)) for k in (0, 1))
    n_proc = len({c[2] for c in counts if len(c) > 2})  # processes that reconstructed slabs (this run or before)
    lazy = open_volume(store.progress / "store")
    rec = finish(proj, opts, pl, lazy.data, n_clipped=n_clipped, n_range=n_range, seconds=time.perf_counter() - t0,
                 name=name, extra={"workers": workers if client is None else "distributed",
                                   "slab_processes": n_proc, "slab_rows": opts.slab_rows})
    if fmt == "zarr":
        _set_header(store, rec)
        store.publish(overwrite=overwrite)
    else:
        save_volume(rec.volume, out, overwrite=overwrite, compression=compression)
        shutil.rmtree(store.progress, ignore_errors=True)
    vol = open_volume(out)
    return Reconstruction(volume=vol, center=rec.center, center_found=rec.center_found, n_clipped=rec.n_clipped,
                          coverage_deg=rec.coverage_deg, engine=rec.engine, warnings=rec.warnings,
                          n_out_of_range=rec.n_out_of_range)


def _counts_path(store, i: int) -> Path:
    return store.progress / f"counts-{i:06d}.json"


def _write_counts(store, i: int, counts) -> None:
    """Slab ``i``'s clipped and out-of-range counts beside the progress store (written by rename)."""
    path = _counts_path(store, i)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps([int(c) for c in counts]), encoding="utf-8")
    os.replace(tmp, path)


def _read_counts(store, i: int) -> tuple[int, ...]:
    """``(n_clipped, n_out_of_range, pid of the process that wrote the slab)``."""
    return tuple(json.loads(_counts_path(store, i).read_text(encoding="utf-8")))


def _set_header(store, rec: Reconstruction) -> None:
    """The store's tomo4d header: the reconstruction's voxel size, metadata and provenance."""
    import zarr

    root = zarr.open_group(str(store.progress / "store"), mode="r+")
    root.attrs["tomo4d"] = rec.volume.header_json()
