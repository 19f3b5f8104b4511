"""Writes are atomic: an interrupted write leaves nothing under the final name."""

from __future__ import annotations

import os

import numpy as np
import pytest

from tomo4d import OverwriteError, Volume
from tomo4d.io import open_volume, save_volume

TARGETS = ["v.tif", "slices", "v.h5", "v.ome.zarr", "v.vol", "v.raw"]


class Boom(RuntimeError):
    pass


def _failing_volume(fail_at_z: int = 20):
    """A lazy volume whose computation fails when slab containing z=fail_at_z is read."""
    import dask.array as da

    base = da.ones((40, 16, 16), dtype=np.uint16, chunks=(4, 16, 16))

    def maybe_fail(block, block_info=None):
        z0 = block_info[0]["array-location"][0][0]
        if z0 >= fail_at_z:
            raise Boom("disk full (simulated)")
        return block

    return Volume(base.map_blocks(maybe_fail, dtype=np.uint16), 50.0)


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if ".partial-" in p.name or ".old-" in p.name)


@pytest.mark.parametrize("name", TARGETS)
def test_interrupted_write_leaves_no_output(tmp_path, name, monkeypatch):
    # write in slabs of 4 slices, so the failure at z = 20 comes after five slabs were written: every
    # writer module holds its own reference to slab_depth (HDF5 and Zarr take it through storage_chunks)
    import importlib

    import tomo4d._array as arr

    for mod in ("_common", "tiff", "slices", "raw", "_lazy"):
        monkeypatch.setattr(importlib.import_module(f"tomo4d.io.{mod}"), "slab_depth", lambda *a, **k: 4)
    written = []
    real_iter = arr.iter_slabs

    def counting(array, step):
        for z0, slab in real_iter(array, step):
            written.append(z0)
            yield z0, slab

    for mod in ("tiff", "slices", "raw", "hdf5", "zarrio"):
        monkeypatch.setattr(importlib.import_module(f"tomo4d.io.{mod}"), "iter_slabs", counting, raising=False)
    real_prefetched = arr.prefetched_slabs

    def counting_prefetched(array, step):  # the Zarr writer reads the next slab while writing one
        for z0, slab in real_prefetched(array, step):
            written.append(z0)
            yield z0, slab

    monkeypatch.setattr(importlib.import_module("tomo4d.io.zarrio"), "prefetched_slabs", counting_prefetched)
    with pytest.raises(Boom):
        save_volume(_failing_volume(), tmp_path / name)
    assert written and max(written) >= 4, f"the {name} writer failed before writing a slab: {written}"
    assert not (tmp_path / name).exists()
    assert _leftovers(tmp_path) == []
    assert not (tmp_path / (name + ".info")).exists()


