"""``tomo4d strain``: finite strain by default (Hencky zz, det F - 1), small strain only on request."""

import json

import numpy as np
import pytest

from tomo4d.cli import main
from tomo4d.dvc import DisplacementField, StrainField, node_grid


@pytest.fixture
def stretched(tmp_path):
    """A homogeneous 50 % axial stretch rotated by 30 deg (z-y plane), as a saved field."""
    c, s = np.cos(np.radians(30)), np.sin(np.radians(30))
    F = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]]) @ np.diag([1.5, 1.0, 1.0])
    pos, gs = node_grid((60, 60, 60), node_spacing=10, half_window=10)
    pos = pos.astype(float)
    phi = np.tile(np.eye(4), (len(pos), 1, 1))
    phi[:, :3, 3] = (pos - 30) @ (F - np.eye(3)).T
    phi[:, :3, :3] = F
    p = tmp_path / "field.h5"
    DisplacementField(pos, phi, np.zeros(len(pos), np.int8), grid_shape=gs, node_spacing_px=(10,) * 3,
                      half_window_px=(10,) * 3).save(p)
    return p


def _stats(capsys):
    return {(r["region"], r["component"]): r for r in json.loads(capsys.readouterr().out)["regions"]}


def test_strain_cli_reports_finite_strain(tmp_path, stretched, capsys):
    out = tmp_path / "s.h5"
    assert main(["strain", str(stretched), "-o", str(out), "--json"]) == 0
    st = _stats(capsys)
    assert {c for _, c in st} == {"hencky_zz", "volumetric"}
    assert abs(st["all", "hencky_zz"]["mean"] - np.log(1.5)) < 1e-9
    assert abs(st["all", "volumetric"]["mean"] - 0.5) < 1e-9
    assert abs(StrainField.load(out).component("green_zz").mean() - 0.625) < 1e-9
    for gradient in ("nodes", "affine"):
        assert main(["strain", str(stretched), "-o", str(tmp_path / f"{gradient}.vtk"), "--gradient", gradient,
                     "--small-strain", "-c", "green_zz", "--split-z", "30", "--json"]) == 0
        st = _stats(capsys)
        assert abs(st["z >= split", "green_zz"]["mean"] - 0.625) < 1e-9
        # small strain of a rotated stretch is far from any strain measure
        assert abs(st["all", "small_zz"]["mean"] - (1.5 * np.cos(np.radians(30)) - 1)) < 1e-9
        assert "volumetric_small" in {c for _, c in st} and "hencky_zz" not in {c for _, c in st}
    text = (tmp_path / "affine.vtk").read_text()
    assert "SCALARS hencky_zz" in text and "SCALARS green_zz" in text and "SCALARS small_zz" in text


def test_strain_cli_refuses_unknown_component(tmp_path, stretched, capsys):
    assert main(["strain", str(stretched), "-o", str(tmp_path / "s.h5"), "-c", "hencky_qq"]) == 2
    assert "hencky_qq" in capsys.readouterr().err
    assert not (tmp_path / "s.h5").exists()


def test_strain_cli_gradient_choice(tmp_path, stretched, capsys):
    """--gradient affine reads each node's fitted F (here reset to identity), nodes the displacements."""
    f = DisplacementField.load(stretched)
    phi = f.phi.copy()
    phi[:, :3, :3] = np.eye(3)
    p = tmp_path / "translation_fit.h5"
    f.with_(phi=phi).save(p)
    means = {}
    for gradient in ("nodes", "affine"):
        assert main(["strain", str(p), "-o", str(tmp_path / f"{gradient}.h5"), "--gradient", gradient, "--json"]) == 0
        means[gradient] = _stats(capsys)["all", "hencky_zz"]["mean"]
    assert abs(means["nodes"] - np.log(1.5)) < 1e-9 and abs(means["affine"]) < 1e-12
