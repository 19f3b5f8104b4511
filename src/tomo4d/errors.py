"""Exceptions raised by tomo4d.

Every error a user can cause is a :class:`InputError`: its message names the
parameter or input, the offending value and how to fix it.  It derives from
:class:`ValueError` so that ordinary ``except ValueError`` code keeps working.
The command-line interface turns these into a one-line message and a non-zero
exit status (a traceback only with ``--debug``).
"""

# ``_validate`` is imported inside the checks: it imports this module (a cycle at the top).
from __future__ import annotations

import math


class Tomo4dError(Exception):
    """Base class of all errors raised on purpose by tomo4d."""


class InputError(Tomo4dError, ValueError):
    """A bad input: wrong parameter value, unreadable file, inconsistent data."""


class FormatError(InputError):
    """A file that exists but cannot be read as the format it claims to be."""


class OverwriteError(InputError):
    """Writing would replace an existing output or one of the inputs."""


class OutputError(InputError):
    """An output could not be written (disk full, no permission, read-only location)."""


def check_choice(name: str, value, choices) -> None:
    """Raise :class:`InputError` if ``value`` is not one of ``choices``."""
    if value not in choices:
        from ._validate import show

        opts = ", ".join(show(c) for c in choices)
        raise InputError(f"{name}={show(value)} is not supported; use one of {opts}")


def check_positive(name: str, value, *, allow_zero: bool = False) -> None:
    """Raise :class:`InputError` unless ``value`` is a finite number > 0 (or >= 0)."""
    from ._validate import show

    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name}={show(value)} is not a number; give a positive number") from None
    ok = math.isfinite(v) and (v >= 0 if allow_zero else v > 0)
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise InputError(f"{name}={show(value)} must be a finite number {bound}")
