"""Ctrl-C always ends a command with exit 130 and leaves nothing under an output name."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest

from tomo4d.cli import main
from tomo4d.io import save_volume


def test_interrupt_swallowed_during_a_write_still_exits_130(tmp_path, monkeypatch, capsys, default_sigint):
    import tomo4d.io.hdf5 as hdf5

    src = tmp_path / "in.tif"
    save_volume(np.ones((4, 8, 8), np.uint16), src)
    real = hdf5.write_hdf5

    def write_and_swallow(*args, **kwargs):
        real(*args, **kwargs)
        try:
            os.kill(os.getpid(), signal.SIGINT)
        except KeyboardInterrupt:
            pass  # what h5py's weakref callbacks do

    monkeypatch.setattr(hdf5, "write_hdf5", write_and_swallow)
    assert main(["convert", str(src), str(tmp_path / "out.h5")]) == 130
    assert "interrupted" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.tif"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_interrupt_outside_a_write_exits_130(tmp_path, monkeypatch, capsys):
    import tomo4d.io as io

    def interrupted(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(io, "volume_info", interrupted)
    assert main(["info", str(tmp_path)]) == 130


@pytest.mark.parametrize("sig, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_real_signal_during_a_write_aborts_and_cleans_up(tmp_path, sig, status):
    """A real process, a real signal while the HDF5 temporary is complete but not yet renamed."""
    import subprocess
    import sys
    import time

    src, dst, ready = tmp_path / "in.tif", tmp_path / "out.h5", tmp_path / "ready"
    save_volume(np.ones((4, 8, 8), np.uint16), src)
    script = f"""
import sys, time
import tomo4d.io.hdf5 as h
from tomo4d.cli import main
real = h.write_hdf5
def slow(*a, **k):
    real(*a, **k)
    open({str(ready)!r}, "w").close()
    time.sleep(60)
h.write_hdf5 = slow
sys.exit(main(["convert", {str(src)!r}, {str(dst)!r}]))
"""
    proc = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE, text=True)
    t0 = time.monotonic()
    while not ready.exists() and time.monotonic() - t0 < 60 and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == status, err
    assert "interrupted" in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.tif", "ready"]  # no output, no temporary
