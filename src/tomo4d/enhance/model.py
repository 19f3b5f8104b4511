"""A trained enhancement model and its directory on disk.

A model directory holds::

    weights.safetensors   network weights (safetensors: no pickle is ever loaded)
    config.json           format version, training config, intensity scalings, input dtype,
                          voxel sizes, recommended steps, provenance
    metrics.json          final validation metrics
    training_log.jsonl    one JSON record per logged step (optional for loading)
    training_curve.png    loss and validation curves (optional for loading)
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
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
        from .. import __version__

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
        if d.get("format") != MODEL_FORMAT:
            raise InputError(f"{where} is not a tomo4d enhancement model (format={d.get('format')!r}); "
                             "give a folder written by 'tomo4d enhance train'")
        if d.get("format_version") != MODEL_FORMAT_VERSION:
            raise InputError(
                f"{where} was written by tomo4d {d.get('tomo4d_version', '?')} in model format version "
                f"{d.get('format_version')!r}; this tomo4d reads version {MODEL_FORMAT_VERSION}: retrain the "
                "model with this version or use the tomo4d version that made it"
            )
        try:
            return cls(
                config=TrainConfig.from_dict(d["config"]),
                lq_scaling=Scaling(**d["lq_scaling"]),
                hq_scaling=Scaling(**d["hq_scaling"]),
                input_dtype=str(d["input_dtype"]),
                lq_voxel_size_nm=tuple(float(v) for v in d["lq_voxel_size_nm"]),
                hq_voxel_size_nm=tuple(float(v) for v in d["hq_voxel_size_nm"]),
                recommended_steps=int(d.get("recommended_steps", 8)),
                provenance=dict(d.get("provenance") or {}),
            )
        except (KeyError, TypeError) as exc:
            raise InputError(f"{where} lacks or garbles the field {exc}; the model folder is damaged, retrain it") from None


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
    """

    def __init__(self, net, info: ModelInfo, path: Path | None = None):
        self.net = net
        self.info = info
        self.path = path

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
        self.net.to(device)
        return self


def save_model(model: EnhanceModel, path, *, metrics: dict | None = None, overwrite: bool = True) -> Path:
    """Write ``weights.safetensors``, ``config.json`` and ``metrics.json`` into ``path`` (each atomically)."""
    from safetensors.torch import save_file

    from ..io import atomic_output

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
    from ..io import atomic_output

    with atomic_output(path, overwrite=overwrite) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, default=_json_default), encoding="utf-8")


def _json_default(o):
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, (Path, _dt.datetime)):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def load_model(path, *, device: str | None = None) -> EnhanceModel:
    """Load a model folder written by :func:`tomo4d.enhance.train` (safetensors only, no pickle).

    Raises
    ------
    InputError
        The folder is missing, lacks a file, was written in another model format
        version, or its weights do not fit its configuration.
    """
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from .network import InDINet

    p = Path(path)
    if not p.is_dir():
        raise InputError(f"model folder {str(p)!r} does not exist; give the -o folder of 'tomo4d enhance train'")
    missing = [f for f in REQUIRED_FILES if not (p / f).is_file()]
    if missing:
        raise InputError(f"model folder {str(p)!r} lacks {', '.join(missing)}; it is incomplete "
                         "(interrupted training?): resume or rerun 'tomo4d enhance train'")
    try:
        cfg = json.loads((p / CONFIG_FILE).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(f"{str(p / CONFIG_FILE)!r} is not valid JSON ({exc}); the model folder is damaged") from None
    info = ModelInfo.from_dict(cfg, where=str(p / CONFIG_FILE))
    net = InDINet(info.config.network)
    try:
        state = load_file(str(p / WEIGHTS_FILE))
    except (SafetensorError, OSError, ValueError) as exc:
        raise InputError(f"{str(p / WEIGHTS_FILE)!r} is not a readable safetensors file ({exc}); retrain") from None
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise InputError(f"weights in {str(p)!r} do not fit its config.json ({first}); the folder mixes files "
                         "of different models or versions: retrain") from None
    net.eval()
    dev = torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    net.to(dev)
    return EnhanceModel(net, info, p)
