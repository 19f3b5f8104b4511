"""Segmentation model files: which kind a file holds, loading it, and per-time-step model sets.

:func:`load_model` reads what ``.save()`` of :class:`~tomo4d.segment.PixelClassifier`,
:class:`~tomo4d.segment.UNetSegmenter` or :class:`StepModels` wrote (no pickle);
:func:`model_kind` tells them apart from the file's first bytes.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from pathlib import Path

from .._validate import show
from ..errors import FormatError, InputError
from ..io import atomic_output
from .forest import PixelClassifier
from .predict import predict_labels
from .unet import UNetSegmenter

__all__ = ["StepModels", "load_model", "model_kind"]

_SAFETENSORS_MAX_HEADER = 100 * 2**20


def model_kind(path) -> str:
    """``"rf"`` (pixel classifier, ``.npz``), ``"unet"`` (``.safetensors``) or ``"steps"`` (folder)."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"model {str(p)!r} does not exist; check the path")
    if p.is_dir():
        if (p / "index.json").is_file():
            return "steps"
        raise FormatError(f"{str(p)!r} is a folder without index.json; not a tomo4d model")
    with open(p, "rb") as fh:
        head = fh.read(9)
    if head[:4] == b"PK\x03\x04":
        return "rf"
    if len(head) == 9:
        n = int.from_bytes(head[:8], "little")
        if 0 < n < _SAFETENSORS_MAX_HEADER and head[8:9] == b"{":
            return "unet"
    raise FormatError(f"{str(p)!r} is neither a tomo4d pixel classifier (.npz) nor a U-Net (.safetensors)")


def load_model(path, *, device: str | None = None):
    """Load a pixel classifier, a U-Net or a folder of per-time-step models (no pickle).

    Parameters
    ----------
    path : path-like
        Written by ``.save()`` of :class:`PixelClassifier`, :class:`UNetSegmenter`
        or :class:`StepModels`.
    device : str, optional
        U-Net only: ``"cpu"`` or ``"cuda"`` (default: the GPU when present).
    """
    kind = model_kind(path)
    if kind == "rf":
        return PixelClassifier.load(path)
    if kind == "unet":
        return UNetSegmenter.load(path, device=device)
    return StepModels.load(path)


class StepModels:
    """Separate segmentation models for ranges of time steps.

    Contrast changes with lithiation, so the reference study trained one
    network for early and one for late steps.  ``ranges[i] = (first, last)``
    (inclusive step indices) selects ``models[i]``; ranges must not overlap,
    and every model must have the same classes.

    Parameters
    ----------
    ranges : sequence of (int, int)
    models : sequence of PixelClassifier or UNetSegmenter
    """

    def __init__(self, ranges: Sequence[tuple[int, int]], models: Sequence):
        if len(ranges) != len(models) or not models:
            raise InputError(f"give one model per range; got {len(ranges)} ranges and {len(models)} models")
        rs = []
        for r in ranges:
            a, b = (int(v) for v in r)
            if b < a:
                raise InputError(f"range {r!r} is empty; give (first, last) with first <= last")
            rs.append((a, b))
        order = sorted(range(len(rs)), key=lambda i: rs[i][0])
        for i, j in itertools.pairwise(order):
            if rs[j][0] <= rs[i][1]:
                raise InputError(f"step ranges {rs[i]} and {rs[j]} overlap; each step must have one model")
        classes = tuple(models[0].classes)
        for m in models[1:]:
            if tuple(m.classes) != classes:
                raise InputError(f"models have different classes ({classes} vs {tuple(m.classes)}); every time "
                                 "range must segment the same classes")
        self.ranges = tuple(rs)
        self.models = tuple(models)
        self.classes = classes

    def model_for(self, step: int):
        """The model whose range contains ``step``."""
        for (a, b), m in zip(self.ranges, self.models):
            if a <= int(step) <= b:
                return m
        raise InputError(f"no model covers time step {show(step)}; ranges: {list(self.ranges)}")

    def predict_labels(self, image, *, step: int, **kwargs):
        """Labels of ``image`` (time step ``step``) with that step's model."""
        return predict_labels(self.model_for(step), image, **kwargs)

    def save(self, folder, *, overwrite: bool = False) -> Path:
        """Write ``folder/index.json`` and one model file per range."""
        folder = Path(folder)
        with atomic_output(folder, overwrite=overwrite) as tmp:
            tmp.mkdir()
            entries = []
            for i, ((a, b), m) in enumerate(zip(self.ranges, self.models)):
                name = f"model_{i}_{a}-{b}" + (".safetensors" if m.kind == "unet" else ".npz")
                m.save(tmp / name)
                entries.append({"first": a, "last": b, "file": name, "kind": m.kind})
            (tmp / "index.json").write_text(json.dumps({"format": "tomo4d.step_models", "version": 1,
                                                        "models": entries}, indent=1))
        return folder

    @classmethod
    def load(cls, folder) -> StepModels:
        folder = Path(folder)
        idx = folder / "index.json"
        if not idx.is_file():
            raise InputError(f"{str(folder)!r} has no index.json; not a tomo4d step-models folder")
        entries = json.loads(idx.read_text())["models"]
        for e in entries:
            if Path(e["file"]).name != e["file"]:
                raise FormatError(f"{str(idx)!r}: model file {e['file']!r} must lie inside the folder")
        return cls([(e["first"], e["last"]) for e in entries], [load_model(folder / e["file"]) for e in entries])
