"""Every GPU figure tomo4d reports, measured in one process (run by ``benchmarks/gpu_check.sh``).

Prints one JSON line per figure and writes them all to ``--out``.  Each part is independent: a
failure is recorded with its error and the next part runs.  Figures (wall time, CUDA synchronised):

- ``dvc_local_torch``: :func:`tomo4d.dvc.correlate`, torch backend on the GPU, a 512^3 smooth random
  texture shifted by a known sub-pixel translation, ~10^5 nodes (issue 15 goal: >= 10^4 nodes/s),
  with the median error against the known shift;
- ``dvc_global``: :func:`tomo4d.dvc.correlate_global` on the GPU, 256^3 texture stretched 20 % along z
  with a grey-level ramp, node spacing 4 (seconds and median error);
- ``dvc_global_route``: the same pair at 160^3 on the runner's ``method: global`` route (``CONVERGED_ROUTE``: on
  a GPU, L-BFGS up to 1000 iterations, cubic, regularisation 0.05 as on scans not deconvolved), seconds, iterations
  and median error;
- ``indi_slices``: InDI enhancement of 2048^2 slices at 10 steps, untrained ``reference``-preset
  network (throughput does not depend on the weights), slices/s;
- ``indi_train`` (issue 19): ``reference``-preset training at 512^2 crops, training steps/s in fp32 and in
  bf16 (median of 3 alternating timings of 10 steps after 3 warm-up steps, same batches), then the
  reference preset trained in bf16 on a synthetic 512^2-crop pair (HQ 16 x 576 x 576, LQ 2x coarser, two
  phases blurred, 5 % noise) for as many of its 1000 steps as fit in ``--train-budget`` s (default 240)
  at the measured rate, validated every 100 steps: seconds, steps/s, final validation PSNR/SSIM against
  bicubic, under-training verdict, the sweep's recommended N (the issue's GPU acceptance: within ten
  minutes of GPU time).

Without CUDA the script is a CPU dry-run and says so (``"dry_run"`` in the output): the CUDA-only parts
are skipped, ``indi_train`` runs on a tiny configuration (``tiny`` preset, 64^2 crops, a few steps) so
that the code path is exercised; none of its figures are GPU figures.
"""

from __future__ import annotations

import argparse
import json
import time
import traceback

import numpy as np


def _sync():
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _texture(n, seed=0):
    import torch

    g = torch.Generator(device="cuda").manual_seed(seed)
    a = torch.randn((1, 1, n, n, n), device="cuda", generator=g)
    k = torch.exp(-0.5 * (torch.arange(-4, 5, device="cuda", dtype=torch.float32) / 1.5) ** 2)
    k = k / k.sum()
    for dim in range(3):
        shape = [1, 1, 1, 1, 1]
        shape[2 + dim] = 9
        a = torch.nn.functional.conv3d(a, k.view(shape), padding=[4 if d == dim else 0 for d in range(3)])
    a = (a - a.mean()) / a.std() * 1000 + 5000
    return a[0, 0]


def _warp(vol, disp):
    """vol (D, H, W) cuda; disp(zyx grid) -> (3, D, H, W) px; returns D with D(x + u(x)) ~ vol(x) (u small)."""
    import torch

    D, H, W = vol.shape
    axes = [torch.arange(n, device=vol.device, dtype=torch.float32) for n in vol.shape]
    z, y, x = torch.meshgrid(*axes, indexing="ij")
    pts = torch.stack([z, y, x])
    src = pts.clone()
    for _ in range(20):  # fixed point: src = x - u(src)
        src = pts - disp(src)
    g = torch.stack([src[2] / (W - 1), src[1] / (H - 1), src[0] / (D - 1)], -1) * 2 - 1
    return torch.nn.functional.grid_sample(vol[None, None], g[None], mode="bilinear", padding_mode="border",
                                           align_corners=True)[0, 0]


def dvc_local(n=512, spacing=11, hw=10):
    import torch

    from tomo4d.dvc import correlate

    ref = _texture(n)
    shift = (0.3, -0.4, 0.25)
    t = torch.tensor(shift, device="cuda").view(3, 1, 1, 1)
    dfm = _warp(ref, lambda p: torch.zeros_like(p) + t)
    r, d = ref.cpu().numpy(), dfm.cpu().numpy()
    correlate(r[:96, :96, :96], d[:96, :96, :96], node_spacing=spacing, half_window=hw, backend="torch",
              device="cuda", order=1)  # warm-up
    _sync()
    t0 = time.perf_counter()
    f = correlate(r, d, node_spacing=spacing, half_window=hw, backend="torch", device="cuda", order=1)
    _sync()
    dt = time.perf_counter() - t0
    err = np.linalg.norm(f.displacement_zyx_px[f.usable] - np.asarray(shift), axis=1)
    return {"volume": f"{n}^3", "nodes": f.n_nodes, "seconds": dt, "nodes_per_s": f.n_nodes / dt,
            "median_error_px": float(np.median(err)), "usable": float(f.usable.mean())}


