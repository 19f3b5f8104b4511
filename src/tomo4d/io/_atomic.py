"""Outputs that never destroy data: atomic writes, input protection, folder ownership.

Every file or folder tomo4d writes goes through :func:`atomic_output`:

* it is written under a hidden temporary name ``.NAME.partial-HOST-PID-TOKEN`` beside
  the final one and renamed when complete, so an interrupted write (exception,
  Ctrl-C, full disk) never leaves a partial file under the final name;
* without ``overwrite`` the final rename refuses to replace an output that
  appeared meanwhile (another run writing the same name): ``renameat2`` with
  ``RENAME_NOREPLACE`` on Linux, a hard link elsewhere;
* an input is never overwritten, even with ``overwrite``: outputs resolving to an
  input (same path, a symlink or hard link to it, inside an input folder or
  containing one) are refused before anything is written (:func:`check_not_input`);
* an existing *folder* is replaced only if tomo4d wrote it (it carries the
  :data:`OWNER_MARKER` file, which every folder output other than a volume store
  gets), it is empty, or it is a volume store of a recognised layout (Zarr, a
  folder of TIFF slices);
* temporaries of killed writes (the process no longer exists) are removed, with
  a log line, the next time the same name is written.

:func:`check_outputs` applies the same rules to every declared output of a
command at once, before any work; :func:`prepare_folder` claims a folder that a
long job fills in place (the demo), marking it first so that a killed run is
recognisable as tomo4d's own.
"""

from __future__ import annotations

import ctypes
import errno
import json
import logging
import os
import re
import shutil
import socket
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from .._interrupt import raise_if_interrupted
from .._version import __version__
from ..errors import OutputError, OverwriteError
from ._formats import SUFFIXES, get_format

log = logging.getLogger(__name__)

#: File that marks a folder as written by tomo4d (JSON: what wrote it, when, which version).
OWNER_MARKER = ".tomo4d-output"
#: Temporaries of other hosts, or of an unknown format, older than this are stale (s).
STALE_AFTER_S = 24 * 3600.0

_HOST = re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:24] or "host"
_PARTIAL = re.compile(r"^\.(?P<name>.+)\.(?:partial|old)-(?:(?P<host>[A-Za-z0-9]+)-(?P<pid>\d+)-)?[0-9a-f]{8}$")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            path.unlink()
        except FileNotFoundError:
            pass


def sidecars(path) -> tuple[Path, ...]:
    """Files that belong to the volume file ``path`` (read or written with it): ``.vol.info``, ``.json``.

    The sidecars of the format its suffix names in the format registry (:mod:`tomo4d.io._formats`).
    """
    p = Path(path)
    name = SUFFIXES.get(p.suffix.lower())
    return get_format(name).sidecar_paths(p) if name is not None else ()


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _overlaps(a: Path, b: Path) -> bool:
    """True if a and b are the same file (symlinks, hard links) or one folder contains the other."""
    ra, rb = a.resolve(), b.resolve()
    return ra == rb or ra in rb.parents or rb in ra.parents or _same_file(a, b)


def _with_sidecars(paths: Iterable) -> list[Path]:
    out = []
    for p in paths:
        if p is None:
            continue
        out.append(Path(p))
        out.extend(sidecars(p))
    return out


def check_not_input(path, inputs: Iterable, *, name: str = "output") -> None:
    """Raise :class:`OverwriteError` if ``path`` (or its sidecars) resolves to an input or its sidecars.

    Resolves symlinks and recognises hard links; a folder containing an input,
    or a path inside an input folder, counts as the input.
    """
    srcs = [(s, Path(s)) for s in inputs if s is not None]
    for out in _with_sidecars([path]):
        for shown, src in srcs:
            for s in _with_sidecars([src]):
                if _overlaps(out, s):
                    raise OverwriteError(
                        f"{name} {str(path)!r} would overwrite the input {str(shown)!r}; choose another output "
                        "path (tomo4d never overwrites its inputs, not even with --overwrite)"
                    )


def _is_volume_folder(path: Path) -> bool:
    if any((path / m).exists() for m in ("zarr.json", ".zgroup", ".zarray")):
        return True
    entries = [e for e in path.iterdir() if not e.name.startswith(".")]
    return bool(entries) and all(
        e.is_file() and (e.suffix.lower() in (".tif", ".tiff") or e.name == "tomo4d.json") for e in entries)


def replaceable(path) -> bool:
    """True if an existing ``path`` may be replaced with ``overwrite``: a file, or a folder tomo4d owns.

    A folder is tomo4d's if it carries :data:`OWNER_MARKER`, is empty, or is a Zarr
    store or a folder of TIFF slices; any other folder may hold a user's files.
    """
    p = Path(path)
    if not p.is_dir() or p.is_symlink():
        return True
    return (p / OWNER_MARKER).exists() or not any(p.iterdir()) or _is_volume_folder(p)


