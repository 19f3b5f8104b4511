"""One thread setting for every compute stage (tomo4d.threads / --threads / experiment ``threads:``),
applied to torch, numba, BLAS and dask together and restored after (issue 20)."""

from __future__ import annotations

import os

import numpy as np
import pytest

import tomo4d
from tomo4d._threads import (
    _cgroup_quota,
    available_cpus,
    compute_threads,
    current_threads,
    numba_threads,
    resolve_threads,
    torch_threads,
)
from tomo4d.errors import InputError


def _state():
    import dask
    import numba
    import torch
    from threadpoolctl import threadpool_info

    # numba first: its OpenMP layer sets the calling thread's OpenMP count (which torch reads) when asked
    nb = numba.get_num_threads()
    blas = tuple(sorted((i["internal_api"], i["num_threads"]) for i in threadpool_info()))
    return (torch.get_num_threads(), nb, dask.config.get("num_workers", None), blas)


def test_available_cpus_is_the_affinity_capped_by_the_cgroup_quota():
    n = len(os.sched_getaffinity(0))
    quota = _cgroup_quota()
    expected = n if quota is None else min(n, int(np.ceil(quota)))
    assert available_cpus() == max(1, expected)


def test_available_cpus_follows_a_narrower_affinity():
    before = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {min(before)})
        assert available_cpus() == 1
        assert resolve_threads(None) == 1
    finally:
        os.sched_setaffinity(0, before)


def test_block_sets_every_library_and_restores_everything():
    import dask
    import numba
    import torch
    from threadpoolctl import threadpool_info

    before = _state()
    with tomo4d.threads(1) as n:
        assert n == 1 and current_threads() == 1 and resolve_threads() == 1
        assert torch.get_num_threads() == 1
        assert numba.get_num_threads() == 1
        assert dask.config.get("num_workers") == 1
        assert all(i["num_threads"] == 1 for i in threadpool_info())
        with compute_threads(2):  # blocks nest: the innermost wins, the outer one comes back after
            assert resolve_threads() == min(2, 2) and torch.get_num_threads() == 2
        assert torch.get_num_threads() == 1 and current_threads() == 1
        assert resolve_threads(3) == 3  # an explicit count wins over the block
    assert _state() == before
    assert current_threads() is None


def test_block_restores_on_error():
    before = _state()
    with pytest.raises(RuntimeError), compute_threads(1):
        raise RuntimeError("boom")
    assert _state() == before and current_threads() is None


def test_entry_points_default_to_the_block_setting():
    """torch_threads / numba_threads (None) as used inside the library's compute entry points: the block's
    count, even for a library imported after the block began."""
    import numba
    import torch

    with compute_threads(1):
        with torch_threads(None):
            assert torch.get_num_threads() == 1
        with numba_threads(None):
            assert numba.get_num_threads() == 1
    outside = torch.get_num_threads()
    with torch_threads(None):  # no block: the CPUs this process may use
        assert torch.get_num_threads() == available_cpus()
    assert torch.get_num_threads() == outside


def test_the_setting_is_seen_from_dask_worker_threads():
    import dask
    import dask.array as da

    def probe(block):
        return np.full(block.shape, resolve_threads(), np.int64)

    with compute_threads(1):
        out = da.zeros((4,), chunks=1).map_blocks(probe, dtype=np.int64).compute(scheduler="threads")
    assert (out == 1).all()
    assert dask.config.get("num_workers", None) is None


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_bad_counts_are_refused_with_the_parameter_name(bad):
    with pytest.raises(InputError, match="threads="), compute_threads(bad):
        pass


def test_segment_prediction_does_not_depend_on_the_thread_count():
    """The forest's numba traversal runs on the block's threads; the result is the same on 1 or 2."""
    from tomo4d.segment import FeatureSpec, train_pixel_classifier

    rng = np.random.default_rng(0)
    image = rng.normal(size=(4, 32, 32)).astype(np.float32)
    image[:, 8:20, 8:20] += 3
    labels = np.zeros(image.shape, np.uint8)
    labels[:, 10:18, 10:18] = 1
    labels[:, :4, :4] = 2
    model = train_pixel_classifier(image, labels, features=FeatureSpec(sigmas=(1.0,)), n_trees=4, seed=0)
    with compute_threads(1):
        one = model.predict_proba(image)
    with compute_threads(2):
        two = model.predict_proba(image)
    np.testing.assert_array_equal(one, two)


def test_experiment_file_key():
    from tomo4d.pipeline import parse_experiment

    data = {"inputs": {"series": ["a.tif", "b.tif"], "time_s": [0, 1]}}
    assert parse_experiment({**data, "threads": 1}).threads == 1
    assert parse_experiment(data).threads is None
    with pytest.raises(InputError, match="threads"):
        parse_experiment({**data, "threads": 0})


def test_cli_global_option(capsys):
    from tomo4d.cli import main

    assert main(["--threads", "0", "info", "--help"]) == 2
    assert "--threads" in capsys.readouterr().err
    assert main(["--threads", "1", "info", "--help"]) == 0
    assert current_threads() is None  # the command's block ended with it


def test_cli_makes_openmp_threads_wait_passively():
    """Set before the command loads torch/numba (their OpenMP runtime reads it then); restored after."""
    import subprocess
    import sys

    code = ("import os, torch; from tomo4d.cli import main, _run\n"
            "import tomo4d.cli as c\n"
            "seen = []\n"
            "c._run = lambda args, debug: seen.append(os.environ.get('OMP_WAIT_POLICY')) or 0\n"
            "main(['--version']); print(seen[0], os.environ.get('OMP_WAIT_POLICY'))")
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["PASSIVE", "None"]
    out = subprocess.run([sys.executable, "-c", code], env={**env, "OMP_WAIT_POLICY": "ACTIVE"}, capture_output=True,
                         text=True, check=True)
    assert out.stdout.split() == ["ACTIVE", "ACTIVE"]
