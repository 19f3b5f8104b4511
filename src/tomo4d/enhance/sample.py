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
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .._array import as_float32
from .._threads import torch_threads
from .._validate import check_finite, check_finite_chunk, check_int, check_number, show
from ..errors import InputError
from ..io import lazy_from_slices
from ..volume import Volume, as_volume
from .data import upsample2_xy, upsample2_z_window
from .model import EnhanceModel

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TileGrid:
    """Tiles of one padded slice: starts along y and x, tile size, blending margin (pixels)."""

    starts_y: tuple[int, ...]
    starts_x: tuple[int, ...]
    tile_y: int
    tile_x: int
    margin: int
    ramp: int


def _starts(n: int, tile: int, stride: int) -> tuple[int, ...]:
    if n <= tile:
        return (0,)
    s = list(range(0, n - tile, stride))
    s.append(n - tile)
    return tuple(sorted(set(s)))


def tile_grid(shape_yx, *, tile: int, overlap: int, multiple: int) -> TileGrid:
    """Tile layout for a padded slice of ``shape_yx`` (both multiples of ``multiple``)."""
    ny, nx = shape_yx
    t = max(multiple, (int(tile) // multiple) * multiple)
    ty, tx = min(t, ny), min(t, nx)
    stride = max(multiple, ((t - int(overlap)) // multiple) * multiple)
    margin = int(overlap) // 4
    ramp = max(int(overlap) - 2 * margin, 1)
    return TileGrid(_starts(ny, ty, stride), _starts(nx, tx, stride), ty, tx, margin, ramp)


def _weight_1d(n: int, lo_inner: bool, hi_inner: bool, margin: int, ramp: int) -> np.ndarray:
    w = np.ones(n, np.float64)
    d = np.arange(n, dtype=np.float64)
    prof = np.where(d < margin, 0.0, np.where(d < margin + ramp, np.sin(0.5 * np.pi * (d - margin + 0.5) / ramp) ** 2, 1.0))
    if lo_inner:
        w *= prof
    if hi_inner:
        w *= prof[::-1]
    return w


def check_tiling(tile: int, overlap: int) -> None:
    """Validate the tile size and overlap (raise :class:`InputError`)."""
    tile = check_int("tile", tile, minimum=16)
    overlap = check_int("overlap", overlap, minimum=0)
    if not overlap < tile // 2:
        raise InputError(f"overlap={overlap} is out of range; it must be less than half the tile ({tile}), "
                         "e.g. 64 for 512")


def check_model(model, name: str = "model"):
    """Refuse anything that is not an :class:`~tomo4d.enhance.EnhanceModel`."""
    if not isinstance(model, EnhanceModel):
        raise InputError(f"{name} is {show(model) if model is None else type(model).__name__}, not an enhancement "
                         "model; load one with tomo4d.enhance.load_model(path)")
    return model


def check_steps(model, steps, name: str = "steps") -> int:
    """The InDI step count: the model's recommended one for ``None``, else an integer >= 1 (never replaced)."""
    if steps is None:
        return int(model.info.recommended_steps)
    return check_int(name, steps, minimum=1)


def _input_volume(volume, name: str = "volume"):
    """``volume`` as a Volume; refuse what is not a 3D image (``None``, strings, ...)."""
    if not isinstance(volume, Volume) and not (hasattr(volume, "shape") and hasattr(volume, "dtype")):
        raise InputError(f"{name} is {show(volume) if volume is None or isinstance(volume, (str, int, float)) else type(volume).__name__}, "
                         "not a volume; give a tomo4d.Volume (tomo4d.io.open_volume(path)) or a 3D array")
    return as_volume(volume)


def _pad_amounts(n: int, multiple: int, border: int) -> tuple[int, int]:
    total = n + 2 * border
    extra = (-total) % multiple
    return border, border + extra


def _pad(a: np.ndarray, pads) -> np.ndarray:
    mode = "reflect" if all(p < s for p, s in zip([max(p) for p in pads[-2:]], a.shape[-2:])) else "edge"
    return np.pad(a, [(0, 0)] * (a.ndim - 2) + list(pads), mode=mode)


def restore_slices(model, lq_up_norm: np.ndarray, *, steps: int, seed: int = 0, slice_ids=None,
                   tile: int = 512, overlap: int = 64, batch: int = 4, noise_std: float | None = None) -> np.ndarray:
    """InDI-restore a stack of up-sampled, normalised slices ``(S, Y, X)`` -> ``(S, Y, X)`` in [-1, 1].

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
        Tile side and overlap (pixels of the up-sampled slice).
    batch : int
        Tiles per network call.
    noise_std : float, optional
        Initial noise (default: the model's training ``noise_std``; 0 for the one-step baselines).
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
    ids = list(range(a.shape[0])) if slice_ids is None else [int(i) for i in slice_ids]
    mult = cfg.network.multiple
    S, Y, X = a.shape
    border = mult
    pads = (_pad_amounts(Y, mult, border), _pad_amounts(X, mult, border))
    x = _pad(a, pads)
    if noise_std > 0:
        noise = np.stack([np.random.default_rng([int(seed), i]).standard_normal(x.shape[1:], dtype=np.float32)
                          for i in ids])
        x = x + np.float32(noise_std) * noise
    grid = tile_grid(x.shape[1:], tile=tile, overlap=overlap, multiple=mult)
    PY, PX = x.shape[1:]
    wy = {sy: _weight_1d(grid.tile_y, sy > 0, sy + grid.tile_y < PY, grid.margin, grid.ramp) for sy in grid.starts_y}
    wx = {sx: _weight_1d(grid.tile_x, sx > 0, sx + grid.tile_x < PX, grid.margin, grid.ramp) for sx in grid.starts_x}
    tiles = [(s, sy, sx) for s in range(S) for sy in grid.starts_y for sx in grid.starts_x]
    wsum = np.zeros((PY, PX), np.float64)
    for sy in grid.starts_y:
        for sx in grid.starts_x:
            wsum[sy:sy + grid.tile_y, sx:sx + grid.tile_x] += np.outer(wy[sy], wx[sx])
    if np.any(wsum <= 0):
        raise InputError(f"overlap={overlap} leaves gaps between tiles of {tile}; increase the overlap")
    net = model.net
    dev = next(net.parameters()).device
    use_amp = dev.type == "cuda"
    x = x.astype(np.float32)
    with torch.inference_mode():
        for k in range(steps, 0, -1):
            t = k / steps
            pred = np.zeros(x.shape, np.float64)
            for b0 in range(0, len(tiles), batch):
                chunk = tiles[b0:b0 + batch]
                inp = np.stack([x[s, sy:sy + grid.tile_y, sx:sx + grid.tile_x] for s, sy, sx in chunk])[:, None]
                xt = torch.from_numpy(inp).to(dev)
                tt = torch.full((len(chunk),), t, device=dev)
                with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=use_amp):
                    out = net(xt, tt)
                out = out.float().cpu().numpy()[:, 0]
                for (s, sy, sx), o in zip(chunk, out):
                    pred[s, sy:sy + grid.tile_y, sx:sx + grid.tile_x] += o * np.outer(wy[sy], wx[sx])
            pred = (pred / wsum).astype(np.float32)
            frac = np.float32((1.0 / steps) / t)
            x = frac * pred + (np.float32(1) - frac) * x
    (py0, _), (px0, _) = pads
    return np.ascontiguousarray(x[:, py0:py0 + Y, px0:px0 + X])


def enhance_slices(model, lq_slices, *, steps: int | None = None, seed: int = 0, slice_ids=None,
                   tile: int = 512, overlap: int = 64, batch: int = 4) -> np.ndarray:
    """Enhance LQ xy-slices ``(S, y, x)`` (input units) -> ``(S, 2y, 2x)`` float32 in HQ units.

    Up-samples x2 (bicubic), maps to [-1, 1] with the model's LQ scaling, runs
    :func:`restore_slices`, maps back with the HQ scaling.
    """
    info = check_model(model).info
    steps = check_steps(model, steps)
    up = upsample2_xy(as_float32(lq_slices))
    norm = info.lq_scaling.forward(up)
    out = restore_slices(model, norm, steps=steps, seed=seed, slice_ids=slice_ids, tile=tile, overlap=overlap,
                         batch=batch)
    return info.hq_scaling.inverse(out)


class _SliceEngine:
    """Enhances LQ slices on demand, keeping a small window of them (bounded memory), thread-safe."""

    def __init__(self, model, lq_data, *, steps, seed, tile, overlap, batch, group, progress):
        self.model, self.lq = model, lq_data
        self.kw = dict(steps=steps, seed=seed, tile=tile, overlap=overlap, batch=batch)
        self.n = int(lq_data.shape[0])
        self.group = int(group)
        self.check = not isinstance(lq_data, np.ndarray)    # numpy input is checked up front
        self.cache: dict[int, np.ndarray] = {}
        self.lock = threading.Lock()
        self.progress = progress
        self.done: set[int] = set()
        # torch's CPU results depend on its intra-op thread count, which (OpenMP backend) is a setting of
        # each OS thread: the dask worker threads computing the slices may carry another count than the
        # caller.  Every slice runs on the caller's count, so the output does not depend on which worker
        # computes it (bitwise reproducible in the seed).
        import torch

        self.threads = torch.get_num_threads()

    def get(self, ks: list[int]) -> list[np.ndarray]:
        with self.lock:
            missing = sorted(k for k in set(ks) if k not in self.cache)
            while missing:
                k0 = missing[0]
                k1 = min(self.n, k0 + self.group)
                idx = [k for k in range(k0, k1) if k not in self.cache]
                slab = np.asarray(self.lq[idx[0]:idx[-1] + 1])
                if self.check:
                    check_finite_chunk("volume", slab, idx[0])
                slab = slab[[k - idx[0] for k in idx]]
                with torch_threads(self.threads):
                    out = enhance_slices(self.model, slab, slice_ids=idx, **self.kw)
                for k, o in zip(idx, out):
                    self.cache[k] = o
                    self.done.add(k)
                missing = [k for k in missing if k not in self.cache]
                if self.progress is not None:
                    self.progress(len(self.done), self.n)
            res = [self.cache[k] for k in ks]
            lo = min(ks) - 2
            for k in [k for k in self.cache if k < lo or k > max(ks) + self.group + 2]:
                del self.cache[k]
            return res

    def read_output(self, js: list[int], z_interp: bool) -> np.ndarray:
        if not z_interp:
            return np.stack(self.get(list(js)))
        out = []
        for j in js:
            k = j // 2
            ks = [min(max(k + d, 0), self.n - 1) for d in (-2, -1, 0, 1, 2)]
            even, odd = upsample2_z_window(self.get(ks), k, self.n)
            out.append(even if j % 2 == 0 else odd)
        return np.stack(out)


def check_input(model, volume, *, check_voxel_size: bool = True) -> None:
    """Raise :class:`InputError` if ``volume`` is not something ``model`` was trained on."""
    info = model.info
    if str(volume.dtype) != info.input_dtype:
        raise InputError(
            f"volume dtype {volume.dtype} differs from the dtype the model was trained on ({info.input_dtype}); "
            f"its intensities would be misread: convert the volume to {info.input_dtype} with the same scaling, "
            "or train a model on data of this dtype"
        )
    if check_voxel_size and volume.voxel_size_known:
        vs, ref = np.asarray(volume.voxel_size_nm), np.asarray(info.lq_voxel_size_nm)
        if np.any(np.abs(vs / ref - 1) > 0.05):
            raise InputError(
                f"volume voxel size {show(tuple(vs))} nm differs from the LQ voxel size the model was trained on "
                f"({show(tuple(ref))} nm); give a volume of the trained resolution or disable the check "
                "(check_voxel_size=False / --no-voxel-check)"
            )


def enhance_volume(model, volume, *, steps: int | None = None, seed: int = 0, tile: int = 512,
                   overlap: int = 64, batch: int = 4, z_interp: bool = True, out_dtype=None,
                   check_voxel_size: bool = True, group: int = 4,
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
        InDI steps (default: the model's recommended steps).
    seed : int
        Noise seed (the output is a deterministic function of it).
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
    check_input(model, vol, check_voxel_size=check_voxel_size)
    check_tiling(tile, overlap)
    steps = check_steps(model, steps)
    batch = check_int("batch", batch, minimum=1)
    group = check_int("group", group, minimum=1)
    seed = check_int("seed", seed, minimum=0)
    if isinstance(vol.data, np.ndarray):
        check_finite("volume", vol.data)     # in memory: checked up front; lazy input: chunk by chunk
    dt = np.dtype(out_dtype) if out_dtype is not None else (vol.dtype if np.issubdtype(vol.dtype, np.integer)
                                                             else np.dtype(np.float32))
    engine = _SliceEngine(model, vol.data, steps=steps, seed=seed, tile=tile, overlap=overlap, batch=batch,
                          group=group, progress=progress)
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
                        "seed": seed, "tile": tile, "overlap": overlap, "z_interp": z_interp}
    meta = dataclasses.replace(meta, extra=extra)
    return Volume(data, new_vs, meta, voxel_size_known=vol.voxel_size_known)
