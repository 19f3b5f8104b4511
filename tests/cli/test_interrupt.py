"""Ctrl-C always ends a command with exit 130 and leaves nothing under an output name."""

from __future__ import annotations

import os
import signal

import numpy as np

from tomo4d.cli import main
from tomo4d.io import save_volume


def test_interrupt_swallowed_during_a_write_still_exits_130(tmp_path, monkeypatch, capsys):
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
