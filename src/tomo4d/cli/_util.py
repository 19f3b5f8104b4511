"""Helpers shared by the CLI modules: common options, progress bars, output, option parsing."""

# ``tomo4d.io`` is imported inside the function that needs it: every command module imports this one,
# so `tomo4d --help` would pay its import (~15 ms, measured, issue 17).
from __future__ import annotations

import json
from contextlib import contextmanager

import click

from ..errors import InputError


def _jsonable(o):
    import numpy as np

    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if hasattr(o, "to_dict"):
        return o.to_dict()
    if isinstance(o, (set, tuple)):
        return list(o)
    return str(o)


def echo_json(obj) -> None:
    click.echo(json.dumps(obj, indent=2, default=_jsonable, sort_keys=False))


def emit(info, *, as_json: bool, text) -> None:
    """Print a command's result: *info* as JSON with ``--json``, else *text* for people.

    *info* is the JSON-able result, or a function returning it (called only with ``--json``,
    for results that cost something to build).  *text* is one string or an iterable of lines,
    each echoed as it comes; a generator is run only without ``--json``.
    """
    if as_json:
        echo_json(info() if callable(info) else info)
    elif isinstance(text, str):
        click.echo(text)
    else:
        for line in text:
            click.echo(line)


def option_group(*options):
    """One decorator applying click *options* in the order given (as if stacked top to bottom)."""
    def decorate(f):
        for opt in reversed(options):
            f = opt(f)
        return f

    return decorate


#: ``--json``: print the result as JSON (the ``as_json`` argument).
json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
#: ``--overwrite``: replace an existing output file.
overwrite_option = click.option("--overwrite", is_flag=True, help="Replace an existing output (never an input).")
#: ``--voxel-size``: voxel size in nm overriding the input file's (parse with :func:`parse_triple`).
voxel_size_option = click.option("--voxel-size", default=None,
                                 help="Voxel size in nm: one value or Z,Y,X (overrides the file).")


def parse_triple(text, *, name: str, kind=float):
    """Parse ``"50"`` or ``"50,50,100"`` into a (z, y, x) tuple."""
    if text is None:
        return None
    parts = [p for p in str(text).replace("x", ",").split(",") if p.strip()]
    try:
        vals = [kind(p) for p in parts]
    except ValueError:
        raise InputError(f"{name}={text!r} is not understood; give one number or three as Z,Y,X") from None
    if len(vals) == 1:
        vals = vals * 3
    if len(vals) != 3:
        raise InputError(f"{name}={text!r} needs one number or three (Z,Y,X)")
    return tuple(vals)


@contextmanager
def progress_bar(description: str, *, enabled: bool = True):
    """Yield a ``progress(done, total)`` callback drawing a rich progress bar on stderr."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    console = Console(stderr=True)
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeRemainingColumn(), console=console, transient=True,
                  disable=not (enabled and console.is_terminal)) as prog:
        task = prog.add_task(description, total=None)

        def update(done, total):
            prog.update(task, completed=done, total=total)

        yield update


#: ``--map``: relabel a label image on reading (the ``label_map`` argument; apply with :func:`relabel`).
map_option = click.option("--map", "label_map", default=None,
                          help="Relabel on reading, SRC:DST pairs, e.g. 0:1,255:2 for a {0,255} mask.")


def _label_map(text) -> dict[int, int]:
    mapping = {}
    for part in str(text).split(","):
        try:
            a, b = part.split(":")
            mapping[int(a)] = int(b)
        except ValueError:
            raise InputError(f"--map={text!r} is not understood; give SRC:DST pairs like 0:1,255:2") from None
    if min(mapping.values()) < 0:
        raise InputError(f"--map={text!r} maps to a negative label; labels are 0 (unlabelled/background), 1, 2, ...")
    return mapping


def _relabel_block(arr, mapping: dict, dtype=None):
    import numpy as np

    out = arr.astype(np.int64)
    for a, b in mapping.items():
        out[arr == a] = b
    if dtype is None:
        top = int(out.max()) if out.size else 0
        dtype = np.uint8 if top < 256 else np.uint16 if top < 65536 else np.uint32
    return out.astype(dtype)


def relabel(arr, text):
    """``arr`` with the ``--map`` pairs ``"SRC:DST,..."`` applied (unchanged without them).  A lazy (dask) array
    stays lazy, mapped block by block into the smallest unsigned type that holds its dtype and the targets."""
    import numpy as np

    from .._array import is_lazy

    if not text:
        return arr
    mapping = _label_map(text)
    lazy = is_lazy(arr)
    arr = arr if lazy else np.asarray(arr)
    if not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool):
        return arr  # a grey image is not relabelled: the label check refuses it with its own message
    if not lazy:
        return _relabel_block(arr, mapping)
    top = max(max(mapping.values()), int(np.iinfo(arr.dtype).max) if arr.dtype != bool else 1)
    dtype = np.dtype(np.uint8 if top < 256 else np.uint16 if top < 65536 else np.uint32)
    return arr.map_blocks(_relabel_block, mapping, dtype, dtype=dtype)


#: ``--chunk-budget-mb`` of the commands that read volumes slab by slab (the runner's default budget)
budget_option = click.option(
    "--chunk-budget-mb", "chunk_budget_mb", type=float, default=512.0, show_default=True,
    help="Working memory of one slab, MiB: a volume whose working set exceeds it is read slab by slab "
         "(larger than memory); the results do not depend on it.")


@contextmanager
def slab_output(output):
    """Where a command fills its output slab by slab (a ``SlabStore``): ``(OUTPUT, None)`` when it is OME-Zarr (the
    store is published there atomically), else ``(scratch / "out.ome.zarr", scratch)``, a scratch folder beside
    OUTPUT (the caller converts the published store into OUTPUT chunk by chunk), removed on exit."""
    import shutil
    import tempfile
    from pathlib import Path

    target = Path(output)
    if target.name.lower().endswith((".zarr", ".ome.zarr")):
        yield target, None
        return
    scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield scratch / "out.ome.zarr", scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def check_budget(value) -> float:
    """``--chunk-budget-mb`` checked (a positive number of MiB)."""
    from .._validate import check_number

    return check_number("--chunk-budget-mb", value, minimum=0.0, exclusive_minimum=True)


def parse_ints(text, *, name: str) -> list[int]:
    """Parse ``"100,70,35"`` into positive integers (e.g. ``--binning``, ``--pyramid``)."""
    try:
        vals = [int(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise InputError(f"{name}={text!r} must be comma-separated integers, e.g. 100,70,35") from None
    if not vals or any(v < 1 for v in vals):
        raise InputError(f"{name}={text!r} must be positive integers, e.g. 100,70,35")
    return vals


def open_array(path, *, mask: bool = False, lazy: bool = False):
    """The volume at ``path`` read into memory (a Volume); with ``mask``, its non-zero voxels (bool numpy,
    None for no path); with ``lazy``, left on disk (read chunk by chunk by the command)."""
    from ..io import open_volume

    if lazy:
        return None if path is None else (open_volume(path).data > 0 if mask else open_volume(path))
    if mask:
        return None if path is None else open_volume(path).compute().numpy() > 0
    return open_volume(path).compute()
