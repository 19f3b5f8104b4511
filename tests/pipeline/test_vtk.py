"""ParaView export of the runner: fields/dvc_T0_<step>.vtk and fields/strain_T0_<step>.vtk parse."""

from __future__ import annotations

import numpy as np


def parse_vtk(path) -> dict:
    """A legacy ASCII STRUCTURED_POINTS file: header, dimensions, point count, vectors and scalars by name."""
    lines = path.read_text().splitlines()
    assert lines[0] == "# vtk DataFile Version 2.0" and lines[2] == "ASCII"
    assert lines[3] == "DATASET STRUCTURED_POINTS"
    dims = tuple(int(v) for v in lines[4].split()[1:])
    assert lines[4].startswith("DIMENSIONS") and lines[5].startswith("ORIGIN") and lines[6].startswith("SPACING")
    n = int(lines[7].split()[1])
    assert lines[7].startswith("POINT_DATA") and n == int(np.prod(dims))
    out, i = {"dims": dims, "n": n, "scalars": {}}, 8
    while i < len(lines):
        head = lines[i].split()
        if head[0] == "VECTORS":
            out["vectors"] = np.array([[float(v) for v in row.split()] for row in lines[i + 1:i + 1 + n]])
            i += 1 + n
        else:
            assert head[0] == "SCALARS" and lines[i + 1] == "LOOKUP_TABLE default", lines[i]
            out["scalars"][head[1]] = np.array([float(v) for v in lines[i + 2:i + 2 + n]])
            i += 2 + n
    assert out["vectors"].shape == (n, 3) and np.isfinite(out["vectors"]).all()
    assert all(v.shape == (n,) and np.isfinite(v).all() for v in out["scalars"].values())
    return out


def test_dvc_and_strain_vtk_are_written_and_parse(experiment_file, tmp_path):
    from tomo4d.dvc import DisplacementField, StrainField
    from tomo4d.pipeline import load_experiment, run_experiment

    out = tmp_path / "run"
    run_experiment(load_experiment(experiment_file(name="vtk.yaml")), out)
    for step in ("T1", "T2"):
        field = DisplacementField.load(out / "fields" / f"dvc_T0_{step}.h5")
        dvc = parse_vtk(out / "fields" / f"dvc_T0_{step}.vtk")
        assert dvc["n"] == field.n_nodes and dvc["dims"] == tuple(reversed(field.grid_shape))
        assert np.array_equal(dvc["scalars"]["status"], field.status.astype(float))
        assert np.allclose(dvc["vectors"][:, ::-1], np.nan_to_num(field.displacement_zyx_px), atol=1e-4)
        if not (out / "fields" / f"strain_T0_{step}.h5").exists():  # no usable node (T2 of this tiny phantom)
            assert step != "T1" and not (out / "fields" / f"strain_T0_{step}.vtk").exists()
            continue
        strain = parse_vtk(out / "fields" / f"strain_T0_{step}.vtk")
        assert strain["n"] == field.n_nodes
        assert {"status", "hencky_zz", "volumetric", "strain_valid"} <= set(strain["scalars"])
        st = StrainField.load(out / "fields" / f"strain_T0_{step}.h5")
        for name in ("hencky_zz", "volumetric"):
            assert np.allclose(strain["scalars"][name], np.nan_to_num(np.ravel(st.component(name))), atol=1e-5)
        assert np.array_equal(strain["scalars"]["strain_valid"] > 0, np.ravel(st.valid))
    prov = (out / "provenance.json").read_text()
    assert "fields/dvc_T0_T1.vtk" in prov and "fields/strain_T0_T1.vtk" in prov


def test_vtk_off(experiment_file, phantom_dir, tmp_path):
    from tomo4d.pipeline import load_experiment, run_experiment

    p = experiment_file(iterations=5, name="novtk.yaml")
    p.write_text(p.read_text().replace("dvc:\n", "dvc:\n  vtk: false\n"))
    out = tmp_path / "run"
    run_experiment(load_experiment(p), out)
    assert (out / "fields" / "dvc_T0_T1.h5").is_file()
    assert not list((out / "fields").glob("*.vtk"))
