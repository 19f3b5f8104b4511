"""Shared core: torch's global settings changed for a call and restored after it.

:func:`torch_threads` (a stated number of CPU threads: the U-Net of ``tomo4d.segment``, the global DVC of
``tomo4d.dvc.correlate_global``) and :func:`torch_seeded` (networks initialised from a seed: the U-Net, the
InDI trainer of ``tomo4d.enhance``): a library call never leaves torch's global thread setting or random
state changed, so that calls in one process (a Dask worker runs many) do not depend on each other.
:func:`numba_threads`: numba's thread count (and the OpenMP thread count that numba's ``omp`` layer sets
on every parallel launch, which torch reads from the same runtime) for a call, restored after it.
"""

from __future__ import annotations

import ctypes
import math
import os
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ._validate import show
from .errors import InputError

__all__ = ["numba_threads", "torch_seeded", "torch_threads"]


@contextmanager
def torch_threads(n: int | None):
    """Context manager: run torch with ``n`` intra-op threads, restoring the previous number after.

    ``None`` changes nothing.  On a shared machine, 1 thread is often much
    faster for small networks than oversubscribed cores.
    """
    if n is None:
        yield
        return
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise InputError(f"threads={show(n)} must be None or an integer >= 1")
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(old)


@contextmanager
def torch_seeded(seed: int):
    """Context manager: torch's CPU random generator seeded with ``seed``, its previous state restored after.

    For what is built on the CPU (network weights, then moved to a device): the same draws as
    ``torch.manual_seed(seed)``, without touching (or lazily seeding) the CUDA generators.
    """
    import torch

    state = torch.random.get_rng_state()
    torch.random.default_generator.manual_seed(int(seed))
    try:
        yield
    finally:
        torch.random.set_rng_state(state)


def _openmp():
    """The GNU OpenMP runtime, or None (not Linux/GCC: nothing shared to restore)."""
    try:
        return ctypes.CDLL("libgomp.so.1")
    except OSError:
        return None


@contextmanager
def numba_threads(n: int | None):
    """Context manager: numba's parallel kernels on ``n`` threads (None: all numba may use), restoring
    numba's and OpenMP's previous thread counts after."""
    if n is not None and (isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1):
        raise InputError(f"threads={show(n)} must be None or an integer >= 1")
    import numba

    omp = _openmp()
    omp_before = omp.omp_get_max_threads() if omp is not None else None   # first: numba's pool init sets it
    before = numba.get_num_threads()
    top = numba.config.NUMBA_NUM_THREADS
    numba.set_num_threads(top if n is None else max(1, min(int(n), top)))
    try:
        yield
    finally:
        numba.set_num_threads(before)
        if omp is not None and omp.omp_get_max_threads() != omp_before:
            omp.omp_set_num_threads(omp_before)


def _cgroup_quota() -> float | None:
    """CPUs allowed by the cgroup v2 (``cpu.max``) or v1 (``cpu.cfs_quota_us``) quota, or None."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        period = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
        return None if quota <= 0 or period <= 0 else quota / period
    except (OSError, ValueError):
        return None


def available_cpus() -> int:
    """The CPUs this process may use: its affinity mask, capped by a cgroup CPU quota (rounded up), >= 1."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    quota = _cgroup_quota()
    if quota is not None and quota > 0:
        n = min(n, math.ceil(quota))
    return max(1, n)