def _check_replace(path: Path, overwrite: bool, name: str) -> None:
    if not (path.exists() or path.is_symlink()):
        return
    if not overwrite:
        raise OverwriteError(f"{name} {str(path)!r} already exists; choose another path or pass overwrite=True "
                             "(--overwrite on the command line)")
    if not replaceable(path):
        raise OverwriteError(
            f"{name} {str(path)!r} is an existing folder that tomo4d did not write (no {OWNER_MARKER} marker, "
            "not empty, not a volume store); tomo4d replaces only folders it wrote: choose a new folder, or "
            "move or delete this one yourself"
        )


def check_outputs(outputs, *, inputs: Iterable = (), overwrite: bool = False, exclusive=None,
                  folders: Iterable = ()) -> None:
    """Check every output of a command before any work.

    Parameters
    ----------
    outputs : mapping of str to path-like
        Output name (as the user knows it, e.g. ``"--sigma-output"``) -> path; None entries are skipped.
    inputs : iterable of path-like
        Every input of the command; no output may resolve to one of them.
    overwrite : bool
        Whether existing outputs may be replaced.
    exclusive : iterable of str, optional
        Names of the outputs that must not already exist without ``overwrite``
        (default all); folders that a command resumes or fills are left out.
    folders : iterable of str
        Names of outputs that are folders the other outputs may be written into.

    Raises
    ------
    OverwriteError
        An output resolves to an input, two outputs resolve to the same path, or an
        output exists (without ``overwrite``, or a folder tomo4d did not write).
    """
    inputs = [i for i in inputs if i is not None]
    named = [(n, Path(p)) for n, p in outputs.items() if p is not None]
    exclusive = set(outputs) if exclusive is None else set(exclusive)
    folders = set(folders)
    for i, (name, path) in enumerate(named):
        check_not_input(path, inputs, name=name)
        for other, opath in named[:i]:
            if (name in folders or other in folders) and path.resolve() != opath.resolve():
                continue
            if any(_overlaps(a, b) for a in _with_sidecars([path]) for b in _with_sidecars([opath])):
                raise OverwriteError(f"{name} {str(path)!r} and {other} {str(opath)!r} are the same output (or "
                                     "one contains the other); give each output its own path")
        if name in exclusive:
            _check_replace(path, overwrite, name)


def _libc_renameat2():
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_RENAMEAT2 = _libc_renameat2()
_AT_FDCWD, _RENAME_NOREPLACE = -100, 1


def _rename_noreplace(src: Path, dst: Path) -> None:
    """Rename ``src`` to ``dst``, raising FileExistsError if ``dst`` exists (atomically where possible)."""
    if _RENAMEAT2 is not None:
        if _RENAMEAT2(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), _RENAME_NOREPLACE) == 0:
            return
        err = ctypes.get_errno()
        if err == errno.EEXIST:
            raise FileExistsError(err, os.strerror(err), str(dst))
        if err not in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
            raise OSError(err, os.strerror(err), str(dst))
    if src.is_dir():
        if dst.exists() or dst.is_symlink():
            raise FileExistsError(errno.EEXIST, "exists", str(dst))
        os.rename(src, dst)
    else:
        os.link(src, dst)  # fails if dst exists
        os.unlink(src)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale_partials(path) -> list[Path]:
    """Remove temporaries of earlier, killed writes of ``path``; return what was removed (logged).

    A temporary is stale when the process that made it (same host) no longer
    exists, or when it is older than :data:`STALE_AFTER_S` (other hosts, older formats).
    """
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    removed = []
    try:
        candidates = [c for c in parent.iterdir() if c.name.startswith(f".{path.name}.")]
    except OSError:
        return removed
    now = time.time()
    for c in candidates:
        m = _PARTIAL.match(c.name)
        if m is None or m.group("name") != path.name:
            continue
        if m.group("pid") and m.group("host") == _HOST:
            stale = not _pid_alive(int(m.group("pid")))
        else:
            try:
                stale = now - c.lstat().st_mtime > STALE_AFTER_S
            except OSError:
                continue
        if stale:
            _remove(c)
            log.warning("removed %s, left by an interrupted earlier write of %s", c, path)
            removed.append(c)
    return removed


def scratch_path(path) -> Path:
    """A hidden scratch name beside ``path`` that :func:`clean_stale_partials` removes if its writer dies."""
    path = Path(path)
    return path.parent / f".{path.name}.partial-{_HOST}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def write_marker(folder, *, kind: str) -> None:
    """Mark ``folder`` as written by tomo4d (:data:`OWNER_MARKER`, JSON)."""
    info = {"written_by": "tomo4d", "version": __version__, "kind": kind,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    (Path(folder) / OWNER_MARKER).write_text(json.dumps(info) + "\n", encoding="utf-8")


_WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EROFS, errno.EPERM, errno.EFBIG)


