"""The runner on a small phantom: outputs, caching, invalidation, a real SIGKILL and resume, the report."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tomo4d.cli import main
from tomo4d.dvc import DisplacementField
from tomo4d.errors import InputError, OverwriteError
from tomo4d.io import open_volume
from tomo4d.pipeline import load_experiment, render_report, run_experiment

TABLES = ("thickness", "phases", "strain_summary", "regional_strain")


def _statuses(res) -> dict:
    return {s.name: s.status for s in res.stages}


def _tables(out: Path) -> dict:
    from tomo4d.quantify import read_table

    return {n: read_table(out / "tables" / f"{n}.parquet") for n in TABLES}


def _same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name, cols in a.items():
        assert cols.keys() == b[name].keys(), name
        for col, x in cols.items():
            y = b[name][col]
            if x.dtype.kind == "f":
                np.testing.assert_array_equal(x, y, err_msg=f"{name}.{col}")
            else:
                assert list(x) == list(y), (name, col)


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory, phantom_dir):
    """One uninterrupted run (the reference of the resume tests)."""
    exp_file = phantom_dir / "ref.yaml"
    from .conftest import EXPERIMENT

    exp_file.write_text(EXPERIMENT.format(iterations=30))
    out = tmp_path_factory.mktemp("ref") / "run"
    res = run_experiment(load_experiment(exp_file), out, source=exp_file)
    return out, res


def test_run_writes_the_layout(reference_run, phantom_dir):
    out, res = reference_run
    assert _statuses(res) == {"quantify": "computed", "dvc": "computed", "strain": "computed"}
    assert res.stages[1].computed_steps == ("T1", "T2")
    for n in TABLES:
        assert (out / "tables" / f"{n}.parquet").is_file() and (out / "tables" / f"{n}.csv").is_file()
    assert (out / "fields" / "dvc_T0_T1.h5").is_file() and (out / "fields" / "dvc_T0_T2.h5").is_file()
    series_voxel = open_volume(phantom_dir / "series_hq" / "T0.tif").voxel_size_nm
    assert DisplacementField.load(out / "fields" / "dvc_T0_T2.h5").voxel_size_nm == series_voxel != (1.0, 1.0, 1.0)
    assert sorted(p.name for p in (out / "figures").glob("*.png"))
    html = (out / "report.html").read_text()
    assert "Quantification" in html and "Local DVC" in html
    prov = json.loads((out / "provenance.json").read_text())
    assert all(fp.startswith("sha256:") for fp in prov["inputs"].values()) and len(prov["inputs"]) == 6
    assert prov["options"]["dvc"]["node_spacing"] == 4 and prov["versions"]["numpy"]
    assert set(prov["stages"]) == {"quantify", "dvc", "strain"}
    th = _tables(out)["thickness"]["thickness_mean_um"]
    assert th[0] < th[1] < th[2]  # the phantom's anode swells
    assert "stage dvc: step T2 computed" in (out / "log.txt").read_text()
    # steps beyond the validated strain are cautioned with the local method's own figures and the route to use
    flagged = bool(_tables(out)["strain_summary"]["beyond_validated_range"].any())
    assert ("local DVC (one window per node, this run" in html) == flagged


def test_second_run_skips_everything_and_an_edited_option_recomputes_downstream_only(
        tmp_path, phantom_dir, experiment_file, reference_run):
    out = tmp_path / "run"
    first = run_experiment(load_experiment(experiment_file()), out)
    assert set(_statuses(first).values()) == {"computed"}
    again = run_experiment(load_experiment(experiment_file()), out)
    assert _statuses(again) == {"quantify": "cached", "dvc": "cached", "strain": "cached"}
    assert again.stages[1].computed_steps == ()
    edited = run_experiment(load_experiment(experiment_file(iterations=12)), out)
    assert _statuses(edited) == {"quantify": "cached", "dvc": "computed", "strain": "computed"}
    assert edited.stages[1].computed_steps == ("T1", "T2")
    back = run_experiment(load_experiment(experiment_file()), out)
    assert _statuses(back)["quantify"] == "cached"
    _same(_tables(out), _tables(reference_run[0]))  # back to the reference options: the reference results


def test_edited_input_recomputes_what_reads_it(tmp_path, phantom_dir, experiment_file):
    import shutil

    src = tmp_path / "scans"
    shutil.copytree(phantom_dir / "series_hq", src / "series_hq")
    shutil.copytree(phantom_dir / "truth", src / "truth")
    exp = src / "exp.yaml"
    exp.write_text(experiment_file().read_text())
    out = tmp_path / "run"
    run_experiment(load_experiment(exp), out)
    from tomo4d.io import open_volume, save_volume

    v = open_volume(src / "series_hq" / "T2.tif")
    data = v.numpy().copy()
    data[0, 0, 0] += 1.0
    save_volume(v.with_data(data), src / "series_hq" / "T2.tif", overwrite=True)
    res = run_experiment(load_experiment(exp), out)
    assert _statuses(res) == {"quantify": "cached", "dvc": "partly cached", "strain": "computed"}, res.stages[1]
    assert res.stages[1].computed_steps == ("T2",) and res.stages[1].cached_steps == ("T1",)
    assert res.stages[1].reasons == ("T2: input T2 changed (content fingerprint)",)
    assert res.stages[2].reasons == ("needed stage dvc was recomputed",)


def test_sigkill_during_dvc_then_resume_gives_identical_tables(tmp_path, experiment_file, reference_run):
    exp = experiment_file()
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src"), "OMP_NUM_THREADS": "1"}
    code = "import sys; from tomo4d.cli import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.Popen([sys.executable, "-c", code, "run", str(exp), "-o", str(out), "--quiet"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first = out / ".tomo4d" / "done" / "dvc" / "T1.json"  # step T1 checkpointed, T2 running
    deadline = time.monotonic() + 120
    while not first.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.0005)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the run finished before it could be killed"
    assert (out / "fields" / "dvc_T0_T1.h5").exists() and not (out / "fields" / "dvc_T0_T2.h5").exists()
    done = out / ".tomo4d" / "done"
    assert not (done / "dvc.json").exists() and not (done / "strain.json").exists()
    res = run_experiment(load_experiment(exp), out)
    assert res.stages[0].status == "cached"  # quantify finished before the kill
    assert res.stages[1].cached_steps == ("T1",) and res.stages[1].computed_steps == ("T2",)
    _same(_tables(out), _tables(reference_run[0]))
    from tomo4d.dvc import DisplacementField

    for step in ("T1", "T2"):  # T2 resumed from the saved T1 field: the same field as uninterrupted
        a, b = (DisplacementField.load(d / "fields" / f"dvc_T0_{step}.h5") for d in (out, reference_run[0]))
        np.testing.assert_array_equal(a.phi, b.phi)
        np.testing.assert_array_equal(a.status, b.status)
    assert not [p for p in out.rglob(".*partial-*")]  # the killed writer's temporaries were removed or never made


def test_run_folder_ownership(tmp_path, experiment_file):
    exp = load_experiment(experiment_file())
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep")
    for overwrite in (False, True):
        with pytest.raises(OverwriteError, match="not a tomo4d run.*tomo4d did not write it"):
            run_experiment(exp, foreign, overwrite=overwrite)
    assert (foreign / "notes.txt").read_text() == "keep"
    other = tmp_path / "other"
    assert main(["phantom", str(other), "--shape", "24", "--steps", "2", "--fields", "none"]) == 0
    with pytest.raises(OverwriteError, match="pass --overwrite"):
        run_experiment(exp, other)
    with pytest.raises(InputError, match="not a tomo4d run folder"):
        render_report(other)


def test_report_is_rendered_from_saved_outputs(tmp_path, reference_run, capsys):
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(reference_run[0], out)
    (out / "report.html").unlink()
    assert main(["report", str(out)]) == 0
    html = (out / "report.html").read_text()
    assert "Quantification" in html and "Local DVC" in html and "T2" in html


def test_check_prints_the_plan(reference_run, phantom_dir, capsys):
    out, _ = reference_run
    assert main(["run", str(phantom_dir / "ref.yaml"), "--check", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "3 steps (T0, T1, T2)" in text and "all files open and agree" in text
    assert "quantify  done" in text and "steps done: T1, T2" in text
    assert main(["run", "--schema"]) == 0
    assert json.loads(capsys.readouterr().out)["properties"]["dvc"]


def test_init_template_runs_check(tmp_path, phantom_dir, capsys):
    exp = tmp_path / "experiment.yaml"
    assert main(["init", str(phantom_dir / "series_hq"), "-o", str(exp)]) == 0
    assert main(["run", str(exp), "--check"]) == 0  # times and SoC came from the scans' metadata
    assert "3 steps" in capsys.readouterr().out
    text = exp.read_text()  # the large-strain route it suggests, uncommented, is a valid section
    for key in ("method: global", "axial_start: true", "incremental: true", "mask: above_collector",
                "interfaces: true"):
        assert f"#   {key}" in text
        text = text.replace(f"#   {key}", f"  {key}")
    labels = (phantom_dir / "truth" / "labels_hq_T0.tif").as_posix()
    text = text.replace("  labels: null", f"  labels: {labels}") + ("" if "\nquantify:" in text else "quantify: {}\n")
    exp.write_text(text)
    assert main(["run", str(exp), "--check"]) == 0, capsys.readouterr().err
    from tomo4d.io import save_volume

    bare = tmp_path / "bare"
    for i in range(3):
        save_volume(np.zeros((8, 8, 8), np.float32), bare / f"scan{i}.tif")
    exp2 = tmp_path / "bare.yaml"
    assert main(["init", str(bare), "-o", str(exp2)]) == 0
    assert main(["run", str(exp2), "--check"]) == 2
    assert "inputs.time_s[0] is still 'TODO'" in capsys.readouterr().err
    exp2.write_text(exp2.read_text().replace("[TODO, TODO, TODO]", "[0, 60, 120]").replace(
        "voxel_size_nm: TODO", "voxel_size_nm: 50"))
    assert main(["run", str(exp2), "--check"]) == 0


@pytest.mark.filterwarnings("ignore:global DVC.*max_iterations:RuntimeWarning")  # 40 iterations: short on purpose
def test_dvc_stage_global_method(tmp_path, phantom_dir, caplog, monkeypatch):
    """method: global runs correlate_global per step (affine start, then chained) and strain follows; over the
    budget it says that it holds the volumes whole.  T0's noise is estimated once per step, T0 read twice (its noise,
    then the textureless flag after the solve)."""
    from tomo4d.dvc import DisplacementField
    from tomo4d.pipeline import stages, stages_dvc_checks

    estimated, reads = [], []
    t0_noise, read_series = stages_dvc_checks.t0_noise, stages_dvc_checks.read_series
    monkeypatch.setattr(stages, "t0_noise", lambda ctx, band: estimated.append(1) or t0_noise(ctx, band))
    monkeypatch.setattr(stages_dvc_checks, "read_series", lambda ctx, step: reads.append(step) or read_series(ctx, step))

    from .conftest import EXPERIMENT

    text = EXPERIMENT.format(iterations=30).replace(
        "  max_iterations: 30\n", "  max_iterations: 30\n  method: global\n  global_options: {levels: 2, max_iterations: 40, solver: lbfgs}\n")
    exp_file = phantom_dir / "global.yaml"
    exp_file.write_text(text + "chunk_budget_mb: 0.2\n")  # two 32^3 float32 scans: 0.25 MB
    out = tmp_path / "run"
    with caplog.at_level("WARNING", logger="tomo4d"):
        run_experiment(load_experiment(exp_file), out, source=exp_file)
    assert caplog.text.count("the global method holds both volumes whole in memory") == 2
    assert len(estimated) == 2 and reads == [0] * 4  # T0 read for its noise, then for the textureless flag
    for step in ("T1", "T2"):
        f = DisplacementField.load(next((out / "fields").glob(f"dvc_T0_*{step}*.h5")))
        assert f.notes["method"] == "global" and f.usable.mean() > 0.5
        assert f.notes["low_texture_noise"]["sigma"] > 0
        assert np.median(f.displacement_zyx_px[f.usable, 0]) > 0.1  # the anode expands along z
    assert (out / "tables" / "strain_summary.csv").exists()
    # a step whose strain lies beyond the validated range is flagged in the table and cautioned in the report
    import csv

    from tomo4d.dvc import StrainField, beyond_validated_range

    rows = list(csv.DictReader((out / "tables" / "strain_summary.csv").open()))
    for r in rows:
        st = StrainField.load(out / "fields" / f"strain_T0_{r['step']}.h5")
        assert int(float(r["beyond_validated_range"])) == int(beyond_validated_range(st))
    flagged = any(int(float(r["beyond_validated_range"])) for r in rows)
    report = (out / "report.html").read_text()
    assert ("beyond the range where the DVC has been validated" in report) == flagged
    # 40 iterations: every solve stops at its cap, and the table and the report say so (chained: no increments)
    for r in rows:
        f = DisplacementField.load(out / "fields" / f"dvc_T0_{r['step']}.h5")
        assert int(float(r["solver_capped"])) == int(f.notes["converged"] is False) == 1
    assert "stopped at its iteration cap" in report


@pytest.mark.slow
def test_dvc_stage_local_route_reads_node_batches(experiment_file, tmp_path):
    """Without a whole-volume start (affine_start: false), the local DVC stage reads the stored series batch by
    batch (dvc.chunk_budget_mb) and gives the field of an in-memory correlation of the same scans."""
    from tomo4d.dvc import DisplacementField, correlate
    from tomo4d.io import open_volume

    p = experiment_file(iterations=30, name="batches.yaml")
    p.write_text(p.read_text() + "  affine_start: false\n  search_radius_px: 2\n  chunk_budget_mb: 1\n")
    out = tmp_path / "run"
    run_experiment(load_experiment(p), out, source=p)
    f = DisplacementField.load(out / "fields" / "dvc_T0_T1.h5")
    assert f.notes["batches"] > 1
    scans = sorted((p.parent / "series_hq").glob("T*.tif"))
    ref, dfm = (open_volume(s).numpy() for s in scans[:2])
    whole = correlate(ref, dfm, node_spacing=4, half_window=6, smooth_sigma_px=1.0, tolerance_px=0.01,
                      max_iterations=30, search_radius_px=2)
    assert whole.notes["batches"] == 1
    np.testing.assert_array_equal(f.status, whole.status)
    assert np.abs(f.displacement_zyx_px - whole.displacement_zyx_px).max() < 1e-6
