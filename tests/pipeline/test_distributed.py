"""``tomo4d run`` on a Dask distributed cluster (issue 18): the same tables and fields as the single-process
run, bit for bit; a worker killed mid-stage loses only its step (the cluster's retry, or a rerun, completes the
run with identical results and nothing half-written under a final name); the extra is optional."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tomo4d.cli import main
from tomo4d.errors import InputError
from tomo4d.pipeline import load_experiment, run_experiment

# slow (> ~10 s on 2 cores): run by `.ci/run`'s second pass, `make test PYTEST_ARGS="-m slow"`
pytestmark = pytest.mark.slow

#: the segment stage (per step, not chained: its steps are the cluster's tasks; T0 trains the classifier)
SEGMENT_EXPERIMENT = """\
name: phantom-segment
inputs:
  series: series_hq/T*.tif
  time_s: [0, 3600, 7200]
segment:
  labels: truth/labels_hq_T0.tif
  slices: [4, 12, 20, 28]
  slice_axis: 1
  n_trees: 8
quantify: {}
truth:
  labels: truth/labels_hq_T*.tif
"""

RESULT_DIRS = ("tables", "fields", "volumes", "models")


def _segment_file(phantom_dir) -> Path:
    p = phantom_dir / "segment_cluster.yaml"
    p.write_text(SEGMENT_EXPERIMENT)
    return p


@pytest.fixture(scope="module")
def segment_reference(phantom_dir, tmp_path_factory):
    """The single-process run of the segment experiment (what every cluster run must equal)."""
    p = _segment_file(phantom_dir)
    out = tmp_path_factory.mktemp("ref") / "run"
    run_experiment(load_experiment(p), out, source=p)
    return p, out


def _results(out: Path) -> dict:
    """``{relative path: content}`` of every result under a final name: CSV/JSON/NPZ bytes, HDF5 datasets and
    their attributes, OME-Zarr arrays."""
    import h5py

    from tomo4d.io import open_volume

    found = {}
    for d in RESULT_DIRS:
        for p in sorted((out / d).glob("*")) if (out / d).is_dir() else ():
            if p.name.startswith("."):
                continue  # a temporary of an atomic write
            rel = p.relative_to(out).as_posix()
            if p.suffix == ".h5":
                with h5py.File(p, "r") as f:
                    items = {}
                    f.visititems(lambda k, v, items=items: items.__setitem__(k, (v[()], dict(v.attrs)))
                                 if isinstance(v, h5py.Dataset) else None)
                    found[rel] = (items, dict(f.attrs))
            elif p.name.endswith(".ome.zarr"):
                found[rel] = open_volume(p).numpy()
            elif p.suffix != ".parquet":  # the same table as the .csv beside it (Parquet embeds no timestamps
                found[rel] = p.read_bytes()  # here, but its writer's metadata is not ours to promise)
    return found


def _assert_identical(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    assert a, "no results"
    for k in a:
        _equal(a[k], b[k], k)


def _equal(x, y, where: str) -> None:
    if isinstance(x, dict):
        assert sorted(x) == sorted(y), where
        for k in x:
            _equal(x[k], y[k], f"{where}/{k}")
    elif isinstance(x, tuple):
        for u, v in zip(x, y, strict=True):
            _equal(u, v, where)
    elif isinstance(x, np.ndarray):
        assert x.dtype == y.dtype and x.shape == y.shape, where
        assert np.array_equal(x, y, equal_nan=x.dtype.kind in "fc"), where  # bit-identical values
    elif isinstance(x, str) and x.startswith("{"):  # JSON notes: everything but the timings
        _equal(_untimed(json.loads(x)), _untimed(json.loads(y)), where)
    else:
        assert x == y, where


#: keys of JSON notes that are timings (wall clock), never equal between two runs
TIMINGS = ("seconds", "nodes_per_second", "wall_s")


def _untimed(d):
    return {k: v for k, v in d.items() if k not in TIMINGS} if isinstance(d, dict) else d


def _marked_outputs(out: Path) -> set:
    """Every output that a done-marker vouches for."""
    return {o for m in (out / ".tomo4d" / "done").rglob("*.json") for o in json.loads(m.read_text())["outputs"]}


def _final_names(out: Path) -> set:
    return {p.relative_to(out).as_posix() for d in RESULT_DIRS if (out / d).is_dir()
            for p in (out / d).iterdir() if not p.name.startswith(".")}


def test_segment_steps_on_a_local_cluster_equal_the_single_process_run(segment_reference, tmp_path):
    """``tomo4d run --workers 2``: a LocalCluster of 2 processes; the segment steps are its tasks."""
    pytest.importorskip("distributed")
    p, ref = segment_reference
    out = tmp_path / "cluster"
    assert main(["run", str(p), "-o", str(out), "--workers", "2", "--quiet"]) == 0
    _assert_identical(_results(ref), _results(out))
    log = (out / "log.txt").read_text()
    assert "cluster: Dask scheduler tcp://" in log and ", 2 workers, 2 threads" in log
    pids = {int(x.split(")")[0]) for x in log.split("(worker pid ")[1:]}
    assert len(log.split("(worker pid ")) == 4 and os.getpid() not in pids  # T0, T1, T2 computed by workers
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["executor"].startswith("Dask scheduler tcp://") and json.loads(
        (ref / "provenance.json").read_text())["executor"] == "this process"
    assert prov["stages"]["segment"]["outputs"] == json.loads((ref / "provenance.json").read_text()
                                                              )["stages"]["segment"]["outputs"]
    res = run_experiment(load_experiment(p), out, source=p)  # resumed without a cluster: everything cached
    assert {s.name: s.status for s in res.stages} == {"segment": "cached", "quantify": "cached"}


def test_cluster_options_are_checked(segment_reference, tmp_path, monkeypatch):
    from tomo4d.pipeline.distributed import cluster_client

    p, _ = segment_reference
    with pytest.raises(InputError, match="not both"), cluster_client(workers=2, scheduler="tcp://h:8786"):
        pass
    with pytest.raises(InputError, match=r"workers=0 must be an integer >= 1"), cluster_client(workers=0):
        pass
    with pytest.raises(InputError, match="tcp://HOST:8786"), cluster_client(scheduler="localhost"):
        pass
    monkeypatch.setitem(sys.modules, "distributed", None)  # the extra not installed
    with cluster_client() as client:  # no cluster asked for: distributed is never needed
        assert client is None
    with pytest.raises(InputError, match=r"pip install 'tomo4d\[cluster\]'"), cluster_client(workers=2):
        pass
    out = tmp_path / "run"
    assert main(["run", str(p), "-o", str(out), "--scheduler", "tcp://127.0.0.1:1", "--quiet"]) == 2
    assert not out.exists()  # refused before anything is written


def _kill_worker_running(client, key_part: str, *, after: Path | None = None, timeout: float = 120.0) -> dict:
    """Kill (SIGKILL) the worker process running the task whose key contains ``key_part`` (once ``after``
    exists); ``{"pid": ...}`` when done."""
    info: dict = {}

    def watch():
        t_end = time.monotonic() + timeout
        while time.monotonic() < t_end:
            busy = [w for w, keys in client.processing().items() if any(key_part in str(k) for k in keys)]
            if busy and (after is None or after.exists()):
                pid = client.run(os.getpid, workers=busy[:1])[busy[0]]
                time.sleep(0.5)  # well inside the task's sleep
                os.kill(pid, signal.SIGKILL)
                info["pid"] = pid
                return
            time.sleep(0.1)

    th = threading.Thread(target=watch, daemon=True)
    th.start()
    info["thread"] = th
    return info


def _cluster(**config):
    import dask
    from distributed import Client, LocalCluster

    with dask.config.set(config):
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                               scheduler_kwargs={"dashboard_address": "127.0.0.1:0"})
    return cluster, Client(cluster, set_as_default=False)


def test_killed_worker_then_rerun_resumes_with_identical_results(segment_reference, tmp_path, monkeypatch):
    """The worker running step T2 is killed mid-task; the cluster may not retry (allowed-failures 0): the run
    stops, leaving T0 and T1 done and nothing of T2 under a final name; a rerun computes T2 alone."""
    pytest.importorskip("distributed")
    from tomo4d.pipeline.distributed import TEST_DELAY_ENV

    p, ref = segment_reference
    out = tmp_path / "run"
    monkeypatch.setenv(TEST_DELAY_ENV, "segment/T2=60")  # read by the workers (started below)
    cluster, client = _cluster(**{"distributed.scheduler.allowed-failures": 0})
    try:
        from tomo4d.pipeline.distributed import check_shared_folder

        with pytest.raises(InputError, match=r"not visible to 2 of the 2 Dask workers .* file system they share"):
            check_shared_folder(client, tmp_path / "elsewhere")
        kill = _kill_worker_running(client, "tomo4d-segment-T2", after=out / ".tomo4d/done/segment/T1.json")
        t0 = time.monotonic()
        with pytest.raises(Exception, match="KilledWorker|worker|died"):
            run_experiment(load_experiment(p), out, source=p, client=client)
        kill["thread"].join(5)
        assert "pid" in kill and time.monotonic() - t0 < 60  # stopped by the kill, not by the sleep's end
        # the steps' own dask work stayed on each worker's local scheduler: no worker opened a client of its own
        assert not [c for c in cluster.scheduler.clients if "worker" in str(c)], list(cluster.scheduler.clients)
    finally:
        client.close()
        cluster.close()
    monkeypatch.delenv(TEST_DELAY_ENV)
    assert sorted(m.stem for m in (out / ".tomo4d/done/segment").glob("*.json")) == ["T0", "T1"]
    assert _final_names(out) <= _marked_outputs(out)  # every result under a final name has its done-marker
    assert not any("T2" in n for n in _final_names(out))
    assert "step T2 failed on the cluster" in (out / "log.txt").read_text()
    res = run_experiment(load_experiment(p), out, source=p)  # the rerun (here without a cluster)
    seg = res.stages[0]
    assert seg.status == "partly cached" and seg.cached_steps == ("T0", "T1") and seg.computed_steps == ("T2",)
    _assert_identical(_results(ref), _results(out))


@pytest.mark.slow
def test_killed_worker_is_retried_by_the_cluster(segment_reference, tmp_path, monkeypatch):
    """The cluster's own retry of a killed task (default allowed-failures) completes the run: identical results
    (``tomo4d run --scheduler ADDRESS`` on a cluster that the test started)."""
    pytest.importorskip("distributed")
    from tomo4d.pipeline.distributed import TEST_DELAY_ENV

    p, ref = segment_reference
    out = tmp_path / "run"
    monkeypatch.setenv(TEST_DELAY_ENV, "segment/T2=8")
    cluster, client = _cluster()
    try:
        kill = _kill_worker_running(client, "tomo4d-segment-T2")
        assert main(["run", str(p), "-o", str(out), "--scheduler", cluster.scheduler_address, "--quiet"]) == 0
        kill["thread"].join(5)
        assert "pid" in kill
    finally:
        client.close()
        cluster.close()
    line = next(x for x in (out / "log.txt").read_text().splitlines() if "segment: step T2 computed" in x)
    assert f"(worker pid {kill['pid']})" not in line  # computed again by another worker process
    assert str(kill["pid"]) not in (out / "log.txt").read_text().split("step T2 computed")[1].split("\n")[0]
    _assert_identical(_results(ref), _results(out))


def test_full_experiment_on_a_local_cluster_equals_the_single_process_run(full_experiment_file, tmp_path):
    """quantify + segment + dvc + strain + residual + particles: every table and field bit-identical (10 s here
    once numba's cache is warm; the first run on a machine compiles the DVC kernels, ~1 min)."""
    pytest.importorskip("distributed")
    from tomo4d.pipeline.distributed import cluster_client

    p = full_experiment_file(name="full_cluster.yaml")
    run_experiment(load_experiment(p), tmp_path / "single", source=p)
    with cluster_client(workers=2) as client:
        res = run_experiment(load_experiment(p), tmp_path / "cluster", source=p, client=client)
    assert all(s.status == "computed" for s in res.stages)
    a, b = _results(tmp_path / "single"), _results(tmp_path / "cluster")
    assert any(k.startswith("fields/dvc_T0_") for k in a) and any(k.startswith("fields/strain_T0_") for k in a)
    _assert_identical(a, b)


def test_cluster_example_experiment_validates():
    """examples/cluster/experiment.yaml (an example, not run) is a valid experiment file with per-step stages."""
    exp = load_experiment(Path(__file__).parents[2] / "examples" / "cluster" / "experiment.yaml")
    assert exp.segment is not None and exp.align is not None and exp.dvc is not None
