"""Content fingerprints of inputs and the cache keys of stages.

A stage's cache key is a hash of the content fingerprints of its inputs, its resolved options,
the keys of the stages it needs and the tomo4d version: paths and modification times alone never
decide that a result is still valid.

Fingerprint of a file (``"sha256:<hex>"``):

* up to :data:`FULL_HASH_BYTES` (64 MiB): SHA-256 of every byte;
* larger: SHA-256 of its size, its first and last :data:`BLOCK` (1 MiB) and :data:`SAMPLES` (32)
  blocks of 1 MiB at evenly spaced offsets.  A 16 GiB scan is fingerprinted by reading 34 MiB;
  an edit that changes no sampled byte and not the size goes unnoticed (re-run with a new output
  folder, or touch the options, to force a recomputation).

A folder (Zarr store, folder of slices) is fingerprinted by its sorted file list with sizes and
the fingerprints of up to :data:`SAMPLES` files at evenly spaced positions in that list plus
every metadata file (``*.json``, ``.z*``).  Sidecars of a raw file (``.vol.info``, ``.json``) are
part of its fingerprint.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

__all__ = ["BLOCK", "FULL_HASH_BYTES", "SAMPLES", "cache_key", "fingerprint"]

FULL_HASH_BYTES = 64 * 2**20
BLOCK = 2**20
SAMPLES = 32


def _file_digest(path: Path, h) -> None:
    size = path.stat().st_size
    h.update(f"{size}:".encode())
    with open(path, "rb") as fh:
        if size <= FULL_HASH_BYTES:
            for chunk in iter(lambda: fh.read(BLOCK), b""):
                h.update(chunk)
            return
        offsets = [0, size - BLOCK] + [int(k * (size - BLOCK) / (SAMPLES + 1)) for k in range(1, SAMPLES + 1)]
        for off in offsets:
            fh.seek(off)
            h.update(fh.read(BLOCK))


def _folder_digest(path: Path, h) -> None:
    files = sorted(p for p in path.rglob("*") if p.is_file())
    rel = [p.relative_to(path).as_posix() for p in files]
    h.update(json.dumps([(r, p.stat().st_size) for r, p in zip(rel, files)]).encode())
    picks = {int(k * (len(files) - 1) / max(SAMPLES - 1, 1)) for k in range(SAMPLES)} if files else set()
    picks |= {i for i, r in enumerate(rel) if r.endswith(".json") or Path(r).name.startswith(".z")}
    for i in sorted(picks):
        _file_digest(files[i], h)


def fingerprint(path) -> str:
    """Content fingerprint of a file or folder (see the module documentation)."""
    from ..io import sidecars

    p = Path(path)
    h = hashlib.sha256()
    if p.is_dir():
        _folder_digest(p, h)
    else:
        _file_digest(p, h)
        for s in sidecars(p):
            if s.is_file():
                h.update(s.name.encode())
                _file_digest(s, h)
    return "sha256:" + h.hexdigest()


def cache_key(*, stage: str, inputs: dict, options, needs: dict, extra=None) -> str:
    """Hash of a stage's input fingerprints, resolved options, needed stages' keys and the tomo4d version."""
    from .. import __version__

    payload = {"stage": stage, "inputs": inputs, "options": options, "needs": needs, "extra": extra,
               "tomo4d": __version__}
    text = json.dumps(payload, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:32]

