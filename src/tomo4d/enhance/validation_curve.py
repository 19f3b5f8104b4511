"""Validation during training: PSNR/SSIM against the training step, under-training flag, early stopping.

Every ``TrainConfig.val_every`` steps (and at the end) the :class:`~tomo4d.enhance.Trainer` restores up to 4
held-out validation slices of the pair with ``TrainConfig.val_steps`` InDI steps (no gradients, inference
mode, the training precision, a fixed noise seed) and records, in the normalised units of training
([-1, 1] = the HQ training slices' 0.1-99.9 percentile range, so data range 2):

* ``val_psnr_db`` / ``val_ssim``: the model's output against HQ;
* ``val_psnr_lq_db`` / ``val_ssim_lq``: the bicubic-upsampled LQ against HQ (the baseline; constant).

The records go to the training log (and so through every checkpoint: a resumed run continues the curve
and still ends with bit-identical weights); at the end the curve is written to the model folder as
``validation_curve.json`` (:class:`ValidationCurve`) and ``validation_curve.png``.

Under-training (stated rule): the *late rise* is the PSNR of the last evaluation minus the best PSNR of
the evaluations at or before 75 % of the steps trained.  When it exceeds :data:`UNDERTRAINED_DB`
(0.1 dB) the validation PSNR was still rising in the last quarter of the run (where the one-cycle
schedule has already lowered the learning rate): the model is flagged *under-trained*, i.e. more
steps would likely help.  With fewer than two evaluations (or none at or before 75 %), it is not
measurable (``undertrained = None``).

Early stopping (``TrainConfig.early_stop_patience`` > 0, in evaluations; ``early_stop_min_delta_db``):
an evaluation *improves* when its PSNR exceeds the best so far by more than the minimum delta; after
``patience`` evaluations in a row without improvement training stops.  The weights of the best
evaluation (highest PSNR seen) are kept (and checkpointed) and, when they beat the final weights on
validation, they are the model that is saved; ``validation_curve.json`` and the model's
``metrics.json``/``config.json`` provenance state the step, PSNR and whether the best weights were used.
Without early stopping the final weights are saved (as before).

Models trained before this module have no ``validation_curve.json``: :func:`load_curve` returns None and
the report says so (their training log, when present, still holds the sparse validation records).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..errors import FormatError

CURVE_JSON = "validation_curve.json"
CURVE_PNG = "validation_curve.png"
#: a late rise above this (dB) flags the model as under-trained
UNDERTRAINED_DB = 0.1
#: the late part of the run: evaluations after this fraction of the steps trained
LATE_FRACTION = 0.75


@dataclass(frozen=True)
class ValidationCurve:
    """Validation PSNR/SSIM against the training step (see the module docstring).

    Attributes
    ----------
    steps : tuple of int
        Training steps of the evaluations (the last one: end of training).
    psnr_db, ssim : tuple of float
        The model's output (``val_steps`` InDI steps) against HQ, normalised units (data range 2).
    psnr_lq_db, ssim_lq : float
        Bicubic LQ against HQ on the same slices.
    val_steps : int
        InDI steps of every evaluation.
    every : int
        Training steps between evaluations (0: only at the end).
    steps_planned, steps_trained : int
        Configured steps and steps actually done (fewer after an early stop).
    late_rise_db : float
        PSNR of the last evaluation minus the best at or before 75 % of the steps (NaN: not measurable).
    undertrained : bool or None
        ``late_rise_db > UNDERTRAINED_DB`` (None: not measurable).
    early_stopping : dict or None
        ``patience``, ``min_delta_db``, ``stopped_early``, ``best_step``, ``best_psnr_db``,
        ``used_best`` (the saved weights are those of ``best_step``); None when off.
    precision : str
        Autocast precision of training and of these evaluations.
    """

    steps: tuple[int, ...]
    psnr_db: tuple[float, ...]
    ssim: tuple[float, ...]
    psnr_lq_db: float
    ssim_lq: float
    val_steps: int
    every: int
    steps_planned: int
    steps_trained: int
    late_rise_db: float
    undertrained: bool | None
    early_stopping: dict | None = None
    precision: str = "fp32"

    def to_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self), default=float))

    @classmethod
    def from_dict(cls, d: dict, *, where: str = CURVE_JSON) -> ValidationCurve:
        try:
            kw = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
            kw["steps"] = tuple(int(v) for v in kw["steps"])
            for k in ("psnr_db", "ssim"):
                kw[k] = tuple(float("nan") if v is None else float(v) for v in kw[k])
            out = cls(**kw)
        except (KeyError, TypeError, ValueError) as exc:
            raise FormatError(f"{where} is not a complete validation curve ({type(exc).__name__}: {exc}); "
                              "delete it (the model still loads) or retrain") from None
        if len(out.psnr_db) != len(out.steps) or len(out.ssim) != len(out.steps):
            raise FormatError(f"{where}: the curves do not have one value per evaluation; delete it or retrain")
        return out

    @property
    def summary(self) -> str:
        """One sentence: last PSNR, late rise and the under-training verdict, early stopping."""
        if not self.steps:
            return "no validation evaluations"
        txt = (f"validation PSNR {self.psnr_db[-1]:.2f} dB at step {self.steps[-1]} (bicubic {self.psnr_lq_db:.2f} "
               f"dB, {self.val_steps} InDI steps); ")
        if self.undertrained is None:
            txt += "under-training not measurable (fewer than 2 evaluations)"
        elif self.undertrained:
            txt += (f"UNDER-TRAINED: +{self.late_rise_db:.2f} dB in the last {100 * (1 - LATE_FRACTION):.0f} % of "
                    f"the steps (> {UNDERTRAINED_DB:g} dB): train longer")
        else:
            txt += (f"converged: {self.late_rise_db:+.2f} dB in the last {100 * (1 - LATE_FRACTION):.0f} % of the "
                    f"steps (<= {UNDERTRAINED_DB:g} dB)")
        es = self.early_stopping
        if es:
            txt += (f"; early stopping (patience {es['patience']}, min delta {es['min_delta_db']:g} dB): "
                    + (f"stopped at step {self.steps_trained} of {self.steps_planned}" if es["stopped_early"]
                       else "ran to the end")
                    + f", best step {es['best_step']} ({es['best_psnr_db']:.2f} dB)"
                    + (" saved" if es["used_best"] else ", final weights saved"))
        return txt


def late_rise(steps, psnr) -> float:
    """PSNR of the last evaluation minus the best at or before ``LATE_FRACTION`` of the last step (NaN when
    there are fewer than two evaluations or none that early)."""
    steps, psnr = list(steps), [float(v) for v in psnr]
    if len(steps) < 2:
        return float("nan")
    early = [p for s, p in zip(steps[:-1], psnr[:-1]) if s <= LATE_FRACTION * steps[-1] and math.isfinite(p)]
    if not early or not math.isfinite(psnr[-1]):
        return float("nan")
    return psnr[-1] - max(early)


def curve_from_log(records: list[dict], *, config, steps_trained: int, early_stopping: dict | None = None
                   ) -> ValidationCurve:
    """The :class:`ValidationCurve` of a training log (records with ``val_psnr_db``)."""
    vals = [r for r in records if "val_psnr_db" in r]
    steps = tuple(int(r["step"]) for r in vals)
    psnr = tuple(float(r["val_psnr_db"]) for r in vals)
    ssim = tuple(float(r.get("val_ssim", float("nan"))) for r in vals)
    rise = late_rise(steps, psnr)
    last = vals[-1] if vals else {}
    return ValidationCurve(steps, psnr, ssim, float(last.get("val_psnr_lq_db", float("nan"))),
                           float(last.get("val_ssim_lq", float("nan"))), int(config.val_steps),
                           int(config.val_every), int(config.steps), int(steps_trained), float(rise),
                           None if not math.isfinite(rise) else bool(rise > UNDERTRAINED_DB), early_stopping,
                           str(config.precision))


class EarlyStopping:
    """Patience counter over the validation PSNR (see the module docstring); its state is a JSON dict."""

    def __init__(self, patience: int, min_delta_db: float):
        self.patience, self.min_delta = int(patience), float(min_delta_db)
        self.best_psnr = -math.inf     # highest PSNR seen (its weights are kept)
        self.ref_psnr = -math.inf      # PSNR that the next evaluation must beat by min_delta
        self.best_step = 0
        self.wait = 0
        self.stopped = False

    @property
    def on(self) -> bool:
        return self.patience > 0

    def update(self, step: int, psnr: float) -> bool:
        """Record an evaluation; True when it is the best so far (its weights should be kept)."""
        best = math.isfinite(psnr) and psnr > self.best_psnr
        if best:
            self.best_psnr, self.best_step = float(psnr), int(step)
        if math.isfinite(psnr) and psnr > self.ref_psnr + self.min_delta:
            self.ref_psnr, self.wait = float(psnr), 0
        else:
            self.wait += 1
        if self.on and self.wait >= self.patience:
            self.stopped = True
        return best

    def state(self) -> dict:
        return {"best_psnr": self.best_psnr if math.isfinite(self.best_psnr) else None,
                "ref_psnr": self.ref_psnr if math.isfinite(self.ref_psnr) else None,
                "best_step": self.best_step, "wait": self.wait, "stopped": self.stopped}

    def load(self, state: dict) -> None:
        self.best_psnr = -math.inf if state.get("best_psnr") is None else float(state["best_psnr"])
        self.ref_psnr = -math.inf if state.get("ref_psnr") is None else float(state["ref_psnr"])
        self.best_step, self.wait = int(state["best_step"]), int(state["wait"])
        self.stopped = bool(state["stopped"])

    def report(self, *, used_best: bool, stopped_early: bool) -> dict | None:
        if not self.on:
            return None
        return {"patience": self.patience, "min_delta_db": self.min_delta, "stopped_early": bool(stopped_early),
                "best_step": self.best_step, "best_psnr_db": self.best_psnr, "used_best": bool(used_best)}


def save_curve(curve: ValidationCurve, model_dir) -> Path:
    from .model import _write_json

    path = Path(model_dir) / CURVE_JSON
    _write_json(path, curve.to_dict())
    return path


def load_curve(model_dir) -> ValidationCurve | None:
    """The stored curve, or None for a model folder without one (trained before it existed)."""
    from .model import read_json

    path = Path(model_dir) / CURVE_JSON
    if not path.is_file():
        return None
    d = read_json(path, what="validation curve", fix="delete it (the model still loads) or retrain")
    if not isinstance(d, dict):
        raise FormatError(f"{str(path)!r} holds no validation curve object; delete it or retrain")
    return ValidationCurve.from_dict(d, where=repr(str(path)))


def curve_figure(curve: ValidationCurve):
    """Validation PSNR and SSIM against the training step, bicubic dashed, the best (early stopping) and
    the late part of the run marked; the verdict in the title.  A matplotlib Figure (object API)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 2.8))
    for j, (key, ref, label) in enumerate((("psnr_db", curve.psnr_lq_db, "validation PSNR (dB)"),
                                           ("ssim", curve.ssim_lq, "validation SSIM"))):
        ax = fig.add_subplot(1, 2, j + 1)
        vals = np.asarray(getattr(curve, key), float)
        ax.plot(curve.steps, vals, "o-", ms=3, label=f"InDI ({curve.val_steps} steps)")
        if math.isfinite(ref):
            ax.axhline(ref, color="k", ls="--", lw=1, label="bicubic")
        if curve.steps:
            ax.axvspan(LATE_FRACTION * curve.steps[-1], curve.steps[-1], color="0.9", zorder=0)
        es = curve.early_stopping
        if es and es.get("best_step"):
            ax.axvline(es["best_step"], color="r", lw=0.8, label="best (saved)" if es["used_best"] else "best")
        ax.set_xlabel("training step")
        ax.set_ylabel(label)
        if j == 0:
            ax.legend(fontsize=7)
    verdict = ("under-trained" if curve.undertrained else "converged" if curve.undertrained is False
               else "verdict not measurable")
    fig.suptitle(f"validation during training: {verdict} (late rise {curve.late_rise_db:+.2f} dB, "
                 f"shaded: last {100 * (1 - LATE_FRACTION):.0f} %; {curve.precision})", fontsize=9)
    fig.tight_layout()
    return fig


def write_curve_figure(path, curve: ValidationCurve) -> Path:
    from .._figure import figure_png
    from ..io import atomic_output

    with atomic_output(Path(path), overwrite=True) as tmp:
        tmp.write_bytes(figure_png(curve_figure(curve)))
    return Path(path)
