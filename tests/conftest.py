"""Shared fixtures: paths to the optional real data, small deterministic volumes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

#: The one definition of where the optional real data lives (every test reaches it through ``real_file``).
REAL_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "real"


@pytest.fixture(scope="session")
def real_file():
    """``real_file(name)``: path of a file in ../shared/data/real; skips the test when absent.

    Session-scoped so that the session/module fixtures of sub-conftests (the snow volume) can use it too.
    """

    def get(name: str) -> Path:
        p = REAL_DATA / name
        if not p.is_file():
            pytest.skip(f"real data {name} not available (../shared/data/real)")
        return p

    return get


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture
def small_volume(rng):
    """A (12, 20, 24) uint16 Volume with anisotropic voxels and full metadata."""
    from tomo4d import Volume, VolumeMetadata

    data = rng.integers(0, 65535, size=(12, 20, 24), dtype=np.uint16)
    meta = VolumeMetadata(name="test volume", time_step="T2", time_s=3600.0, state_of_charge=0.5,
                          modality="xray", provenance=("made by a test",))
    return Volume(data, (100.0, 50.0, 50.0), meta)


@pytest.fixture
def default_sigint():
    """SIGINT on Python's default handler for the test (a job started in the background by a non-interactive
    shell inherits SIGINT ignored), restored after."""
    import signal

    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before)


class _CountingArray:
    """A (z, y, x) array that is not a numpy array (a lazy volume to the code under test); records the number of
    slices of every read in ``reads``."""

    def __init__(self, a):
        self.a, self.shape, self.dtype, self.ndim, self.reads = a, a.shape, a.dtype, a.ndim, []

    def __getitem__(self, key):
        out = np.asarray(self.a[key])
        self.reads.append(out.shape[0])
        return out


@pytest.fixture(scope="session")
def counting_array():
    """``counting_array(a)``: ``a`` as a lazy volume whose reads are recorded (``.reads``: slices per read)."""
    return _CountingArray
