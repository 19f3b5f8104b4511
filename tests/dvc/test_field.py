"""DisplacementField: HDF5, SPAM TSV and VTK I/O, interpolation."""

from __future__ import annotations

import numpy as np
import pytest

from tomo4d.dvc import DisplacementField, NodeStatus, node_grid
from tomo4d.errors import FormatError, InputError, OverwriteError


@pytest.fixture
def field():
    pos, gs = node_grid((50, 60, 70), node_spacing=10, half_window=5)
    rng = np.random.default_rng(0)
    phi = np.tile(np.eye(4), (len(pos), 1, 1))
    phi[:, :3, :] += rng.normal(0, 0.01, (len(pos), 3, 4))
    status = rng.integers(0, len(NodeStatus), len(pos)).astype(np.int8)
    return DisplacementField(pos, phi, status, grid_shape=gs, node_spacing_px=(10, 10, 10),
                             half_window_px=(5, 5, 5), voxel_size_nm=(50.0, 50.0, 50.0),
                             iterations=rng.integers(1, 9, len(pos)), residual=rng.random(len(pos)),
                             notes={"label": "test"})


@pytest.mark.parametrize("suffix", [".h5", ".tsv"])
def test_roundtrip(tmp_path, field, suffix):
    path = field.save(tmp_path / f"f{suffix}")
    back = DisplacementField.load(path)
    np.testing.assert_allclose(back.phi, field.phi, atol=1e-12)
    np.testing.assert_array_equal(back.positions_zyx_px, field.positions_zyx_px)
    assert back.grid_shape == field.grid_shape and back.node_spacing_px == field.node_spacing_px
    np.testing.assert_array_equal(back.iterations, field.iterations)
    if suffix == ".h5":
        np.testing.assert_array_equal(back.status, field.status)
        assert back.voxel_size_nm == field.voxel_size_nm and back.notes["label"] == "test"
    else:  # SPAM statuses: converged and interpolated survive, skipped ones become OUTSIDE_MASK
        for s in (NodeStatus.CONVERGED, NodeStatus.INTERPOLATED, NodeStatus.NOT_CONVERGED):
            np.testing.assert_array_equal(back.status == s, field.status == s)


def test_tsv_is_spam_layout(tmp_path, field):
    text = field.save(tmp_path / "f.tsv").read_text().splitlines()
    assert text[0].split("\t")[:8] == ["NodeNumber", "Zpos", "Ypos", "Xpos", "Fzz", "Fzy", "Fzx", "Zdisp"]
    assert len(text) == field.n_nodes + 1


def test_vtk_export(tmp_path, field):
    text = field.save(tmp_path / "f.vtk").read_text()
    gz, gy, gx = field.grid_shape
    assert f"DIMENSIONS {gx} {gy} {gz}" in text and "VECTORS displacement_px double" in text
    assert text.count("\n") > 3 * field.n_nodes


def test_no_overwrite_and_bad_files(tmp_path, field):
    field.save(tmp_path / "f.h5")
    with pytest.raises(OverwriteError):
        field.save(tmp_path / "f.h5")
    with pytest.raises(InputError, match="use .h5"):
        field.save(tmp_path / "f.txt")
    (tmp_path / "x.h5").write_bytes(b"not hdf5")
    with pytest.raises(FormatError):
        DisplacementField.load(tmp_path / "x.h5")
    with pytest.raises(InputError, match="does not exist"):
        DisplacementField.load(tmp_path / "missing.h5")


def test_interpolate_linear_field_exact():
    pos, gs = node_grid((60, 60, 60), node_spacing=10, half_window=5)
    g = np.array([[0.02, 0.01, 0], [0, -0.03, 0], [0.01, 0, 0.05]])
    phi = np.tile(np.eye(4), (len(pos), 1, 1))
    phi[:, :3, 3] = pos @ g.T + 0.3
    phi[:, :3, :3] += g
    f = DisplacementField(pos, phi, np.zeros(len(pos), np.int8), grid_shape=gs, node_spacing_px=(10,) * 3)
    pts = np.random.default_rng(2).uniform(-5, 65, (50, 3))  # includes extrapolation
    u, F = f.interpolate(pts)
    np.testing.assert_allclose(u, pts @ g.T + 0.3, atol=1e-4)  # spline boundary effect ~1e-5 px
    np.testing.assert_allclose(F, np.broadcast_to(np.eye(3) + g, F.shape), atol=1e-6)
    dense = f.dense_displacement((20, 21, 22))
    z, y, x = np.meshgrid(np.arange(20), np.arange(21), np.arange(22), indexing="ij")
    np.testing.assert_allclose(dense[0], 0.02 * z + 0.01 * y + 0.3, atol=1e-5)


def test_field_validation():
    with pytest.raises(InputError, match="phi"):
        DisplacementField(np.zeros((3, 3)), np.zeros((2, 4, 4)), np.zeros(3))
    with pytest.raises(InputError, match="grid_shape"):
        DisplacementField(np.zeros((3, 3)), np.tile(np.eye(4), (3, 1, 1)), np.zeros(3), grid_shape=(2, 2, 2))
