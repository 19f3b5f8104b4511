"""Damaged, truncated and wrongly typed inputs are refused with a message naming the file and the fix.

Every truncation here is a real one: a stack written by tomo4d's own writer or by
tifffile (ImageJ, plain multi-page, BigTIFF, one-IFD ImageJ layout), cut at
several byte positions.  None of them may read as a smaller volume.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import tifffile

from tomo4d import Volume
from tomo4d.errors import FormatError, InputError
from tomo4d.io import convert, open_image, open_volume, save_volume, volume_info
from tomo4d.volume import as_volume

NZ = 16
DATA = (np.arange(NZ * 24 * 20) % 251).astype(np.uint16).reshape(NZ, 24, 20)


def _write(kind: str, path: Path) -> Path:
    if kind == "tomo4d-imagej":  # tomo4d's writer, uint16: an ImageJ stack
        save_volume(Volume(DATA, 100.0), path)
    elif kind == "tomo4d-shaped":  # tomo4d's writer, int16: not ImageJ, tifffile shape description
        save_volume(Volume(DATA.astype(np.int16), 100.0), path)
    elif kind == "tomo4d-zlib":  # compressed: one strip per page, pages not contiguous
        save_volume(Volume(DATA, 100.0), path, compression="zlib")
    elif kind == "imagej":
        tifffile.imwrite(path, DATA, imagej=True)
    elif kind == "imagej-one-ifd":  # the layout of ImageJ files over 4 GiB: one IFD, planes after it
        tifffile.imwrite(path, DATA, imagej=True, truncate=True)
    elif kind == "plain":
        tifffile.imwrite(path, DATA)
    elif kind == "plain-no-description":
        tifffile.imwrite(path, DATA, metadata=None)
    elif kind == "bigtiff":
        tifffile.imwrite(path, DATA, bigtiff=True)
    else:
        raise AssertionError(kind)
    return path


KINDS = ["tomo4d-imagej", "tomo4d-shaped", "tomo4d-zlib", "imagej", "imagej-one-ifd", "plain",
         "plain-no-description", "bigtiff"]
CUTS = ["50%", "90%", "after-first-page", "last-byte"]


def _referenced_end(path: Path) -> int:
    """One past the last byte of ``path`` that any IFD, tag value or image strip refers to."""
    end = 0
    with tifffile.TiffFile(path) as tif:
        t = tif.tiff
        for page in tif.pages:
            end = max(end, page.offset + t.tagnosize + len(page.tags) * t.tagsize + t.offsetsize)
            for tag in page.tags:
                end = max(end, tag.valueoffset + tag.valuebytecount)
            end = max(end, *(int(o) + int(c) for o, c in zip(page.dataoffsets, page.databytecounts)))
        series = tif.series[0]
        if series.dataoffset is not None:  # one IFD, every plane after it (ImageJ over 4 GiB)
            end = max(end, series.dataoffset + series.nbytes)
    return end


def _cut_at(path: Path, cut: str) -> int:
    size = path.stat().st_size
    if cut == "50%":
        return size // 2
    if cut == "90%":
        return size * 9 // 10
    if cut == "last-byte":
        return size - 1
    with tifffile.TiffFile(path) as tif:
        p0 = tif.pages.first
        return int(p0.dataoffsets[-1] + p0.databytecounts[-1]) + 4


def _assert_refused(exc: pytest.ExceptionInfo, path: Path, *words: str) -> None:
    msg = str(exc.value)
    assert path.name in msg, msg
    assert "re-copy" in msg or "re-export" in msg, msg
    for w in words:
        assert w in msg, msg
    assert "np." not in msg and "array(" not in msg, msg


@pytest.mark.parametrize("kind", KINDS)
def test_intact_stacks_still_read(tmp_path, kind):
    path = _write(kind, tmp_path / "v.tif")
    vol = open_volume(path)
    np.testing.assert_array_equal(np.asarray(vol.numpy(), dtype=np.int64), DATA.astype(np.int64))


@pytest.mark.parametrize("cut", CUTS)
@pytest.mark.parametrize("kind", KINDS)
def test_truncated_tiff_is_refused(tmp_path, kind, cut):
    full = _write(kind, tmp_path / "full.tif")
    n = _cut_at(full, cut)
    path = tmp_path / "cut.tif"
    path.write_bytes(full.read_bytes()[:n])
    if n >= _referenced_end(full):
        # tifffile ends most files with bytes that no IFD, tag value or strip refers to (the last
        # page's own resolution rationals, unused because its tags point at shared ones): cutting
        # only those leaves a complete, self-consistent file, which must read exactly the original.
        assert cut == "last-byte"
        np.testing.assert_array_equal(np.asarray(open_volume(path).numpy(), dtype=np.int64),
                                      DATA.astype(np.int64))
        return
    with pytest.raises(FormatError) as exc:
        open_volume(path).numpy()
    _assert_refused(exc, path)
    assert "truncated" in str(exc.value) or "damaged" in str(exc.value)


@pytest.mark.parametrize("kind", ["tomo4d-imagej", "imagej", "plain", "bigtiff"])
def test_truncated_tiff_message_counts_slices(tmp_path, kind):
    full = _write(kind, tmp_path / "full.tif")
    path = tmp_path / "cut.tif"
    path.write_bytes(full.read_bytes()[:_cut_at(full, "after-first-page")])
    with pytest.raises(FormatError) as exc:
        open_volume(path)
    _assert_refused(exc, path, f"says {NZ} slices, only 1 readable", "truncated",
                    f"size {path.stat().st_size} bytes")


def test_tifffile_log_records_become_the_error_not_extra_output(tmp_path, caplog):
    full = _write("imagej", tmp_path / "full.tif")
    path = tmp_path / "cut.tif"
    path.write_bytes(full.read_bytes()[:_cut_at(full, "50%")])
    with caplog.at_level("DEBUG"), pytest.raises(FormatError):
        open_volume(path)
    assert not [r for r in caplog.records if r.name.startswith("tifffile")]


def test_convert_does_not_write_a_truncated_stack(tmp_path):
    full = _write("tomo4d-imagej", tmp_path / "full.tif")
    src = tmp_path / "cut.tif"
    src.write_bytes(full.read_bytes()[:full.stat().st_size // 2])
    with pytest.raises(FormatError):
        convert(src, tmp_path / "out.h5")
    assert not (tmp_path / "out.h5").exists()


def test_volume_info_refuses_truncated_tiff(tmp_path):
    full = _write("imagej", tmp_path / "full.tif")
    src = tmp_path / "cut.tif"
    src.write_bytes(full.read_bytes()[:full.stat().st_size // 2])
    with pytest.raises(FormatError, match="truncated"):
        volume_info(src)


@pytest.mark.parametrize("cut", ["50%", "header-only"])
def test_slice_folder_with_a_truncated_slice(tmp_path, cut):
    folder = save_volume(Volume(DATA, 100.0), tmp_path / "slices")
    victim = sorted(folder.glob("*.tif"))[5]
    raw = victim.read_bytes()
    victim.write_bytes(raw[: len(raw) // 2] if cut == "50%" else raw[:6])
    with pytest.raises(FormatError) as exc:
        open_volume(folder).numpy()
    _assert_refused(exc, victim)


@pytest.mark.parametrize("cut", ["50%", "after-first-page"])
def test_open_image_refuses_truncated_tiff(tmp_path, cut):
    img = tmp_path / "img.tif"
    tifffile.imwrite(img, DATA[0])
    full = img.read_bytes()
    path = tmp_path / "cut.tif"
    n = len(full) // 2 if cut == "50%" else len(full) - 8
    path.write_bytes(full[:n])
    with pytest.raises(FormatError) as exc:
        open_image(path)
    _assert_refused(exc, path, "truncated")


def _garbage(seed: int, n: int = 4000) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


CORRUPT_TIFFS = {
    "random-after-magic-0": b"II*\x00" + _garbage(0),
    "random-after-magic-1": b"II*\x00" + _garbage(1),
    "big-endian-random": b"MM\x00*" + _garbage(2),
    "bigtiff-random": b"II+\x00\x08\x00\x00\x00" + _garbage(3),
    "suspicious-tag-count": b"II*\x00" + struct.pack("<IH", 8, 60000) + _garbage(4),
    "garbage-tags": b"II*\x00" + struct.pack("<IH", 8, 12) + _garbage(5),
    "magic-only": b"II*\x00",
    "magic-and-half-offset": b"II*\x00\x08\x00",
    "zeros": b"II*\x00" + bytes(100),
}


@pytest.mark.parametrize("reader", ["open_volume", "open_image"])
@pytest.mark.parametrize("name", sorted(CORRUPT_TIFFS))
def test_corrupt_tiff_is_not_readable(tmp_path, name, reader):
    path = tmp_path / f"{name}.tif"
    path.write_bytes(CORRUPT_TIFFS[name])
    fn = open_volume if reader == "open_volume" else open_image
    with pytest.raises(FormatError) as exc:
        fn(path)
    _assert_refused(exc, path, "not a readable TIFF")


def test_corrupt_ifd_in_a_valid_stack(tmp_path):
    full = _write("plain-no-description", tmp_path / "full.tif")
    raw = bytearray(full.read_bytes())
    with tifffile.TiffFile(full) as tif:
        third = tif.pages[2].offset
    raw[third:third + 2] = struct.pack("<H", 60000)  # the third IFD's tag count
    path = tmp_path / "bad.tif"
    path.write_bytes(bytes(raw))
    with pytest.raises(FormatError) as exc:
        open_volume(path)
    _assert_refused(exc, path, "not a readable TIFF")


@pytest.mark.parametrize("content", ["hdf5-magic-garbage", "empty", "truncated-50%", "truncated-99%"])
def test_corrupt_hdf5(tmp_path, content):
    path = tmp_path / "bad.h5"
    if content == "hdf5-magic-garbage":
        path.write_bytes(b"\x89HDF\r\n\x1a\n" + _garbage(6))
    elif content == "empty":
        path.write_bytes(b"")
    else:
        full = save_volume(Volume(DATA, 100.0), tmp_path / "full.h5")
        raw = full.read_bytes()
        path.write_bytes(raw[: len(raw) * (50 if content.endswith("50%") else 99) // 100])
    with pytest.raises(FormatError) as exc:
        open_volume(path)
    _assert_refused(exc, path, "not a readable HDF5")
    if content.startswith("truncated"):
        assert "truncated" in str(exc.value)


@pytest.mark.parametrize("zarr_json", ["{garbage", "", "[]", '{"zarr_format": 3, "node_type": "array"}'])
def test_corrupt_zarr_metadata(tmp_path, zarr_json):
    store = tmp_path / "bad.zarr"
    store.mkdir()
    (store / "zarr.json").write_text(zarr_json)
    with pytest.raises(FormatError) as exc:
        open_volume(store)
    _assert_refused(exc, store, "not a readable Zarr store", "zarr.json")


def test_malformed_ome_multiscales(tmp_path):
    store = save_volume(Volume(DATA, 100.0), tmp_path / "v.ome.zarr")
    meta = json.loads((store / "zarr.json").read_text())
    meta["attributes"]["ome"]["multiscales"] = [{"datasets": []}]
    (store / "zarr.json").write_text(json.dumps(meta))
    with pytest.raises(FormatError) as exc:
        open_volume(store)
    _assert_refused(exc, store, "multiscales")


def test_truncated_zarr_chunk(tmp_path):
    store = save_volume(Volume(DATA, 100.0), tmp_path / "v.zarr")
    chunk = next(p for p in sorted((store / "0").rglob("*")) if p.is_file() and p.name != "zarr.json")
    raw = chunk.read_bytes()
    chunk.write_bytes(raw[: len(raw) // 2])
    vol = open_volume(store)
    with pytest.raises(FormatError) as exc:
        vol.numpy()
    _assert_refused(exc, store, "chunk")


# -- wrong types ---------------------------------------------------------------

@pytest.mark.parametrize("fn", [open_volume, open_image, volume_info])
@pytest.mark.parametrize("value", [123, None, 1.5, b"", ""])
def test_path_must_be_a_path(fn, value):
    with pytest.raises(InputError, match=r"^path=.* is not a path"):
        fn(value)


def test_open_image_of_a_folder(tmp_path):
    with pytest.raises(InputError, match="is a folder, not an image file"):
        open_image(tmp_path)


@pytest.mark.parametrize("value", [None, "abc", b"abc", {"a": 1}, [[1, 2], [3]], np.array(["a", "b"])])
def test_volume_refuses_what_is_not_an_array(value):
    with pytest.raises(InputError, match=r"^data"):
        Volume(value)
    with pytest.raises(InputError, match=r"^volume"):
        as_volume(value)
    with pytest.raises(InputError, match=r"^lq"):
        as_volume(value, param="lq")


@pytest.mark.parametrize("bad", [np.float64(-1.0), (np.float64(1.0), np.int64(0), 1.0), np.float64("nan")])
def test_voxel_size_message_has_no_numpy_repr(bad):
    with pytest.raises(InputError) as exc:
        Volume(np.zeros((2, 2, 2)), bad)
    msg = str(exc.value)
    assert msg.startswith("voxel_size_nm=") and "np." not in msg, msg


def test_state_of_charge_message_has_no_numpy_repr():
    from tomo4d import VolumeMetadata

    with pytest.raises(InputError) as exc:
        VolumeMetadata(state_of_charge=np.float64(1.5))
    assert "state_of_charge=1.5 " in str(exc.value)
    with pytest.raises(InputError, match="state_of_charge"):
        VolumeMetadata(state_of_charge="half")


@pytest.mark.parametrize("chunks,text", [(np.int64(-1), "chunks=-1 "), ((np.int64(2), 0, 1), "chunks=(2, 0, 1) "),
                                         (True, "chunks=True ")])
def test_chunks_message_has_no_numpy_repr(tmp_path, chunks, text):
    path = save_volume(Volume(DATA, 100.0), tmp_path / "v.tif")
    with pytest.raises(InputError) as exc:
        open_volume(path, chunks=chunks)
    assert str(exc.value).startswith(text), str(exc.value)


@pytest.mark.parametrize("kw,param", [
    ({"shape": (NZ, 24.5, 20), "dtype": "uint16"}, "shape=(16, 24.5, 20) "),
    ({"shape": "4,24,20", "dtype": "uint16"}, "shape='4,24,20' "),
    ({"shape": (NZ, 24, 20), "dtype": "uint16", "offset": "x"}, "offset='x' "),
    ({"shape": (NZ, 24, 20), "dtype": np.float64(2.0)}, "dtype=2 "),
])
def test_raw_parameters(tmp_path, kw, param):
    path = tmp_path / "v.raw"
    path.write_bytes(DATA.tobytes())
    with pytest.raises(InputError) as exc:
        open_volume(path, **kw)
    assert str(exc.value).startswith(param), str(exc.value)

