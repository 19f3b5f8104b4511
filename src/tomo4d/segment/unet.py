"""Attention residual U-Net for phase segmentation from a few fully labelled slices.

(~540 lines on purpose: the network, its tiled inference and its training share the configuration
and the tile geometry; split, each half would re-derive them.)

Network (2D, applied to ``(y, x)`` slices; ``f`` = ``base_filters``)::

    x --res(1->f)--> e0 --pool,res--> e1 (2f) ... --pool,res--> bottleneck (f*2**depth)
    up: bilinear x2 + 1x1 conv -> g;  attention gate a = sigmoid(psi(relu(Wg g + Wx e_i)))
        -> concat(g, a * e_i) -> res -> ... -> 1x1 conv -> class logits

Residual blocks are conv3x3-BN-ReLU-conv3x3-BN plus a (1x1) skip, then ReLU
(Oktay et al. 2018 attention gates; He et al. 2016 residual units).
BatchNorm uses its running statistics at inference, so the network is
translation-equivariant and tiled inference is seamless away from tile borders;
tiles are blended with linear ramps over their overlap.

Training: random crops of the labelled slices (0 = unlabelled, ignored by the
loss, so scribbles also work), dihedral flips/rotations and grey-value jitter,
cross-entropy + soft Dice, AdamW with a one-cycle cosine schedule.  All
randomness comes from ``seed`` (numpy Generator for sampling, a forked torch
RNG for the initial weights; the global torch RNG is left untouched).

Model file (``.safetensors``): the network tensors, and in the header
metadata ``format = "tomo4d.unet"``, ``version`` and ``meta`` (JSON: classes,
:class:`UNetConfig`, intensity normalisation, training record).  No pickle.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np

from .._array import as_float32, to_numpy
from .._threads import torch_seeded, torch_threads
from .._validate import check_device, check_finite, show
from .._version import __version__
from ..errors import FormatError, InputError
from ..io import atomic_output
from ._common import check_labels, image_array
from .predict import predict_labels, predict_proba

log = logging.getLogger(__name__)

FORMAT = "tomo4d.unet"
VERSION = 1


@dataclass(frozen=True)
class UNetConfig:
    """Architecture, training and inference settings of the U-Net.

    Attributes
    ----------
    base_filters : int
        Channels of the first level; doubled per level.
    depth : int
        Number of down-sampling levels.
    patch_size : int
        Training crop edge in pixels (made a multiple of ``2**depth``).
    batch_size : int
        Crops per training step.
    iterations : int
        Training steps.
    learning_rate : float
        Peak learning rate of the one-cycle schedule.
    weight_decay : float
        AdamW weight decay.
    dice_weight : float
        Weight of the soft-Dice term added to the cross-entropy.
    augment : bool
        Random flips/rotations and grey-value jitter.
    tile_size : int
        Inference tile edge in pixels (multiple of ``2**depth``).
    tile_overlap : int
        Overlap of neighbouring tiles in pixels (blended).
    device : str
        ``"auto"`` (CUDA when present, else CPU), ``"cpu"`` or ``"cuda"``.
    """

    base_filters: int = 16
    depth: int = 3
    patch_size: int = 128
    batch_size: int = 8
    iterations: int = 800
    learning_rate: float = 3e-3
    weight_decay: float = 1e-4
    dice_weight: float = 1.0
    augment: bool = True
    tile_size: int = 256
    tile_overlap: int = 32
    device: str = "auto"

    def __post_init__(self):
        for name in ("base_filters", "depth", "patch_size", "batch_size", "iterations", "tile_size"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or v < 1:
                raise InputError(f"UNetConfig.{name}={show(v)} must be an integer >= 1")
        if self.depth > 6:
            raise InputError(f"UNetConfig.depth={show(self.depth)} is too deep; use 1..6")
        stride = 2 ** self.depth
        for name in ("patch_size", "tile_size"):
            v = getattr(self, name)
            if v < stride:
                raise InputError(f"UNetConfig.{name}={v} must be >= 2**depth = {stride}")
            object.__setattr__(self, name, int(math.ceil(v / stride) * stride))
        if not (0 <= self.tile_overlap < self.tile_size // 2 + 1):
            raise InputError(f"UNetConfig.tile_overlap={show(self.tile_overlap)} must be in [0, tile_size/2]")
        for name in ("learning_rate", "weight_decay", "dice_weight"):
            v = float(getattr(self, name))
            if not (math.isfinite(v) and v >= 0) or (name == "learning_rate" and v == 0):
                raise InputError(f"UNetConfig.{name}={show(getattr(self, name))} must be a finite number >= 0")
        if self.device not in ("auto", "cpu", "cuda"):
            raise InputError(f"UNetConfig.device={self.device!r}: use 'auto', 'cpu' or 'cuda'")

    @classmethod
    def small(cls, **changes) -> UNetConfig:
        """A small CPU configuration (tests, quick looks): 8 filters, depth 2, 64 px crops."""
        base = cls(base_filters=8, depth=2, patch_size=64, batch_size=4, iterations=150, tile_size=128,
                   tile_overlap=16)
        return replace(base, **changes)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d) -> UNetConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in dict(d).items() if k in names})


def _torch():
    import torch

    return torch


def _device(config: UNetConfig):
    return check_device("UNetConfig.device", config.device)


def build_network(n_classes: int, config: UNetConfig):
    """The attention residual U-Net as a ``torch.nn.Module`` (1 input channel, ``n_classes`` logits)."""
    torch = _torch()
    nn = torch.nn
    F = torch.nn.functional

    class ResBlock(nn.Module):
        def __init__(self, c_in, c_out):
            super().__init__()
            self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(c_out)
            self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(c_out)
            self.skip = (nn.Sequential(nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out))
                         if c_in != c_out else nn.Identity())

        def forward(self, x):
            h = F.relu(self.bn1(self.conv1(x)))
            h = self.bn2(self.conv2(h))
            return F.relu(h + self.skip(x))

    class AttentionGate(nn.Module):
        def __init__(self, c_gate, c_skip, c_mid):
            super().__init__()
            self.wg = nn.Conv2d(c_gate, c_mid, 1)
            self.wx = nn.Conv2d(c_skip, c_mid, 1, bias=False)
            self.psi = nn.Conv2d(c_mid, 1, 1)

        def forward(self, g, x):
            a = torch.sigmoid(self.psi(F.relu(self.wg(g) + self.wx(x))))
            return x * a

    class AttentionResUNet(nn.Module):
        def __init__(self):
            super().__init__()
            f = config.base_filters
            ch = [f * 2 ** i for i in range(config.depth + 1)]
            self.stem = ResBlock(1, ch[0])
            self.down = nn.ModuleList(ResBlock(ch[i], ch[i + 1]) for i in range(config.depth))
            self.reduce = nn.ModuleList(nn.Conv2d(ch[i + 1], ch[i], 1) for i in range(config.depth))
            self.gates = nn.ModuleList(AttentionGate(ch[i], ch[i], max(ch[i] // 2, 1)) for i in range(config.depth))
            self.up = nn.ModuleList(ResBlock(2 * ch[i], ch[i]) for i in range(config.depth))
            self.head = nn.Conv2d(ch[0], n_classes, 1)

        def forward(self, x):
            skips = [self.stem(x)]
            h = skips[0]
            for block in self.down:
                h = block(F.max_pool2d(h, 2))
                skips.append(h)
            for i in reversed(range(config.depth)):
                g = self.reduce[i](F.interpolate(h, scale_factor=2.0, mode="bilinear", align_corners=False))
                h = self.up[i](torch.cat([g, self.gates[i](g, skips[i])], dim=1))
            return self.head(h)

    return AttentionResUNet()


def _ramp_window(size: int, overlap: int) -> np.ndarray:
    w = np.ones(size, np.float32)
    if overlap > 0:
        ramp = (np.arange(overlap, dtype=np.float32) + 0.5) / overlap
        w[:overlap] = ramp
        w[size - overlap:] = np.minimum(w[size - overlap:], ramp[::-1])
    return w


def _tile_starts(n: int, tile: int, overlap: int) -> list[int]:
    if n <= tile:
        return [0]
    step = max(tile - overlap, 1)
    starts = list(range(0, n - tile, step))
    starts.append(n - tile)
    return sorted(set(starts))


class UNetSegmenter:
    """A trained attention residual U-Net with its classes and intensity normalisation.

    Create one with :func:`train_unet` or :meth:`load`; predict with
    :func:`tomo4d.segment.predict_labels` / :func:`~tomo4d.segment.predict_proba`.

    Attributes
    ----------
    classes : tuple of int
        Label value of each output channel.
    config : UNetConfig
    norm : (float, float)
        Grey values mapped to 0 and 1 before the network (training percentiles 1 and 99).
    training : dict
        Record of the training (iterations, final loss, seconds, slices).
    """

    kind = "unet"
    halo = (0, 0, 0)  # slice-wise: no context along z; tiles handle (y, x)

    def __init__(self, network, *, classes, config: UNetConfig, norm, training: dict | None = None):
        self.network = network
        self.classes = tuple(int(c) for c in classes)
        self.config = config
        self.norm = (float(norm[0]), float(norm[1]))
        self.training = dict(training or {})
        self.network.eval()

    def __repr__(self) -> str:
        n = sum(p.numel() for p in self.network.parameters())
        return (f"<UNetSegmenter classes={self.classes} filters={self.config.base_filters} "
                f"depth={self.config.depth} parameters={n}>")

    def normalise(self, a: np.ndarray) -> np.ndarray:
        lo, hi = self.norm
        return (as_float32(a) - np.float32(lo)) * np.float32(1.0 / (hi - lo))

    def bytes_per_slice(self, ny: int, nx: int) -> int:
        """Working memory in bytes per z-slice (input, probabilities, blending weights)."""
        return int(ny) * int(nx) * 4 * (2 * len(self.classes) + 4)

    def proba_slice(self, image2d: np.ndarray, *, batch_tiles: int = 8) -> np.ndarray:
        """Probabilities ``(C, y, x)`` of one 2D slice by blended tiled inference."""
        torch = _torch()
        device = next(self.network.parameters()).device
        img = self.normalise(image2d)
        ny, nx = img.shape
        stride = 2 ** self.config.depth
        # mirror a margin around the slice so that its borders see image-like context, not zeros
        m = 2 * stride
        ty = min(self.config.tile_size, int(math.ceil((ny + 2 * m) / stride) * stride))
        tx = min(self.config.tile_size, int(math.ceil((nx + 2 * m) / stride) * stride))
        py, px = max(ty - ny - 2 * m, 0), max(tx - nx - 2 * m, 0)
        img = np.pad(img, ((m, m + py), (m, m + px)), mode="symmetric")
        H, W = img.shape
        ov = self.config.tile_overlap
        wy, wx = _ramp_window(ty, min(ov, ty // 2)), _ramp_window(tx, min(ov, tx // 2))
        win = torch.from_numpy(np.outer(wy, wx)).to(device)
        acc = torch.zeros((len(self.classes), H, W), dtype=torch.float32, device=device)
        wsum = torch.zeros((H, W), dtype=torch.float32, device=device)
        boxes = [(y0, x0) for y0 in _tile_starts(H, ty, ov) for x0 in _tile_starts(W, tx, ov)]
        src = torch.from_numpy(np.ascontiguousarray(img)).to(device)
        with torch.inference_mode(), torch_threads(None):
            for b in range(0, len(boxes), batch_tiles):
                chunk = boxes[b:b + batch_tiles]
                x = torch.stack([src[y0:y0 + ty, x0:x0 + tx] for y0, x0 in chunk])[:, None]
                p = torch.softmax(self.network(x), dim=1)
                for (y0, x0), pi in zip(chunk, p):
                    acc[:, y0:y0 + ty, x0:x0 + tx] += pi * win
                    wsum[y0:y0 + ty, x0:x0 + tx] += win
        out = (acc / wsum)[:, m:m + ny, m:m + nx]
        return out.cpu().numpy().astype(np.float32, copy=False)

    def proba_slab(self, source, z0: int, z1: int) -> np.ndarray:
        """Probabilities ``(C, z1-z0, y, x)`` of slices ``z0:z1`` of ``source``."""
        block = to_numpy(source[z0:z1])
        return np.stack([self.proba_slice(s) for s in block], axis=1)

    def predict_proba(self, image, **kwargs) -> np.ndarray:
        """Shortcut for :func:`tomo4d.segment.predict_proba`."""
        return predict_proba(self, image, **kwargs)

    def predict(self, image, **kwargs) -> np.ndarray:
        """Shortcut for :func:`tomo4d.segment.predict_labels`."""
        return predict_labels(self, image, **kwargs)

    def to(self, device) -> UNetSegmenter:
        """Move the network to ``device`` (e.g. ``"cuda"``); returns self."""
        self.network.to(device)
        return self

    # -- persistence -------------------------------------------------------
    def meta(self) -> dict:
        return {"format": FORMAT, "version": VERSION, "classes": list(self.classes),
                "config": self.config.to_dict(), "norm": list(self.norm), "training": self.training,
                "tomo4d_version": __version__}

    def save(self, path, *, overwrite: bool = False) -> Path:
        """Write weights and metadata to one ``.safetensors`` file, atomically."""
        from safetensors.torch import save_file

        path = Path(path)
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.network.state_dict().items()}
        with atomic_output(path, overwrite=overwrite) as tmp:
            save_file(tensors, str(tmp), metadata={"format": FORMAT, "version": str(VERSION),
                                                   "meta": json.dumps(self.meta(), sort_keys=True)})
        return path

    @classmethod
    def load(cls, path, *, device: str | None = None) -> UNetSegmenter:
        """Read a model written by :meth:`save` (safetensors + JSON; no pickle)."""
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise InputError(f"model {str(path)!r} does not exist; check the path")
        try:
            with safe_open(str(path), framework="pt") as fh:
                header = fh.metadata() or {}
                tensors = {k: fh.get_tensor(k) for k in fh.keys()}
        except Exception as exc:  # safetensors raises its own error types
            raise FormatError(f"{str(path)!r} is not a readable safetensors file ({exc})") from None
        if header.get("format") != FORMAT:
            raise FormatError(f"{str(path)!r} is not a tomo4d U-Net (format {header.get('format')!r})")
        if int(header.get("version", "0")) > VERSION:
            raise FormatError(f"{str(path)!r} has U-Net format version {header.get('version')}; this tomo4d "
                              f"reads <= {VERSION}; upgrade tomo4d")
        meta = json.loads(header["meta"])
        config = UNetConfig.from_dict(meta["config"])
        if device is not None:
            config = replace(config, device=device)
        classes = meta["classes"]
        net = build_network(len(classes), config)
        try:
            net.load_state_dict(tensors, strict=True)
        except RuntimeError as exc:
            raise FormatError(f"{str(path)!r}: weights do not fit the stored configuration "
                              f"({len(classes)} classes, depth {config.depth}): {str(exc).splitlines()[0]}") from None
        net.to(_device(config))
        return cls(net, classes=classes, config=config, norm=meta["norm"], training=meta.get("training"))


def _training_slices(image, labels) -> tuple[list[np.ndarray], list[np.ndarray], tuple[int, ...]]:
    data = image_array(image)
    lab, classes = check_labels(labels, data.shape)
    if data.ndim == 2:
        imgs = [as_float32(to_numpy(data))]
        check_finite("image", imgs[0])
        return imgs, [lab], classes
    zs = np.flatnonzero(lab.reshape(lab.shape[0], -1).any(axis=1))
    imgs = [as_float32(to_numpy(data[int(z)])) for z in zs]  # only the labelled slices are read and used
    for z, img in zip(zs, imgs):
        check_finite(f"image (slice {int(z)})", img)
    return imgs, [lab[int(z)] for z in zs], classes


def _augment(img: np.ndarray, lab: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    k = int(rng.integers(4))
    img, lab = np.rot90(img, k), np.rot90(lab, k)
    if rng.random() < 0.5:
        img, lab = img[:, ::-1], lab[:, ::-1]
    gain = rng.uniform(0.9, 1.1)
    offset = rng.uniform(-0.05, 0.05)
    noise = rng.uniform(0.0, 0.03)
    img = img * gain + offset + rng.normal(0.0, noise, img.shape).astype(np.float32)
    return img.astype(np.float32), lab


def _crop(img, lab, size, rng):
    ny, nx = img.shape
    if ny < size or nx < size:
        py, px = max(size - ny, 0), max(size - nx, 0)
        img = np.pad(img, ((0, py), (0, px)), mode="symmetric")
        lab = np.pad(lab, ((0, py), (0, px)), mode="constant", constant_values=-1)
        ny, nx = img.shape
    y0 = int(rng.integers(ny - size + 1))
    x0 = int(rng.integers(nx - size + 1))
    return img[y0:y0 + size, x0:x0 + size], lab[y0:y0 + size, x0:x0 + size]


def train_unet(image, labels, *, config: UNetConfig | None = None, init: UNetSegmenter | None = None,
               seed: int = 0, time_limit_s: float | None = None, threads: int | None = None,
               progress=None) -> UNetSegmenter:
    """Train an attention residual U-Net on labelled slices.

    Parameters
    ----------
    image : Volume or array_like, (y, x) or (z, y, x)
        Grey values.  In 3D, every z-slice with at least one label is used.
    labels : array_like of int, same shape
        0 = unlabelled (ignored), 1, 2, ... classes; ideally a few fully
        labelled slices (from the user or a cleaned pixel-classifier result).
    config : UNetConfig, optional
        Default :class:`UNetConfig()`; :meth:`UNetConfig.small` for CPU tests.
    init : UNetSegmenter, optional
        Start from these weights (fine-tuning, e.g. a late-time-step model
        from an early one); it must have the same classes and architecture.
    seed : int
        Seed of weights, crops and augmentation.
    time_limit_s : float, optional
        Stop early after this many seconds of training.
    threads : int, optional
        Torch CPU threads during training (restored afterwards); default: ``tomo4d.threads``, else the
        CPUs this process may use.
    progress : callable(done, total), optional
        Called every 10 iterations.

    Returns
    -------
    UNetSegmenter
    """
    with torch_threads(threads):
        return _train_unet(image, labels, config=config, init=init, seed=seed, time_limit_s=time_limit_s,
                           progress=progress)


def _train_unet(image, labels, *, config, init, seed, time_limit_s, progress) -> UNetSegmenter:
    torch = _torch()
    config = config or (init.config if init is not None else UNetConfig())
    imgs, labs, classes = _training_slices(image, labels)
    if init is not None:
        if tuple(init.classes) != tuple(classes):
            raise InputError(f"init model is for classes {init.classes} ({len(init.classes)} classes) but the "
                             f"labels have classes {classes}; label the same classes or train from scratch")
        if (init.config.base_filters, init.config.depth) != (config.base_filters, config.depth):
            raise InputError("init model has another architecture (base_filters/depth) than config")
    lo, hi = np.percentile(np.concatenate([i.ravel() for i in imgs]), [1.0, 99.0]) if init is None else init.norm
    if not hi > lo:
        hi = lo + 1.0
    norm = (float(lo), float(hi))
    lut = np.full(max(classes) + 1, -1, np.int64)
    lut[list(classes)] = np.arange(len(classes))
    imgs = [(i - np.float32(lo)) * np.float32(1.0 / (hi - lo)) for i in imgs]
    targets = [lut[lab] for lab in labs]
    weights = np.array([np.count_nonzero(t >= 0) for t in targets], np.float64)
    weights /= weights.sum()
    rng = np.random.default_rng(seed)
    device = _device(config)
    with torch_seeded(int(seed)):  # torch's global random state left as it was
        net = build_network(len(classes), config)
    if init is not None:
        net.load_state_dict(init.network.state_dict())
    net.to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.learning_rate, total_steps=config.iterations,
                                                pct_start=0.15, anneal_strategy="cos")
    n_classes = len(classes)
    t0 = time.perf_counter()
    losses = []
    it = 0
    net.train()
    for it in range(1, config.iterations + 1):
        xb, yb = [], []
        for _ in range(config.batch_size):
            k = int(rng.choice(len(imgs), p=weights))
            ci, cl = _crop(imgs[k], targets[k], config.patch_size, rng)
            if config.augment:
                ci, cl = _augment(ci, cl, rng)
            xb.append(np.ascontiguousarray(ci))
            yb.append(np.ascontiguousarray(cl))
        x = torch.from_numpy(np.stack(xb)[:, None]).to(device)
        y = torch.from_numpy(np.stack(yb)).to(device)
        logits = net(x)
        valid = y >= 0
        n_valid = int(valid.sum())
        if n_valid == 0:
            continue
        ce = torch.nn.functional.cross_entropy(logits, y.clamp(min=0), reduction="none")
        loss = (ce * valid).sum() / n_valid
        if config.dice_weight > 0:
            prob = torch.softmax(logits, dim=1)
            onehot = torch.nn.functional.one_hot(y.clamp(min=0), n_classes).permute(0, 3, 1, 2).float()
            vm = valid[:, None].float()
            inter = (prob * onehot * vm).sum(dim=(0, 2, 3))
            denom = ((prob + onehot) * vm).sum(dim=(0, 2, 3))
            present = onehot.mul(vm).sum(dim=(0, 2, 3)) > 0
            dice = (2 * inter + 1.0) / (denom + 1.0)
            loss = loss + config.dice_weight * (1.0 - dice[present].mean())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        if progress is not None and (it % 10 == 0 or it == config.iterations):
            progress(it, config.iterations)
        if time_limit_s is not None and time.perf_counter() - t0 > time_limit_s:
            log.info("U-Net training stopped at the time limit after %d iterations", it)
            break
    net.eval()
    seconds = time.perf_counter() - t0
    training = {"iterations": it, "seconds": round(seconds, 2), "seed": int(seed), "n_slices": len(imgs),
                "final_loss": float(np.mean(losses[-20:])) if losses else None, "device": str(device),
                "fine_tuned": init is not None}
    log.info("U-Net trained: %d iterations in %.1f s, loss %.3f", it, seconds, training["final_loss"] or -1)
    return UNetSegmenter(net, classes=classes, config=config, norm=norm, training=training)


__all__ = ["UNetConfig", "UNetSegmenter", "train_unet", "build_network", "torch_threads"]