def _stretched_pair(n):
    """The global DVC pair: a texture stretched 20 % along z with a grey-level ramp; (ref, deformed, phi0, truth)."""
    import torch

    ref = _texture(n, seed=1)
    strain = 0.2
    dfm = _warp(ref, lambda p: torch.stack([strain * (p[0] - n / 2), 0 * p[1], 0 * p[2]]))
    z = torch.linspace(0, 1, n, device="cuda").view(n, 1, 1)
    dfm = (dfm - 5000) * (1 - 0.4 * z) + 5000 + 300 * z
    phi0 = np.eye(4)
    phi0[0, 0] = 1 + strain
    phi0[0, 3] = strain * 0.5
    return ref.cpu().numpy(), dfm.cpu().numpy(), phi0, lambda pos: np.stack(
        [strain * (pos[:, 0] - n / 2), 0 * pos[:, 1], 0 * pos[:, 2]], 1)


def _global_figures(n, spacing, **options):
    from tomo4d.dvc import correlate_global

    r, d, phi0, truth = _stretched_pair(n)
    _sync()
    t0 = time.perf_counter()
    f = correlate_global(r, d, phi0=phi0, node_spacing=spacing, device="cuda", **options)
    _sync()
    dt = time.perf_counter() - t0
    ok = f.usable
    err = np.linalg.norm(f.displacement_zyx_px[ok] - truth(f.positions_zyx_px)[ok], axis=1)
    return {"volume": f"{n}^3", "nodes": f.n_nodes, "seconds": dt, "solver": f.notes["options"]["solver"],
            "levels": f.notes["levels"], "converged": f.notes["converged"], "median_error_px": float(np.median(err))}


def dvc_global(n=256, spacing=4):
    """The library's default options (L-BFGS, linear, regularisation 0.05, 100 iterations per level)."""
    return _global_figures(n, spacing)


def dvc_global_route(n=160, spacing=4):
    """The runner's ``method: global`` route on scans as reconstructed (``pipeline.sections.CONVERGED_ROUTE``: solver
    auto, which is L-BFGS on a GPU, cubic, up to 1000 iterations; ``ROUTE_REGULARISATION``'s 0.05, not deconvolved)
    on the ``dvc_global`` pair at ``n``^3."""
    from tomo4d.pipeline.sections import CONVERGED_ROUTE, ROUTE_REGULARISATION

    return _global_figures(n, spacing, **CONVERGED_ROUTE, regularisation=ROUTE_REGULARISATION["as_scanned"])


def indi_slices(size=2048, steps=10, n_slices=4):
    import torch

    from tomo4d.enhance import ModelInfo, Scaling, TrainConfig
    from tomo4d.enhance.model import EnhanceModel
    from tomo4d.enhance.network import InDINet
    from tomo4d.enhance.sample import restore_slices

    cfg = TrainConfig.preset("reference")
    torch.manual_seed(0)
    model = EnhanceModel(InDINet(cfg.network).eval(),
                         ModelInfo(cfg, Scaling(-1, 1), Scaling(-1, 1), "float32", (100.0,) * 3, (50.0,) * 3))
    model.to("cuda")
    img = np.random.default_rng(0).uniform(-1, 1, (n_slices, size, size)).astype(np.float32)
    restore_slices(model, img[:1, :256, :256], steps=1)
    _sync()
    t0 = time.perf_counter()
    restore_slices(model, img, steps=steps, tile=1024, overlap=64)
    _sync()
    dt = time.perf_counter() - t0
    return {"slice": f"{size}x{size}", "steps": steps, "slices": n_slices, "seconds": dt,
            "slices_per_s": n_slices / dt}


