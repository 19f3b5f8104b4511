"""InDI inference with bf16 autocast on the CPU (oneDNN) against float32: result change and speed (issue 20).

    PYTHONPATH=src .venv/bin/python benchmarks/bench_bf16_cpu.py [--model MODEL_DIR] [--size 512] [--steps 8]
        [--reps 3] [--threads 1]

The network of ``--model`` (a trained tomo4d.enhance model folder), else the seeded untrained "small" preset
(as in bench_enhance.py; its outputs are not a restoration, but the arithmetic is the same), restores a
smooth random texture in [-1, 1] with ``restore_slices``.  bf16: the network's forward pass runs under
``torch.autocast("cpu", dtype=torch.bfloat16)`` and its output is cast back to float32 (the InDI update
stays float32), which is what a ``precision="bf16"`` option would do.  Printed: max and RMS difference
bf16 - fp32 (in the network's [-1, 1] units), the PSNR of bf16 against fp32 (peak-to-peak 2), the verdict
against the tolerance (``--tolerance``, default 0.01 RMS = 0.5 % of the range, and PSNR >= 40 dB), and per
step wall and CPU seconds (medians of ``--reps``, labelled), on ``--threads`` torch threads.  Whether the
CPU has native bf16 (avx512_bf16 / amx_bf16) is printed: without it oneDNN emulates bf16.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np


def _cpu_bf16() -> str:
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return "unknown"
    have = [f for f in ("avx512_bf16", "amx_bf16") if f in flags]
    return ", ".join(have) if have else "none (AVX2 only: emulated)" if "avx2" in flags else "none"


class _Autocast:
    """Wraps a network: forward under bf16 autocast, output back to float32."""

    def __init__(self, net):
        self.net = net

    def __getattr__(self, name):
        return getattr(self.net, name)

    def __call__(self, *args, **kwargs):
        import torch

        with torch.autocast("cpu", dtype=torch.bfloat16):
            return self.net(*args, **kwargs).float()


def main(argv=None) -> None:
    import torch
    from scipy import ndimage

    import tomo4d
    from tomo4d.enhance.sample import restore_slices

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--tolerance", type=float, default=0.01, help="largest acceptable RMS difference")
    a = ap.parse_args(argv)
    if a.model:
        from tomo4d.enhance import load_model

        model = load_model(a.model, device="cpu")
    else:
        sys.path.insert(0, os.path.dirname(__file__))
        from bench_enhance import _untrained_model

        model = _untrained_model("small")
    rng = np.random.default_rng(0)
    img = ndimage.gaussian_filter(rng.normal(size=(1, a.size, a.size)), (0, 2, 2))
    img = np.clip(img / (3 * img.std()), -1, 1).astype(np.float32)
    net32 = model.net
    with tomo4d.threads(a.threads) as n:
        restore_slices(model, img[:, :64, :64], steps=1)            # warm-up, float32
        fp32 = restore_slices(model, img, steps=a.steps, seed=0)
        model.net = _Autocast(net32)
        try:
            restore_slices(model, img[:, :64, :64], steps=1)        # warm-up, bf16
            bf16 = restore_slices(model, img, steps=a.steps, seed=0)
            times = {"fp32": ([], []), "bf16": ([], [])}
            for _ in range(a.reps):
                for name, net in (("fp32", net32), ("bf16", _Autocast(net32))):
                    model.net = net
                    w, c = time.perf_counter(), time.process_time()
                    restore_slices(model, img, steps=a.steps, seed=0)
                    times[name][0].append((time.perf_counter() - w) / a.steps)
                    times[name][1].append((time.process_time() - c) / a.steps)
        finally:
            model.net = net32
        torch_threads = torch.get_num_threads()
    d = bf16.astype(np.float64) - fp32
    rms = float(np.sqrt(np.mean(d**2)))
    psnr = float(20 * np.log10(2.0 / rms)) if rms > 0 else float("inf")
    med = {k: (float(np.median(v[0])), float(np.median(v[1]))) for k, v in times.items()}
    row = {"bench": "indi_bf16_cpu", "model": a.model or "untrained small preset (seed 0)",
           "slice": f"{a.size}x{a.size}", "steps": a.steps, "threads": n, "torch_threads": torch_threads,
           "cpu_native_bf16": _cpu_bf16(), "max_abs_diff": float(np.abs(d).max()), "rms_diff": rms,
           "psnr_bf16_vs_fp32_db": psnr, "tolerance_rms": a.tolerance,
           "within_tolerance": bool(rms <= a.tolerance and psnr >= 40),
           "fp32_step_wall_s": med["fp32"][0], "fp32_step_cpu_s": med["fp32"][1],
           "bf16_step_wall_s": med["bf16"][0], "bf16_step_cpu_s": med["bf16"][1],
           "speed_bf16_over_fp32_wall": med["fp32"][0] / med["bf16"][0]}
    print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
