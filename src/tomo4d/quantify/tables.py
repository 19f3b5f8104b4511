"""Tables with units: CSV and Parquet writers for the column dictionaries of the quantify results.

Every result offers ``to_columns()``: ``{name: 1-D array}`` whose names carry their unit as a suffix
(``_um``, ``_um2``, ``_um3``, ``_px``, ``_deg``; no suffix = dimensionless or a label).  The CSV
is plain (header line = the names); the Parquet file stores the same columns and, in its schema
metadata, ``tomo4d.units``: a JSON map of column -> unit.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..io import atomic_output

__all__ = ["write_table", "read_table", "column_units"]

_UNITS = (("_um3", "um^3"), ("_um2", "um^2"), ("_um", "um"), ("_nm", "nm"), ("_px", "px"), ("_deg", "deg"),
          ("_s", "s"))


def column_units(names) -> dict[str, str]:
    """Unit of each column name from its suffix ('' for dimensionless / labels)."""
    out = {}
    for n in names:
        out[n] = next((u for suf, u in _UNITS if n.endswith(suf)), "")
    return out


def _columns(table) -> dict[str, np.ndarray]:
    cols = table.to_columns() if hasattr(table, "to_columns") else table
    if not isinstance(cols, Mapping) or not cols:
        raise InputError("write_table needs a result with to_columns() or a non-empty {name: array} mapping")
    out = {str(k): np.asarray(v) for k, v in cols.items()}
    lengths = {k: v.shape for k, v in out.items()}
    n = {v.shape[0] if v.ndim else -1 for v in out.values()}
    if len(n) != 1 or any(v.ndim != 1 for v in out.values()):
        raise InputError(f"table columns must be 1-D and of equal length, got shapes {lengths}")
    return out


def write_table(table, path, *, overwrite: bool = False, inputs=()) -> Path:
    """Write a result table to ``.csv`` or ``.parquet`` atomically.

    Parameters
    ----------
    table : object with ``to_columns()`` or mapping name -> 1-D array
    path : path-like
        ``*.csv`` or ``*.parquet``.
    overwrite : bool
        Replace an existing file (never an input).
    inputs : iterable of path-like
        Paths that must not be overwritten.
    """
    cols = _columns(table)
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in (".csv", ".parquet"):
        raise InputError(f"cannot write a table to {str(p)!r}: use a .csv or .parquet suffix")
    with atomic_output(p, overwrite=overwrite, inputs=inputs) as tmp:
        if suffix == ".csv":
            names = list(cols)
            n = len(next(iter(cols.values())))
            with open(tmp, "w", newline="") as fh:
                w = csv.writer(fh)
                w.writerow(names)
                for i in range(n):
                    w.writerow([_cell(cols[k][i]) for k in names])
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            arrays = {k: (v.astype(str) if v.dtype.kind in "OUS" else v) for k, v in cols.items()}
            t = pa.table(arrays)
            meta = dict(t.schema.metadata or {})
            meta[b"tomo4d.units"] = json.dumps(column_units(cols)).encode()
            pq.write_table(t.replace_schema_metadata(meta), tmp)
    return p


def _cell(v):
    if isinstance(v, (np.floating, float)):
        return repr(float(v))
    if isinstance(v, (np.bool_, bool)):
        return str(bool(v))
    if isinstance(v, np.integer):
        return str(int(v))
    return str(v)


def read_table(path) -> dict[str, np.ndarray]:
    """Read a table written by :func:`write_table` back into ``{name: array}`` (CSV values are
    parsed as numbers where possible)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"table {str(p)!r} does not exist; check the path")
    if p.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        t = pq.read_table(p)
        return {k: t.column(k).to_numpy(zero_copy_only=False) for k in t.column_names}
    with open(p, newline="") as fh:
        rows = list(csv.reader(fh))
    if not rows:
        raise InputError(f"{str(p)!r} is empty")
    out = {}
    for j, name in enumerate(rows[0]):
        vals = [r[j] for r in rows[1:]]
        try:
            out[name] = np.array([float(v) for v in vals])
        except ValueError:
            out[name] = np.array(vals)
    return out
