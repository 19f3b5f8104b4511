"""Atomic outputs: write under a temporary name, then rename.

An interrupted write (exception, Ctrl-C, full disk) never leaves a partial file
under the final name, and an existing output is replaced only once the new one
is complete.  Inputs are never overwritten.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import OverwriteError

log = logging.getLogger(__name__)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            path.unlink()
        except FileNotFoundError:
            pass


def _overlaps(a: Path, b: Path) -> bool:
    """True if a and b are the same path or one contains the other."""
    a, b = a.resolve(), b.resolve()
    return a == b or a in b.parents or b in a.parents


def check_not_input(path, inputs: Iterable) -> None:
    """Raise :class:`OverwriteError` if ``path`` is (or contains, or is inside) an input."""
    for src in inputs:
        if src is None:
            continue
        if _overlaps(Path(path), Path(src)):
            raise OverwriteError(
                f"output {str(path)!r} would overwrite the input {str(src)!r}; "
                "choose another output path (tomo4d never overwrites its inputs)"
            )


@contextmanager
def atomic_output(path, *, overwrite: bool = False, inputs: Iterable = ()) -> Iterator[Path]:
    """Context manager yielding a temporary path to write; renamed to ``path`` on success.

    Parameters
    ----------
    path : path-like
        Final output (file or folder).
    overwrite : bool
        Replace an existing output.  Without it an existing ``path`` is an error.
    inputs : iterable of path-like
        Paths that must never be overwritten, even with ``overwrite=True``.
    """
    path = Path(path)
    check_not_input(path, inputs)
    if path.exists() and not overwrite:
        raise OverwriteError(
            f"output {str(path)!r} already exists; choose another path or pass overwrite=True "
            "(--overwrite on the command line)"
        )
    parent = path.parent if str(path.parent) else Path(".")
    parent.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex[:8]
    tmp = parent / f".{path.name}.partial-{token}"
    try:
        yield tmp
        if not tmp.exists():
            raise RuntimeError(f"writer produced nothing at the temporary path {tmp}")
        if path.exists():
            old = parent / f".{path.name}.old-{token}"
            os.replace(path, old)
            try:
                os.replace(tmp, path)
            except BaseException:
                os.replace(old, path)
                raise
            _remove(old)
        else:
            os.replace(tmp, path)
        log.debug("wrote %s", path)
    finally:
        if tmp.exists():
            _remove(tmp)
