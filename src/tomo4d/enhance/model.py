"""A trained enhancement model and its directory on disk.

A model directory holds::

    weights.safetensors   network weights (safetensors: no pickle is ever loaded)
    config.json           format version, training config, intensity scalings, input dtype,
                          voxel sizes, recommended steps, provenance
    metrics.json          final validation metrics
    step_sweep.json       quality against the InDI step count on the validation slices, recommended N
                          (models trained before it lack it: they use recommended_steps, with a warning)
    validation_curve.json validation PSNR/SSIM against the training step, early stopping, under-training
                          flag (optional for loading; models trained before it lack it: the report says so)
    validation_curve.png  its figure
    training_log.jsonl    one JSON record per logged step (optional for loading)
    training_curve.png    loss and validation curves (optional for loading)
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._validate import check_device, check_path, show
from .._version import __version__
from ..errors import FormatError, InputError
from ..io import atomic_output, write_json
from .config import TrainConfig
from .data import Scaling

log = logging.getLogger(__name__)

MODEL_FORMAT = "tomo4d-enhance-model"
MODEL_FORMAT_VERSION = 1
WEIGHTS_FILE = "weights.safetensors"
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"
REQUIRED_FILES = (WEIGHTS_FILE, CONFIG_FILE, METRICS_FILE)


@dataclass(frozen=True)
class ModelInfo:
    """Everything about a model except its weights (the content of ``config.json``).

    Attributes
    ----------
    config : TrainConfig
        Network and training configuration.
    lq_scaling, hq_scaling : Scaling
        Intensity maps of LQ inputs and HQ targets to [-1, 1].
    input_dtype : str
        dtype of the LQ volume the model was trained on (inputs must match).
    lq_voxel_size_nm, hq_voxel_size_nm : (float, float, float)
        Voxel sizes of the training pair.
    recommended_steps : int
        InDI steps to use by default (1 for the one-step baselines).
    provenance : dict
        Inputs, registration, creation time, tomo4d version, steps trained.
    """

    config: TrainConfig
    lq_scaling: Scaling
    hq_scaling: Scaling
    input_dtype: str
    lq_voxel_size_nm: tuple[float, float, float]
    hq_voxel_size_nm: tuple[float, float, float]
    recommended_steps: int = 8
    provenance: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": MODEL_FORMAT,
            "format_version": MODEL_FORMAT_VERSION,
            "tomo4d_version": __version__,
            "config": self.config.to_dict(),
            "lq_scaling": self.lq_scaling.to_dict(),
            "hq_scaling": self.hq_scaling.to_dict(),
            "input_dtype": self.input_dtype,
            "lq_voxel_size_nm": list(self.lq_voxel_size_nm),
            "hq_voxel_size_nm": list(self.hq_voxel_size_nm),
            "recommended_steps": int(self.recommended_steps),
            "provenance": self.provenance,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, where: str = "config") -> ModelInfo:
        """Validate the content of a ``config.json`` (raises :class:`FormatError` naming ``where`` and the key)."""
        if not isinstance(d, dict):
            raise _damaged(where, f"holds a JSON {_json_type(d)} where an object with the model's fields belongs")
        if d.get("format") != MODEL_FORMAT:
            raise FormatError(f"{where} is not a tomo4d enhancement model (format={show(d.get('format'))}); "
                              "give a folder written by 'tomo4d enhance train -o'")
        if d.get("format_version") != MODEL_FORMAT_VERSION:
            raise FormatError(
                f"{where} was written by tomo4d {d.get('tomo4d_version', '?')} in model format version "
                f"{show(d.get('format_version'))}; this tomo4d reads version {MODEL_FORMAT_VERSION}: retrain the "
                "model with this version or use the tomo4d version that made it"
            )
        missing = [k for k in ("config", "lq_scaling", "hq_scaling", "input_dtype", "lq_voxel_size_nm",
                               "hq_voxel_size_nm") if k not in d]
        if missing:
            raise _damaged(where, f"lacks the field(s) {', '.join(missing)}")
        if not isinstance(d["config"], dict):
            raise _damaged(where, f"field config is a JSON {_json_type(d['config'])}, not an object")
        try:
            config = TrainConfig.from_dict(d["config"], what=f"training config in {where}", prefix="config.")
        except InputError as exc:
            raise _damaged(where, str(exc)) from None
        steps = d.get("recommended_steps", 8)
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise _damaged(where, f"field recommended_steps={show(steps)} is not a whole number >= 1")
        dtype = d["input_dtype"]
        try:
            ok_dtype = isinstance(dtype, str) and np.dtype(dtype).kind in "uif"
        except TypeError:
            ok_dtype = False
        if not ok_dtype:
            raise _damaged(where, f"field input_dtype={show(dtype)} is not a numeric dtype name such as 'uint16'")
        prov = d.get("provenance") or {}
        if not isinstance(prov, dict):
            raise _damaged(where, f"field provenance is a JSON {_json_type(prov)}, not an object")
        return cls(
            config=config,
            lq_scaling=_scaling(d["lq_scaling"], "lq_scaling", where),
            hq_scaling=_scaling(d["hq_scaling"], "hq_scaling", where),
            input_dtype=dtype,
            lq_voxel_size_nm=_voxel_size(d["lq_voxel_size_nm"], "lq_voxel_size_nm", where),
            hq_voxel_size_nm=_voxel_size(d["hq_voxel_size_nm"], "hq_voxel_size_nm", where),
            recommended_steps=steps,
            provenance=dict(prov),
        )


_FIX = ("retrain it with 'tomo4d enhance train', or give the folder that 'tomo4d enhance train -o' wrote "
        "(weights.safetensors, config.json and metrics.json of one run)")


def _damaged(where: str, what: str) -> FormatError:
    return FormatError(f"{where} {what}: the model folder is damaged or mixes files of different models; {_FIX}")


def _json_type(v) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(v), "number" if isinstance(v, (int, float)) else type(v).__name__)


def _real(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _scaling(v, key: str, where: str) -> Scaling:
    if not isinstance(v, dict) or set(v) != {"low", "high"}:
        raise _damaged(where, f"field {key}={show(v)} is not an object with exactly the keys low and high")
    lo, hi = v["low"], v["high"]
    if not (_real(lo) and _real(hi) and hi > lo):
        raise _damaged(where, f"field {key} (low={show(lo)}, high={show(hi)}) is not an intensity range: it needs "
                              "finite numbers with low < high")
    return Scaling(float(lo), float(hi))


def _voxel_size(v, key: str, where: str) -> tuple[float, float, float]:
    if not (isinstance(v, list) and len(v) == 3 and all(_real(x) and x > 0 for x in v)):
        raise _damaged(where, f"field {key}={show(v)} is not three positive voxel sizes in nm [z, y, x]")
    return tuple(float(x) for x in v)


class EnhanceModel:
    """A trained network with the information needed to apply it.

    Parameters
    ----------
    net : torch.nn.Module
        The :class:`~tomo4d.enhance.network.InDINet` (weights loaded).
    info : ModelInfo
        Configuration, scalings, dtype, voxel sizes, provenance.
    path : pathlib.Path, optional
        Folder it was loaded from.
    sweep : StepSweep, optional
        The validation sweep over the InDI step count (``step_sweep.json``; None for models
        trained before it, which then use ``info.recommended_steps`` with a warning).
    precision : {"fp32", "bf16", "fp16"}
        Autocast precision of inference by default (:mod:`tomo4d.enhance.precision`; fp16 needs CUDA);
        see :meth:`set_precision`.
    """

    def __init__(self, net, info: ModelInfo, path: Path | None = None, sweep=None, precision: str = "fp32"):
        from .precision import PRECISIONS

        if precision not in PRECISIONS:
            raise InputError(f"precision={show(precision)} is not one of {', '.join(PRECISIONS)}")
        self.net = net
        self.info = info
        self.path = path
        self.sweep = sweep
        self.precision = precision

    @property
    def objective(self) -> str:
        return self.info.config.objective

    @property
    def one_step(self) -> bool:
        """True for the regression CNN and GAN baselines (always one step at t = 1)."""
        return self.objective != "indi"

    @property
    def name(self) -> str:
        return str(self.path) if self.path is not None else f"<{self.objective} model>"

    def __repr__(self) -> str:
        n = self.info.config.network
        return (f"<EnhanceModel {self.objective} f={n.base_filters} depth={n.depth} "
                f"dilations={n.dilations} from {self.name}>")

    def device(self):
        return next(self.net.parameters()).device

    def to(self, device) -> EnhanceModel:
        """Move the network to ``device`` (checked: ``"cpu"``, ``"cuda"``, ``"cuda:N"``); returns self."""
        self.net.to(check_device("device", device))
        return self

    def set_precision(self, precision: str) -> EnhanceModel:
        """Autocast precision of this model's inference (``"fp32"``, ``"bf16"``; ``"fp16"`` on CUDA only),
        checked against its device; returns self."""
        from .precision import check_precision

        self.precision = check_precision("precision", precision, self.device())
        return self


def save_model(model: EnhanceModel, path, *, metrics: dict | None = None, overwrite: bool = True) -> Path:
    """Write ``weights.safetensors``, ``config.json`` and ``metrics.json`` into ``path`` (each atomically)."""
    from safetensors.torch import save_file

    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.net.state_dict().items()}
    with atomic_output(out / WEIGHTS_FILE, overwrite=overwrite) as tmp:
        save_file(state, str(tmp), metadata={"format": MODEL_FORMAT, "format_version": str(MODEL_FORMAT_VERSION)})
    _write_json(out / CONFIG_FILE, model.info.to_dict(), overwrite=overwrite)
    _write_json(out / METRICS_FILE, metrics or {}, overwrite=overwrite)
    model.path = out
    return out


def _write_json(path: Path, obj, *, overwrite: bool = True) -> None:
    write_json(obj, path, overwrite=overwrite, default=_json_default)


def _json_default(o):
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, (Path, _dt.datetime)):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def load_model(path, *, device: str | None = None, precision: str = "fp32") -> EnhanceModel:
    """Load a model folder written by :func:`tomo4d.enhance.train` (safetensors only, no pickle).

    ``device``: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` (default: CUDA when available), checked by
    :func:`tomo4d._validate.check_device` before anything is read.  ``precision``: autocast precision of its
    inference (``"fp32"`` default, ``"bf16"``, ``"fp16"`` on CUDA only; :mod:`tomo4d.enhance.precision`),
    checked against the device before anything is read.

    Raises
    ------
    InputError
        The folder is missing, lacks a file, or ``device`` is not usable here.
    FormatError
        ``config.json`` is not a model configuration (not JSON, wrong shape, missing or
        garbled fields, degenerate intensity scaling), was written in another model format
        version, or ``weights.safetensors`` is not a safetensors file or does not fit the
        configuration.
    """
    import torch

    from .network import InDINet
    from .precision import check_precision
    from .steps import load_sweep

    dev = check_device("device", device)
    check_precision("precision", precision, dev)
    p = Path(check_path("model", path))
    if not p.is_dir():
        what = "is a file, not a folder" if p.exists() else "does not exist"
        raise InputError(f"model folder {str(p)!r} {what}; give the -o folder of 'tomo4d enhance train'")
    missing = [f for f in REQUIRED_FILES if not (p / f).is_file()]
    if missing:
        raise InputError(f"model folder {str(p)!r} lacks {', '.join(missing)}; it is incomplete "
                         "(interrupted training?): resume or rerun 'tomo4d enhance train'")
    cfg_path = str(p / CONFIG_FILE)
    cfg = read_json(p / CONFIG_FILE, what="model configuration", fix=_FIX)
    info = ModelInfo.from_dict(cfg, where=repr(cfg_path))
    net = InDINet(info.config.network)
    state = read_safetensors(p / WEIGHTS_FILE, what="network weights", fix=_FIX)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        detail = [ln.strip() for ln in str(exc).splitlines()[1:] if ln.strip()][:1]
        raise FormatError(f"weights in {str(p / WEIGHTS_FILE)!r} do not fit its config.json ({first} "
                          f"{' '.join(detail)}); the folder mixes files of different models or versions: "
                          f"{_FIX}") from None
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(v.isfinite().all())]
    if bad:
        raise FormatError(f"weights in {str(p / WEIGHTS_FILE)!r} hold NaN/Inf values (tensor {bad[0]}"
                          f"{f' and {len(bad) - 1} more' if len(bad) > 1 else ''}): the training diverged or the "
                          f"file is damaged; {_FIX}")
    net.eval()
    # channels-last weights: ~1.3-1.5x faster convolutions on CPU (measured, benchmarks/RESULTS.md); the input
    # tiles follow (tiles.Tiler)
    net.to(dev, memory_format=torch.channels_last)
    return EnhanceModel(net, info, p, sweep=load_sweep(p) if info.config.objective == "indi" else None,
                        precision=precision)


def read_json(path: Path, *, what: str, fix: str):
    """Parse a JSON file written by tomo4d; :class:`FormatError` naming ``path`` when it is not JSON."""
    try:
        text = Path(path).read_bytes().decode("utf-8")
        return json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FormatError(f"{str(path)!r} is not a JSON {what} ({type(exc).__name__}: {exc}); {fix}") from None
    except OSError as exc:
        raise FormatError(f"{str(path)!r} cannot be read ({exc.strerror or exc}); {fix}") from None


def read_safetensors(path: Path, *, what: str, fix: str) -> dict:
    """Load a safetensors file into CPU tensors; :class:`FormatError` naming ``path`` for anything else."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError, TypeError) as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise FormatError(f"{str(path)!r} is not a safetensors file of {what} ({first}); tomo4d never loads "
                          f"pickles: {fix}") from None