def _synthetic_pair(shape, seed=0):
    """(lq, hq) Volumes: two phases of a smooth random texture, HQ blurred 1 px, LQ = HQ blurred 1 px, binned 2x
    along every axis, 5 % noise (as benchmarks/bench_enhance.py degrades real data)."""
    from scipy import ndimage

    from tomo4d import Volume

    rng = np.random.default_rng(seed)
    a = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), (1.5, 6, 6))
    hq = ndimage.gaussian_filter((a > 0).astype(np.float32) * 1000 + 1000, 1.0)
    b = ndimage.gaussian_filter(hq, 1.0)
    z, y, x = (n // 2 for n in shape)
    b = b[:2 * z, :2 * y, :2 * x].reshape(z, 2, y, 2, x, 2).mean((1, 3, 5))
    lq = (b + rng.normal(0, 0.05 * float(hq.std()), b.shape)).astype(np.float32)
    return Volume(lq, 100.0), Volume(hq.astype(np.float32), 50.0)


def _train_rate(trainer, n, device):
    _sync()
    t0 = time.perf_counter()
    for _ in range(n):
        trainer.train_step()
    _sync()
    return n / (time.perf_counter() - t0)


def indi_train(crop=512, timed_steps=10, reps=3, train_budget_s=240.0, dry_run=False):
    import tempfile
    from pathlib import Path

    from tomo4d.enhance import TrainConfig, prepare_pair, train_on_pair
    from tomo4d.enhance.training import Trainer

    preset, dev = ("tiny", "cpu") if dry_run else ("reference", "cuda")
    if dry_run:
        crop, timed_steps, reps = 64, 2, 1
    shape = (16, crop + 64, crop + 64)
    lq, hq = _synthetic_pair(shape)
    base = TrainConfig.preset(preset, crop=crop, checkpoint_every=0)
    pair = prepare_pair(lq, hq, register=False, fov=False, val_fraction=base.val_fraction, route="volume")
    rates = {}
    trainers = {p: Trainer(pair.lq / 1000 - 1.5, pair.hq / 1000 - 1.5, pair.mask, pair.train_slices,
                           pair.val_slices, TrainConfig.preset(preset, crop=crop, precision=p), device=dev)
                for p in ("fp32", "bf16")}
    for tr in trainers.values():
        _train_rate(tr, 1 if dry_run else 3, dev)          # warm-up (cuDNN autotuning, allocator)
    for _ in range(reps):                                  # alternating: the same machine state for both
        for p, tr in trainers.items():
            rates.setdefault(p, []).append(_train_rate(tr, timed_steps, dev))
    out = {"device": dev, "dry_run": dry_run, "preset": preset, "crop": f"{crop}x{crop}",
           "batch": base.batch_size, "steps_per_s": {p: float(np.median(v)) for p, v in rates.items()}}
    out["bf16_over_fp32"] = out["steps_per_s"]["bf16"] / out["steps_per_s"]["fp32"]
    del trainers
    steps = 6 if dry_run else int(min(base.steps, max(100, train_budget_s * out["steps_per_s"]["bf16"])))
    cfg = TrainConfig.preset(preset, crop=crop, checkpoint_every=0, precision="bf16", steps=steps,
                             val_every=max(1, steps // 10))
    with tempfile.TemporaryDirectory() as d:
        _sync()
        t0 = time.perf_counter()
        res = train_on_pair(pair, Path(d) / "m", config=cfg, input_dtype="float32", device=dev)
        _sync()
        out["train"] = {"steps": res.steps, "of": base.steps, "precision": "bf16", "seconds": time.perf_counter() - t0,
                        "steps_per_s_incl_validation": res.steps / (time.perf_counter() - t0),
                        "val_psnr_db": res.val_psnr_db, "val_psnr_bicubic_db": res.val_psnr_lq_db,
                        "recommended_steps": res.recommended_steps, "undertrained": res.undertrained}
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="gpu_figures.json")
    ap.add_argument("--only", default="dvc_local,dvc_global,dvc_global_route,indi_slices,indi_train")
    ap.add_argument("--train-budget", type=float, default=240.0, help="seconds of the indi_train training run")
    a = ap.parse_args(argv)
    import torch

    dry = not torch.cuda.is_available()
    rows = {"gpu": torch.cuda.get_device_name(0) if not dry else None, "torch": torch.__version__,
            "dry_run": "CPU dry-run: no CUDA device; these are NOT GPU figures" if dry else False}
    print(json.dumps(rows), flush=True)
    for name in a.only.split(","):
        try:
            if name == "indi_train":
                rows[name] = indi_train(train_budget_s=a.train_budget, dry_run=dry)
            elif dry:
                rows[name] = {"skipped": "CPU dry-run: needs CUDA"}
            else:
                rows[name] = globals()[name]()
        except Exception as e:  # record and go on: one prepared call measures everything it can
            rows[name] = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-2000:]}
        print(json.dumps({name: rows[name]}, default=float), flush=True)
        with open(a.out, "w") as fh:
            json.dump(rows, fh, indent=1, default=float)


if __name__ == "__main__":
    main()