@pytest.mark.parametrize("name", TARGETS)
def test_interrupted_overwrite_keeps_previous_output(tmp_path, name):
    good = Volume(np.full((40, 16, 16), 9, np.uint16), 50.0)
    save_volume(good, tmp_path / name)
    with pytest.raises(Boom):
        save_volume(_failing_volume(), tmp_path / name, overwrite=True)
    back = open_volume(tmp_path / name)
    assert int(back.numpy().min()) == 9 and int(back.numpy().max()) == 9
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("name", TARGETS)
def test_existing_output_needs_overwrite(tmp_path, small_volume, name):
    save_volume(small_volume, tmp_path / name)
    with pytest.raises(OverwriteError, match="overwrite"):
        save_volume(small_volume, tmp_path / name)
    save_volume(small_volume.with_data(small_volume.numpy() // 2), tmp_path / name, overwrite=True)
    np.testing.assert_array_equal(open_volume(tmp_path / name).numpy(), small_volume.numpy() // 2)


@pytest.mark.parametrize("name", TARGETS)
def test_input_is_never_overwritten(tmp_path, small_volume, name):
    save_volume(small_volume, tmp_path / name)
    vol = open_volume(tmp_path / name)
    with pytest.raises(OverwriteError, match="input"):
        save_volume(vol, tmp_path / name, overwrite=True)
    np.testing.assert_array_equal(open_volume(tmp_path / name).numpy(), small_volume.numpy().astype(vol.dtype))


def test_output_inside_input_folder_is_refused(tmp_path, small_volume):
    save_volume(small_volume, tmp_path / "stack")
    vol = open_volume(tmp_path / "stack")
    with pytest.raises(OverwriteError, match="input"):
        save_volume(vol, tmp_path / "stack" / "inner.tif")


# --- outputs that appear meanwhile, stale temporaries, folder ownership, OS errors, interrupts -----------

def _dead_pid() -> int:
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_output_appearing_meanwhile_is_not_replaced(tmp_path):
    """Two runs writing one new name: the second must not silently replace the first's result."""
    from tomo4d.io import atomic_output

    out = tmp_path / "table.csv"
    with pytest.raises(OverwriteError, match="appeared while"):
        with atomic_output(out) as tmp:
            tmp.write_text("second run")
            out.write_text("first run")  # the other run finished first
    assert out.read_text() == "first run"
    assert _leftovers(tmp_path) == []
    with atomic_output(out, overwrite=True) as tmp:  # an explicit --overwrite does replace it
        tmp.write_text("second run")
    assert out.read_text() == "second run"


@pytest.mark.parametrize("folder", [False, True])
def test_stale_temporaries_of_killed_writes_are_removed(tmp_path, caplog, folder):
    from tomo4d.io import _atomic, save_volume

    host = _atomic._HOST
    stale = tmp_path / f".v.tif.partial-{host}-{_dead_pid()}-0123abcd"
    live = tmp_path / f".v.tif.partial-{host}-{os.getpid()}-4567abcd"
    other = tmp_path / ".w.tif.partial-otherhost-1-89abcdef"  # another name: not ours to judge
    for p in (stale, live, other):
        if folder:
            p.mkdir()
            (p / "chunk").write_bytes(b"x" * 100)
        else:
            p.write_bytes(b"x" * 100)
    with caplog.at_level("WARNING", logger="tomo4d.io._atomic"):
        save_volume(Volume(np.ones((2, 4, 4), np.uint8), 1.0), tmp_path / "v.tif")
    assert not stale.exists() and live.exists() and other.exists()
    assert "interrupted earlier write" in caplog.text and stale.name in caplog.text


def test_old_temporaries_of_unknown_origin_expire(tmp_path):
    from tomo4d.io import _atomic, clean_stale_partials

    old = tmp_path / ".v.tif.partial-0123abcd"  # the format of earlier versions: no host, no pid
    old.write_bytes(b"x")
    assert clean_stale_partials(tmp_path / "v.tif") == []  # fresh: may belong to a running write
    t = old.stat().st_mtime - _atomic.STALE_AFTER_S - 60
    os.utime(old, (t, t))
    assert clean_stale_partials(tmp_path / "v.tif") == [old] and not old.exists()


def test_a_folder_tomo4d_did_not_write_is_never_replaced(tmp_path):
    from tomo4d.io import OWNER_MARKER, atomic_output

    user = tmp_path / "results"
    user.mkdir()
    (user / "thesis.tex").write_text("years of work")
    with pytest.raises(OverwriteError, match="did not write"):
        with atomic_output(user, overwrite=True) as tmp:
            tmp.mkdir()
    assert (user / "thesis.tex").read_text() == "years of work"
    # a folder tomo4d wrote carries the marker and may be replaced; an empty folder too
    ours = tmp_path / "ours"
    for _ in range(2):
        with atomic_output(ours, overwrite=True) as tmp:
            tmp.mkdir()
            (tmp / "a.txt").write_text("x")
        assert (ours / OWNER_MARKER).exists() and (ours / "a.txt").exists()
    (tmp_path / "empty").mkdir()
    with atomic_output(tmp_path / "empty", overwrite=True) as tmp:
        tmp.mkdir()


def test_volume_stores_are_recognised_without_a_marker(tmp_path, small_volume):
    """Zarr stores and slice folders (any writer's) are volumes, replaced with overwrite; no marker added."""
    from tomo4d.io import OWNER_MARKER

    for name in ("v.ome.zarr", "slices"):
        save_volume(small_volume, tmp_path / name)
        assert not (tmp_path / name / OWNER_MARKER).exists()
        save_volume(small_volume, tmp_path / name, overwrite=True)


def test_prepare_folder_marks_first_so_a_killed_run_is_ours(tmp_path):
    from tomo4d.io import prepare_folder

    out = prepare_folder(tmp_path / "run", kind="demo")
    (out / "half.tif").write_bytes(b"x")  # ... the run is killed here
    with pytest.raises(OverwriteError, match="already exists"):
        prepare_folder(out)
    prepare_folder(out, overwrite=True)
    assert not (out / "half.tif").exists()


def test_os_errors_name_the_output_not_the_temporary(tmp_path):
    import errno

    from tomo4d import OutputError
    from tomo4d.io import atomic_output

    out = tmp_path / "v.h5"
    with pytest.raises(OutputError) as info:
        with atomic_output(out) as tmp:
            raise OSError(errno.ENOSPC, "No space left on device", str(tmp))
    msg = str(info.value)
    assert str(out) in msg and ".partial" not in msg and "free some space" in msg
    assert not out.exists() and _leftovers(tmp_path) == []


def test_swallowed_interrupt_still_aborts_the_write(tmp_path, default_sigint):
    """h5py's weakref callbacks eat KeyboardInterrupt: the recorded signal must still abort."""
    import signal

    from tomo4d._interrupt import Interrupted, handling_interrupts
    from tomo4d.io import atomic_output

    out = tmp_path / "v.h5"
    with handling_interrupts():
        with pytest.raises(Interrupted):
            with atomic_output(out) as tmp:
                tmp.write_bytes(b"half")
                try:
                    os.kill(os.getpid(), signal.SIGINT)
                except KeyboardInterrupt:
                    pass  # swallowed, as h5py does
                tmp.write_bytes(b"whole")
    assert not out.exists() and _leftovers(tmp_path) == []
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored


def test_write_json_is_atomic_and_never_replaces_an_input(tmp_path):
    import json

    from tomo4d.io import write_json

    out = tmp_path / "a.json"
    write_json({"x": 1.5}, out)
    assert json.loads(out.read_text()) == {"x": 1.5}
    with pytest.raises(OverwriteError):
        write_json({"x": 2}, out)  # exists, no overwrite
    with pytest.raises(OverwriteError):
        write_json({"x": 2}, out, overwrite=True, inputs=[out])  # an input, even with overwrite
    write_json({"x": np.float32(2.5)}, out, overwrite=True, default=float)
    assert json.loads(out.read_text()) == {"x": 2.5}
    with pytest.raises(TypeError):  # not serialisable: nothing is left under the name's temporaries
        write_json({"x": object()}, tmp_path / "b.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]
