"""Configuration of the enhancement network and of its training (validated, JSON-serialisable).

Three presets exist: ``"reference"`` (the network and recipe of the reference
study, for a GPU), ``"small"`` (trains to a visible gain in minutes on two CPU
cores; the demo uses it) and ``"tiny"`` (unit tests).  Any field can be
overridden: ``TrainConfig.preset("small", steps=500)``.
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from .._validate import check_path, show
from ..errors import InputError
from .steps import DEFAULT_SWEEP, MAX_SWEEP_STEPS

PRESETS = ("tiny", "small", "reference")
OBJECTIVES = ("indi", "regression", "gan")


def _whole(v):
    """The project's integer policy (as ``tomo4d._validate.check_int``): no bools, no strings, 8.0 is 8."""
    if isinstance(v, (bool, str)) or (hasattr(v, "dtype") and v.dtype.kind == "b"):
        raise ValueError("must be a whole number, not a string or boolean")
    if isinstance(v, numbers.Real) and not isinstance(v, numbers.Integral):
        if not math.isfinite(v) or not float(v).is_integer():
            raise ValueError("must be a whole number")
        return int(v)
    if isinstance(v, numbers.Integral):
        return int(v)
    return v


def _real(v):
    """The project's number policy (as ``tomo4d._validate.check_number``): no bools, no strings, finite."""
    if isinstance(v, (bool, str)) or (hasattr(v, "dtype") and v.dtype.kind == "b"):
        raise ValueError("must be a number, not a string or boolean")
    if isinstance(v, numbers.Real):
        if not math.isfinite(v):
            raise ValueError("must be a finite number")
        return float(v)
    return v


Int = Annotated[int, BeforeValidator(_whole)]
Real = Annotated[float, BeforeValidator(_real)]


