"""Training: InDI (and the one-step CNN / GAN baselines) on one registered LQ/HQ pair.

The :class:`Trainer` owns the network, optimiser(s) and random generator; it
checkpoints all of them (safetensors + JSON, atomically) every
``checkpoint_every`` steps, so that an interrupted run resumed from its last
checkpoint ends with exactly the weights of an uninterrupted run.

Validation during training (the PSNR/SSIM curve, the under-training flag and early stopping) is defined in
:mod:`tomo4d.enhance.validation_curve`; the numeric precision (fp32, bf16, fp16 autocast) in
:mod:`tomo4d.enhance.precision`.  Both are part of the checkpointed state (the early-stopping counter,
the best validated weights, the fp16 gradient scaler).

(~740 lines on purpose: the Trainer's state - network, optimisers, generator, early stopping, gradient
scaler, checkpoints - and the training entry points that drive it must change together for the bit-exact
resume to hold.)
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as _dt
import json
import logging
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from .._figure import figure_png
from .._threads import torch_seeded, torch_threaded
from .._validate import check_device, check_finite, check_path, show
from .._version import __version__
from ..errors import FormatError, InputError, OverwriteError
from ..io import atomic_output
from .config import TrainConfig
from .data import Scaling, TrainingPair, prepare_pair
from .holdout import spread_pick
from .model import (
    CONFIG_FILE,
    EnhanceModel,
    ModelInfo,
    _write_json,
    read_json,
    read_safetensors,
    save_model,
)
from .precision import autocast, check_precision, grad_scaler
from .sample import restore_slices
from .steps import save_sweep, validation_sweep, write_sweep_figure
from .validation_curve import CURVE_PNG, EarlyStopping, curve_from_log, save_curve, write_curve_figure

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
LOG_FILE = "training_log.jsonl"
CURVE_FILE = "training_curve.png"
VAL_KEYS = ("val_psnr_db", "val_ssim", "val_psnr_lq_db", "val_ssim_lq")
SWEEP_FIGURE = "step_sweep.png"


@dataclass(frozen=True)
class TrainResult:
    """Outcome of :func:`train`.

    Attributes
    ----------
    model_dir : pathlib.Path
        Folder of the trained model.
    steps : int
        Optimiser steps done in total.
    resumed_from_step : int
        Step of the checkpoint the run resumed from (0: fresh start).
    final_loss : float
        Mean training loss over the last 10% of the steps (normalised units).
    val_psnr_db : float
        PSNR (dB, data range 2 in [-1, 1] units) of the model's output on the held-out slices.
    val_psnr_lq_db : float
        PSNR (dB) of the bicubic-upsampled LQ on the same slices (the baseline to beat).
    seconds : float
        Wall time of this call in s.
    device : str
        ``"cpu"`` or ``"cuda"``.
    rollbacks : int
        Times the divergence guard restored a healthy state (each halved the learning rate;
        the events are in the training log).
    recommended_steps : int
        InDI steps recommended by the validation sweep (1 for the one-step baselines).
    step_rule : str or None
        Rule of that recommendation (None without a sweep).
    stopped_early : bool
        Early stopping ended the run before ``config.steps``.
    best_step : int or None
        Step of the best validated weights (early stopping on; None otherwise).
    undertrained : bool or None
        Validation PSNR still rising in the last quarter of the run
        (:mod:`tomo4d.enhance.validation_curve`; None: not measurable).
    """

    model_dir: Path
    steps: int
    resumed_from_step: int
    final_loss: float
    val_psnr_db: float
    val_psnr_lq_db: float
    seconds: float
    device: str
    rollbacks: int = 0
    recommended_steps: int = 1
    step_rule: str | None = None
    stopped_early: bool = False
    best_step: int | None = None
    undertrained: bool | None = None


def one_cycle_lr(step: int, total: int, *, max_lr: float, warmup_fraction: float) -> float:
    """One-cycle cosine schedule: max_lr/25 -> max_lr (cosine) -> max_lr/1e4 (cosine)."""
    warm = int(round(warmup_fraction * total))
    lo, end = max_lr / 25.0, max_lr / 1e4
    if step < warm:
        p = step / max(warm, 1)
        return lo + (max_lr - lo) * 0.5 * (1 - math.cos(math.pi * p))
    p = (step - warm) / max(total - warm, 1)
    return end + (max_lr - end) * 0.5 * (1 + math.cos(math.pi * min(p, 1.0)))


def loss_fn(pred, target, mask, *, kind: str, threshold: float):
    """Masked mean loss: ``"l1"``, ``"l2"`` or ``"berhu"`` (|e| below threshold, (e^2 + c^2)/(2c) above)."""
    import torch

    e = (pred - target).abs()
    if kind == "l1":
        v = e
    elif kind == "l2":
        v = e * e
    else:
        c = threshold
        v = torch.where(e <= c, e, (e * e + c * c) / (2 * c))
    return (v * mask).sum() / mask.sum().clamp_min(1.0)


def _psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray, data_range: float = 2.0) -> float:
    mse = float(np.mean((a[mask].astype(np.float64) - b[mask]) ** 2)) if mask.any() else float("nan")
    return float(10 * np.log10(data_range ** 2 / mse)) if mse > 0 else float("inf")


class Trainer:
    """Stateful training loop with checkpoints.

    Parameters
    ----------
    lq, hq : ndarray (z, y, x) float32
        Aligned pair on the HQ grid, already mapped to [-1, 1].
    mask : ndarray bool (z, y, x)
        Valid voxels (field of view and LQ coverage).
    train_slices, val_slices : sequence of int
        z indices used for training and validation.
    config : TrainConfig
        The run's configuration.
    device : str, optional
        ``"cuda"`` or ``"cpu"`` (default: cuda when available).
    """

    def __init__(self, lq, hq, mask, train_slices, val_slices, config: TrainConfig, *, device: str | None = None):
        import torch

        from .network import InDINet, PatchDiscriminator

        self.cfg = config
        self.lq, self.hq, self.mask = lq, hq, mask
        self.train_slices = np.asarray(train_slices, int)
        self.val_slices = np.asarray(val_slices, int)
        c = config.crop
        if c > lq.shape[1] or c > lq.shape[2]:
            raise InputError(f"crop={c} is larger than the slices ({lq.shape[1]} x {lq.shape[2]} on the HQ grid); "
                             "choose a smaller crop in the config")
        self.device = check_device("device", device)
        self.precision = check_precision("config.precision", config.precision, self.device)
        self.scaler = grad_scaler(self.precision, self.device)     # fp16 on CUDA only
        self.stopper = EarlyStopping(config.early_stop_patience, config.early_stop_min_delta_db)
        #: the best validated network weights (kept with early stopping on)
        self.best_net: dict | None = None
        self._lq_ssim: float | None = None
        self.disc = self.opt_d = None
        with torch_seeded(config.seed):  # the initial weights; torch's global random state left as it was
            self.net = InDINet(config.network).to(self.device)
            if config.objective == "gan":
                self.disc = PatchDiscriminator(max(8, config.network.base_filters)).to(self.device)
        self.opt = torch.optim.AdamW(self.net.parameters(), lr=config.max_lr, weight_decay=config.weight_decay)
        if self.disc is not None:
            self.opt_d = torch.optim.AdamW(self.disc.parameters(), lr=config.max_lr, betas=(0.5, 0.999))
        self.rng = np.random.default_rng(config.seed)
        self.step = 0
        self.log: list[dict] = []
        #: learning-rate multiplier, halved at every roll-back of the divergence guard
        self.lr_scale = 1.0
        self._healthy = None
        self._precompute_valid_windows()

    # -- data -------------------------------------------------------------------------
    def _precompute_valid_windows(self):
        c = self.cfg.crop
        m = self.mask[self.train_slices].astype(np.float32)
        # fraction of valid voxels in every c x c window (integral images)
        ii = np.pad(m.cumsum(1).cumsum(2), ((0, 0), (1, 0), (1, 0)))
        frac = (ii[:, c:, c:] - ii[:, :-c, c:] - ii[:, c:, :-c] + ii[:, :-c, :-c]) / (c * c)
        ok = np.argwhere(frac >= 0.9)
        if len(ok) == 0:
            best = float(frac.max()) if frac.size else 0.0
            raise InputError(f"no {c} x {c} training crop is at least 90% inside the field of view "
                             f"(best {best:.0%}); choose a smaller crop")
        self.windows = ok

    def sample_batch(self):
        cfg, rng = self.cfg, self.rng
        c = cfg.crop
        pick = self.windows[rng.integers(len(self.windows), size=cfg.batch_size)]
        ys, xs, ms = [], [], []
        for s_i, y0, x0 in pick:
            z = self.train_slices[s_i]
            sl = (z, slice(y0, y0 + c), slice(x0, x0 + c))
            a, b, m = self.lq[sl], self.hq[sl], self.mask[sl].astype(np.float32)
            k = int(rng.integers(4))
            flip = bool(rng.integers(2))
            a, b, m = (np.rot90(v, k) for v in (a, b, m))
            if flip:
                a, b, m = (v[:, ::-1] for v in (a, b, m))
            ys.append(a), xs.append(b), ms.append(m)
        y = np.ascontiguousarray(np.stack(ys)[:, None], np.float32)
        x = np.ascontiguousarray(np.stack(xs)[:, None], np.float32)
        m = np.ascontiguousarray(np.stack(ms)[:, None], np.float32)
        if cfg.objective == "indi":
            t = rng.random(cfg.batch_size).astype(np.float32)
            t[rng.random(cfg.batch_size) < cfg.t_point_mass] = 1.0
            noise = rng.standard_normal(x.shape, dtype=np.float32)
        else:
            t = np.ones(cfg.batch_size, np.float32)
            noise = np.zeros(x.shape, np.float32)
        return y, x, m, t, noise

    # -- one step ---------------------------------------------------------------------
    def train_step(self) -> float:
        import torch
        from torch.nn import functional as F

        cfg = self.cfg
        y, x, m, t, noise = self.sample_batch()
        dev = self.device
        y, x, m, noise = (torch.from_numpy(v).to(dev) for v in (y, x, m, noise))
        tt = torch.from_numpy(t).to(dev)
        tb = tt[:, None, None, None]
        xt = (1 - tb) * x + tb * y + tb * cfg.noise_std * noise if cfg.objective == "indi" else y
        lr = self.lr_scale * one_cycle_lr(self.step, cfg.steps, max_lr=cfg.max_lr, warmup_fraction=cfg.warmup_fraction)
        for g in self.opt.param_groups:
            g["lr"] = lr
        self.net.train()
        with autocast(self.precision, dev):
            pred = self.net(xt, tt).float()
            loss = loss_fn(pred, x, m, kind=cfg.loss, threshold=cfg.loss_threshold)
            if self.disc is not None:
                logits = self.disc(pred).float()
                adv = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))
                total = loss + cfg.gan_weight * adv
            else:
                total = loss
        self.opt.zero_grad(set_to_none=True)
        if not bool(torch.isfinite(total)):
            self.step += 1          # no update from a non-finite loss; the guard rolls back
            return float("nan")
        self._backward_step(total, self.opt, self.net)
        if self.disc is not None:
            for g in self.opt_d.param_groups:
                g["lr"] = lr
            with autocast(self.precision, dev):
                lr_real = self.disc(x).float()
                lr_fake = self.disc(pred.detach()).float()
                d_loss = (F.binary_cross_entropy_with_logits(lr_real, torch.ones_like(lr_real))
                          + F.binary_cross_entropy_with_logits(lr_fake, torch.zeros_like(lr_fake)))
            self.opt_d.zero_grad(set_to_none=True)
            self._backward_step(d_loss, self.opt_d, self.disc)
        if self.scaler is not None:
            self.scaler.update()
        self.step += 1
        return float(loss.detach())

    def _backward_step(self, loss, opt, module) -> None:
        """Backward pass, gradient clipping and optimiser step (through the fp16 gradient scaler if any)."""
        import torch

        clip = self.cfg.grad_clip
        if self.scaler is None:
            loss.backward()
            if clip > 0:
                torch.nn.utils.clip_grad_norm_(module.parameters(), clip)
            opt.step()
            return
        self.scaler.scale(loss).backward()
        if clip > 0:
            self.scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(module.parameters(), clip)
        self.scaler.step(opt)

    # -- divergence guard ---------------------------------------------------------------
    def _state(self) -> dict:
        return copy.deepcopy({name: obj.state_dict() for name, obj in
                              (("net", self.net), ("opt", self.opt), ("disc", self.disc), ("optd", self.opt_d))
                              if obj is not None})

    def guard(self, window_loss: float, best: float) -> str | None:
        """Check a window's mean loss; keep a healthy state, or roll back to it and halve the rate.

        Returns the event text of a roll-back (None when healthy).
        """
        factor = self.cfg.divergence_factor
        diverged = not np.isfinite(window_loss) or (factor > 0 and np.isfinite(best) and window_loss > factor * best)
        if not diverged:
            self._healthy = (self.step, self._state())
            return None
        self.lr_scale *= 0.5
        what = f"loss {window_loss:.4g} > {factor:g} x best {best:.4g}"
        if self._healthy is None:           # nothing healthy kept yet (e.g. just resumed): slow down only
            return f"{what}: learning rate x{self.lr_scale:g}"
        step, state = self._healthy
        for name, obj in (("net", self.net), ("opt", self.opt), ("disc", self.disc), ("optd", self.opt_d)):
            if obj is not None:
                obj.load_state_dict(state[name])
        return f"{what}: weights of step {step} restored, learning rate x{self.lr_scale:g}"

    # -- validation -------------------------------------------------------------------
    def validate(self, *, max_slices: int = 4) -> dict:
        """PSNR (dB) and SSIM of the model output and of the bicubic LQ on held-out slices (normalised units,
        data range 2): ``val_psnr_db``, ``val_ssim``, ``val_psnr_lq_db``, ``val_ssim_lq``.

        No gradients (inference mode), the training precision, a fixed noise seed; the trainer's random
        generator is not touched (the resume stays bit-exact).
        """
        from ..quality import ssim

        zs = np.asarray(spread_pick(self.val_slices, max_slices), int)     # from every validation block
        model = EnhanceModel(self.net, _stub_info(self.cfg), precision=self.precision)
        self.net.eval()
        out = restore_slices(model, self.lq[zs], steps=self.cfg.val_steps, seed=12345, slice_ids=list(zs),
                             tile=max(self.lq.shape[1:]) + 64, overlap=0, batch=len(zs))
        m, ref = self.mask[zs], self.hq[zs]

        def mean_ssim(img):
            return float(np.mean([ssim(ref[k], img[k], data_range=2.0, mask=m[k]) for k in range(len(zs))]))

        if self._lq_ssim is None:
            self._lq_ssim = mean_ssim(self.lq[zs])
        return {"val_psnr_db": _psnr(out, ref, m), "val_ssim": mean_ssim(out),
                "val_psnr_lq_db": _psnr(self.lq[zs], ref, m), "val_ssim_lq": self._lq_ssim}

    def track(self, step: int, val: dict) -> None:
        """Feed a validation to early stopping; keep the weights of the best one (early stopping on)."""
        if self.stopper.update(step, val["val_psnr_db"]) and self.stopper.on:
            self.best_net = {k: v.detach().clone() for k, v in self.net.state_dict().items()}

    # -- checkpoints ------------------------------------------------------------------
    def _tensors(self) -> dict:
        out = {}
        for name, mod in (("net", self.net), ("disc", self.disc)):
            if mod is not None:
                for k, v in mod.state_dict().items():
                    out[f"{name}.{k}"] = v.detach().cpu().contiguous()
        for name, opt in (("opt", self.opt), ("optd", self.opt_d)):
            if opt is not None:
                for i, st in opt.state_dict()["state"].items():
                    for k, v in st.items():
                        out[f"{name}.state.{i}.{k}"] = v.detach().cpu().contiguous().clone()
        for k, v in (self.best_net or {}).items():
            out[f"best.{k}"] = v.detach().cpu().contiguous()
        return out

    def save_checkpoint(self, folder: Path) -> None:
        """Write ``checkpoint.safetensors`` and ``checkpoint.json`` into ``folder`` (atomically)."""
        from safetensors.torch import save_file

        folder.mkdir(parents=True, exist_ok=True)
        groups = {name: opt.state_dict()["param_groups"] for name, opt in (("opt", self.opt), ("optd", self.opt_d))
                  if opt is not None}
        with atomic_output(folder / "checkpoint.safetensors", overwrite=True) as tmp:
            save_file(self._tensors(), str(tmp))
        state = {"step": self.step, "config": self.cfg.to_dict(), "rng": self.rng.bit_generator.state,
                 "param_groups": groups, "log": self.log, "lr_scale": self.lr_scale,
                 "early_stopping": self.stopper.state(),
                 "scaler": self.scaler.state_dict() if self.scaler is not None else None}
        _write_json(folder / "checkpoint.json", state)

    def load_checkpoint(self, folder: Path) -> int:
        """Restore the state saved by :meth:`save_checkpoint`; returns the step.

        A checkpoint that is not one (not JSON, fields missing or of the wrong type, tensors
        that are not safetensors or do not fit the network) raises :class:`FormatError` naming
        the file and how to start over; the trainer is then in an undefined state (discard it).
        """
        folder = Path(folder)
        meta_path, tensor_path = folder / "checkpoint.json", folder / "checkpoint.safetensors"
        fix = (f"delete the folder {str(folder)!r}, or start over with resume=False (--no-resume) or "
               "overwrite=True (--overwrite)")
        meta = read_json(meta_path, what="training checkpoint", fix=fix)
        need = {"step": int, "config": dict, "rng": dict, "param_groups": dict, "log": list}
        if not isinstance(meta, dict):
            raise FormatError(f"{str(meta_path)!r} holds a JSON {type(meta).__name__}, not a checkpoint object; {fix}")
        for key, kind in need.items():
            if key not in meta:
                raise FormatError(f"{str(meta_path)!r} lacks the field {key!r}: it is not a complete tomo4d training "
                                  f"checkpoint; {fix}")
            if not isinstance(meta[key], kind) or isinstance(meta[key], bool):
                raise FormatError(f"{str(meta_path)!r} field {key!r} is a {type(meta[key]).__name__}, not a "
                                  f"{kind.__name__}: the checkpoint is damaged; {fix}")
        if not 0 <= meta["step"] <= self.cfg.steps:
            raise FormatError(f"{str(meta_path)!r} is at step {meta['step']}, outside 0..{self.cfg.steps} of this "
                              f"run; {fix}")
        if not _same_config(meta["config"], self.cfg):
            raise InputError(f"the checkpoint in {str(folder)!r} was made with another training config; "
                             "use the same config to resume, or pass overwrite=True (--overwrite) to start over")
        if not tensor_path.is_file():
            raise FormatError(f"{str(tensor_path)!r} is missing beside its checkpoint.json; {fix}")
        tensors = read_safetensors(tensor_path, what="a training checkpoint", fix=fix)
        try:
            self._restore(meta, tensors)
        except (KeyError, IndexError, TypeError, ValueError, RuntimeError) as exc:
            first = (str(exc).splitlines() or [type(exc).__name__])[0]
            raise FormatError(f"the checkpoint in {str(folder)!r} does not fit this network and optimiser "
                              f"({type(exc).__name__}: {first}); it is damaged or from another tomo4d version; "
                              f"{fix}") from None
        return self.step

    def _restore(self, meta: dict, tensors: dict) -> None:
        for name, mod in (("net", self.net), ("disc", self.disc)):
            if mod is not None:
                mod.load_state_dict({k[len(name) + 1:]: v for k, v in tensors.items() if k.startswith(name + ".")})
        for name, opt in (("opt", self.opt), ("optd", self.opt_d)):
            if opt is None:
                continue
            state: dict[int, dict] = {}
            prefix = f"{name}.state."
            for k, v in tensors.items():
                if k.startswith(prefix):
                    i, key = k[len(prefix):].split(".", 1)
                    state.setdefault(int(i), {})[key] = v.to(self.device) if key != "step" else v
            groups = meta["param_groups"][name]
            for g in groups:
                if "betas" in g:
                    g["betas"] = tuple(g["betas"])
            opt.load_state_dict({"state": state, "param_groups": groups})
            # a state tensor of the wrong shape would only fail at the next optimiser step
            for group in opt.param_groups:
                for prm in group["params"]:
                    for key, v in opt.state.get(prm, {}).items():
                        if key != "step" and hasattr(v, "shape") and v.shape != prm.shape:
                            raise ValueError(f"optimiser state {name}.{key} has shape {tuple(v.shape)}, "
                                             f"parameter {tuple(prm.shape)}")
        self.rng.bit_generator.state = meta["rng"]
        self.step = int(meta["step"])
        self.log = list(meta["log"])
        self.lr_scale = float(meta.get("lr_scale", 1.0))
        # checkpoints older than early stopping and precision lack these (they were fp32 without early stopping)
        if meta.get("early_stopping"):
            self.stopper.load(meta["early_stopping"])
        best = {k[5:]: v.to(self.device) for k, v in tensors.items() if k.startswith("best.")}
        self.best_net = best or None
        if self.scaler is not None and meta.get("scaler"):
            self.scaler.load_state_dict(meta["scaler"])


def _same_config(saved, cfg: TrainConfig) -> bool:
    """A checkpoint's config equals ``cfg`` once its missing fields take their defaults (a checkpoint
    written before a field existed resumes when the run uses that field's default)."""
    try:
        return TrainConfig.from_dict(saved).to_dict() == cfg.to_dict()
    except InputError:
        return False


