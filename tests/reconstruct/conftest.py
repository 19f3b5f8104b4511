"""Fixtures of tests/reconstruct: an NXtomo writer for simulated scans."""

from __future__ import annotations

import numpy as np
import pytest


def _write_nxtomo(path, scan, *, angles=None):
    """Write ``scan`` (a SimulatedScan) as NXtomo: darks, flats, projections with image_key 2, 1, 0."""
    import h5py

    stack = np.concatenate([scan.darks, scan.flats, scan.projections]).astype(np.uint16)
    keys = np.r_[np.full(len(scan.darks), 2), np.full(len(scan.flats), 1), np.zeros(len(scan.projections))]
    ang = np.r_[np.zeros(len(scan.darks) + len(scan.flats)), scan.angles_deg] if angles is None else angles
    with h5py.File(path, "w") as h5:
        det = h5.create_group("entry/instrument/detector")
        det["data"] = stack
        det["image_key"] = keys.astype(np.int32)
        det["x_pixel_size"] = 1e-6
        det["x_pixel_size"].attrs["units"] = "m"
        h5["entry/sample/rotation_angle"] = ang
        h5["entry/sample/rotation_angle"].attrs["units"] = "degree"


@pytest.fixture
def write_nxtomo():
    return _write_nxtomo
