"""Shared core: run torch with a stated number of CPU threads and restore the previous number after.

Used by the U-Net (``tomo4d.segment``) and the global DVC (``tomo4d.dvc.correlate_global``); a
library call never leaves torch's global thread setting changed.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np

from ._validate import show
from .errors import InputError

__all__ = ["torch_threads"]


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
