"""ESRF EDF projections (tomo4d.reconstruct.edf): the reader on files written here, and a reconstruction from
EDF equal to the one from NXtomo of the same scan."""

from __future__ import annotations

import numpy as np
import pytest

from tomo4d.errors import FormatError, InputError
from tomo4d.reconstruct.edf import read_edf, read_edf_frames, write_edf


def _hand_written(path, data: np.ndarray, *, order: str, dtype_name: str, pad_blocks: int = 2) -> None:
    """An EDF file built byte by byte (independent of write_edf): header of ``pad_blocks`` x 512 bytes."""
    text = (f"{{\nHeaderID = EH:000001:000000:000000 ;\nByteOrder = {order} ;\nDataType = {dtype_name} ;\n"
            f"Dim_1 = {data.shape[1]} ;\nDim_2 = {data.shape[0]} ;\nSize = {data.nbytes} ;\n"
            "title = written by hand for the test ;\n")
    head = text + " " * (512 * pad_blocks - len(text) - 2) + "}\n"
    assert len(head) == 512 * pad_blocks
    path.write_bytes(head.encode() + data.tobytes())


@pytest.mark.parametrize("order,dtype,name", [("LowByteFirst", "<u2", "UnsignedShort"),
                                              ("HighByteFirst", ">i4", "SignedInteger"),
                                              ("LowByteFirst", "<f4", "FloatValue")])
def test_reads_hand_written_files(tmp_path, order, dtype, name):
    data = (np.arange(15).reshape(3, 5) * 7 - 20).astype(dtype) if "u" not in dtype else \
        (np.arange(15).reshape(3, 5) * 4000).astype(dtype)
    path = tmp_path / "a.edf"
    _hand_written(path, data, order=order, dtype_name=name)
    got = read_edf(path)
    assert got.shape == (1, 3, 5)
    np.testing.assert_array_equal(got[0], data.astype(data.dtype.newbyteorder("=")))
    frame = read_edf_frames(path)[0]
    assert frame.offset == 1024 and frame.header["title"] == "written by hand for the test"


def test_multi_frame_round_trip_and_row_reads(tmp_path):
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 60000, (4, 6, 9)).astype(np.uint16)
    path = write_edf(tmp_path / "m.edf", frames, byte_order="HighByteFirst")
    np.testing.assert_array_equal(read_edf(path), frames)
    fr = read_edf_frames(path)
    assert len(fr) == 4
    np.testing.assert_array_equal(fr[2].rows(1, 4), frames[2, 1:4])


def test_bad_edf_files_are_clear_errors(tmp_path):
    good = write_edf(tmp_path / "g.edf", np.zeros((4, 4), np.uint16))
    trunc = tmp_path / "t.edf"
    trunc.write_bytes(good.read_bytes()[:-10])
    with pytest.raises(FormatError, match="truncated"):
        read_edf(trunc)
    (tmp_path / "n.edf").write_bytes(b"not an edf file at all" * 30)
    with pytest.raises(FormatError, match="EDF"):
        read_edf(tmp_path / "n.edf")
    comp = write_edf(tmp_path / "c.edf", np.zeros((4, 4), np.uint16), header={"Compression": "gzip"})
    with pytest.raises(FormatError, match="Compression"):
        read_edf(comp)
    bad_type = write_edf(tmp_path / "d.edf", np.zeros((4, 4), np.uint16), header={"DataType": "Complex"})
    with pytest.raises(FormatError, match="DataType"):
        read_edf(bad_type)
    with pytest.raises(InputError, match="does not exist"):
        read_edf(tmp_path / "missing.edf")


def test_reconstruct_from_edf_equals_nxtomo(tmp_path, write_nxtomo):
    pytest.importorskip("algotom")
    from tomo4d.reconstruct import ReconstructOptions, open_projections, reconstruct, simulate_scan

    scan = simulate_scan((4, 48), n_angles=60, photons=3e4, margin=10, seed=5)
    folder = tmp_path / "proj"
    folder.mkdir()
    for i, p in enumerate(scan.projections.astype(np.uint16)):
        write_edf(folder / f"scan_{i}.edf", p)  # natural order: scan_2 before scan_10
    write_edf(tmp_path / "refHST0000.edf", scan.flats.astype(np.uint16))  # one multi-frame file
    darks = tmp_path / "darks"
    darks.mkdir()
    for i, d in enumerate(scan.darks.astype(np.uint16)):
        write_edf(darks / f"dark{i:04d}.edf", d)
    (tmp_path / "angles.txt").write_text("\n".join(f"{a:.6f}" for a in scan.angles_deg))
    write_nxtomo(tmp_path / "scan.nxs", scan)
    opts = ReconstructOptions(center=scan.center, slab_rows=2)
    edf = open_projections(folder, flats=tmp_path / "refHST0000.edf", darks=darks, angles=tmp_path / "angles.txt",
                           pixel_size_nm=1000.0)
    assert edf.shape == (60, 4, 68)
    a = reconstruct(edf, options=opts).volume.numpy()
    b = reconstruct(open_projections(tmp_path / "scan.nxs"), options=opts).volume.numpy()
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    glob_proj = open_projections(str(folder / "scan_*.edf"), flats=tmp_path / "refHST0000.edf", darks=darks)
    assert glob_proj.shape == edf.shape


def test_edf_detector_size_mismatch_refused(tmp_path):
    from tomo4d.reconstruct import open_projections

    folder = tmp_path / "p"
    folder.mkdir()
    write_edf(folder / "a1.edf", np.zeros((4, 8), np.uint16))
    write_edf(folder / "a2.edf", np.zeros((4, 9), np.uint16))
    with pytest.raises(InputError, match="detector size"):
        open_projections(folder)
