"""The CLI: info, convert, --version, and one clear line for every user error."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from tomo4d import Volume, __version__
from tomo4d.cli import main
from tomo4d.io import open_volume, save_volume


def run(capsys, *args):
    rc = main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


def test_version(capsys):
    rc, out, _ = run(capsys, "--version")
    assert rc == 0 and __version__ in out


def test_info_text_and_json(tmp_path, capsys, small_volume):
    save_volume(small_volume, tmp_path / "v.h5")
    rc, out, err = run(capsys, "info", str(tmp_path / "v.h5"))
    assert rc == 0, err
    assert "12 x 20 x 24" in out and "uint16" in out and "100, 50, 50 nm" in out
    rc, out, _ = run(capsys, "info", str(tmp_path / "v.h5"), "--json")
    d = json.loads(out)
    assert d["shape"] == [12, 20, 24] and d["voxel_size_nm"] == [100.0, 50.0, 50.0]
    data = small_volume.numpy()
    assert d["sample_min"] >= data.min() and d["sample_max"] <= data.max()
    assert d["metadata"]["time_step"] == "T2"


def test_convert_with_voxel_size_and_dataset(tmp_path, capsys, small_volume):
    save_volume(small_volume, tmp_path / "v.h5", dataset="/scan/vol")
    rc, out, err = run(capsys, "convert", str(tmp_path / "v.h5"), str(tmp_path / "o.ome.zarr"),
                       "--dataset", "/scan/vol", "--voxel-size", "40,30,30", "--levels", "2")
    assert rc == 0, err
    back = open_volume(tmp_path / "o.ome.zarr")
    np.testing.assert_array_equal(back.numpy(), small_volume.numpy())
    assert back.voxel_size_nm == (40.0, 30.0, 30.0)
    # existing output without --overwrite is a user error, with it the output is replaced
    rc, _, err = run(capsys, "convert", str(tmp_path / "v.h5"), str(tmp_path / "o.ome.zarr"), "--dataset",
                     "/scan/vol")
    assert rc == 2 and "--overwrite" in err
    rc, _, err = run(capsys, "convert", str(tmp_path / "v.h5"), str(tmp_path / "o.ome.zarr"), "--dataset",
                     "/scan/vol", "--overwrite")
    assert rc == 0, err


def test_convert_raw_with_shape_and_dtype(tmp_path, capsys):
    data = np.arange(2 * 3 * 4, dtype=np.int16).reshape(2, 3, 4)
    (tmp_path / "x.bin").write_bytes(data.tobytes())
    rc, _, err = run(capsys, "convert", str(tmp_path / "x.bin"), str(tmp_path / "x.tif"), "--shape", "2,3,4",
                     "--dtype", "int16", "--voxel-size", "70")
    assert rc == 0, err
    np.testing.assert_array_equal(open_volume(tmp_path / "x.tif").numpy(), data)


def _bad_inputs(tmp):
    """name -> (argv builder, words the message must contain)."""
    cases = {}
    cases["missing file"] = (["info", str(tmp / "nope.tif")], ["nope.tif", "does not exist"])
    (tmp / "thing.xyz").write_text("hello")
    cases["unknown format"] = (["info", str(tmp / "thing.xyz")], ["thing.xyz", "unknown format"])
    mixed = tmp / "mixed"
    mixed.mkdir()
    tifffile.imwrite(mixed / "s_0.tif", np.zeros((4, 5), np.uint16))
    tifffile.imwrite(mixed / "s_1.tif", np.zeros((4, 6), np.uint16))
    cases["mixed shapes"] = (["info", str(mixed)], ["s_1.tif", "same shape"])
    mixdt = tmp / "mixdt"
    mixdt.mkdir()
    tifffile.imwrite(mixdt / "s_0.tif", np.zeros((4, 5), np.uint16))
    tifffile.imwrite(mixdt / "s_1.tif", np.zeros((4, 5), np.float32))
    cases["mixed dtypes"] = (["info", str(mixdt)], ["s_1.tif", "dtype"])
    empty = tmp / "empty"
    empty.mkdir()
    cases["empty folder"] = (["info", str(empty)], ["empty", "no .tif"])
    (tmp / "t.raw").write_bytes(b"\0" * 100)
    cases["truncated raw"] = (["info", str(tmp / "t.raw"), "--shape", "2,10,10", "--dtype", "uint16"],
                              ["t.raw", "truncated", "400"])
    cases["raw without shape"] = (["info", str(tmp / "t.raw")], ["t.raw", "--shape"])
    (tmp / "t.vol").write_bytes(b"\0" * 100)
    (tmp / "t.vol.info").write_text("NUM_X = 10\nNUM_Y = 10\nNUM_Z = 2\nvoxelSize = 0.1\n")
    cases["truncated vol"] = (["info", str(tmp / "t.vol")], ["t.vol", "truncated"])
    (tmp / "k.vol").write_bytes(b"\0" * 800)
    (tmp / "k.vol.info").write_text("NUM_X = 10\nNUM_Z = 2\nvoxelSize = 0.1\n")
    cases["info missing key"] = (["info", str(tmp / "k.vol")], ["k.vol.info", "NUM_Y"])
    (tmp / "n.vol").write_bytes(b"\0" * 800)
    cases["no info file"] = (["info", str(tmp / "n.vol")], ["n.vol", ".info"])
    tifffile.imwrite(tmp / "flat.tif", np.zeros((30, 40), np.uint16))
    cases["2D where 3D needed"] = (["info", str(tmp / "flat.tif")], ["flat.tif", "2D", "3D"])
    save_volume(Volume(np.zeros((2, 3, 4), np.uint8), 1.0), tmp / "d.h5")
    cases["missing hdf5 dataset"] = (["info", str(tmp / "d.h5"), "--dataset", "/not/here"],
                                     ["/not/here", "/entry/data/data"])
    (tmp / "bad.h5").write_bytes(b"this is not hdf5")
    cases["corrupt hdf5"] = (["info", str(tmp / "bad.h5")], ["bad.h5", "HDF5"])
    cases["bad voxel size"] = (["convert", str(tmp / "d.h5"), str(tmp / "o.tif"), "--voxel-size", "-5"],
                               ["voxel_size_nm", "positive"])
    cases["unknown output suffix"] = (["convert", str(tmp / "d.h5"), str(tmp / "o.xyz")], ["o.xyz", "suffix"])
    cases["bad compression"] = (["convert", str(tmp / "d.h5"), str(tmp / "o.zarr"), "--compression", "rar"],
                                ["compression", "rar", "zstd"])
    return cases


CASE_NAMES = ["missing file", "unknown format", "mixed shapes", "mixed dtypes", "empty folder", "truncated raw",
              "raw without shape", "truncated vol", "info missing key", "no info file", "2D where 3D needed",
              "missing hdf5 dataset", "corrupt hdf5", "bad voxel size", "unknown output suffix", "bad compression"]


@pytest.mark.parametrize("case", CASE_NAMES)
def test_user_errors_exit_2_with_one_clear_line(tmp_path, capsys, case):
    argv, words = _bad_inputs(tmp_path)[case]
    rc, out, err = run(capsys, *argv)
    assert rc == 2
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("tomo4d: error: "), err
    for w in words:
        assert w.lower() in err.lower(), (w, err)


def test_debug_shows_the_traceback(tmp_path):
    from tomo4d import InputError

    with pytest.raises(InputError):
        main(["--debug", "info", str(tmp_path / "nope.tif")])


def test_usage_error_is_click_exit_2(capsys):
    rc, _, err = run(capsys, "convert")
    assert rc == 2 and "Missing argument" in err


def test_subprocess_entry_point(tmp_path):
    """The installed console script exits non-zero without a traceback."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    beside = Path(sys.executable).parent / "tomo4d"  # the venv the tests run in
    exe = str(beside) if beside.exists() else shutil.which("tomo4d")
    if exe is None:
        pytest.skip("console script not installed")
    p = subprocess.run([exe, "info", str(tmp_path / "missing.h5")], capture_output=True, text=True)
    assert p.returncode == 2 and "Traceback" not in p.stderr and "missing.h5" in p.stderr
