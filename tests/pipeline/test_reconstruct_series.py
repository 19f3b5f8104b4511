"""reconstruct.as_series: projections of every time step reconstructed first, the volumes then read by the
downstream stages as the series (segment here), through `tomo4d run`; cache keys chain on the volumes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

pytest.importorskip("algotom")

from tomo4d.cli import cli  # noqa: E402
from tomo4d.errors import InputError  # noqa: E402
from tomo4d.pipeline import load_experiment, parse_experiment  # noqa: E402
from tomo4d.pipeline.inputs import resolve_inputs  # noqa: E402

M = 8


@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    from tomo4d.io import save_volume
    from tomo4d.reconstruct import cells_phantom, save_nxtomo, simulate_scan

    d = tmp_path_factory.mktemp("asseries")
    (d / "proj").mkdir()
    fine = cells_phantom((4, 40), seed=5)
    truths = []
    for i, gain in enumerate((1.0, 1.1)):  # T1: the particles' attenuation 10 % higher (lithiation-like)
        ph = np.where(fine > 0.05, fine * gain, fine).astype(np.float32)
        scan = simulate_scan(phantom=ph, n_angles=60, photons=3e4, margin=M, seed=10 + i)
        save_nxtomo(scan, d / "proj" / f"T{i}.nxs")
        truths.append(np.pad(scan.truth, ((0, 0), (M, M), (M, M))))
    t = truths[0]
    lab = np.zeros(t.shape, np.uint8)
    cls = np.where(t > 0.04, 2, np.where(t > 0.01, 1, 3)).astype(np.uint8)
    lab[:, ::5, ::5] = cls[:, ::5, ::5]  # scribbles: every 5th voxel labelled with its true class
    save_volume(lab, d / "labels_T0.tif")
    doc = {"name": "as-series", "inputs": {"projections": "proj/T*.nxs", "time_s": [0, 3600]},
           "reconstruct": {"as_series": True, "center": float(scan.center)},
           "segment": {"labels": "labels_T0.tif", "n_trees": 8, "sigmas": [0.7, 1.6], "feature_ndim": 2}}
    (d / "exp.yaml").write_text(yaml.safe_dump(doc))
    return d, doc


def _run(path, out):
    """`tomo4d run` as a user runs it; the run's provenance.json."""
    res = CliRunner().invoke(cli, ["run", str(path), "-o", str(out), "--quiet"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return json.loads((out / "provenance.json").read_text())


def _status(prov) -> dict:
    return {name: s["status"] for name, s in prov["stages"].items()}


def test_reconstructed_scans_are_the_series_of_the_downstream_stages(scans, tmp_path):
    from tomo4d.io import open_volume

    d, doc = scans
    out = tmp_path / "run"
    info = _run(d / "exp.yaml", out)
    assert _status(info) == {"reconstruct": "computed", "segment": "computed"}
    vols = [open_volume(out / "volumes" / f"reconstructed_T{i}.ome.zarr") for i in range(2)]
    assert vols[0].shape == (4, 56, 56)
    seg = [open_volume(p).numpy() for p in sorted((out / "volumes").glob("segment_T*.ome.zarr"))]
    assert len(seg) == 2 and seg[0].shape == vols[0].shape
    assert any("reconstructed_T1.ome.zarr" in k for k in info["inputs"])  # the series' content fingerprints
    # cached as a whole on a rerun
    assert _status(_run(d / "exp.yaml", out)) == {"reconstruct": "cached", "segment": "cached"}
    # a reconstruction option that changes the volumes reruns the downstream stage too
    doc2 = json.loads(json.dumps(doc))
    doc2["reconstruct"]["filter"] = "hann"
    (d / "exp2.yaml").write_text(yaml.safe_dump(doc2))
    assert _status(_run(d / "exp2.yaml", out)) == {"reconstruct": "computed", "segment": "computed"}


def test_plan_before_reconstruction_predicts_the_series(scans, tmp_path):
    d, _ = scans
    inp = resolve_inputs(load_experiment(d / "exp.yaml"), out=tmp_path / "fresh")
    assert inp.series_reconstructed and inp.n_steps == 2 and inp.shape == (4, 56, 56)
    assert inp.voxel_size_nm == pytest.approx((1000.0,) * 3)


def test_as_series_and_series_are_exclusive(scans):
    d, doc = scans
    both = json.loads(json.dumps(doc))
    both["inputs"]["series"] = "x/T*.tif"
    with pytest.raises(InputError, match="leave inputs.series out"):
        parse_experiment(both, base_dir=d)
    neither = json.loads(json.dumps(doc))
    neither["reconstruct"]["as_series"] = False
    with pytest.raises(InputError, match="inputs.series is missing"):
        parse_experiment(neither, base_dir=d)
    wrong_times = json.loads(json.dumps(doc))
    wrong_times["inputs"]["time_s"] = [0, 1, 2]
    with pytest.raises(InputError, match="time_s has 3 entries"):
        resolve_inputs(parse_experiment(wrong_times, base_dir=d))