def _stub_info(cfg: TrainConfig) -> ModelInfo:
    return ModelInfo(cfg, Scaling(-1.0, 1.0), Scaling(-1.0, 1.0), "float32", (2.0,) * 3, (1.0,) * 3,
                     cfg.val_steps if cfg.objective == "indi" else 1)


def train(lq, hq, out_dir, *, config: TrainConfig | None = None, register: bool = True, phi0=None,
          fov: bool = True, resume: bool = True, overwrite: bool = False, device: str | None = None,
          route: str = "auto", progress: Callable[[int, int], None] | None = None) -> TrainResult:
    """Train an enhancement model on one LQ/HQ pair and write the model folder.

    Parameters
    ----------
    lq, hq : Volume
        The training pair (LQ voxel = 2 x HQ voxel; LQ may cover a larger field).
    out_dir : path-like
        Model folder (created).  Checkpoints go to ``out_dir/checkpoints``.
    config : TrainConfig, optional
        Default ``TrainConfig.preset("small")``.
    register : bool
        Align LQ onto HQ with :func:`tomo4d.register.register`; without it the
        pair is aligned by translation only (or by ``phi0``).
    phi0 : array (4, 4), optional
        Known HQ-voxel -> upsampled-LQ-voxel transform (origin at voxel 0).
    fov : bool
        Mask the circular field of view.
    resume : bool
        Continue from the checkpoint in ``out_dir`` when there is one.
    overwrite : bool
        Replace an existing finished model (or discard its checkpoint).
    device : str, optional
        ``"cuda"`` or ``"cpu"``; default cuda when available (mixed precision).
    route : {"auto", "volume", "slices"}
        3D pair, or 2D slice pairs (a stack, or one pair cut into strips of twice the crop);
        see :func:`tomo4d.enhance.prepare_pair`.
    progress : callable(done, total), optional
        Called after every step with the number of steps done.
    """
    check_device("device", device)
    cfg = config or TrainConfig.preset("small")
    if not isinstance(cfg, TrainConfig):
        raise InputError(f"config={show(cfg)} is not a TrainConfig; build one with TrainConfig.preset(...) or "
                         "TrainConfig.from_json(path)")
    check_precision("config.precision", cfg.precision, check_device("device", device))   # before the pair work
    from .slice_pairs import as_slice_volume

    lq, hq = as_slice_volume(lq, name="lq"), as_slice_volume(hq, name="hq")
    out = Path(check_path("out_dir", out_dir))
    for src in (lq.source, hq.source):
        if src is not None and (out.resolve() == Path(src).resolve() or Path(src).resolve() in out.resolve().parents):
            raise OverwriteError(f"model folder {str(out)!r} would overwrite the input {str(src)!r}; choose another")
    pair = prepare_pair(lq, hq, register=register, phi0=phi0, val_fraction=cfg.val_fraction, fov=fov, route=route,
                        strip=2 * cfg.crop)
    provenance = {"route": pair.route,"lq": str(lq.source) if lq.source else lq.metadata.name,
                  "hq": str(hq.source) if hq.source else hq.metadata.name,
                  "registration": pair.registration, "phi_hq_to_lq_up": pair.phi.tolist(),
                  "train_slices": [int(pair.train_slices[0]), int(pair.train_slices[-1])],
                  "val_slices": [int(pair.val_slices[0]), int(pair.val_slices[-1])]}
    return train_on_pair(pair, out, config=cfg, input_dtype=str(lq.dtype), resume=resume, overwrite=overwrite,
                         device=device, progress=progress, provenance=provenance)


