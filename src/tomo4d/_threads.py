"""Shared core: one thread setting for every compute stage, and torch's global settings changed for a call
and restored after it.

:func:`compute_threads` (public as :func:`tomo4d.threads`; the CLI's global ``--threads``; the experiment
file's ``threads:``) states how many CPU threads the calls inside it may use: torch's intra-op threads,
numba's parallel kernels, the BLAS/OpenMP pools (threadpoolctl, when installed) and dask's local threaded
scheduler, together; every one is restored when the block ends.  Without a setting the count is
:func:`available_cpus` (this process's affinity mask and cgroup CPU quota; not the host's core count).
The compute entry points resolve their own ``threads=None`` through :func:`resolve_threads`, so a library
imported after the block began (torch, typically) still runs on the stated count.

:func:`torch_threads` (a stated number of CPU threads: the U-Net of ``tomo4d.segment``, the global DVC of
``tomo4d.dvc.correlate_global``) and :func:`torch_seeded` (networks initialised from a seed: the U-Net, the
InDI trainer of ``tomo4d.enhance``): a library call never leaves torch's global thread setting or random
state changed, so that calls in one process (a Dask worker runs many) do not depend on each other.
:func:`numba_threads`: numba's thread count (and the OpenMP thread count that numba's ``omp`` layer sets
on every parallel launch, which torch reads from the same runtime) for a call, restored after it.
"""

from __future__ import annotations

import ctypes
import functools
import math
import os
import sys
import threading
from contextlib import ExitStack, contextmanager
from pathlib import Path

import numpy as np

from ._validate import show
from .errors import InputError

__all__ = ["available_cpus", "compute_threads", "current_threads", "numba_threads", "resolve_threads",
           "torch_seeded", "torch_threaded", "torch_threads"]

#: The count stated by the innermost :func:`compute_threads` block (None: none); read from every thread (a
#: dask worker thread inherits it), restored when the block ends.
_SETTING: list[tuple[object, int]] = []  # (the block's token, its count), innermost last
_LOCK = threading.Lock()


def _check(n) -> int | None:
    if n is not None and (isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1):
        raise InputError(f"threads={show(n)} must be None or an integer >= 1 (CPU threads)")
    return None if n is None else int(n)


def current_threads() -> int | None:
    """The count stated by the innermost :func:`compute_threads` block, or None outside any."""
    return _SETTING[-1][1] if _SETTING else None


def resolve_threads(n: int | None = None) -> int:
    """The threads a call runs on: ``n`` when given, else the enclosing :func:`compute_threads` setting,
    else :func:`available_cpus`."""
    n = _check(n)
    if n is not None:
        return n
    current = current_threads()
    return available_cpus() if current is None else current


@contextmanager
def compute_threads(n: int | None = None):
    """Context manager: every compute stage inside runs on ``n`` CPU threads; all settings restored after.

    Applies the count to torch (intra-op threads), numba (parallel kernels), the BLAS and OpenMP pools
    (through ``threadpoolctl`` when it is installed) and dask's local threaded scheduler together, and
    records it for the entry points (:func:`resolve_threads`) of libraries imported later in the block.
    ``None``: the CPUs this process may use (:func:`available_cpus`).  Nothing persists after the block;
    blocks nest (the innermost wins).  The count is a setting of the process while the block runs (torch's
    and the BLAS pools are process-wide), so concurrent blocks in two threads of one process share it.

    Examples
    --------
    >>> import tomo4d
    >>> with tomo4d.threads(1):
    ...     pass  # train, enhance, correlate ... on one thread
    """
    count = resolve_threads(n)
    token = object()
    with _LOCK:
        _SETTING.append((token, count))
    try:
        with ExitStack() as stack:
            if "torch" in sys.modules:
                stack.enter_context(torch_threads(count))
            if "numba" in sys.modules:
                stack.enter_context(numba_threads(count))
            stack.enter_context(_blas_threads(count))
            stack.enter_context(_dask_threads(count))
            yield count
    finally:
        with _LOCK:  # its own entry (blocks in two threads may end in any order)
            _SETTING[:] = [e for e in _SETTING if e[0] is not token]


@contextmanager
def _blas_threads(n: int):
    """The BLAS and OpenMP pools loaded in this process limited to ``n`` threads (threadpoolctl), each
    restored after; nothing without threadpoolctl (no environment variable is changed: those act only before
    a library loads).  torch's own OpenMP runtime is left to :func:`torch_threads` (restoring it here, after
    torch's, would put torch back on the runtime's count instead of torch's)."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        yield
        return
    libs = [c for c in ThreadpoolController().lib_controllers
            if not (c.user_api == "openmp" and "torch" in str(c.filepath))]
    before = [c.num_threads for c in libs]
    for c in libs:
        c.set_num_threads(n)
    try:
        yield
    finally:
        for c, k in zip(libs, before):
            c.set_num_threads(k)


@contextmanager
def _dask_threads(n: int):
    """Dask's local threaded scheduler on ``n`` workers (``num_workers``), the previous config restored after."""
    try:
        import dask.config
    except ImportError:
        yield
        return
    with dask.config.set(num_workers=n):
        yield


@contextmanager
def torch_threads(n: int | None):
    """Context manager: run torch with ``n`` intra-op threads, restoring the previous number after.

    ``None``: :func:`resolve_threads` (the enclosing :func:`compute_threads` setting, else the CPUs this
    process may use).  On a shared machine, 1 thread is often much faster for small networks than
    oversubscribed cores.
    """
    n = resolve_threads(n)
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(old)


def torch_threaded(fn):
    """Decorator: ``fn`` runs under :func:`torch_threads` (None), the caller's torch setting restored after."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with torch_threads(None):
            return fn(*args, **kwargs)
    return wrapper


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
    """Context manager: numba's parallel kernels on ``n`` threads (None: :func:`resolve_threads`; at most
    numba's pool), restoring numba's and OpenMP's previous thread counts after (numba's count is a setting
    of the calling OS thread)."""
    n = resolve_threads(n)
    import numba

    omp = _openmp()
    omp_before = omp.omp_get_max_threads() if omp is not None else None   # first: numba's pool init sets it
    before = numba.get_num_threads()
    top = numba.config.NUMBA_NUM_THREADS
    numba.set_num_threads(max(1, min(n, top)))
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