class NetworkConfig(BaseModel):
    """Shape of the U-Net-like InDI network.

    Attributes
    ----------
    base_filters : int
        Filters of the first level; doubled by every down block (64 in the reference).
    depth : int
        Number of down/up blocks (stride-2 each); the input size must be a
        multiple of ``2**depth`` (inference pads automatically).
    dilations : tuple of int
        Dilation rates of the dilated 3x3 convolutions in the bottleneck; a
        plain 3x3 convolution follows them.
    time_dim : int
        Length of the sin/cos embedding of t.
    first_kernel : int
        Kernel size of the first and last convolution (7 in the reference).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    base_filters: Int = Field(64, ge=2, le=512)
    depth: Int = Field(2, ge=1, le=5)
    dilations: tuple[Int, ...] = (2, 4, 8)
    time_dim: Int = Field(64, ge=4, le=1024)
    first_kernel: Int = Field(7, ge=1, le=15)

    @field_validator("dilations")
    @classmethod
    def _dil(cls, v):
        if not v or len(v) > 8 or any(int(d) < 1 or int(d) > 64 for d in v):
            raise ValueError("dilations must be 1 to 8 whole numbers in [1, 64]")
        return tuple(int(d) for d in v)

    @field_validator("first_kernel")
    @classmethod
    def _odd(cls, v):
        if v % 2 != 1:
            raise ValueError("first_kernel must be odd")
        return v

    @property
    def multiple(self) -> int:
        """Input sizes must be multiples of this (``2**depth``)."""
        return 2 ** self.depth


class TrainConfig(BaseModel):
    """Everything that defines a training run (and therefore a model).

    Attributes
    ----------
    network : NetworkConfig
        Network shape.
    objective : {"indi", "regression", "gan"}
        ``"indi"``: Inversion by Direct Iteration; ``"regression"``: the same
        network trained to map LQ to HQ in one step (CNN baseline); ``"gan"``:
        the same generator in one step with an added patch-discriminator loss.
    loss : {"berhu", "l1", "l2"}
        ``"berhu"`` is the reference loss: absolute error below
        ``loss_threshold``, squared error (continuous) above.
    loss_threshold : float
        Switch point of the berhu loss, in normalised [-1, 1] units (0.5).
    steps : int
        Optimiser steps.
    batch_size : int
        Crops per step.
    crop : int
        Side of the random square training crops in (upsampled) pixels; a
        multiple of ``2**network.depth``.
    max_lr : float
        Peak learning rate of the one-cycle cosine schedule.
    warmup_fraction : float
        Fraction of the steps spent rising to ``max_lr``.
    weight_decay : float
        AdamW weight decay.
    grad_clip : float
        Largest gradient norm (clipped above it; 0: no clipping).
    divergence_factor : float
        Divergence guard: when the training loss averaged over a window of steps exceeds this
        multiple of the best such average (or is not finite), the network and optimiser go back
        to their last healthy state and the learning rate is halved for the rest of the run
        (recorded in the training log).  0: off (a non-finite loss still rolls back).
    t_point_mass : float
        Probability that t is exactly 1 (pure LQ input); otherwise t ~ U(0, 1).
    noise_std : float
        Standard deviation (normalised units) of the noise term eps_t = t * noise_std * n.
    gan_weight : float
        Weight of the adversarial loss (objective ``"gan"`` only).
    val_fraction : float
        Fraction of slices held out for validation: short blocks spread through the depth (top, middle,
        bottom) with guard slices that do not train (:func:`tomo4d.enhance.holdout.holdout_split`).
    val_every : int
        Validation (PSNR and SSIM of up to 4 held-out slices, no gradients) every this many steps (0: only
        at the end); the curve goes to ``validation_curve.json`` with an under-training flag
        (:mod:`tomo4d.enhance.validation_curve`).
    val_steps : int
        InDI steps used for the validation metrics during training.
    early_stop_patience : int
        Early stopping: stop after this many validations in a row without an improvement of more than
        ``early_stop_min_delta_db``; the best validated weights are saved (0: off; needs ``val_every``).
    early_stop_min_delta_db : float
        Smallest validation-PSNR gain (dB) that counts as an improvement.
    precision : {"fp32", "bf16", "fp16"}
        Autocast precision of the network in training (and of its validation):
        :mod:`tomo4d.enhance.precision` (fp16: CUDA only).
    sweep_steps : tuple of int
        Step counts of the validation sweep that ends an InDI training (1..50; see
        :mod:`tomo4d.enhance.steps`); the model's recommended N comes from it.
    step_rule : {"balanced", "distortion", "sharpness"}
        Rule that picks the recommended N from the sweep (:func:`tomo4d.enhance.steps.recommend`).
    checkpoint_every : int
        Checkpoint every this many steps (0: never).
    percentiles : (float, float)
        Robust percentiles mapped to -1 and +1.
    seed : int
        Seed of every random choice of the run.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    network: NetworkConfig = NetworkConfig()
    objective: Literal["indi", "regression", "gan"] = "indi"
    loss: Literal["berhu", "l1", "l2"] = "berhu"
    loss_threshold: Real = Field(0.5, gt=0)
    steps: Int = Field(1000, ge=1)
    batch_size: Int = Field(2, ge=1)
    crop: Int = Field(640, ge=8)
    max_lr: Real = Field(5e-4, gt=0, lt=1)
    warmup_fraction: Real = Field(0.1, ge=0, lt=1)
    weight_decay: Real = Field(0.0, ge=0)
    grad_clip: Real = Field(1.0, ge=0)
    divergence_factor: Real = Field(4.0, ge=0)
    t_point_mass: Real = Field(0.1, ge=0, le=1)
    noise_std: Real = Field(0.01, ge=0)
    gan_weight: Real = Field(0.01, ge=0)
    val_fraction: Real = Field(0.1, gt=0, lt=0.9)
    val_every: Int = Field(100, ge=0)
    val_steps: Int = Field(8, ge=1, le=200)
    early_stop_patience: Int = Field(0, ge=0)
    early_stop_min_delta_db: Real = Field(0.05, ge=0)
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    sweep_steps: tuple[Int, ...] = DEFAULT_SWEEP
    step_rule: Literal["balanced", "distortion", "sharpness"] = "balanced"
    checkpoint_every: Int = Field(200, ge=0)
    percentiles: tuple[Real, Real] = (0.1, 99.9)
    seed: Int = Field(0, ge=0)

    @field_validator("sweep_steps")
    @classmethod
    def _sweep(cls, v):
        if not v or any(not 1 <= int(n) <= MAX_SWEEP_STEPS for n in v):
            raise ValueError(f"sweep_steps must be 1 or more step counts in 1..{MAX_SWEEP_STEPS}")
        return tuple(sorted({int(n) for n in v}))

    @model_validator(mode="after")
    def _check(self):
        m = self.network.multiple
        if self.crop % m:
            raise ValueError(f"crop={self.crop} must be a multiple of 2**network.depth={m}")
        lo, hi = self.percentiles
        if not (0 <= lo < hi <= 100):
            raise ValueError("percentiles must satisfy 0 <= low < high <= 100")
        if self.early_stop_patience and not self.val_every:
            raise ValueError("early_stop_patience > 0 needs validations during training: set val_every > 0")
        return self

    # -- construction ---------------------------------------------------------------
    @classmethod
    def preset(cls, name: str = "small", /, **overrides) -> TrainConfig:
        """A named preset (``"tiny"``, ``"small"``, ``"reference"``) with fields overridden.

        ``network`` may be overridden by a dict of network fields that are merged
        into the preset's network.
        """
        if not isinstance(name, str) or name not in PRESETS:
            raise InputError(f"preset={show(name)} is not known; use one of {', '.join(PRESETS)}")
        base = _PRESETS[name]
        data = base.model_dump()
        net = overrides.pop("network", None)
        if isinstance(net, NetworkConfig):
            net = net.model_dump()
        if net is not None and not isinstance(net, Mapping):
            raise InputError(f"network={show(net)} is not a set of network fields; give an object such as "
                             '{"base_filters": 16, "depth": 2}')
        if net:
            data["network"] = {**data["network"], **dict(net)}
        data.update(overrides)
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data, *, what: str = "training config", prefix: str = "") -> TrainConfig:
        """Validate a mapping (raises :class:`InputError` naming every bad field by its key path).

        ``what`` names the source in the message (e.g. the file); ``prefix`` is put before the
        key paths (``"config."`` inside a model's ``config.json``).
        """
        if not isinstance(data, Mapping):
            raise InputError(f"{what} is a {type(data).__name__}, not a set of fields; give an object (dict) "
                             f"of TrainConfig fields such as {{\"steps\": 500}}")
        bad_keys = [k for k in data if not isinstance(k, str)]
        if bad_keys:
            raise InputError(f"{what} has non-text key(s) {show(bad_keys)}; field names are strings")
        try:
            return cls.model_validate(dict(data))
        except ValidationError as exc:
            raise InputError(_pydantic_message(what, exc, prefix)) from None

    @classmethod
    def from_json(cls, path) -> TrainConfig:
        """Read a JSON file; a ``"preset"`` key selects the preset the other keys override."""
        p = Path(check_path("config", path))
        if not p.is_file():
            what = "is a folder" if p.is_dir() else "does not exist"
            raise InputError(f"config file {str(p)!r} {what}; give a JSON file of training fields (--config)")
        try:
            data = json.loads(p.read_bytes().decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InputError(f"config file {str(p)!r} is not valid JSON ({exc}); write an object such as "
                             '{"preset": "small", "steps": 500}') from None
        if not isinstance(data, dict):
            raise InputError(f"config file {str(p)!r} holds a JSON {type(data).__name__}; it must hold an object "
                             'such as {"preset": "small", "steps": 500}')
        preset = data.pop("preset", None)
        try:
            if preset is not None:
                return cls.preset(preset, **data)
            return cls.from_dict(data)
        except InputError as exc:
            raise InputError(f"config file {str(p)!r}: {exc}") from None

    def to_dict(self) -> dict:
        """JSON-serialisable dictionary (inverse of :meth:`from_dict`)."""
        return json.loads(self.model_dump_json())


def _pydantic_message(what: str, exc: ValidationError, prefix: str = "") -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(x) for x in err.get("loc", ()))
        msg = str(err.get("msg", "")).removeprefix("Value error, ")
        if err.get("type") == "extra_forbidden":
            known = sorted(NetworkConfig.model_fields if loc.startswith("network.") else TrainConfig.model_fields)
            parts.append(f"{prefix}{loc} is not a field (known: {', '.join(known)})")
        elif loc:
            parts.append(f"{prefix}{loc}={show(err.get('input'))}: {msg}")
        else:
            parts.append(msg)
    return f"invalid {what}: " + "; ".join(parts) + " (fix these fields)"


_PRESETS = {
    "reference": TrainConfig(),
    "small": TrainConfig(
        network=NetworkConfig(base_filters=16, depth=2, dilations=(2, 4), time_dim=32),
        steps=600, batch_size=4, crop=64, max_lr=2e-3, checkpoint_every=200, val_every=50,
    ),
    "tiny": TrainConfig(
        network=NetworkConfig(base_filters=8, depth=1, dilations=(2,), time_dim=16, first_kernel=5),
        steps=60, batch_size=2, crop=32, max_lr=3e-3, checkpoint_every=0, val_every=0, val_steps=4,
    ),
}
