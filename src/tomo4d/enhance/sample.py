"""Inference: InDI sampling of slices, tiled with overlap and smooth blending, streamed over volumes.

InDI (Delbracio & Milanfar, TMLR 2023) restores an image in ``N`` steps::

    x_1 = y + noise_std * n                  (y: bicubic-upsampled LQ, [-1, 1] units)
    x_{t - 1/N} = (1/N)/t * F(x_t, t) + (1 - (1/N)/t) * x_t     for t = 1, (N-1)/N, ..., 1/N

The steps are synchronised over tiles: every step runs the network on every
tile of a slice, blends the tile outputs into one slice and only then moves on,
so a tile only needs a margin of one receptive field (not N of them) and tiled
inference equals untiled inference away from tile edges.  The noise of a slice
depends only on ``(seed, slice index)``, never on the tiling or batching.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable

import numpy as np

from .._array import as_float32
from .._threads import resolve_threads, torch_threaded, torch_threads
from .._validate import check_finite, check_finite_chunk, check_int, check_number, show
from ..errors import InputError
from ..io import lazy_from_slices
from ..volume import Volume, as_volume
from .data import upsample2_xy, upsample2_z_window
from .model import EnhanceModel
from .precision import check_precision
from .steps import model_steps
from .tiles import Tiler, check_tiling, pad_amounts, pad_slices

log = logging.getLogger(__name__)


def check_model(model, name: str = "model"):
    """Refuse anything that is not an :class:`~tomo4d.enhance.EnhanceModel`."""
    if not isinstance(model, EnhanceModel):
        raise InputError(f"{name} is {show(model) if model is None else type(model).__name__}, not an enhancement "
                         "model; load one with tomo4d.enhance.load_model(path)")
    return model


def check_steps(model, steps, name: str = "steps", *, rule: str | None = None) -> int:
    """The InDI step count: ``steps`` when given (an integer >= 1, never replaced), else the N recommended by
    the model's validation sweep (by ``rule``, default the rule chosen at training); a model folder without
    a sweep uses its stored default and warns (:func:`tomo4d.enhance.steps.model_steps`)."""
    if steps is None:
        return model_steps(model, None, rule)[0]
    return check_int(name, steps, minimum=1)


def _input_volume(volume, name: str = "volume"):
    """``volume`` as a Volume; refuse what is not a 3D image (``None``, strings, ...)."""
    if not isinstance(volume, Volume) and not (hasattr(volume, "shape") and hasattr(volume, "dtype")):
        raise InputError(f"{name} is {show(volume) if volume is None or isinstance(volume, (str, int, float)) else type(volume).__name__}, "
                         "not a volume; give a tomo4d.Volume (tomo4d.io.open_volume(path)) or a 3D array")
    return as_volume(volume)


def restore_slices(model, lq_up_norm: np.ndarray, *, steps: int, seed: int = 0, slice_ids=None,
                   tile: int = 512, overlap: int = 64, batch: int = 4, noise_std: float | None = None,
                   precision: str | None = None) -> np.ndarray:
    """InDI-restore a stack of up-sampled, normalised slices ``(S, Y, X)`` -> ``(S, Y, X)`` in [-1, 1].

    Slices are padded by a reflected border of ``2**depth`` pixels and up to a multiple of ``2**depth``
    (what the network needs); a slice no larger than ``tile`` is one tile (its padding included), a
    larger one is cut into the fewest tiles that overlap by at least ``overlap`` and share its length
    evenly: every pixel is processed once plus the overlaps (issue 20: a 512^2 slice used to run as four
    512^2 tiles).  Tiles of all
    slices are batched together, ``batch`` per network call, under ``torch.inference_mode`` in
    channels-last memory format.

    Parameters
    ----------
    model : EnhanceModel
        The trained model (one-step baselines ignore ``steps``).
    lq_up_norm : ndarray (S, Y, X)
        Bicubic-upsampled LQ slices mapped to [-1, 1] with the model's LQ scaling.
    steps : int
        InDI steps N (>= 1).
    seed : int
        Seed of the initial noise; with ``slice_ids`` it makes each slice's noise
        independent of how slices are grouped.
    slice_ids : sequence of int, optional
        Global index of every slice (default 0..S-1).
    tile, overlap : int
        Largest tile side and least overlap (pixels of the up-sampled slice).
    batch : int
        Tiles (or whole slices) per network call.
    noise_std : float, optional
        Initial noise (default: the model's training ``noise_std``; 0 for the one-step baselines).
    precision : {"fp32", "bf16", "fp16"}, optional
        Autocast precision of the network (:mod:`tomo4d.enhance.precision`; default: ``model.precision``,
        fp32 unless set by :func:`~tomo4d.enhance.load_model`; fp16 needs CUDA).
    """
    import torch

    check_model(model)
    a = as_float32(lq_up_norm)
    if a.ndim != 3:
        raise InputError(f"restore_slices needs a (S, Y, X) stack, got shape {a.shape}")
    check_tiling(tile, overlap)
    batch = check_int("batch", batch, minimum=1)
    seed = check_int("seed", seed, minimum=0)
    cfg = model.info.config
    steps = 1 if model.one_step else check_int("steps", steps, minimum=1)
    if noise_std is None:
        noise_std = cfg.noise_std if not model.one_step else 0.0
    noise_std = check_number("noise_std", noise_std, minimum=0.0)
    precision = check_precision("precision", model.precision if precision is None else precision, model.device())
    ids = list(range(a.shape[0])) if slice_ids is None else [int(i) for i in slice_ids]
    mult = cfg.network.multiple
    S, Y, X = a.shape
    pads = (pad_amounts(Y, mult, mult), pad_amounts(X, mult, mult))
    x = pad_slices(a, pads)
    if noise_std > 0:
        noise = np.stack([np.random.default_rng([int(seed), i]).standard_normal(x.shape[1:], dtype=np.float32)
                          for i in ids])
        x = x + np.float32(noise_std) * noise
    x = np.ascontiguousarray(x, np.float32)
    # the tile size counts slice pixels: the few pixels of padding never split a slice into more tiles
    grow = max(x.shape[1] - Y, x.shape[2] - X)
    tiler = Tiler(model.net, x.shape, tile=tile + grow, overlap=overlap, batch=batch, multiple=mult,
                   precision=precision)
    with torch.inference_mode():
        for k in range(steps, 0, -1):
            t = k / steps
            pred = tiler.predict(x, t)
            frac = np.float32((1.0 / steps) / t)
            x = frac * pred + (np.float32(1) - frac) * x
    (py0, _), (px0, _) = pads
    return np.ascontiguousarray(x[:, py0:py0 + Y, px0:px0 + X])


@torch_threaded
def enhance_slices(model, lq_slices, *, steps: int | None = None, seed: int = 0, slice_ids=None,
                   tile: int = 512, overlap: int = 64, batch: int = 4, rule: str | None = None,
                   consistency: bool = False, precision: str | None = None) -> np.ndarray:
    """Enhance LQ xy-slices ``(S, y, x)`` (input units) -> ``(S, 2y, 2x)`` float32 in HQ units.

    Up-samples x2 (bicubic), maps to [-1, 1] with the model's LQ scaling, runs
    :func:`restore_slices`, maps back with the HQ scaling.  ``steps`` default: the model's
    recommendation by ``rule``.  ``consistency=True`` projects the output onto the LQ constraint
    (:func:`tomo4d.enhance.steps.project_onto_lq`: degraded back, it reproduces these LQ slices).
    ``precision``: see :func:`restore_slices`.
    """
    info = check_model(model).info
    steps = check_steps(model, steps, rule=rule)
    lq = as_float32(lq_slices)
    up = upsample2_xy(lq)
    norm = info.lq_scaling.forward(up)
    out = restore_slices(model, norm, steps=steps, seed=seed, slice_ids=slice_ids, tile=tile, overlap=overlap,
                         batch=batch, precision=precision)
    out = info.hq_scaling.inverse(out)
    if consistency:
        from .steps import project_onto_lq

        out = project_onto_lq(out, lq, model)
    return out


def enhance_image(model, image, *, steps: int | None = None, seed: int = 0, tile: int = 512, overlap: int = 64,
                  batch: int = 4, rule: str | None = None, consistency: bool = False,
                  precision: str | None = None) -> np.ndarray:
    """Enhance one 2D LQ image ``(y, x)`` (input units) -> ``(2y, 2x)`` float32 in HQ units (see
    :func:`enhance_slices`)."""
    a = np.asarray(image)
    if a.ndim != 2:
        raise InputError(f"image has shape {a.shape}; give a 2D image (y, x) (enhance_volume takes stacks)")
    check_finite("image", a)
    return enhance_slices(model, a[None], steps=steps, seed=seed, tile=tile, overlap=overlap, batch=batch,
                          rule=rule, consistency=consistency, precision=precision)[0]


class _SliceEngine:
    """Enhances LQ slices on demand in fixed groups, keeping the groups still needed (bounded memory), thread-safe.

    A slice is always enhanced with the same batch of slices (groups on fixed boundaries), so the result does not
    depend on the order in which dask threads or slab plans ask for it.  The cache holds whole groups: a group is
    dropped as soon as every output slice that reads it has been produced, and beyond :data:`KEEP_GROUPS` groups the
    least recently used goes first.  Dask computes the chunks of a volume in runs (from the middle down, then from
    the top down, two threads on neighbouring chunks), so what one run leaves at its start is still there when the
    next run reaches it.  The slice cache evicted by distance that this replaces made concurrent chunks evict each
    other's groups and enhanced every slice 6-8 times over in ``save_volume`` (32 LQ slices: 204-244 slices
    enhanced; now 32, tests/enhance/test_sample.py).
    """

    KEEP_GROUPS = 8

    def __init__(self, model, lq_data, *, steps, seed, tile, overlap, batch, group, progress, consistency=False,
                 precision=None):
        self.model, self.lq = model, lq_data
        self.kw = dict(steps=steps, seed=seed, tile=tile, overlap=overlap, batch=batch, consistency=consistency,
                       precision=precision)
        self.n = int(lq_data.shape[0])
        self.group = int(group)
        self.check = not isinstance(lq_data, np.ndarray)    # numpy input is checked up front
        self.groups: OrderedDict[int, np.ndarray] = OrderedDict()   # group index -> its enhanced slices, LRU order
        self.lock = threading.Lock()
        self.progress = progress
        self.done: set[int] = set()
        self.n_enhanced = 0     # slices enhanced so far, recomputations included (tests, benchmarks)
        self.left: dict[bool, np.ndarray] = {}     # per z_interp: output slices still to produce, per group
        # torch's CPU results depend on its intra-op thread count, which (OpenMP backend) is a setting of
        # each OS thread: the dask worker threads computing the slices may carry another count than the
        # caller.  Every slice runs on the caller's count, so the output does not depend on which worker
        # computes it (bitwise reproducible in the seed).
        self.threads = resolve_threads(None)    # tomo4d.threads / --threads, else the CPUs this process may use

    @property
    def cache(self) -> dict[int, np.ndarray]:
        """Enhanced slices in memory, by LQ slice index."""
        return {g * self.group + i: s for g, block in self.groups.items() for i, s in enumerate(block)}

    def _group(self, g: int) -> np.ndarray:
        """The enhanced slices of group ``g`` (computed if not cached); call with the lock held."""
        if g in self.groups:
            self.groups.move_to_end(g)
            return self.groups[g]
        k0, k1 = g * self.group, min(self.n, (g + 1) * self.group)
        slab = np.asarray(self.lq[k0:k1])
        if self.check:
            check_finite_chunk("volume", slab, k0)
        with torch_threads(self.threads):
            out = enhance_slices(self.model, slab, slice_ids=list(range(k0, k1)), **self.kw)
        self.groups[g] = out
        self.n_enhanced += k1 - k0
        self.done.update(range(k0, k1))
        if self.progress is not None:
            self.progress(len(self.done), self.n)
        return out

    def _readers(self, z_interp: bool) -> np.ndarray:
        """Output slices reading each group (the count left to produce), made on first use."""
        if z_interp not in self.left:
            j = np.arange(2 * self.n if z_interp else self.n)
            k = j // 2 if z_interp else j
            lo = np.clip(k - 2 * z_interp, 0, self.n - 1) // self.group
            hi = np.clip(k + 2 * z_interp, 0, self.n - 1) // self.group
            count = np.zeros(-(-self.n // self.group) + 1, np.int64)
            np.add.at(count, lo, 1)
            np.add.at(count, hi + 1, -1)
            self.left[z_interp] = np.cumsum(count)[:-1]
        return self.left[z_interp]

    def get(self, ks: list[int], produced=None) -> list[np.ndarray]:
        """Enhanced LQ slices ``ks``; ``produced``: (z_interp, output slices) whose groups may then be released."""
        with self.lock:
            need = sorted({k // self.group for k in ks})
            blocks = {g: self._group(g) for g in need}
            if produced is not None:
                left = self._readers(produced[0])
                for g in produced[1]:
                    left[g] -= 1
                for g in [g for g in self.groups if left[g] <= 0]:
                    del self.groups[g]      # every output slice reading it is done (a recompute starts over)
            while len(self.groups) > max(self.KEEP_GROUPS, len(need)):
                self.groups.popitem(last=False)
            return [blocks[k // self.group][k % self.group] for k in ks]

    def read_output(self, js: list[int], z_interp: bool) -> np.ndarray:
        g = self.group
        if not z_interp:
            return np.stack(self.get(list(js), (False, [j // g for j in js])))
        wins = {j: [min(max(j // 2 + d, 0), self.n - 1) for d in (-2, -1, 0, 1, 2)] for j in js}
        ks = sorted({k for w in wins.values() for k in w})
        reads = [gg for w in wins.values() for gg in range(w[0] // g, w[-1] // g + 1)]
        slices = dict(zip(ks, self.get(ks, (True, reads))))    # every slice of the chunk at once
        out = []
        for j in js:
            even, odd = upsample2_z_window([slices[k] for k in wins[j]], j // 2, self.n)
            out.append(even if j % 2 == 0 else odd)
        return np.stack(out)


def check_input(model, volume, *, check_voxel_size: bool = True, slices: bool = False) -> None:
    """Raise :class:`InputError` if ``volume`` is not something ``model`` was trained on (``slices``: independent
    slices, the z voxel size is not compared)."""
    info = model.info
    if str(volume.dtype) != info.input_dtype:
        raise InputError(
            f"volume dtype {volume.dtype} differs from the dtype the model was trained on ({info.input_dtype}); "
            f"its intensities would be misread: convert the volume to {info.input_dtype} with the same scaling, "
            "or train a model on data of this dtype"
        )
    if check_voxel_size and volume.voxel_size_known:
        vs, ref = np.asarray(volume.voxel_size_nm), np.asarray(info.lq_voxel_size_nm)
        if slices:
            vs, ref = vs[1:], ref[1:]
        if np.any(np.abs(vs / ref - 1) > 0.05):
            raise InputError(
                f"volume voxel size {show(tuple(vs))} nm differs from the LQ voxel size the model was trained on "
                f"({show(tuple(ref))} nm); give a volume of the trained resolution or disable the check "
                "(check_voxel_size=False / --no-voxel-check)"
            )


def enhance_volume(model, volume, *, steps: int | None = None, seed: int = 0, tile: int = 512,
                   overlap: int = 64, batch: int = 4, z_interp: bool = True, out_dtype=None,
                   check_voxel_size: bool = True, group: int = 4, rule: str | None = None,
                   consistency: bool = False, slices: bool | None = None, precision: str | None = None,
                   progress: Callable[[int, int], None] | None = None):
    """Enhance an LQ volume slice by slice, streaming: returns a lazy (dask) :class:`~tomo4d.Volume`.

    Nothing is computed until the result is written (:func:`tomo4d.io.save_volume`
    streams it slab by slab in bounded memory) or computed (``.compute()``).

    Parameters
    ----------
    model : EnhanceModel
        Trained model (:func:`tomo4d.enhance.load_model`).
    volume : Volume
        LQ volume of the dtype and voxel size the model was trained on.
    steps : int, optional
        InDI steps (default: the N recommended by the model's validation sweep, by ``rule``; a
        model folder without a sweep uses its stored default and warns).
    seed : int
        Noise seed (the output is a deterministic function of it).
    rule : {"balanced", "distortion", "sharpness"}, optional
        Recommendation rule of the sweep (default: the one chosen at training;
        :mod:`tomo4d.enhance.steps`).  Ignored when ``steps`` is given.
    consistency : bool
        Project every enhanced slice onto the LQ constraint (:func:`tomo4d.enhance.steps.project_onto_lq`).
    slices : bool, optional
        The volume is a stack of independent 2D slices: no z interpolation, the z voxel size is kept
        and not compared with the model's.  Default: True for a model trained on slice pairs
        (``route="slices"``), else False.
    tile, overlap, batch : int
        Tiling of each (up-sampled) slice and tiles per network call.
    z_interp : bool
        Interpolate (cubic) along z to isotropic voxels (2x slices).  Without it
        the output keeps the LQ slice count and z voxel size.
    out_dtype : numpy dtype, optional
        Output dtype (default: the input's integer dtype, rounded and clipped;
        float32 for float input).
    group : int
        LQ slices enhanced per batch of work (memory: a few groups of up-sampled slices).
    precision : {"fp32", "bf16", "fp16"}, optional
        Autocast precision (default ``model.precision``; see :func:`restore_slices`).
    progress : callable(done, total), optional
        Called with the number of LQ slices enhanced.

    Returns
    -------
    Volume
        Shape ``(2z, 2y, 2x)`` (``(z, 2y, 2x)`` without ``z_interp``), voxel size halved,
        provenance extended with the model, steps and seed.
    """
    check_model(model)
    vol = _input_volume(volume)
    if slices is None:
        slices = model.info.provenance.get("route") == "slices"
    if slices:
        z_interp = False
    check_input(model, vol, check_voxel_size=check_voxel_size, slices=bool(slices))
    check_tiling(tile, overlap)
    given = steps is not None
    steps, steps_from = model_steps(model, steps, rule)
    batch = check_int("batch", batch, minimum=1)
    group = check_int("group", group, minimum=1)
    consistency = bool(consistency)
    seed = check_int("seed", seed, minimum=0)
    precision = check_precision("precision", model.precision if precision is None else precision, model.device())
    if isinstance(vol.data, np.ndarray):
        check_finite("volume", vol.data)     # in memory: checked up front; lazy input: chunk by chunk
    dt = np.dtype(out_dtype) if out_dtype is not None else (vol.dtype if np.issubdtype(vol.dtype, np.integer)
                                                             else np.dtype(np.float32))
    engine = _SliceEngine(model, vol.data, steps=steps, seed=seed, tile=tile, overlap=overlap, batch=batch,
                          group=group, progress=progress, consistency=consistency, precision=precision)
    nz, ny, nx = vol.shape
    shape = (2 * nz if z_interp else nz, 2 * ny, 2 * nx)

    def read(js):
        out = engine.read_output(list(js), z_interp)
        if np.issubdtype(dt, np.integer):
            info = np.iinfo(dt)
            return np.clip(np.rint(out), info.min, info.max).astype(dt)
        return out.astype(dt)

    data = lazy_from_slices(read, shape, dt, chunks=(max(2 * group, 2), ny * 2, nx * 2),
                            name=f"tomo4d-enhance-{id(engine):x}")
    vz, vy, vx = vol.voxel_size_nm
    new_vs = (vz / 2 if z_interp else vz, vy / 2, vx / 2)
    one = model.one_step
    step_txt = (f"enhanced with {model.objective} model {model.name} (1 step)" if one
                else f"enhanced with InDI model {model.name}, steps={steps}, seed={seed}")
    meta = vol.metadata.with_step(step_txt + (", z interpolated x2 (cubic)" if z_interp else ""))
    extra = dict(meta.extra)
    extra["enhance"] = {"model": model.name, "objective": model.objective, "steps": 1 if one else steps,
                        "steps_from": "given" if given else steps_from, "consistency_projection": consistency,
                        "seed": seed, "tile": tile, "overlap": overlap, "z_interp": z_interp, "precision": precision}
    meta = dataclasses.replace(meta, extra=extra)
    return Volume(data, new_vs, meta, voxel_size_known=vol.voxel_size_known)
