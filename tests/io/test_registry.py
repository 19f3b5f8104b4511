"""The format registry: one entry per format, and everything else agrees with it."""

from pathlib import Path

import pytest

from tomo4d import io
from tomo4d.io import _formats


def test_formats_are_the_registry_entries():
    assert io.FORMATS == tuple(f.name for f in _formats.REGISTRY)
    assert len(set(io.FORMATS)) == len(io.FORMATS)


@pytest.mark.parametrize("entry", _formats.REGISTRY, ids=lambda f: f.name)
def test_entry_reader_and_writer_exist_with_numpydoc(entry):
    for fn in (entry.read, entry.write):
        assert callable(fn)
        assert "Parameters\n    ----------" in (fn.__doc__ or ""), fn.__name__
    assert entry.compressions, "the first compression is the default"
    for s in entry.suffixes:
        assert s == s.lower() and s.startswith(".")
        assert io.detect_format(Path("x" + s), for_writing=True) == entry.name


@pytest.mark.parametrize("entry", _formats.REGISTRY, ids=lambda f: f.name)
def test_atomic_sidecars_agree_with_the_registry(entry):
    """io._atomic.sidecars (which protects inputs) knows the same sidecar files as the registry."""
    for s in entry.suffixes:
        p = Path("vol" + s)
        assert set(io.sidecars(p)) == set(entry.sidecar_paths(p))


def test_suffixes_belong_to_one_format():
    seen = [s for f in _formats.REGISTRY for s in f.suffixes]
    assert len(seen) == len(set(seen))
    assert _formats.plain_folder_format() == "slices"