def _os_error(exc: OSError, path: Path) -> OutputError:
    what = exc.strerror or str(exc)
    hint = {errno.ENOSPC: "free some space or write elsewhere", errno.EDQUOT: "free some space or write elsewhere",
            errno.EACCES: "check the folder's permissions or write elsewhere",
            errno.EROFS: "the location is read-only; write elsewhere",
            errno.EPERM: "check the folder's permissions or write elsewhere"}.get(exc.errno, "check the location")
    return OutputError(f"could not write output {str(path)!r}: {what}; {hint} (nothing was left under that name)")


@contextmanager
def atomic_output(path, *, overwrite: bool = False, inputs: Iterable = (), kind: str = "output") -> Iterator[Path]:
    """Context manager yielding a temporary path to write; renamed to ``path`` on success.

    Parameters
    ----------
    path : path-like
        Final output (file or folder).
    overwrite : bool
        Replace an existing output.  Without it an existing ``path`` is an error,
        also when it appears while this write is in progress.
    inputs : iterable of path-like
        Paths that must never be overwritten, even with ``overwrite=True``.
    kind : str
        What a folder output is (recorded in its :data:`OWNER_MARKER`).

    Raises
    ------
    OverwriteError
        ``path`` is an input, exists without ``overwrite`` (or appeared meanwhile), or is
        a folder tomo4d did not write.
    OutputError
        The operating system refused the write (disk full, permissions); the message
        names ``path``, not the temporary.
    """
    path = Path(path)
    check_not_input(path, inputs)
    _check_replace(path, overwrite, "output")
    parent = path.parent if str(path.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _os_error(exc, path) from None
    clean_stale_partials(path)
    tmp = scratch_path(path)
    token = tmp.name.rsplit(".partial-", 1)[1]
    try:
        try:
            yield tmp
        except OSError as exc:
            if exc.errno not in _WRITE_ERRNOS and ".partial-" not in str(exc.filename or ""):
                raise  # e.g. an input that could not be read: its own message names it
            raise _os_error(exc, path) from None
        raise_if_interrupted()  # an interrupt swallowed by a library (h5py) still aborts the write
        if not (tmp.exists() or tmp.is_symlink()):
            raise RuntimeError(f"writer produced nothing at the temporary path {tmp}")
        if tmp.is_dir() and not tmp.is_symlink() and not (tmp / OWNER_MARKER).exists() \
                and not _is_volume_folder(tmp):  # volume stores are recognised by their layout
            write_marker(tmp, kind=kind)
        _publish(tmp, path, overwrite=overwrite, token=token)
        log.debug("wrote %s", path)
    finally:
        if tmp.exists() or tmp.is_symlink():
            _remove(tmp)


def write_json(obj, path, *, overwrite: bool = False, inputs: Iterable = (), indent: int = 2, default=None) -> Path:
    """Write ``obj`` as JSON (UTF-8) to ``path`` through :func:`atomic_output`; ``default`` as :func:`json.dumps`'s."""
    with atomic_output(path, overwrite=overwrite, inputs=inputs) as tmp:
        tmp.write_text(json.dumps(obj, indent=indent, default=default), encoding="utf-8")
    return Path(path)


def _publish(tmp: Path, path: Path, *, overwrite: bool, token: str) -> None:
    """Move the finished temporary to its final name (see :func:`atomic_output`)."""
    appeared = OverwriteError(
        f"output {str(path)!r} appeared while this command was writing it (another run writing the same "
        "name?); it was left as it is and this result discarded: choose another path, or pass --overwrite "
        "to replace it")
    try:
        if not overwrite:
            try:
                _rename_noreplace(tmp, path)
            except FileExistsError:
                raise appeared from None
            return
        if not (path.exists() or path.is_symlink()):
            os.replace(tmp, path)
            return
        _check_replace(path, overwrite, "output")
        old = path.parent / f".{path.name}.old-{token}"
        os.replace(path, old)
        try:
            os.replace(tmp, path)
        except BaseException:
            os.replace(old, path)
            raise
        _remove(old)
    except OverwriteError:
        raise
    except OSError as exc:
        raise _os_error(exc, path) from None


def prepare_folder(path, *, overwrite: bool = False, kind: str = "output", inputs: Iterable = ()) -> Path:
    """Claim the folder ``path`` for a job that fills it in place; return it.

    Call this only once everything else has been validated: with ``overwrite`` an
    existing folder that tomo4d wrote (see :func:`replaceable`) is removed first.
    The new folder is marked at once, so a run killed half-way leaves a folder
    that is recognisably tomo4d's and that ``overwrite`` may replace.
    """
    p = Path(path)
    check_not_input(p, inputs)
    _check_replace(p, overwrite, "output folder")
    if p.exists() or p.is_symlink():
        _remove(p)
    try:
        p.mkdir(parents=True)
        write_marker(p, kind=kind)
    except OSError as exc:
        raise _os_error(exc, p) from None
    return p
