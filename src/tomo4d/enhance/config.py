"""Configuration of the enhancement network and of its training (validated, JSON-serialisable).

Three presets exist: ``"reference"`` (the network and recipe of the reference
study, for a GPU), ``"small"`` (trains to a visible gain in minutes on two CPU
cores; the demo uses it) and ``"tiny"`` (unit tests).  Any field can be
overridden: ``TrainConfig.preset("small", steps=500)``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..errors import InputError

PRESETS = ("tiny", "small", "reference")
OBJECTIVES = ("indi", "regression", "gan")


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

    base_filters: int = Field(64, ge=2, le=512)
    depth: int = Field(2, ge=1, le=5)
    dilations: tuple[int, ...] = (2, 4, 8)
    time_dim: int = Field(64, ge=4, le=1024)
    first_kernel: int = Field(7, ge=1, le=15)

    @field_validator("dilations")
    @classmethod
    def _dil(cls, v):
        if not v or any(int(d) < 1 for d in v):
            raise ValueError("dilations must be one or more integers >= 1")
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
        Fraction of slices held out for validation (a contiguous block).
    val_every : int
        Validation every this many steps (0: only at the end).
    val_steps : int
        InDI steps used for the validation metrics.
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
    loss_threshold: float = Field(0.5, gt=0)
    steps: int = Field(1000, ge=1)
    batch_size: int = Field(2, ge=1)
    crop: int = Field(640, ge=8)
    max_lr: float = Field(5e-4, gt=0, lt=1)
    warmup_fraction: float = Field(0.1, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    grad_clip: float = Field(1.0, ge=0)
    divergence_factor: float = Field(4.0, ge=0)
    t_point_mass: float = Field(0.1, ge=0, le=1)
    noise_std: float = Field(0.01, ge=0)
    gan_weight: float = Field(0.01, ge=0)
    val_fraction: float = Field(0.1, gt=0, lt=0.9)
    val_every: int = Field(0, ge=0)
    val_steps: int = Field(8, ge=1, le=200)
    checkpoint_every: int = Field(200, ge=0)
    percentiles: tuple[float, float] = (0.1, 99.9)
    seed: int = 0

    @model_validator(mode="after")
    def _check(self):
        m = self.network.multiple
        if self.crop % m:
            raise ValueError(f"crop={self.crop} must be a multiple of 2**network.depth={m}")
        lo, hi = self.percentiles
        if not (0 <= lo < hi <= 100):
            raise ValueError("percentiles must satisfy 0 <= low < high <= 100")
        return self

    # -- construction ---------------------------------------------------------------
    @classmethod
    def preset(cls, name: str = "small", **overrides) -> TrainConfig:
        """A named preset (``"tiny"``, ``"small"``, ``"reference"``) with fields overridden.

        ``network`` may be overridden by a dict of network fields that are merged
        into the preset's network.
        """
        if name not in PRESETS:
            raise InputError(f"preset={name!r} is not known; use one of {', '.join(PRESETS)}")
        base = _PRESETS[name]
        data = base.model_dump()
        net = overrides.pop("network", None)
        if isinstance(net, NetworkConfig):
            net = net.model_dump()
        if net:
            data["network"] = {**data["network"], **dict(net)}
        data.update(overrides)
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data) -> TrainConfig:
        """Validate a dictionary (raises :class:`InputError` naming the bad field)."""
        try:
            return cls.model_validate(dict(data))
        except ValidationError as exc:
            raise InputError(_pydantic_message("training config", exc)) from None

    @classmethod
    def from_json(cls, path) -> TrainConfig:
        """Read a JSON file; a ``"preset"`` key selects the preset the other keys override."""
        p = Path(path)
        if not p.is_file():
            raise InputError(f"config file {str(p)!r} does not exist; check the path")
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise InputError(f"config file {str(p)!r} is not valid JSON ({exc})") from None
        if not isinstance(data, dict):
            raise InputError(f"config file {str(p)!r} must hold a JSON object")
        preset = data.pop("preset", None)
        if preset is not None:
            return cls.preset(preset, **data)
        return cls.from_dict(data)

    def to_dict(self) -> dict:
        """JSON-serialisable dictionary (inverse of :meth:`from_dict`)."""
        return json.loads(self.model_dump_json())


def _pydantic_message(what: str, exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(x) for x in err.get("loc", ()))
        parts.append(f"{loc or what}={err.get('input')!r}: {err.get('msg')}")
    return f"invalid {what}: " + "; ".join(parts) + " (fix these fields)"


_PRESETS = {
    "reference": TrainConfig(),
    "small": TrainConfig(
        network=NetworkConfig(base_filters=16, depth=2, dilations=(2, 4), time_dim=32),
        steps=600, batch_size=4, crop=64, max_lr=2e-3, checkpoint_every=200, val_every=200,
    ),
    "tiny": TrainConfig(
        network=NetworkConfig(base_filters=8, depth=1, dilations=(2,), time_dim=16, first_kernel=5),
        steps=60, batch_size=2, crop=32, max_lr=3e-3, checkpoint_every=0, val_every=0, val_steps=4,
    ),
}
