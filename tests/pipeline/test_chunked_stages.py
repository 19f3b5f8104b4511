"""The segment, quantify and particles stages streamed slab by slab (``chunk_budget_mb`` below the volumes'
working sets) give the in-memory run's tables and volumes, byte for byte; a run killed mid-stream resumes from
the slabs on disk."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tomo4d.pipeline import load_experiment, run_experiment

EXPERIMENT = """\
name: phantom-chunked
inputs:
  series: series_hq/T*.tif
  time_s: [0, 3600, 7200]
segment:
  labels: truth/labels_hq_T0.tif
  slices: [4, 12, 20, 28]
  slice_axis: 1
  n_trees: 6
  sigmas: [0.7, 1.6]
  feature_ndim: 2
quantify: {{}}
particles: {{particle_class: [2, 3], split: {split}}}
truth:
  labels: truth/labels_hq_T*.tif
  particles: truth/particles_hq_T*.tif
{budget}"""

RESULT_DIRS = ("tables", "volumes", "models")


def _results(out: Path) -> dict:
    from tomo4d.io import open_volume

    found = {}
    for d in RESULT_DIRS:
        for p in sorted((out / d).glob("*")):
            if p.name.startswith("."):
                continue
            rel = p.relative_to(out).as_posix()
            if p.name.endswith(".ome.zarr"):
                v = open_volume(p)
                found[rel] = (v.numpy(), v.dtype, v.voxel_size_nm)
            elif p.suffix != ".parquet":
                found[rel] = p.read_bytes()
    return found


def _file(phantom_dir, budget: str, name: str, split: bool = False) -> Path:
    p = phantom_dir / name
    p.write_text(EXPERIMENT.format(budget=budget, split=str(split).lower()))
    return p


@pytest.fixture(scope="module")
def reference(phantom_dir, tmp_path_factory):
    p = _file(phantom_dir, "", "chunked_ref.yaml")
    out = tmp_path_factory.mktemp("ref") / "run"
    run_experiment(load_experiment(p), out, source=p)
    return out


def _same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], tuple):
            np.testing.assert_array_equal(a[k][0], b[k][0], err_msg=k)
            assert a[k][1:] == b[k][1:], k
        else:
            assert a[k] == b[k], k


def test_streamed_stages_equal_the_in_memory_run(phantom_dir, reference, tmp_path, caplog, monkeypatch):
    """Tables (with the segmentation truth scores of the streamed steps computed slab by slab) and volumes byte
    for byte."""
    from tomo4d.segment import evaluate_chunked

    calls, orig = [], evaluate_chunked.evaluate_segmentation_chunked
    monkeypatch.setattr(evaluate_chunked, "evaluate_segmentation_chunked", lambda *a, **k: calls.append(1) or orig(*a, **k))
    p = _file(phantom_dir, "chunk_budget_mb: 0.5\n", "chunked.yaml")
    out = tmp_path / "run"
    with caplog.at_level("INFO", logger="tomo4d"):
        run_experiment(load_experiment(p), out, source=p)
    assert "streamed in" in caplog.text and calls  # the segment stage did stream, and scored slab by slab
    assert not list((out / "volumes").glob(".*.slabs"))  # every progress store published
    got = _results(out)
    assert any(k.startswith("tables/tracks") for k in got)  # tracked from the streamed stores (slab by slab)
    _same(_results(reference), got)


def test_streamed_watershed_split_equals_the_in_memory_run(phantom_dir, tmp_path):
    """particles.split over the budget: the distance watershed cluster by cluster gives the in-memory labels and
    tables (and tracks) byte for byte."""
    runs = []
    for budget in ("", "chunk_budget_mb: 0.5\n"):
        p = _file(phantom_dir, budget, f"chunked_split{len(runs)}.yaml", split=True)
        out = tmp_path / f"run{len(runs)}"
        run_experiment(load_experiment(p), out, source=p)
        runs.append(_results(out))
    assert not list((tmp_path / "run1" / "volumes").glob(".*"))   # no progress store or scratch left
    _same(runs[0], runs[1])


def test_streamed_run_killed_mid_stage_resumes(phantom_dir, reference, tmp_path, monkeypatch):
    from tomo4d import _chunks

    p = _file(phantom_dir, "chunk_budget_mb: 0.5\n", "chunked_kill.yaml")
    out = tmp_path / "run"
    orig, calls = _chunks.SlabStore.write, []

    def dying(self, i, block):
        if "particles_T1" in self.path.name and len(calls) >= 2:
            raise KeyboardInterrupt  # killed after two slabs of step T1
        calls.append(i) if "particles_T1" in self.path.name else None
        orig(self, i, block)

    monkeypatch.setattr(_chunks.SlabStore, "write", dying)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(load_experiment(p), out, source=p)
    progress = out / "volumes" / ".particles_T1.ome.zarr.slabs"
    assert len(list((progress / "done").iterdir())) == 2 and not (out / "volumes" / "particles_T1.ome.zarr").exists()
    monkeypatch.setattr(_chunks.SlabStore, "write", orig)
    run_experiment(load_experiment(p), out, source=p)
    assert not progress.exists()
    _same(_results(reference), _results(out))


@pytest.mark.slow
def test_streamed_stages_on_a_local_cluster(phantom_dir, reference, tmp_path):
    """The streamed segment steps as tasks of a 2-process LocalCluster: the same results."""
    pytest.importorskip("distributed")
    from tomo4d.pipeline.distributed import cluster_client

    p = _file(phantom_dir, "chunk_budget_mb: 0.5\n", "chunked_cluster.yaml")
    out = tmp_path / "run"
    with cluster_client(workers=2) as client:
        run_experiment(load_experiment(p), out, source=p, client=client)
    assert "(worker pid " in (out / "log.txt").read_text()
    _same(_results(reference), _results(out))


def test_particle_truth_keeps_the_true_ids_across_steps(tmp_path):
    """A true particle under min_voxels at T0 and over it at T1 must not shift the other particles' ids (they were
    relabelled 1..n per step, so the link accuracy compared different particles)."""
    from types import SimpleNamespace

    from tomo4d.pipeline.stages_segment import _truth_columns
    from tomo4d.segment import save_labels

    t0 = np.zeros((8, 16, 16), np.int32)
    t0[1:3, 1:3, 1:3] = 1          # 8 voxels: below min_voxels at T0
    t0[4:7, 8:12, 8:12] = 2        # 48 voxels
    t1 = t0.copy()
    t1[1:4, 1:4, 1:4] = 1          # 27 voxels: kept at T1
    paths = [save_labels(t, tmp_path / f"t{i}.ome.zarr") for i, t in enumerate((t0, t1))]
    ctx = SimpleNamespace(experiment=SimpleNamespace(inputs=SimpleNamespace(voxel_size_nm=None), enhance=None,
                                                     chunk_budget_mb=0.001),
                          inputs=SimpleNamespace(truth_particles=paths))
    pred = [np.where(t0 == 2, 5, 0), np.where(t1 == 2, 9, np.where(t1 == 1, 3, 0))]
    tracks = SimpleNamespace(label=np.asarray([[5, 9]]), first_step=np.asarray([0]))
    cols = _truth_columns(ctx, pred, tracks, min_voxels=20)
    assert list(cols["n_true"]) == [1, 2] and list(cols["recall"]) == [1.0, 1.0]
    assert cols["n_links"][1] == 1 and cols["link_accuracy"][1] == 1.0
