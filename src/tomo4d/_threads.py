"""Shared core: torch's global settings changed for a call and restored after it.

:func:`torch_threads` (a stated number of CPU threads: the U-Net of ``tomo4d.segment``, the global DVC of
``tomo4d.dvc.correlate_global``) and :func:`torch_seeded` (networks initialised from a seed: the U-Net, the
InDI trainer of ``tomo4d.enhance``): a library call never leaves torch's global thread setting or random
state changed, so that calls in one process (a Dask worker runs many) do not depend on each other.
(numba's thread count: :func:`tomo4d.dvc._kernels.solve` sets and restores it, with OpenMP's.)
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np

from ._validate import show
from .errors import InputError

__all__ = ["torch_seeded", "torch_threads"]


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
