"""The Volume and VolumeMetadata types."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest

from tomo4d import InputError, Volume, VolumeMetadata


@pytest.mark.parametrize("shape", [(5,), (4, 5), (2, 3, 4, 5)])
def test_volume_must_be_3d(shape):
    with pytest.raises(InputError, match="3D"):
        Volume(np.zeros(shape), 50.0)


@pytest.mark.parametrize("vs", [0, -1, float("nan"), (1, 2), (1, 2, -3), "abc"])
def test_bad_voxel_size(vs):
    with pytest.raises(InputError, match="voxel_size_nm"):
        Volume(np.zeros((2, 3, 4)), vs)


def test_scalar_voxel_size_expands_and_extent():
    v = Volume(np.zeros((2, 3, 4), np.uint16), 50)
    assert v.voxel_size_nm == (50.0, 50.0, 50.0)
    assert v.extent_nm == (100.0, 150.0, 200.0)
    assert v.nbytes == 2 * 3 * 4 * 2


def test_unknown_voxel_size_is_flagged():
    v = Volume(np.zeros((2, 3, 4)), None)
    assert not v.voxel_size_known and v.voxel_size_nm == (1.0, 1.0, 1.0)


@pytest.mark.parametrize("soc", [-0.1, 1.5])
def test_state_of_charge_is_a_fraction(soc):
    with pytest.raises(InputError, match="state_of_charge"):
        VolumeMetadata(state_of_charge=soc)


def test_metadata_dict_roundtrip_keeps_unknown_keys_in_extra():
    m = VolumeMetadata(name="a", time_step="T1", time_s=5.0, state_of_charge=0.25, modality="neutron",
                       provenance=("x",), extra={"beamline": "ID16B"})
    d = m.to_dict()
    d["operator"] = "someone"
    back = VolumeMetadata.from_dict(d)
    assert back.time_step == "T1" and back.modality == "neutron" and back.provenance == ("x",)
    assert back.extra == {"beamline": "ID16B", "operator": "someone"}


def test_lazy_and_compute():
    arr = da.arange(24, dtype=np.float32, chunks=6).reshape(2, 3, 4)
    v = Volume(arr, (1, 2, 3))
    assert v.is_lazy and v.chunks is not None
    c = v.compute()
    assert not c.is_lazy and isinstance(c.data, np.ndarray)
    np.testing.assert_array_equal(np.asarray(v), np.arange(24).reshape(2, 3, 4))


def test_with_data_extends_provenance_and_crop():
    v = Volume(np.zeros((4, 5, 6)), 50.0, VolumeMetadata(name="x", provenance=("read",)))
    w = v.with_data(np.ones((4, 5, 6)), step="scaled")
    assert w.metadata.provenance == ("read", "scaled")
    c = v.crop(z=slice(1, 3))
    assert c.shape == (2, 5, 6) and c.voxel_size_nm == v.voxel_size_nm
