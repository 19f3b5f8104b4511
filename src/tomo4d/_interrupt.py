"""Interrupts (Ctrl-C, SIGTERM) that cannot be lost.

Python delivers Ctrl-C as a :class:`KeyboardInterrupt` raised wherever the main
thread happens to be.  Some libraries swallow it: h5py runs HDF5 clean-up in a
weakref callback, and an exception raised there is printed and dropped, so a
command interrupted during an HDF5 write would go on and exit 0.  The command
line therefore installs :func:`handling_interrupts` for the duration of a
command: the signal handlers record the interrupt *before* raising, writers
consult :func:`interrupted` before they publish an output under its final name
(:func:`tomo4d.io.atomic_output`), and the command exits 130 (143 for SIGTERM)
even if the exception itself was eaten.  Nothing here is active on import; the
previous handlers are restored when the command ends.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.Lock()
_received: list[int] = []  # signal numbers received while handling is active


class Interrupted(KeyboardInterrupt):
    """Raised when an interrupt was recorded but its KeyboardInterrupt was swallowed."""


def interrupted() -> int | None:
    """The signal number received while :func:`handling_interrupts` is active, else None."""
    with _lock:
        return _received[0] if _received else None


def raise_if_interrupted() -> None:
    """Raise :class:`Interrupted` if an interrupt was recorded (and possibly swallowed)."""
    sig = interrupted()
    if sig is not None:
        raise Interrupted(f"interrupted by signal {sig}")


def _handler(signum, frame):
    with _lock:
        _received.append(signum)
    raise Interrupted(f"interrupted by signal {signum}")


@contextmanager
def handling_interrupts() -> Iterator[None]:
    """Record SIGINT/SIGTERM while the body runs (main thread only); restore the handlers after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.getsignal(sig)
        signal.signal(sig, _handler)
    try:
        yield
    finally:
        for sig, h in previous.items():
            signal.signal(sig, h)
        with _lock:
            _received.clear()


def exit_status() -> int | None:
    """Conventional exit status of the recorded interrupt (130 for SIGINT, 128 + n otherwise)."""
    sig = interrupted()
    return None if sig is None else 128 + int(sig)