@torch_threaded  # tomo4d.threads / --threads / the CPUs this process may use; restored after
def train_on_pair(pair: TrainingPair, out_dir, *, config: TrainConfig, input_dtype: str, resume: bool = True,
                  overwrite: bool = False, device: str | None = None,
                  progress: Callable[[int, int], None] | None = None, provenance: dict | None = None) -> TrainResult:
    """Train on an already prepared :class:`~tomo4d.enhance.data.TrainingPair` (see :func:`train`)."""
    import torch

    t_start = time.perf_counter()
    cfg = config
    check_precision("config.precision", cfg.precision, check_device("device", device))
    out = Path(out_dir)
    ckdir = out / CHECKPOINT_DIR
    check_finite("pair.lq (the registered LQ of --lq)", pair.lq)
    check_finite("pair.hq (--hq)", pair.hq)
    if (out / CONFIG_FILE).exists() and not overwrite:
        raise OverwriteError(f"model folder {str(out)!r} already holds a trained model; choose another folder "
                             "or pass overwrite=True (--overwrite)")
    if overwrite and ckdir.exists():
        shutil.rmtree(ckdir)
    train_mask = pair.mask[list(pair.train_slices)]
    lq_scaling = Scaling.from_data(pair.lq[list(pair.train_slices)], percentiles=cfg.percentiles, mask=train_mask)
    hq_scaling = Scaling.from_data(pair.hq[list(pair.train_slices)], percentiles=cfg.percentiles, mask=train_mask)
    lq_n, hq_n = lq_scaling.forward(pair.lq), hq_scaling.forward(pair.hq)
    trainer = Trainer(lq_n, hq_n, pair.mask, pair.train_slices, pair.val_slices, cfg, device=device)
    start = 0
    if resume and (ckdir / "checkpoint.json").exists():
        start = trainer.load_checkpoint(ckdir)
        log.info("resumed training from step %d", start)
    _run_steps(trainer, cfg, ckdir, progress)
    stopped_early = trainer.step < cfg.steps
    if stopped_early:          # stopped right after the validation of this step
        final = {k: trainer.log[-1][k] for k in VAL_KEYS}
    else:
        final = trainer.validate()
        last = [r["loss"] for r in trainer.log if "loss" in r]
        trainer.log.append({"step": trainer.step, "loss": last[-1] if last else float("nan"), **final})
    used_best = _keep_best(trainer, final, new=not stopped_early)
    if used_best:
        final = next(r for r in trainer.log if r["step"] == trainer.stopper.best_step and "val_psnr_db" in r)
    val, val_lq = final["val_psnr_db"], final["val_psnr_lq_db"]
    early = trainer.stopper.report(used_best=used_best, stopped_early=stopped_early)
    curve = curve_from_log(trainer.log, config=cfg, steps_trained=trainer.step, early_stopping=early)
    tail = [r["loss"] for r in trainer.log if "loss" in r][-max(1, len(trainer.log) // 10):]
    final_loss = float(np.mean(tail))
    prov = dict(provenance or {})
    prov.setdefault("route", pair.route)
    if pair.split is not None:         # the validation split (tomo4d.enhance.holdout): every held-out slice
        prov.update({**pair.split.to_dict(), "val_slices": [int(z) for z in pair.val_slices]})
    prov.update({"created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
                 "tomo4d_version": __version__, "steps_trained": trainer.step, "seed": cfg.seed,
                 "device": trainer.device.type, "torch_version": torch.__version__, "precision": cfg.precision,
                 "early_stopping": early,
                 "degradation_sigma_px": estimate_degradation_sigma(pair.lq, pair.hq, pair.mask)})
    info = ModelInfo(cfg, lq_scaling, hq_scaling, input_dtype, pair.lq_voxel_size_nm, pair.hq_voxel_size_nm,
                     cfg.val_steps if cfg.objective == "indi" else 1, prov)
    model = EnhanceModel(trainer.net.eval(), info)
    sweep = None
    if cfg.objective == "indi":    # the step count chosen by validation on the held-out slices
        sweep = validation_sweep(model, pair, steps=cfg.sweep_steps, rule=cfg.step_rule, seed=12345)
        info = dataclasses.replace(info, recommended_steps=sweep.recommended_steps)
        model = EnhanceModel(model.net, info, sweep=sweep)
    rollbacks = sum(1 for r in trainer.log if "event" in r)
    metrics = {"val_psnr_db": val, "val_psnr_lq_db": val_lq, "final_loss": final_loss, "steps": trainer.step,
               "val_steps": cfg.val_steps, "recommended_steps": info.recommended_steps,
               "step_rule": cfg.step_rule if sweep is not None else None, "rollbacks": rollbacks,
               "val_ssim": final["val_ssim"], "val_ssim_lq": final["val_ssim_lq"], "precision": cfg.precision,
               "early_stopping": early, "stopped_early": stopped_early,
               "late_rise_db": curve.late_rise_db, "undertrained": curve.undertrained}
    _write_outputs(out, model, sweep, metrics, trainer.log, curve, ckdir)
    return TrainResult(out, trainer.step, start, final_loss, val, val_lq, time.perf_counter() - t_start,
                       trainer.device.type, rollbacks, int(info.recommended_steps),
                       cfg.step_rule if sweep is not None else None, stopped_early,
                       trainer.stopper.best_step if early else None, curve.undertrained)


def _run_steps(trainer: Trainer, cfg: TrainConfig, ckdir: Path, progress) -> None:
    """The training loop from ``trainer.step`` on: the divergence guard, the log, validation, checkpoints."""
    log_every = max(1, cfg.steps // 200)
    guard_every = max(25, log_every)
    best = min((r["loss"] for r in trainer.log if "loss" in r and np.isfinite(r["loss"])), default=float("inf"))
    losses: list[float] = []
    recent: list[float] = []        # losses since the last check of the divergence guard
    while trainer.step < cfg.steps and not trainer.stopper.stopped:
        loss = trainer.train_step()
        recent.append(loss)
        if np.isfinite(loss):
            losses.append(loss)
        s = trainer.step
        if len(recent) >= guard_every or not np.isfinite(loss):
            window = float(np.mean(recent))
            recent = []
            event = trainer.guard(window, best)
            if event is None:
                best = min(best, window)
            else:
                log.warning("training step %d: %s", s, event)
                trainer.log.append({"step": s, "event": event,
                                    "window_loss": window if np.isfinite(window) else None})
        rec = {}
        if s % log_every == 0 or s == cfg.steps:
            rec = {"step": s, "loss": float(np.mean(losses[-log_every:])) if losses else float("nan"),
                   "lr": trainer.lr_scale * one_cycle_lr(s - 1, cfg.steps, max_lr=cfg.max_lr,
                                                         warmup_fraction=cfg.warmup_fraction)}
        if cfg.val_every and s % cfg.val_every == 0 and s != cfg.steps:
            rec = {"step": s, **rec, **trainer.validate()}
            trainer.track(s, rec)
        if rec:
            trainer.log.append(rec)
        if cfg.checkpoint_every and s % cfg.checkpoint_every == 0 and s != cfg.steps:
            trainer.save_checkpoint(ckdir)
        if progress is not None:
            progress(s, cfg.steps)


def _write_outputs(out: Path, model, sweep, metrics: dict, train_log: list, curve, ckdir: Path) -> None:
    """The model folder's files (model, sweep, log, curve and their figures); the checkpoints removed last."""
    save_model(model, out, metrics=metrics, overwrite=True)
    if sweep is not None:
        save_sweep(sweep, out)
        try:
            write_sweep_figure(out / SWEEP_FIGURE, sweep)
        except Exception as exc:  # a plot must never lose a trained model
            log.warning("could not draw the step sweep: %s", exc)
    _write_log(out / LOG_FILE, train_log)
    save_curve(curve, out)
    try:
        write_curve(out / CURVE_FILE, train_log)
        write_curve_figure(out / CURVE_PNG, curve)
    except Exception as exc:  # a plot must never lose a trained model
        log.warning("could not draw the training curve: %s", exc)
    if ckdir.exists():
        shutil.rmtree(ckdir, ignore_errors=True)


def _keep_best(trainer: Trainer, final: dict, *, new: bool) -> bool:
    """Early stopping on: the final validation (``new``: not yet tracked) joins the others; when an earlier
    one was better, its weights replace the final ones.  True when they did."""
    if not trainer.stopper.on:
        return False
    if new:
        trainer.track(trainer.step, final)
    if trainer.best_net is None or trainer.stopper.best_step == trainer.step:
        return False
    trainer.net.load_state_dict(trainer.best_net)
    trainer.log.append({"step": trainer.step, "note": f"early stopping: the weights of step "
                        f"{trainer.stopper.best_step} (validation PSNR {trainer.stopper.best_psnr:.3f} dB) saved"})
    return True


def estimate_degradation_sigma(lq: np.ndarray, hq: np.ndarray, mask: np.ndarray) -> float:
    """Gaussian blur (HQ pixels) that best turns HQ into the up-sampled LQ (least squares on a grid).

    Used by the data-consistency map to degrade an enhanced image back to LQ.
    """
    zs = np.linspace(0, hq.shape[0] - 1, min(4, hq.shape[0])).astype(int)
    a, b, m = hq[zs], lq[zs], mask[zs]
    a0, b0 = a[m], b[m]
    # intensity calibration between the scans: affine fit at each sigma
    best, best_err = 0.0, float("inf")
    for s in np.arange(0.0, 4.01, 0.25):
        g = ndimage.gaussian_filter(a, (0, s, s))[m] if s > 0 else a0
        A = np.stack([g, np.ones_like(g)], 1).astype(np.float64)
        coef, *_ = np.linalg.lstsq(A, b0.astype(np.float64), rcond=None)
        err = float(np.mean((A @ coef - b0) ** 2))
        if err < best_err:
            best, best_err = float(s), err
    return best


def _write_log(path: Path, records: list[dict]) -> None:
    with atomic_output(path, overwrite=True) as tmp:
        tmp.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")


def write_curve(path: Path, records: list[dict]) -> Path:
    """Plot training loss and validation PSNR against the step (PNG, atomic)."""
    from matplotlib.figure import Figure

    steps = [r["step"] for r in records if "loss" in r]
    loss = [r["loss"] for r in records if "loss" in r]
    fig = Figure(figsize=(7, 3))
    ax = fig.add_subplot(1, 2, 1)
    ax.semilogy(steps, loss)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax2 = fig.add_subplot(1, 2, 2)
    vs = [(r["step"], r["val_psnr_db"], r["val_psnr_lq_db"]) for r in records if "val_psnr_db" in r]
    if vs:
        s, v, v0 = zip(*vs)
        ax2.plot(s, v, "o-", label="model")
        ax2.plot(s, v0, "k--", label="bicubic LQ")
        ax2.legend()
    ax2.set_xlabel("step")
    ax2.set_ylabel("validation PSNR (dB)")
    fig.tight_layout()
    with atomic_output(path, overwrite=True) as tmp:
        tmp.write_bytes(figure_png(fig))
    return path
